"""The TFJob that trains kubedetect on a cluster: built, submitted, watched, explained.

The job runs `python -m kubedetect.train` (the same entrypoint as the local launcher) in N
Worker replicas. The Training Operator v1 gives each pod its TF_CONFIG (only to the container
named `tensorflow`, and only when there is more than one replica); with no Chief replica,
worker 0 is the chief, and the job succeeds when it exits 0. Pods restart on failure and resume
from the latest checkpoint on the workspace volume.

Built with the kubeflow-training SDK's models and submitted with its `TrainingClient`, so the
object is the one the operator's CRD schema expects (tests validate it against that schema).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client as k8s

from components.apierrors import one_line as _one_line
from kubedetect.config import ClusterConfig
from kubedetect.errors import KubedetectError

CONTAINER = "tensorflow"  # the only container the operator gives TF_CONFIG to
PORT = 2222  # the operator's default tfjob-port
LABELS = {"app.kubernetes.io/part-of": "kubedetect", "app.kubernetes.io/component": "training"}


class TrainingJobError(KubedetectError):
    """A TFJob that could not be created, failed, or did not finish in time."""


def _models():
    from kubeflow.training import models  # noqa: PLC0415 - only the cluster path needs the SDK

    return models


def build_tfjob(name: str, train_argv: list[str], workers: int, cluster: ClusterConfig):
    """The TFJob object: `workers` replicas of the training entrypoint with `train_argv`."""
    if workers < 1:
        raise KubedetectError(f"a TFJob needs at least one worker, got {workers}")
    models = _models()
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": cluster.worker_cpu, "memory": cluster.worker_memory},
        limits={"memory": cluster.worker_memory},
    )
    node_selector, tolerations = None, None
    if cluster.gpus_per_worker > 0:
        resources.requests["nvidia.com/gpu"] = str(cluster.gpus_per_worker)
        resources.limits["nvidia.com/gpu"] = str(cluster.gpus_per_worker)
        key, _, value = cluster.gpu_node_selector.partition("=")
        node_selector = {key: value} if key else None
        tolerations = [
            k8s.V1Toleration(key=cluster.gpu_toleration, operator="Exists", effect="NoSchedule")
        ]
    container = k8s.V1Container(
        name=CONTAINER,
        image=cluster.image,
        command=["python", "-m", "kubedetect.train"],
        args=list(train_argv),
        ports=[k8s.V1ContainerPort(name="tfjob-port", container_port=PORT)],
        env=[k8s.V1EnvVar(name="TF_CPP_MIN_LOG_LEVEL", value="2")],
        resources=resources,
        volume_mounts=[k8s.V1VolumeMount(name="workspace", mount_path=cluster.workspace_mount)],
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
            )
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
        metadata=k8s.V1ObjectMeta(name=name, namespace=cluster.namespace, labels=dict(LABELS)),
        spec=models.KubeflowOrgV1TFJobSpec(
            run_policy=models.KubeflowOrgV1RunPolicy(
                # Running: stop workers still running when the job ends; keep finished pods
                # (and their logs) until the TTL removes the job.
                clean_pod_policy="Running",
                backoff_limit=cluster.job_backoff_limit,
                ttl_seconds_after_finished=cluster.job_ttl_seconds,
            ),
            tf_replica_specs={
                "Worker": models.KubeflowOrgV1ReplicaSpec(
                    replicas=workers, restart_policy="OnFailure", template=template
                )
            },
        ),
    )


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
    timeout_seconds: int = 6 * 3600,
    poll_seconds: int = 10,
    log: Callable[[str], None] = print,
) -> None:
    """Submit the job, wait for it, stream the chief's logs; raise TrainingJobError on failure.

    Every failure names the job and the API endpoint, and a failed job's error carries the
    workers' last log lines and the job's events, so the pipeline step explains itself.
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
    log(f"creating {where} with {job.spec.tf_replica_specs['Worker'].replicas} workers")
    try:
        training.create_job(job=job)
    except Exception as exc:
        raise TrainingJobError(f"{where}: could not be created ({_one_line(exc)})") from None

    deadline = time.monotonic() + timeout_seconds
    streamed = False
    while True:
        try:
            conditions = {
                c.type for c in training.get_job_conditions(name=name, namespace=namespace)
            }
        except Exception as exc:
            raise TrainingJobError(f"{where}: lost contact ({_one_line(exc)})") from None
        if "Failed" in conditions:
            raise TrainingJobError(f"{where} failed.\n{_diagnostics(training, name, namespace)}")
        if "Succeeded" in conditions:
            log(f"{where} succeeded")
            return
        if not streamed and "Running" in conditions:
            streamed = _stream_chief_log(training, name, namespace, deadline, log)
            continue
        if time.monotonic() > deadline:
            raise TrainingJobError(
                f"{where}: not finished after {timeout_seconds} s "
                f"(conditions: {sorted(conditions)})"
            )
        time.sleep(poll_seconds)


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
