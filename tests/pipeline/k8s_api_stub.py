"""A stand-in for the Kubernetes API server, on 127.0.0.1, for the pipeline's cluster steps.

There is no cluster in the test environment, and `run_tfjob` and `roll_deployment` must still
go through the real kubeflow-training SDK and `kubernetes` client, unpatched. So this server
speaks plain HTTP on a free port (`write_kubeconfig` points a kubeconfig with a token user at
it) and answers the requests those clients send, in the API server's JSON shapes:

    POST   /apis/kubeflow.org/v1/namespaces/NS/tfjobs          create a TFJob (201, 409, 400)
    GET    /apis/kubeflow.org/v1/namespaces/NS/tfjobs/NAME     the TFJob and its status
    PATCH  /apis/kubeflow.org/v1/namespaces/NS/tfjobs/NAME     merge patch (resourceVersion checked)
    DELETE /apis/kubeflow.org/v1/namespaces/NS/tfjobs/NAME     delete; the GC takes its pods
    GET    /api/v1/namespaces/NS/pods?labelSelector=...        pods, by label
    DELETE /api/v1/namespaces/NS/pods/NAME                     delete a pod (and what it owns)
    GET    /api/v1/namespaces/NS/pods/POD/log?container=...    a container's log (also follow=true)
    GET    /api/v1/namespaces/NS/events?fieldSelector=...      the namespace's events
    PATCH  /apis/apps/v1/namespaces/NS/deployments/NAME        strategic-merge, merge or JSON patch
    GET    /apis/apps/v1/namespaces/NS/deployments/NAME        the Deployment and its status

The controllers behind it encode the upstream code, each behaviour beside the upstream file it
comes from, at these commits:

- TRAINER: kubeflow/trainer, tag v1.9.4 (4445c12aa62e4345b0c2c6ac9b215a70eca46ed7; branch
  release-1.9 has no change under pkg/ since), the Training Operator v1 whose TFJob CRD the
  tests validate against.
- K8S: kubernetes/kubernetes, the files named with the commit of the version read:
  pkg/controller/deployment/progress.go @ c91999ae, sync.go @ 737067c1, rollback.go @ 8f9412ea,
  pkg/controller/deployment/util/deployment_util.go @ 277391ee,
  pkg/controller/garbagecollector/garbagecollector.go @ cb6ff2d8,
  staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollback.go @ aed80471 and
  rollout_status.go @ fa7ba8e2.

What happens over time is scripted by the tests, in GETs rather than seconds (one reconcile of
the controller between two GETs of the object), except two deadlines that run on the clock as
upstream: a TFJob's activeDeadlineSeconds and nothing else. A TFJob's phases follow the sequence
the test gives (`script_tfjob`), and the condition list is kept by the operator's own rules. A
Deployment's new pod template becomes ready after `rollout_gets` GETs, or never (`stuck`): then
its Progressing condition turns False with ProgressDeadlineExceeded after `deadline_gets` GETs;
a template the Deployment ran before (an undo) is back at once, its ReplicaSet's pods still up.

Requests must carry the kubeconfig's bearer token (else 401). What it does not do: TLS, watches,
set-based label selectors, Services, ReplicaSet objects, TTL deletion of finished jobs, grace
periods (a deleted pod vanishes at once), admission or schema validation. Every request is kept
(`requests`), including those it cannot answer: an unknown path is a 404 with a Kubernetes
Status body, so a test sees a call it did not expect.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

import yaml

from .loopback_server import LoopbackServer, read_request

TFJOBS = "/apis/kubeflow.org/v1/namespaces/(?P<namespace>[^/]+)/tfjobs"
PODS = "/api/v1/namespaces/(?P<namespace>[^/]+)/pods"
EVENTS = "/api/v1/namespaces/(?P<namespace>[^/]+)/events"
DEPLOYMENTS = "/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments"
NAME = "/(?P<name>[^/]+)"

# TRAINER pkg/apis/kubeflow.org/v1/common_types.go: the labels the operator puts on its pods.
OPERATOR_NAME_LABEL = "training.kubeflow.org/operator-name"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
# TRAINER pkg/apis/kubeflow.org/v1/tensorflow_types.go: TFJobDefault{ContainerName,PortName,Port}.
TF_CONTAINER, TF_PORT_NAME, TF_PORT = "tensorflow", "tfjob-port", 2222
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"  # K8S deployment_util.go

PHASES = ("Created", "Running", "Restarting", "Succeeded", "Failed", "BackoffLimitExceeded")
# The pod phase that goes with a TFJob's latest phase (with restartPolicy OnFailure the kubelet
# restarts a failed container in place: the pod stays Running while the job restarts).
POD_PHASE = {
    "Created": "Pending",
    "Running": "Running",
    "Restarting": "Running",
    "Succeeded": "Succeeded",
    "Failed": "Failed",
    "BackoffLimitExceeded": "Running",
}


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]  # the first value of each query parameter
    content_type: str | None
    body: dict | list | None  # the parsed JSON body, if any


@dataclass(frozen=True)
class Event:
    """A core/v1 Event about an object in the job's namespace."""

    kind: str  # of the involved object: "TFJob", "Pod"
    name: str  # of the involved object
    reason: str
    message: str
    type: str = "Warning"


@dataclass
class TFJobScript:
    """What the Training Operator and the pods will do with one TFJob."""

    # The job's phase at the 1st, 2nd... GET (one of PHASES). "Failed": a replica failed;
    # "BackoffLimitExceeded": the containers restarted backoffLimit times.
    conditions: tuple[str, ...] = ("Created",)
    logs: dict[int, str] = field(default_factory=dict)  # worker index -> container log
    events: tuple[Event, ...] = ()  # emitted when the job reaches its last phase
    failed_worker: int = -1  # the worker whose pod fails in a "Failed" phase (-1: the last)
    gets: int = 0  # GETs of the job so far
    started: float = field(default_factory=time.monotonic)  # the job's start, on this clock
    cleaned: bool = False  # pods removed by cleanPodPolicy


@dataclass
class Rollout:
    """How the Deployment controller will progress a Deployment after a template change."""

    rollout_gets: int | None  # a new template is complete on this GET after the change
    deadline_gets: int  # GETs without progress until ProgressDeadlineExceeded (if stuck)
    gets_since_change: int | None = None  # None: no change since the last complete rollout
    known: bool = False  # the new template is one the Deployment ran before (an undo)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """The API server's error body: a metav1.Status."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _not_found(resource: str, group: str, name: str) -> tuple[int, dict]:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {"name": name}
    details["kind"] = resource
    return 404, status(404, "NotFound", f'{qualified} "{name}" not found', details)


def _bad_request(message: str) -> tuple[int, dict]:
    return 400, status(400, "BadRequest", message)


def _selector(text: str) -> list[tuple[str, str, str]]:
    """`a=b,c!=d` as (key, operator, value); set-based selectors are not implemented."""
    requirements = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        found = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", term)
        if not found:
            raise ValueError(f"unable to parse requirement: {term!r} (the stub knows =, ==, !=)")
        key, operator, value = found.groups()
        requirements.append((key, "!=" if operator == "!=" else "=", value))
    return requirements


def _matches(requirements, lookup: Callable[[str], str | None]) -> bool:
    return all((lookup(key) == value) == (op == "=") for key, op, value in requirements)


def _field(obj: dict, dotted: str) -> str | None:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return None if obj is None else str(obj)


def strategic_merge(target: dict, patch: dict, merge_keys: dict[str, str]) -> dict:
    """Kubernetes' strategic merge for the fields used here: maps merge, null deletes, lists of
    named things (containers, env, volumes) merge by their key, other lists are replaced."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = strategic_merge(merged[key], value, merge_keys)
        elif key in merge_keys and isinstance(value, list) and isinstance(merged.get(key), list):
            by = merge_keys[key]
            items = merged[key]
            for item in value:
                same = [i for i, old in enumerate(items) if old.get(by) == item.get(by)]
                if same:
                    items[same[0]] = strategic_merge(items[same[0]], item, merge_keys)
                else:
                    items.append(copy.deepcopy(item))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch: maps merge, null deletes, lists are replaced."""
    return strategic_merge(target, patch, merge_keys={})


class PatchTestFailed(ValueError):
    """A JSON patch `test` operation did not hold."""


def json_patch(target: dict, operations: list[dict]) -> dict:
    """RFC 6902 JSON patch: add, remove, replace and test, on JSON pointers (RFC 6901)."""
    patched = copy.deepcopy(target)
    for op in operations:
        parts = [
            unquote(p).replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        parent = patched
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "test":
            current = parent.get(last) if isinstance(parent, dict) else parent[int(last)]
            if current != op["value"]:
                raise PatchTestFailed(f"testing value {op['path']} failed")
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, copy.deepcopy(op["value"]))
                else:
                    parent[index] = copy.deepcopy(op["value"])
            else:
                if op["op"] == "replace" and last not in parent:
                    raise PatchTestFailed(f"replace operation does not apply: {op['path']}")
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"the stub does not implement JSON patch op {op['op']!r}")
    return patched


# apps/v1 PodSpec and Container merge keys (from the API's patchMergeKey tags).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


def _tf_condition(job: dict, phase: str) -> tuple[str, str, str]:
    """(type, reason, message) of the condition the operator sets for a phase, worded as
    TRAINER writes them: pkg/controller.v1/tensorflow/tfjob_controller.go (onOwnerCreateFunc:
    created; UpdateJobStatus: running, succeeded, replica failed), pkg/controller.v1/common/pod.go
    (ReconcilePods: restarting) and pkg/controller.v1/common/job.go (ReconcileJobs: backoff limit
    and active deadline). Reasons are NewReason(kind, reason): "TFJob" + reason."""
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    return {
        "Created": ("Created", "TFJobCreated", f"TFJob {name} is created."),
        "Running": ("Running", "TFJobRunning", f"TFJob {namespace}/{name} is running."),
        "Restarting": (
            "Restarting",
            "TFJobRestarting",
            f"job {name} is restarting because Worker replica(s) failed.",
        ),
        "Succeeded": (
            "Succeeded",
            "TFJobSucceeded",
            f"TFJob {namespace}/{name} successfully completed.",
        ),
        "Failed": (
            "Failed",
            "TFJobFailed",
            f"TFJob {namespace}/{name} has failed because 1 Worker replica(s) failed.",
        ),
        "BackoffLimitExceeded": (
            "Failed",
            "TFJobFailed",
            f"Job {name} has failed because it has reached the specified backoff limit",
        ),
        "Deadline": (
            "Failed",
            "TFJobFailed",
            f"Job {name} has failed because it was active longer than specified deadline",
        ),
    }[phase]


def _tf_true(job: dict, phase: str) -> tuple[str, str, str, str]:
    kind, reason, message = _tf_condition(job, phase)
    return kind, "True", reason, message


def _finished(conditions: list[dict]) -> bool:
    """TRAINER pkg/util/status.go IsFinished: Succeeded or Failed holds."""
    return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conditions)


def set_condition(
    conditions: list[dict], kind: str, state: str, reason: str, message: str
) -> list[dict]:
    """TRAINER pkg/util/status.go setCondition and filterOutCondition: nothing changes once the
    job has Failed, nor when the condition is there with the same status and reason; Running
    and Restarting replace each other; a Succeeded or Failed turns Running to False; the new
    condition goes last (lastTransitionTime kept if its status did not change)."""
    if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
        return conditions
    current = next((c for c in conditions if c["type"] == kind), None)
    if current is not None and current["status"] == state and current["reason"] == reason:
        return conditions
    now = _now()
    new = {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": current["lastTransitionTime"]
        if current is not None and current["status"] == state
        else now,
    }
    kept = []
    for c in conditions:
        if c["type"] == kind or {c["type"], kind} == {"Running", "Restarting"}:
            continue
        if kind in ("Succeeded", "Failed") and c["type"] == "Running":
            c = {**c, "status": "False"}
        kept.append(c)
    return [*kept, new]


class K8sApiStub(LoopbackServer):
    """The server; use as a context manager. `url` is its http://127.0.0.1:PORT address."""

    def __init__(self, token: str = "test-token"):
        self.token = token
        self.requests: list[Request] = []
        self.tfjobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.events: list[dict] = []
        self.deployments: dict[tuple[str, str], dict] = {}
        self._scripts: dict[tuple[str, str], TFJobScript] = {}  # of the live jobs
        self._next_scripts: dict[tuple[str, str], list[TFJobScript]] = {}  # of jobs to come
        self._rollouts: dict[tuple[str, str], Rollout] = {}
        self._history: dict[tuple[str, str], list[dict]] = {}  # templates run, by revision
        self._resource_version = 1000
        self._lock = threading.Lock()
        super().__init__(self._handler())
        self._routes = [
            ("POST", TFJOBS, self._create_tfjob),
            ("GET", TFJOBS + NAME, self._get_tfjob),
            ("PATCH", TFJOBS + NAME, self._patch_tfjob),
            ("DELETE", TFJOBS + NAME, self._delete_tfjob),
            ("GET", PODS, self._list_pods),
            ("DELETE", PODS + NAME, self._delete_pod),
            ("GET", PODS + NAME + "/log", self._pod_log),
            ("GET", EVENTS, self._list_events),
            ("PATCH", DEPLOYMENTS + NAME, self._patch_deployment),
            ("GET", DEPLOYMENTS + NAME, self._get_deployment),
        ]

    def write_kubeconfig(self, path: Path) -> str:
        """A kubeconfig whose current context is this server, with a token user."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
                    "users": [{"name": "stub", "user": {"token": self.token}}],
                    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
                    "current-context": "stub",
                }
            )
        )
        return str(path)

    # ------------------------------------------------------------------------------------------
    # What the tests set up
    # ------------------------------------------------------------------------------------------

    def script_tfjob(self, namespace: str, name: str, **script) -> None:
        """What happens to the next TFJob created as `namespace/name` (see TFJobScript); called
        twice, the second script is for the job created after that one."""
        self._next_scripts.setdefault((namespace, name), []).append(TFJobScript(**script))

    def add_tfjob(self, manifest: dict, **script) -> dict:
        """A TFJob created earlier (by an earlier attempt of a step), with its pods."""
        with self._lock:
            namespace = manifest["metadata"]["namespace"]
            self.script_tfjob(namespace, manifest["metadata"]["name"], **script)
            return self._create_tfjob(Request("POST", "", {}, None, manifest), namespace)[1]

    def add_pod(self, namespace: str, name: str) -> dict:
        """A pod that is not a TFJob's (a pipeline step's own pod); returns it (its uid)."""
        with self._lock:
            metadata = self._new_metadata(namespace, name)
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {}}
            pod["status"] = {"phase": "Running"}
            self.pods[(namespace, name)] = pod
            return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod as `kubectl delete pod` does (KFP deleting a cancelled run's pods)."""
        with self._lock:
            self._delete_pod(Request("DELETE", "", {}, None, None), namespace, name)

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 3,
        env: list[dict] | None = None,
        rollout_gets: int | None = 2,
        deadline_gets: int = 3,
        progress_deadline_seconds: int = 600,
    ) -> None:
        """A Deployment of `replicas` pods of one container `server`, fully rolled out. A new
        pod template becomes ready on the `rollout_gets`-th GET after it is patched in, or never
        (None: its Progressing condition times out after `deadline_gets` GETs)."""
        labels = {"app.kubernetes.io/name": name}
        template = {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "kubedetect-server:latest",
                        "env": copy.deepcopy(env or []),
                    }
                ]
            },
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **self._new_metadata(namespace, name),
                "generation": 1,
                "labels": dict(labels),
                "annotations": {REVISION_ANNOTATION: "1"},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "progressDeadlineSeconds": progress_deadline_seconds,
                "template": template,
            },
        }
        deployment["status"] = self._complete(deployment, 1)
        self.deployments[(namespace, name)] = deployment
        self._history[(namespace, name)] = [copy.deepcopy(template)]
        self._rollouts[(namespace, name)] = Rollout(rollout_gets, deadline_gets)

    def requests_to(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def pods_of(self, namespace: str, job_name: str) -> list[dict]:
        with self._lock:
            return self._pods_of(namespace, job_name)

    # ------------------------------------------------------------------------------------------
    # The endpoints
    # ------------------------------------------------------------------------------------------

    def answer(self, request: Request, authorization: str | None) -> tuple[int, dict | str]:
        with self._lock:
            self.requests.append(request)
            if authorization != f"Bearer {self.token}":
                return 401, status(401, "Unauthorized", "Unauthorized")
            for method, pattern, endpoint in self._routes:
                found = re.fullmatch(pattern, request.path)
                if found and method == request.method:
                    return endpoint(request, **found.groupdict())
            return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _new_metadata(self, namespace: str, name: str) -> dict:
        self._resource_version += 1
        return {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._resource_version),
            "creationTimestamp": _now(),
        }

    def _emit(self, namespace: str, event: Event, api_version: str, uid: str | None) -> None:
        now = _now()
        self.events.append(
            {
                "metadata": {
                    **self._new_metadata(namespace, f"{event.name}.{uuid.uuid4().hex[:16]}"),
                },
                "involvedObject": {
                    "kind": event.kind,
                    "namespace": namespace,
                    "name": event.name,
                    "uid": uid,
                    "apiVersion": api_version,
                },
                "reason": event.reason,
                "message": event.message,
                "type": event.type,
                "source": {"component": "tfjob-controller" if event.kind == "TFJob" else "kubelet"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )

    # --- The garbage collector ---------------------------------------------------------------

    def _collect_garbage(self) -> None:
        """K8S garbagecollector.go attemptToDeleteItem, classifyReferences, isDangling: an object
        with ownerReferences is deleted once none of its owners exists. An owner is looked up
        in the dependent's own namespace (a namespaced owner elsewhere is absent, whatever its
        name), and it is absent too if an object of that name has another uid. Deleting an
        object makes its dependents' owners absent in turn (cascading, background policy).
        Owners of kinds the stub does not serve (anything but Pod and TFJob) count as present."""
        stores = {("v1", "Pod"): self.pods, ("kubeflow.org/v1", "TFJob"): self.tfjobs}
        changed = True
        while changed:
            changed = False
            for store in stores.values():
                for key, obj in list(store.items()):
                    references = obj["metadata"].get("ownerReferences") or []
                    if not references:
                        continue
                    namespace = obj["metadata"]["namespace"]
                    solid = False
                    for ref in references:
                        owners = stores.get((ref["apiVersion"], ref["kind"]))
                        if owners is None:
                            solid = True
                            break
                        owner = owners.get((namespace, ref["name"]))
                        if owner is not None and owner["metadata"]["uid"] == ref["uid"]:
                            solid = True
                            break
                    if not solid:
                        del store[key]
                        if store is self.tfjobs:
                            self._scripts.pop(key, None)
                        changed = True

    # --- TFJobs -------------------------------------------------------------------------------

    def _create_tfjob(self, request: Request, namespace: str) -> tuple[int, dict]:
        job = copy.deepcopy(request.body)
        if not isinstance(job, dict) or not job.get("metadata", {}).get("name"):
            return _bad_request("a TFJob needs metadata.name")
        name = job["metadata"]["name"]
        if job["metadata"].get("namespace", namespace) != namespace:
            return _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if (namespace, name) in self.tfjobs:
            return 409, status(
                409,
                "AlreadyExists",
                f'tfjobs.kubeflow.org "{name}" already exists',
                {"name": name, "group": "kubeflow.org", "kind": "tfjobs"},
            )
        job["metadata"].update(self._new_metadata(namespace, name), generation=1)
        # TRAINER tfjob_controller.go onOwnerCreateFunc: the Created condition comes first.
        job["status"] = {"conditions": set_condition([], *_tf_true(job, "Created"))}
        self.tfjobs[(namespace, name)] = job
        queued = self._next_scripts.get((namespace, name)) or []
        self._scripts[(namespace, name)] = queued.pop(0) if queued else TFJobScript()
        self._create_pods(job)
        self._collect_garbage()  # an owner that does not exist (here) is no owner
        return 201, job

    def _create_pods(self, job: dict) -> None:
        """The pods the operator creates: TRAINER pkg/controller.v1/common/pod.go createNewPod
        (name GenGeneralName: JOB-TYPE-INDEX; labels GenLabels plus replica type, index and, for
        the master role, job-role=master; the replica spec's restartPolicy set on the pod by
        pkg/core/pod.go SetRestartPolicy; the job as controller owner, GenOwnerReference in
        job_controller.go) and pkg/controller.v1/tensorflow/tfjob_controller.go (IsMasterRole:
        worker 0 when there is no Chief or Master; SetClusterSpec: TF_CONFIG, only in the
        container named `tensorflow` and only when the job is distributed)."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        specs = job["spec"]["tfReplicaSpecs"]
        has_chief = "Chief" in specs or "Master" in specs
        tf_config = self._cluster_spec(job)
        distributed = sum(spec.get("replicas", 1) for spec in specs.values()) != 1
        for replica_type, spec in specs.items():
            for index in range(spec.get("replicas", 1)):
                pod_name = f"{name}-{replica_type.lower()}-{index}"
                template = copy.deepcopy(spec["template"])
                labels = {
                    **template.get("metadata", {}).get("labels", {}),
                    OPERATOR_NAME_LABEL: "tfjob-controller",
                    JOB_NAME_LABEL: name,
                    REPLICA_TYPE_LABEL: replica_type.lower(),
                    REPLICA_INDEX_LABEL: str(index),
                }
                chief = replica_type in ("Chief", "Master") or (
                    not has_chief and replica_type == "Worker" and index == 0
                )
                if chief:
                    labels[JOB_ROLE_LABEL] = "master"
                pod_spec = template["spec"]
                pod_spec["restartPolicy"] = spec.get("restartPolicy", "Never")
                if distributed:
                    for container in pod_spec["containers"]:
                        if container["name"] == TF_CONTAINER:
                            # tensorflow.go genTFConfigJSONStr: Go's json.Marshal of TFConfig.
                            value = {
                                "cluster": tf_config,
                                "task": {"type": replica_type.lower(), "index": index},
                                "environment": "cloud",
                            }
                            env = container.setdefault("env", [])
                            env.append(
                                {
                                    "name": "TF_CONFIG",
                                    "value": json.dumps(value, separators=(",", ":")),
                                }
                            )
                            break
                metadata = self._new_metadata(namespace, pod_name)
                metadata["labels"] = labels
                metadata["ownerReferences"] = [
                    {
                        "apiVersion": "kubeflow.org/v1",
                        "kind": "TFJob",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ]
                self.pods[(namespace, pod_name)] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": metadata,
                    "spec": pod_spec,
                    "status": {"phase": "Pending"},
                    "_replica": (replica_type, index),  # the stub's own bookkeeping
                }
                self._emit(
                    namespace,
                    Event(
                        "TFJob", name, "SuccessfulCreatePod", f"Created pod: {pod_name}", "Normal"
                    ),
                    "kubeflow.org/v1",
                    job["metadata"]["uid"],
                )

    @staticmethod
    def _cluster_spec(job: dict) -> dict[str, list[str]]:
        """TRAINER pkg/controller.v1/tensorflow/tensorflow.go genClusterSpec: every replica as
        JOB-TYPE-INDEX.NAMESPACE.svc:PORT, the port that of the `tensorflow` container's
        `tfjob-port` (util.go GetPortFromTFJob), else 2222."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        cluster = {}
        for replica_type, spec in job["spec"]["tfReplicaSpecs"].items():
            port = TF_PORT
            for container in spec["template"]["spec"]["containers"]:
                if container["name"] == TF_CONTAINER:
                    for entry in container.get("ports", []):
                        if entry.get("name") == TF_PORT_NAME:
                            port = entry["containerPort"]
            rt = replica_type.lower()
            cluster[rt] = [
                f"{name}-{rt}-{i}.{namespace}.svc:{port}" for i in range(spec.get("replicas", 1))
            ]
        return cluster

    def _get_tfjob(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        job = self.tfjobs.get((namespace, name))
        if job is None:
            return _not_found("tfjobs", "kubeflow.org", name)
        self._reconcile(job, self._scripts[(namespace, name)])
        return 200, job

    def _reconcile(self, job: dict, script: TFJobScript) -> None:
        """One reconcile of the operator, then the job as the API server holds it."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        step = min(script.gets, len(script.conditions) - 1)
        script.gets += 1
        phase = script.conditions[step]
        status_ = job["status"]
        was_finished = _finished(status_["conditions"])
        # TRAINER tfjob_controller.go UpdateJobStatus sets startTime on the first reconcile;
        # pkg/core/job.go PastActiveDeadline (now - startTime >= activeDeadlineSeconds) is checked
        # by common/job.go ReconcileJobs first: the job fails, whatever its pods are doing.
        status_.setdefault("startTime", _now())
        deadline = job["spec"].get("runPolicy", {}).get("activeDeadlineSeconds")
        if (
            deadline is not None
            and not was_finished
            and time.monotonic() - script.started >= deadline
        ):
            phase = "Deadline"
        status_["conditions"] = set_condition(status_["conditions"], *_tf_true(job, phase))
        finished = _finished(status_["conditions"])
        if finished and "completionTime" not in status_:
            status_["completionTime"] = _now()
        if not was_finished and step == len(script.conditions) - 1 and script.gets == step + 1:
            for event in script.events:  # the job has just reached its last phase
                owner = job if event.kind == "TFJob" else self.pods.get((namespace, event.name))
                uid = owner["metadata"]["uid"] if owner else None
                api = "kubeflow.org/v1" if event.kind == "TFJob" else "v1"
                self._emit(namespace, event, api, uid)
        pods = self._pods_of(namespace, name)
        failing = script.failed_worker % len(pods) if pods else 0
        if phase != "Deadline" and not was_finished:
            for pod in pods:
                failed = phase == "Failed" and pod["_replica"][1] == failing
                pod["status"]["phase"] = "Failed" if failed else POD_PHASE[phase]
                if phase == "Failed" and not failed:
                    pod["status"]["phase"] = "Running"
        status_["replicaStatuses"] = self._replica_statuses(job, pods)
        # TRAINER common/job.go DeletePodsAndServices, by cleanPodPolicy once the job has
        # finished (Running: the Running and Pending pods; All: every pod; None: none). A job
        # past its deadline or backoff limit (jobExceedsLimit) is cleaned up in the same
        # reconcile; one that UpdateJobStatus marked finished, in the next.
        exceeded = phase in ("Deadline", "BackoffLimitExceeded")
        if finished and not script.cleaned and (was_finished or exceeded):
            policy = job["spec"].get("runPolicy", {}).get("cleanPodPolicy") or "None"
            for pod in pods:
                running = pod["status"]["phase"] in ("Running", "Pending")
                if policy == "All" or (policy == "Running" and running):
                    del self.pods[(namespace, pod["metadata"]["name"])]
            script.cleaned = True

    @staticmethod
    def _replica_statuses(job: dict, pods: list[dict]) -> dict:
        """TRAINER common/status.go updateJobReplicaStatuses: pods counted by phase."""
        statuses = {replica_type: {} for replica_type in job["spec"]["tfReplicaSpecs"]}
        for pod in pods:
            counts = statuses[pod["_replica"][0]]
            key = {"Running": "active", "Pending": "active", "Succeeded": "succeeded"}.get(
                pod["status"]["phase"], "failed"
            )
            counts[key] = counts.get(key, 0) + 1
        return statuses

    def _patch_tfjob(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        job = self.tfjobs.get((namespace, name))
        if job is None:
            return _not_found("tfjobs", "kubeflow.org", name)
        if request.content_type != "application/merge-patch+json":  # custom resources: no SMP
            return 415, status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json-patch+json, application/merge-patch+json "
                f"(the stub: merge patches only; got {request.content_type})",
            )
        wanted = (request.body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != job["metadata"]["resourceVersion"]:
            return 409, status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on tfjobs.kubeflow.org "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
            )
        patched = merge_patch(job, request.body)
        self._resource_version += 1
        patched["metadata"]["resourceVersion"] = str(self._resource_version)
        patched["metadata"]["uid"] = job["metadata"]["uid"]
        self.tfjobs[(namespace, name)] = patched
        self._collect_garbage()
        return 200, patched

    def _delete_tfjob(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        """Delete the job; its pods go with it unless the policy is Orphan (K8S garbage
        collector: the pods' only owner is gone). No finalizers, so no deletionTimestamp
        phase: the object is gone at once."""
        job = self.tfjobs.get((namespace, name))
        if job is None:
            return _not_found("tfjobs", "kubeflow.org", name)
        policy = request.query.get("propagationPolicy") or (request.body or {}).get(
            "propagationPolicy", "Background"
        )
        del self.tfjobs[(namespace, name)]
        self._scripts.pop((namespace, name), None)
        if policy == "Orphan":
            for pod in self._pods_of(namespace, name):
                pod["metadata"]["ownerReferences"] = []
        self._collect_garbage()
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": "kubeflow.org",
                "kind": "tfjobs",
                "uid": job["metadata"]["uid"],
            },
        }

    def _pods_of(self, namespace: str, job_name: str) -> list[dict]:
        return [
            pod
            for (ns, _), pod in sorted(self.pods.items())
            if ns == namespace and pod["metadata"].get("labels", {}).get(JOB_NAME_LABEL) == job_name
        ]

    # --- Pods, logs, events -------------------------------------------------------------------

    def _list(self, kind: str, items: list[dict], query: dict[str, str]) -> tuple[int, dict]:
        try:
            labels = _selector(query.get("labelSelector", ""))
            fields = _selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            return _bad_request(str(exc))
        found = [
            {k: v for k, v in item.items() if not k.startswith("_")}
            for item in items
            if _matches(labels, item["metadata"].get("labels", {}).get)
            and _matches(fields, lambda key, item=item: _field(item, key))
        ]
        return 200, {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": found,
        }

    def _list_pods(self, request: Request, namespace: str) -> tuple[int, dict]:
        pods = [pod for (ns, _), pod in sorted(self.pods.items()) if ns == namespace]
        return self._list("PodList", pods, request.query)

    def _delete_pod(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        pod = self.pods.pop((namespace, name), None)
        if pod is None:
            return _not_found("pods", "", name)
        self._collect_garbage()
        return 200, {k: v for k, v in pod.items() if not k.startswith("_")}

    def _list_events(self, request: Request, namespace: str) -> tuple[int, dict]:
        events = [e for e in self.events if e["metadata"]["namespace"] == namespace]
        return self._list("EventList", events, request.query)

    def _pod_log(self, request: Request, namespace: str, name: str) -> tuple[int, dict | str]:
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _not_found("pods", "", name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = request.query.get("container")
        if container is None and len(containers) == 1:
            container = containers[0]
        if container not in containers:
            return _bad_request(f"container {container} is not valid for pod {name}")
        if pod["status"]["phase"] == "Pending":
            return _bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        replica_type, index = pod["_replica"]
        script = self._scripts[(namespace, pod["metadata"]["labels"][JOB_NAME_LABEL])]
        # follow=true: the whole log, then the end of the stream (the container has exited).
        return 200, script.logs.get(index, "") if replica_type == "Worker" else ""

    # --- Deployments --------------------------------------------------------------------------

    def _patch_deployment(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        deployment = self.deployments.get((namespace, name))
        if deployment is None:
            return _not_found("deployments", "apps", name)
        try:
            if request.content_type == "application/json-patch+json":
                if not isinstance(request.body, list):
                    return _bad_request("a JSON patch is a list of operations")
                patched = json_patch(deployment, request.body)
            elif not isinstance(request.body, dict):
                return _bad_request("the patch is not a JSON object")
            elif request.content_type == "application/strategic-merge-patch+json":
                patched = strategic_merge(deployment, request.body, MERGE_KEYS)
            elif request.content_type == "application/merge-patch+json":
                patched = merge_patch(deployment, request.body)
            else:
                return 415, status(
                    415,
                    "UnsupportedMediaType",
                    f"the stub does not implement PATCH with Content-Type {request.content_type}",
                )
        except PatchTestFailed as exc:
            return 422, status(422, "Invalid", str(exc))
        patched["metadata"]["name"], patched["metadata"]["namespace"] = name, namespace
        if patched["spec"] != deployment["spec"]:
            patched["metadata"]["generation"] = deployment["metadata"]["generation"] + 1
        if patched["spec"]["template"] != deployment["spec"]["template"]:
            self._new_revision(namespace, name, patched)
        self._resource_version += 1
        patched["metadata"]["resourceVersion"] = str(self._resource_version)
        patched["status"] = deployment["status"]
        self.deployments[(namespace, name)] = patched
        return 200, patched

    def _new_revision(self, namespace: str, name: str, deployment: dict) -> None:
        """K8S sync.go getNewReplicaSet, via deployment_util.go FindNewReplicaSet: a template
        equal to one a ReplicaSet of the Deployment already has is that ReplicaSet (revision
        bumped, its pods still there: rollback.go and kubectl's rollback restore a revision this
        way); any other template is a new ReplicaSet, with pods still to start."""
        history = self._history[(namespace, name)]
        template = deployment["spec"]["template"]
        rollout = self._rollouts[(namespace, name)]
        rollout.known = template in history
        if not rollout.known:
            history.append(copy.deepcopy(template))
        revision = int(deployment["metadata"]["annotations"].get(REVISION_ANNOTATION, "1")) + 1
        deployment["metadata"]["annotations"][REVISION_ANNOTATION] = str(revision)
        rollout.gets_since_change = 0

    def _get_deployment(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        deployment = self.deployments.get((namespace, name))
        if deployment is None:
            return _not_found("deployments", "apps", name)
        rollout = self._rollouts[(namespace, name)]
        generation = deployment["metadata"]["generation"]
        if rollout.gets_since_change is None:
            deployment["status"]["observedGeneration"] = generation
            return 200, deployment
        rollout.gets_since_change += 1
        gets = rollout.gets_since_change
        ready_on = 2 if rollout.known else rollout.rollout_gets
        if gets == 1:  # the controller has not seen the new generation yet: status unchanged
            return 200, deployment
        if ready_on is not None and gets >= ready_on:
            deployment["status"] = self._complete(deployment, generation)
            rollout.gets_since_change = None
        else:
            deployment["status"] = self._rolling(
                deployment, gets, stuck=ready_on is None, timed_out=gets > rollout.deadline_gets
            )
        return 200, deployment

    def _replica_set(self, deployment: dict) -> str:
        """The new ReplicaSet's name: DEPLOYMENT-HASH (a hash of the template; not the
        pod-template-hash function upstream uses)."""
        digest = hashlib.sha256(json.dumps(deployment["spec"]["template"], sort_keys=True).encode())
        return f"{deployment['metadata']['name']}-{digest.hexdigest()[:10]}"

    def _complete(self, deployment: dict, observed: int) -> dict:
        """K8S progress.go syncRolloutStatus once deployment_util.go DeploymentComplete holds:
        Progressing True, NewReplicaSetAvailable, 'ReplicaSet "X" has successfully
        progressed.'"""
        replicas = deployment["spec"]["replicas"]
        return {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                _available(),
                _condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{self._replica_set(deployment)}" has successfully progressed.',
                ),
            ],
        }

    def _rolling(self, deployment: dict, gets: int, *, stuck: bool, timed_out: bool) -> dict:
        """Mid-update with maxSurge 1, maxUnavailable 0: one new pod at a time, the old ones all
        serving. K8S progress.go: Progressing True ReplicaSetUpdated while there is progress
        (deployment_util.go DeploymentProgressing); when a stuck rollout has shown none for
        progressDeadlineSeconds (DeploymentTimedOut), Progressing False
        ProgressDeadlineExceeded, 'ReplicaSet "X" has timed out progressing.'."""
        replicas = deployment["spec"]["replicas"]
        updated = 1 if stuck else max(1, min(gets - 1, replicas - 1))
        rs = self._replica_set(deployment)
        if stuck and timed_out:
            progressing = _condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs}" has timed out progressing.',
            )
        else:
            progressing = _condition(
                "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.'
            )
        return {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas + 1,
            "updatedReplicas": updated,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": 1,
            "conditions": [
                _available(),
                progressing,
            ],
        }

    # ------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ------------------------------------------------------------------------------------------

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                path, query, raw = read_request(self)
                content_type = self.headers.get("Content-Type")
                try:
                    body = json.loads(raw) if raw else None
                    request = Request(self.command, path, query, content_type, body)
                    code, payload = stub.answer(request, self.headers.get("Authorization"))
                except Exception as exc:  # a request the stub cannot answer: say so, loudly
                    code, payload = 500, status(500, "InternalError", repr(exc))
                if isinstance(payload, str):
                    data, kind = payload.encode(), "text/plain"
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                self.send_response_only(code)
                # The headers a real API server sends with every answer (and no Server header).
                self.send_header("Date", self.date_time_string())
                self.send_header("Audit-Id", str(uuid.uuid4()))
                self.send_header("Cache-Control", "no-cache, private")
                self.send_header("Content-Type", kind)
                self.send_header("X-Kubernetes-Pf-Flowschema-Uid", str(uuid.uuid4()))
                self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, format, *args):  # noqa: A002 - http.server's signature
                pass  # the requests are recorded; no access log on stderr

        return Handler


def _available() -> dict:
    """K8S sync.go syncDeploymentStatus: Available while at least the minimum are available."""
    return _condition(
        "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
    )


def _condition(kind: str, state: str, reason: str, message: str) -> dict:
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "lastUpdateTime": _now(),
        "lastTransitionTime": _now(),
    }
