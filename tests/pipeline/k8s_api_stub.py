"""A stand-in for the Kubernetes API server, on 127.0.0.1, for the pipeline's cluster steps.

There is no cluster in the test environment, and `run_tfjob` and `roll_deployment` must still
go through the real kubeflow-training SDK and `kubernetes` client, unpatched. So this server
speaks plain HTTP on a free port (`write_kubeconfig` points a kubeconfig with a token user at
it) and answers the requests those clients send, in the API server's JSON shapes:

    POST  /apis/kubeflow.org/v1/namespaces/NS/tfjobs          create a TFJob (201, or 409/400)
    GET   /apis/kubeflow.org/v1/namespaces/NS/tfjobs/NAME     the TFJob and its status
    GET   /api/v1/namespaces/NS/pods?labelSelector=...        the job's pods, by label
    GET   /api/v1/namespaces/NS/pods/POD/log?container=...    a container's log (also follow=true)
    GET   /api/v1/namespaces/NS/events?fieldSelector=...      the namespace's events
    PATCH /apis/apps/v1/namespaces/NS/deployments/NAME        strategic-merge or merge patch
    GET   /apis/apps/v1/namespaces/NS/deployments/NAME        the Deployment and its status

What the controllers would do is scripted, not simulated. A TFJob's conditions advance one
step per GET of the job through the sequence the test gives (`script_tfjob`), with the
Training Operator's rules for the condition list (Running and Restarting replace each other; a
final Succeeded or Failed turns Running to False); its pods exist from creation on, named and
labelled as the operator names them (worker 0 is the chief, `job-role=master`, when there is no
Chief replica), in the phase that goes with the job's latest condition. The test's events are
emitted when the job reaches its last step; the operator's own `SuccessfulCreatePod` events at
creation. A Deployment's status after a spec change first shows the previous generation (the
controller has not seen the change yet), then a rolling update in progress (one surge pod, all
old pods available), and is complete at the new observedGeneration on the `rollout_gets`-th GET
after the patch, or never (`rollout_gets=None`: stuck, ProgressDeadlineExceeded).

Requests must carry the kubeconfig's bearer token (else 401). What it does not do: TLS,
watches, set-based label selectors, JSON patch (415, said so), other resources or verbs,
admission or schema validation. Every request is kept (`requests`), including those it cannot
answer: an unknown path is a 404 with a Kubernetes Status body, so a test sees a call it did
not expect.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import yaml

from .loopback_server import LoopbackServer, read_request

TFJOBS = "/apis/kubeflow.org/v1/namespaces/(?P<namespace>[^/]+)/tfjobs"
PODS = "/api/v1/namespaces/(?P<namespace>[^/]+)/pods"
EVENTS = "/api/v1/namespaces/(?P<namespace>[^/]+)/events"
DEPLOYMENTS = "/apis/apps/v1/namespaces/(?P<namespace>[^/]+)/deployments"
NAME = "/(?P<name>[^/]+)"

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"

# The pod phase that goes with a TFJob's latest condition.
POD_PHASE = {
    "Created": "Pending",
    "Running": "Running",
    "Restarting": "Running",
    "Succeeded": "Succeeded",
    "Failed": "Failed",
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
    """What the Training Operator and the pods will do with a TFJob of this name."""

    conditions: tuple[str, ...] = ("Created",)  # the latest condition at the 1st, 2nd... GET
    logs: dict[int, str] = field(default_factory=dict)  # worker index -> container log
    events: tuple[Event, ...] = ()  # emitted when the job reaches its last condition
    gets: int = 0  # GETs of the job so far


@dataclass
class Rollout:
    """How the Deployment controller will progress a Deployment after a spec change."""

    rollout_gets: int | None  # complete on this GET after the change; None: never
    gets_since_change: int | None = None  # None: no change since the last complete rollout


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


# apps/v1 PodSpec and Container merge keys (from the API's patchMergeKey tags).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class K8sApiStub(LoopbackServer):
    """The server; use as a context manager. `url` is its http://127.0.0.1:PORT address."""

    def __init__(self, token: str = "test-token"):
        self.token = token
        self.requests: list[Request] = []
        self.tfjobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.events: list[dict] = []
        self.deployments: dict[tuple[str, str], dict] = {}
        self._scripts: dict[tuple[str, str], TFJobScript] = {}
        self._rollouts: dict[tuple[str, str], Rollout] = {}
        self._resource_version = 1000
        self._lock = threading.Lock()
        super().__init__(self._handler())
        self._routes = [
            ("POST", TFJOBS, self._create_tfjob),
            ("GET", TFJOBS + NAME, self._get_tfjob),
            ("GET", PODS, self._list_pods),
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
    # What the tests script
    # ------------------------------------------------------------------------------------------

    def script_tfjob(self, namespace: str, name: str, **script) -> None:
        """What happens to the TFJob `namespace/name` once it is created (see TFJobScript)."""
        self._scripts[(namespace, name)] = TFJobScript(**script)

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 3,
        env: list[dict] | None = None,
        rollout_gets: int | None = 2,
    ) -> None:
        """A Deployment of `replicas` pods of one container `server`, fully rolled out."""
        labels = {"app.kubernetes.io/name": name}
        self.deployments[(namespace, name)] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **self._new_metadata(namespace, name),
                "generation": 1,
                "labels": dict(labels),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
                "progressDeadlineSeconds": 600,
                "template": {
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
                },
            },
        }
        self._rollouts[(namespace, name)] = Rollout(rollout_gets)

    def requests_to(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

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
        self.tfjobs[(namespace, name)] = job
        self._scripts.setdefault((namespace, name), TFJobScript())
        self._create_pods(job)
        return 201, job

    def _create_pods(self, job: dict) -> None:
        """The pods the Training Operator creates for the job, with its names and labels."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        specs = job["spec"]["tfReplicaSpecs"]
        has_chief = "Chief" in specs or "Master" in specs
        for replica_type, spec in specs.items():
            for index in range(spec.get("replicas", 1)):
                pod_name = f"{name}-{replica_type.lower()}-{index}"
                template = copy.deepcopy(spec["template"])
                labels = {
                    **template.get("metadata", {}).get("labels", {}),
                    "training.kubeflow.org/operator-name": "tfjob-controller",
                    JOB_NAME_LABEL: name,
                    REPLICA_TYPE_LABEL: replica_type.lower(),
                    REPLICA_INDEX_LABEL: str(index),
                }
                chief = replica_type in ("Chief", "Master") or (
                    not has_chief and replica_type == "Worker" and index == 0
                )
                if chief:
                    labels[JOB_ROLE_LABEL] = "master"
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
                    "spec": template["spec"],
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

    def _get_tfjob(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        job = self.tfjobs.get((namespace, name))
        if job is None:
            return _not_found("tfjobs", "kubeflow.org", name)
        script = self._scripts[(namespace, name)]
        step = min(script.gets, len(script.conditions) - 1)
        script.gets += 1
        reached = script.conditions[: step + 1]
        latest = reached[-1]
        if step == len(script.conditions) - 1 and script.gets == step + 1:
            for event in script.events:  # the job has just reached its last step
                owner = job if event.kind == "TFJob" else self.pods.get((namespace, event.name))
                uid = owner["metadata"]["uid"] if owner else None
                api = "kubeflow.org/v1" if event.kind == "TFJob" else "v1"
                self._emit(namespace, event, api, uid)
        for pod in self._pods_of(namespace, name):
            pod["status"]["phase"] = POD_PHASE[latest]
        job["status"] = self._tfjob_status(job, reached)
        return 200, job

    def _tfjob_status(self, job: dict, reached: tuple[str, ...]) -> dict:
        """The status the operator writes, its condition list kept by the operator's rules."""
        conditions: list[dict] = []
        for kind in reached:
            kept = []
            for c in conditions:
                if c["type"] == kind or {c["type"], kind} == {"Running", "Restarting"}:
                    continue  # replaced
                if kind in ("Succeeded", "Failed") and c["type"] == "Running":
                    c = {**c, "status": "False"}
                kept.append(c)
            name = job["metadata"]["name"]
            kept.append(
                {
                    "type": kind,
                    "status": "True",
                    "reason": f"TFJob{kind}",
                    "message": f"TFJob {job['metadata']['namespace']}/{name} is {kind.lower()}.",
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                }
            )
            conditions = kept
        latest = reached[-1]
        counts = {"Running": "active", "Restarting": "active", "Succeeded": "succeeded"}
        replica_statuses = {}
        for replica_type, spec in job["spec"]["tfReplicaSpecs"].items():
            replicas = spec.get("replicas", 1)
            if latest == "Failed":
                replica_statuses[replica_type] = {"failed": 1, "active": replicas - 1}
            elif latest in counts:
                replica_statuses[replica_type] = {counts[latest]: replicas}
            else:
                replica_statuses[replica_type] = {}
        status_ = {"conditions": conditions, "replicaStatuses": replica_statuses}
        if latest != "Created":
            status_["startTime"] = job["metadata"]["creationTimestamp"]
        if latest in ("Succeeded", "Failed"):
            status_["completionTime"] = _now()
        return status_

    def _pods_of(self, namespace: str, job_name: str) -> list[dict]:
        return [
            pod
            for (ns, _), pod in sorted(self.pods.items())
            if ns == namespace and pod["metadata"]["labels"].get(JOB_NAME_LABEL) == job_name
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
        if not isinstance(request.body, dict):
            return _bad_request("the patch is not a JSON object")
        if request.content_type == "application/strategic-merge-patch+json":
            patched = strategic_merge(deployment, request.body, MERGE_KEYS)
        elif request.content_type == "application/merge-patch+json":
            patched = merge_patch(deployment, request.body)
        else:
            return 415, status(
                415,
                "UnsupportedMediaType",
                f"the stub does not implement PATCH with Content-Type {request.content_type}",
            )
        patched["metadata"]["name"], patched["metadata"]["namespace"] = name, namespace
        if patched["spec"] != deployment["spec"]:
            patched["metadata"]["generation"] = deployment["metadata"]["generation"] + 1
            self._rollouts[(namespace, name)].gets_since_change = 0
        self._resource_version += 1
        patched["metadata"]["resourceVersion"] = str(self._resource_version)
        patched["status"] = deployment.get("status") or self._complete(patched, 1)
        self.deployments[(namespace, name)] = patched
        return 200, patched

    def _get_deployment(self, request: Request, namespace: str, name: str) -> tuple[int, dict]:
        deployment = self.deployments.get((namespace, name))
        if deployment is None:
            return _not_found("deployments", "apps", name)
        rollout = self._rollouts[(namespace, name)]
        generation = deployment["metadata"]["generation"]
        if rollout.gets_since_change is None:
            deployment["status"] = self._complete(deployment, generation)
            return 200, deployment
        rollout.gets_since_change += 1
        gets = rollout.gets_since_change
        if rollout.rollout_gets is not None and gets >= rollout.rollout_gets:
            deployment["status"] = self._complete(deployment, generation)
            rollout.gets_since_change = None
        elif gets == 1:  # the controller has not seen the new generation yet
            deployment["status"] = self._complete(deployment, generation - 1)
        else:
            deployment["status"] = self._rolling(
                deployment, gets, stuck=rollout.rollout_gets is None
            )
        return 200, deployment

    @staticmethod
    def _complete(deployment: dict, observed: int) -> dict:
        replicas = deployment["spec"]["replicas"]
        return {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                _condition("Available", "True", "MinimumReplicasAvailable"),
                _condition("Progressing", "True", "NewReplicaSetAvailable"),
            ],
        }

    @staticmethod
    def _rolling(deployment: dict, gets: int, *, stuck: bool) -> dict:
        """Mid-update with one surge pod not ready yet; the old pods all still serve."""
        replicas = deployment["spec"]["replicas"]
        updated = 1 if stuck else max(1, min(gets - 1, replicas - 1))
        progressing = (
            _condition("Progressing", "False", "ProgressDeadlineExceeded")
            if stuck
            else _condition("Progressing", "True", "ReplicaSetUpdated")
        )
        return {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas + 1,
            "updatedReplicas": updated,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": 1,
            "conditions": [
                _condition("Available", "True", "MinimumReplicasAvailable"),
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


DEPLOYMENT_MESSAGES = {
    "MinimumReplicasAvailable": "Deployment has minimum availability.",
    "NewReplicaSetAvailable": "ReplicaSet has successfully progressed.",
    "ReplicaSetUpdated": "ReplicaSet is progressing.",
    "ProgressDeadlineExceeded": "ReplicaSet has timed out progressing.",
}


def _condition(kind: str, state: str, reason: str) -> dict:
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": DEPLOYMENT_MESSAGES[reason],
        "lastUpdateTime": _now(),
        "lastTransitionTime": _now(),
    }
