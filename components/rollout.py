"""Rolling the serving Deployment to a new model, through the Kubernetes API.

The model folder is already on the workspace volume that the Deployment mounts; the rollout
points the server container at it (an environment variable) and stamps the pod template with
the model's sha256, which makes Kubernetes replace the pods one by one (the Deployment's
rolling-update strategy and PodDisruptionBudget keep the service up). The step then waits until
every replica runs the new model, or fails naming the Deployment and what it is stuck on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from components.apierrors import one_line as _one_line
from kubedetect.errors import KubedetectError

MODEL_ENV = "KUBEDETECT_MODEL_DIR"
MODEL_ANNOTATION = "kubedetect.io/model-sha256"
SERVER_CONTAINER = "server"


class RolloutError(KubedetectError):
    """The Deployment could not be patched or did not become ready with the new model."""


def rollout_patch(model_path: str, sha256: str) -> dict:
    """A strategic-merge patch: containers and env entries merge by name."""
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": {MODEL_ANNOTATION: sha256}},
                "spec": {
                    "containers": [
                        {
                            "name": SERVER_CONTAINER,
                            "env": [{"name": MODEL_ENV, "value": model_path}],
                        }
                    ]
                },
            }
        }
    }


def load_config(where: str, kubeconfig: str | None) -> None:
    """The Kubernetes client's configuration: `kubeconfig` if given, else the pod's service
    account, else ~/.kube/config; a RolloutError naming `where` without any."""
    from kubernetes import config  # noqa: PLC0415

    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
    except Exception as exc:
        raise RolloutError(f"{where}: no Kubernetes configuration ({_one_line(exc)})") from None


def roll_deployment(
    name: str,
    namespace: str,
    model_path: str,
    sha256: str,
    *,
    kubeconfig: str | None = None,
    timeout_seconds: int = 600,
    poll_seconds: int = 5,
    log: Callable[[str], None] = print,
) -> None:
    from kubernetes import client  # noqa: PLC0415

    where = f"Deployment {namespace}/{name}"
    load_config(where, kubeconfig)
    apps = client.AppsV1Api()
    where = f"{where} at {apps.api_client.configuration.host}"
    try:
        patched = apps.patch_namespaced_deployment(
            name, namespace, rollout_patch(model_path, sha256)
        )
    except Exception as exc:
        raise RolloutError(f"{where}: could not be patched ({_one_line(exc)})") from None
    generation = patched.metadata.generation
    log(f"{where}: rolling to model {sha256[:12]} ({model_path})")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:  # RBAC: get, no status subresource
            status = apps.read_namespaced_deployment(name, namespace).status
        except Exception as exc:
            raise RolloutError(f"{where}: lost while rolling out ({_one_line(exc)})") from None
        wanted = patched.spec.replicas or 0
        if (
            (status.observed_generation or 0) >= generation
            and (status.updated_replicas or 0) == wanted
            and (status.available_replicas or 0) == wanted
            and (status.replicas or 0) == wanted
        ):
            log(f"{where}: {wanted} replicas serve model {sha256[:12]}")
            return
        if time.monotonic() > deadline:
            raise RolloutError(
                f"{where}: not rolled out after {timeout_seconds} s "
                f"(updated {status.updated_replicas}, "
                f"available {status.available_replicas} of {wanted}; conditions: "
                f"{[(c.type, c.reason) for c in status.conditions or []]})"
            )
        time.sleep(poll_seconds)
