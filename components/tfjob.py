"""The TFJob that trains kubedetect on a cluster: built, submitted, watched, explained, cleaned up.

The job runs `python -m kubedetect.training.train` (the same entrypoint as the local launcher) in N
Worker replicas. The Training Operator v1 gives each pod its TF_CONFIG (only to the container
named `tensorflow`, and only when there is more than one replica); with no Chief replica,
worker 0 is the chief, and the job succeeds when it exits 0. Pods restart on failure and resume
from the latest checkpoint on the workspace volume.

Its lifecycle, so that no GPU pod outlives the pipeline step that asked for it:
- `runPolicy.activeDeadlineSeconds`: the operator fails the job (and stops its pods) when it runs
  too long, even if nobody is watching; the step waits that long and a minute more.
- The step deletes the job when the job fails, when the step's wait times out, and when the step
  is terminated (SIGTERM: a run cancelled in KFP).
- The job names the step's pod as its owner (from the downward API, components/steppod.py): when
  the pod is deleted, Kubernetes' garbage collector deletes the job and its pods, whatever
  happened to the step (SIGKILL, a lost node).
- A retried step (same run, so the same job name) finds its job: it follows one that is still
  running, adding its own pod to the owners; it replaces one that has finished, and the new job
  resumes from the run's checkpoints, which are kept per run, not per attempt.

Built with the kubeflow-training SDK's models (tests validate the object against the operator's
CRD schema) and sent through its TrainingClient's API connection.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable

from kubernetes import client as k8s

from components.apierrors import one_line as _one_line
from kubedetect.config import ClusterConfig, gpu_model_size
from kubedetect.errors import KubedetectError

CONTAINER = "tensorflow"  # the only container the operator gives TF_CONFIG to
PORT = 2222  # the operator's default tfjob-port
LABELS = {"app.kubernetes.io/part-of": "kubedetect", "app.kubernetes.io/component": "training"}
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
GRACE_SECONDS = 60  # past activeDeadlineSeconds, for the operator's own verdict to arrive
GONE_SECONDS = 120  # how long a replaced job may take to disappear


class TrainingJobError(KubedetectError):
    """A TFJob that could not be created, failed, or did not finish in time."""


class StepTerminated(BaseException):
    """The step was asked to stop (SIGTERM) while its TFJob ran. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


def _models():
    from kubeflow.training import models  # noqa: PLC0415 - only the cluster path needs the SDK

    return models


def build_tfjob(
    name: str,
    train_argv: list[str],
    workers: int,
    cluster: ClusterConfig,
    *,
    owner: dict | None = None,
):
    """The TFJob object: `workers` replicas of the training entrypoint with `train_argv`,
    owned by `owner` (an ownerReference, see components/steppod.py) if given."""
    if workers < 1:
        raise KubedetectError(f"a TFJob needs at least one worker, got {workers}")
    models = _models()
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": cluster.worker_cpu, "memory": cluster.worker_memory},
        limits={"memory": cluster.worker_memory},
    )
    args = gpu_model_size(train_argv, cluster.gpus_per_worker)  # GPU pods: the large model
    node_selector, tolerations = None, None
    if cluster.gpus_per_worker > 0:
        resources.requests["nvidia.com/gpu"] = str(cluster.gpus_per_worker)
        resources.limits["nvidia.com/gpu"] = str(cluster.gpus_per_worker)
        key, _, value = cluster.gpu_node_selector.partition("=")
        node_selector = {key: value} if key else None
        tolerations = [
            k8s.V1Toleration(key=cluster.gpu_toleration, operator="Exists", effect="NoSchedule")
        ]
        if "--require-gpus" not in args:  # a worker that sees no GPU stops instead of crawling
            args += ["--require-gpus", str(cluster.gpus_per_worker)]
    container = k8s.V1Container(
        name=CONTAINER,
        image=cluster.worker_image(),
        command=["python", "-m", "kubedetect.training.train"],
        args=args,
        ports=[k8s.V1ContainerPort(name="tfjob-port", container_port=PORT)],
        env=[
            k8s.V1EnvVar(name="TF_CPP_MIN_LOG_LEVEL", value="2"),
            # No CPU limit (a quota would throttle the collective ops), so the cgroup says
            # nothing: the request is how many cores the worker's pools may use.
            k8s.V1EnvVar(
                name="KUBEDETECT_CPUS",
                value_from=k8s.V1EnvVarSource(
                    resource_field_ref=k8s.V1ResourceFieldSelector(
                        container_name=CONTAINER, resource="requests.cpu", divisor="1"
                    )
                ),
            ),
        ],
        resources=resources,
        volume_mounts=[
            k8s.V1VolumeMount(name="workspace", mount_path=cluster.workspace_mount),
            # NCCL and the collective ops want more shared memory than a container's 64 MB.
            k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
    )
    pod = k8s.V1PodSpec(
        containers=[container],
        service_account_name=cluster.trainer_service_account,
        automount_service_account_token=False,
        volumes=[
            k8s.V1Volume(
                name="workspace",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=cluster.workspace_pvc
                ),
            ),
            k8s.V1Volume(
                name="dshm",
                empty_dir=k8s.V1EmptyDirVolumeSource(
                    medium="Memory", size_limit=cluster.worker_shm
                ),
            ),
        ],
        node_selector=node_selector,
        tolerations=tolerations,
        image_pull_secrets=(
            [k8s.V1LocalObjectReference(name=cluster.image_pull_secret)]
            if cluster.image_pull_secret
            else None
        ),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            run_as_group=10001,
            fs_group=10001,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    template = k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(
            labels=dict(LABELS), annotations={"sidecar.istio.io/inject": "false"}
        ),
        spec=pod,
    )
    return models.KubeflowOrgV1TFJob(
        api_version="kubeflow.org/v1",
        kind="TFJob",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=cluster.namespace,
            labels=dict(LABELS),
            owner_references=[k8s.V1OwnerReference(**_snake(owner))] if owner else None,
        ),
        spec=models.KubeflowOrgV1TFJobSpec(
            run_policy=models.KubeflowOrgV1RunPolicy(
                # Running: stop workers still running when the job ends; keep finished pods
                # (and their logs) until the TTL removes the job. (The operator's default is
                # None: every pod would stay.)
                clean_pod_policy="Running",
                backoff_limit=cluster.job_backoff_limit,
                active_deadline_seconds=cluster.job_timeout_seconds,
                ttl_seconds_after_finished=cluster.job_ttl_seconds,
            ),
            tf_replica_specs={
                "Worker": models.KubeflowOrgV1ReplicaSpec(
                    replicas=workers, restart_policy="OnFailure", template=template
                )
            },
        ),
    )


def _snake(reference: dict) -> dict:
    """An ownerReference's JSON keys as the client's model takes them."""
    names = {"apiVersion": "api_version", "blockOwnerDeletion": "block_owner_deletion"}
    return {names.get(key, key): value for key, value in reference.items()}


def to_manifest(job) -> dict:
    """The job as the plain dict that `kubectl apply` and the CRD schema see."""
    return k8s.ApiClient().sanitize_for_serialization(job)


def to_yaml(job) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump(to_manifest(job), sort_keys=False)


def run_tfjob(
    job,
    *,
    kubeconfig: str | None = None,
    timeout_seconds: float | None = None,
    poll_seconds: float = 10,
    log: Callable[[str], None] = print,
    owner: dict | None = None,
) -> None:
    """Submit the job (or find it, for a retried step), wait for it, stream the chief's logs;
    raise TrainingJobError on failure, having deleted the job.

    `timeout_seconds` defaults to the job's activeDeadlineSeconds and GRACE_SECONDS. `owner`,
    an ownerReference to the step's pod, is added to a job found from an earlier attempt (a new
    job carries it from build_tfjob). Every failure names the job and the API endpoint, and a
    failed job's error carries its reason, the workers' last log lines and the job's events.
    """
    from kubeflow.training import TrainingClient  # noqa: PLC0415

    name, namespace = job.metadata.name, job.metadata.namespace
    where = f"TFJob {namespace}/{name}"
    try:
        training = TrainingClient(config_file=kubeconfig, namespace=namespace, job_kind="TFJob")
    except Exception as exc:  # no kubeconfig, no in-cluster credentials
        raise TrainingJobError(f"{where}: no Kubernetes configuration ({_one_line(exc)})") from None
    endpoint = training.custom_api.api_client.configuration.host
    where = f"{where} at {endpoint}"
    if timeout_seconds is None:
        timeout_seconds = (job.spec.run_policy.active_deadline_seconds or 0) + GRACE_SECONDS
    jobs = _Jobs(training.custom_api, namespace, name, where)
    submitted = False
    with _sigterm_raises(where):
        try:
            _submit(jobs, job, owner, log, poll_seconds)
            submitted = True
            _wait(training, jobs, timeout_seconds, poll_seconds, log)
        except BaseException as exc:
            if submitted or isinstance(exc, StepTerminated):
                _clean_up(jobs, exc, log)
            raise


class _Jobs:
    """The TFJob `name` through the API server's custom-objects endpoints (raising
    ApiException, whose status tells a conflict from a missing job)."""

    def __init__(self, api, namespace: str, name: str, where: str):
        self.api, self.namespace, self.name, self.where = api, namespace, name, where

    def _args(self):
        return GROUP, VERSION, self.namespace, PLURAL

    def create(self, manifest: dict) -> dict:
        return self.api.create_namespaced_custom_object(*self._args(), manifest)

    def get(self) -> dict:
        return self.api.get_namespaced_custom_object(*self._args(), self.name)

    def delete(self) -> None:
        # Background: the job goes at once; the garbage collector then removes its pods (they
        # are its dependents: the operator makes it their controller owner).
        self.api.delete_namespaced_custom_object(
            *self._args(), self.name, propagation_policy="Background"
        )

    def add_owner(self, owner: dict) -> None:
        """Add `owner` to the job's ownerReferences (a merge patch replaces the list, so it is
        sent whole, with the resourceVersion it was read at: a concurrent change is a 409)."""
        for _ in range(3):
            current = self.get()
            references = current["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner["uid"] for ref in references):
                return
            patch = {
                "metadata": {
                    "ownerReferences": [*references, owner],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
            }
            try:
                self.api.patch_namespaced_custom_object(*self._args(), self.name, patch)
                return
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise
        raise TrainingJobError(f"{self.where}: kept changing while its owner was added")

    def wait_gone(self, poll_seconds: float) -> None:
        deadline = time.monotonic() + GONE_SECONDS
        while time.monotonic() < deadline:
            try:
                self.get()
            except k8s.ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(min(poll_seconds, 2.0))
        raise TrainingJobError(f"{self.where}: still there {GONE_SECONDS} s after its deletion")


def _true_conditions(manifest: dict) -> dict[str, dict]:
    """The job's conditions that hold (status "True"), by type."""
    conditions = (manifest.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def _submit(jobs: _Jobs, job, owner: dict | None, log, poll_seconds: float) -> None:
    """Create the job; if this run's job exists already (a retried step), follow it while it
    runs, or replace it once it has finished."""
    manifest = to_manifest(job)
    replicas = manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    log(f"creating {jobs.where} with {replicas} workers")
    try:
        jobs.create(manifest)
        return
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise TrainingJobError(
                f"{jobs.where}: could not be created ({_one_line(exc)})"
            ) from None
    except Exception as exc:  # the API server cannot be reached
        raise TrainingJobError(f"{jobs.where}: could not be created ({_one_line(exc)})") from None
    try:
        existing = jobs.get()
        done = [kind for kind in ("Succeeded", "Failed") if kind in _true_conditions(existing)]
        if existing["metadata"].get("deletionTimestamp"):
            log(f"{jobs.where} is being deleted; waiting to create it again")
        elif done:
            log(
                f"{jobs.where} exists from an earlier attempt of this step and has "
                f"{done[0].lower()}: replacing it (the new job resumes from the run's checkpoints)"
            )
            jobs.delete()
        else:
            log(
                f"{jobs.where} exists from an earlier attempt of this step and is still running: "
                "following it instead of starting another"
            )
            if owner:
                jobs.add_owner(owner)
            return
        jobs.wait_gone(poll_seconds)
        jobs.create(manifest)
    except k8s.ApiException as exc:
        raise TrainingJobError(
            f"{jobs.where}: exists already and could not be taken over ({_one_line(exc)})"
        ) from None


def _wait(training, jobs: _Jobs, timeout_seconds: float, poll_seconds: float, log) -> None:
    """Follow the job to its end; raise TrainingJobError if it fails or outlasts the timeout."""
    deadline = time.monotonic() + timeout_seconds
    streamed = False
    while True:
        try:
            conditions = _true_conditions(jobs.get())
        except Exception as exc:
            raise TrainingJobError(f"{jobs.where}: lost contact ({_one_line(exc)})") from None
        if "Failed" in conditions:
            reason = conditions["Failed"].get("message") or "no reason given"
            raise TrainingJobError(
                f"{jobs.where} failed: {reason}\n"
                f"{_diagnostics(training, jobs.name, jobs.namespace)}"
            )
        if "Succeeded" in conditions:
            log(f"{jobs.where} succeeded")
            return
        if not streamed and "Running" in conditions:
            streamed = _stream_chief_log(training, jobs.name, jobs.namespace, deadline, log)
            continue
        if time.monotonic() > deadline:
            raise TrainingJobError(
                f"{jobs.where}: not finished after {timeout_seconds:g} s "
                f"(conditions: {sorted(conditions)})"
            )
        time.sleep(poll_seconds)


def _clean_up(jobs: _Jobs, cause: BaseException, log) -> None:
    """Delete the job after `cause` ended the step: its pods must not hold GPUs any longer."""
    why = "the step was terminated" if isinstance(cause, StepTerminated) else "the step failed"
    try:
        jobs.delete()
        log(f"deleted {jobs.where} ({why}): its pods are being removed")
    except k8s.ApiException as exc:
        if exc.status != 404:
            log(f"could not delete {jobs.where} ({why}): {_one_line(exc)}")
    except Exception as exc:  # the API server is gone too: say so, keep the first error
        log(f"could not delete {jobs.where} ({why}): {_one_line(exc)}")


@contextlib.contextmanager
def _sigterm_raises(where: str):
    """Turn SIGTERM (KFP cancelling the run, a node draining) into StepTerminated while the job
    is submitted and watched, so that the clean-up above runs. Only the main thread can handle
    signals; elsewhere the ownerReference is the only clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up, not one per signal
        raise StepTerminated(f"{where}: the step was terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream_chief_log(training, name: str, namespace: str, deadline: float, log) -> bool:
    """Follow the chief's log line by line into `log` until its container exits (or the job's
    deadline passes); True once it has been followed. The SDK's own follow mode prints to
    stdout instead of handing the lines over, and waits without a deadline."""
    pods = training.get_job_pod_names(name=name, namespace=namespace, is_master=True)
    if not pods:
        return False  # Running, but the chief's pod is not listed yet: try again next poll
    try:
        response = training.core_api.read_namespaced_pod_log(
            pods[0],
            namespace,
            container=CONTAINER,
            follow=True,
            _preload_content=False,
            _request_timeout=max(1.0, deadline - time.monotonic()),
        )
        for line in response.stream(decode_content=True):
            for text in line.decode("utf-8", "replace").splitlines():
                log(f"[{pods[0]}] {text}")
    except Exception as exc:  # a log that cannot be followed does not fail the job
        log(f"({pods[0]}: log not followed: {_one_line(exc)})")
    return True


def _diagnostics(training, name: str, namespace: str) -> str:
    """The last log lines of every worker and the events of the job and its pods."""
    lines: list[str] = []
    try:
        logs, events = training.get_job_logs(
            name=name, namespace=namespace, is_master=False, verbose=True
        )
    except Exception as exc:
        return f"(logs unavailable: {_one_line(exc)})"
    for pod, text in sorted(logs.items()):
        lines.append(f"--- {pod} (last 20 lines)")
        lines += text.splitlines()[-20:]
    for obj, items in sorted(events.items()):
        lines.append(f"--- events of {obj}")
        lines += [str(item) for item in items[-10:]]
    return "\n".join(lines)


def job_name(run_name: str) -> str:
    """A TFJob name for a pipeline run: DNS-1123, at most 63 characters, stable per run."""
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    return f"kubedetect-{slug[:40].strip('-')}-{digest}".replace("--", "-")
