"""Rolling the serving Deployment to a new model, through the Kubernetes API, and back if it fails.

The model folder is already on the workspace volume that the Deployment mounts; the rollout
points the server container at it (an environment variable) and stamps the pod template with
the model's sha256, which makes Kubernetes replace the pods one by one (the Deployment's
rolling-update strategy and PodDisruptionBudget keep the service up). The step then waits, as
`kubectl rollout status` does, until every replica runs the new model.

A rollout that cannot finish (pods that crash on the new model, never become ready, or cannot
be scheduled) is declared failed by the Deployment controller itself, at the Deployment's own
`progressDeadlineSeconds`: its Progressing condition turns False with reason
ProgressDeadlineExceeded. The step then puts the pod template it found back, as `kubectl rollout
undo` does (a JSON patch replacing spec.template), so the service keeps the previous model, and
fails, saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from components.apierrors import one_line as _one_line
from kubedetect.errors import KubedetectError

MODEL_ENV = "KUBEDETECT_MODEL_DIR"
MODEL_ANNOTATION = "kubedetect.io/model-sha256"
SERVER_CONTAINER = "server"
TIMED_OUT = "ProgressDeadlineExceeded"  # the Progressing condition's reason when it gave up
GRACE_SECONDS = 60  # past progressDeadlineSeconds, for the controller's verdict to arrive
DEFAULT_PROGRESS_DEADLINE = 600  # what the API server sets when the manifest says nothing


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


def undo_patch(previous_template: dict, sha256: str) -> list[dict]:
    """A JSON patch back to `previous_template`, as `kubectl rollout undo` restores a revision
    (kubernetes staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollback.go,
    getDeploymentPatch); only if the template still carries this rollout's model (a later change
    is not undone)."""
    return [
        {
            "op": "test",
            "path": "/spec/template/metadata/annotations/" + MODEL_ANNOTATION.replace("/", "~1"),
            "value": sha256,
        },
        {"op": "replace", "path": "/spec/template", "value": previous_template},
    ]


def model_of(template: dict) -> str:
    """The model a pod template serves: its server container's KUBEDETECT_MODEL_DIR."""
    for container in template.get("spec", {}).get("containers", []):
        if container.get("name") == SERVER_CONTAINER:
            for env in container.get("env") or []:
                if env.get("name") == MODEL_ENV and "value" in env:
                    return env["value"]
    return f"{MODEL_ENV} of the serving ConfigMap"


def roll_deployment(
    name: str,
    namespace: str,
    model_path: str,
    sha256: str,
    *,
    kubeconfig: str | None = None,
    timeout_seconds: float | None = None,
    poll_seconds: float = 5,
    log: Callable[[str], None] = print,
) -> None:
    """Roll the Deployment to the model; undo and raise RolloutError if the rollout fails.

    `timeout_seconds` defaults to the Deployment's progressDeadlineSeconds and GRACE_SECONDS: the
    controller's verdict comes first; the step's own timeout only covers a controller that never
    gives one.
    """
    from kubernetes import client  # noqa: PLC0415

    where = f"Deployment {namespace}/{name}"
    load_config(where, kubeconfig)
    apps = client.AppsV1Api()
    where = f"{where} at {apps.api_client.configuration.host}"
    try:  # the pod template to go back to if the rollout fails
        before = apps.read_namespaced_deployment(name, namespace)
    except Exception as exc:
        raise RolloutError(f"{where}: could not be read ({_one_line(exc)})") from None
    try:
        patched = apps.patch_namespaced_deployment(
            name, namespace, rollout_patch(model_path, sha256)
        )
    except Exception as exc:
        raise RolloutError(f"{where}: could not be patched ({_one_line(exc)})") from None
    previous = apps.api_client.sanitize_for_serialization(before.spec.template)
    progress_deadline = before.spec.progress_deadline_seconds or DEFAULT_PROGRESS_DEADLINE
    if timeout_seconds is None:
        timeout_seconds = progress_deadline + GRACE_SECONDS
    log(f"{where}: rolling to model {sha256[:12]} ({model_path})")
    rollout = _Rollout(apps, name, namespace, where, poll_seconds)
    done, detail = rollout.wait(patched.metadata.generation, timeout_seconds)
    if done:
        log(f"{where}: {detail} serve model {sha256[:12]}")
        return

    went_back = model_of(previous)
    log(f"ROLLOUT FAILED: {where}: {detail}. Undoing it: back to the previous model ({went_back})")
    try:
        undone = apps.patch_namespaced_deployment(name, namespace, undo_patch(previous, sha256))
    except Exception as exc:
        raise RolloutError(
            f"{where}: {detail}; the undo failed too ({_one_line(exc)}): the Deployment still "
            f"points at {model_path}; `kubectl -n {namespace} rollout undo deployment/{name}`"
        ) from None
    back, back_detail = rollout.wait(undone.metadata.generation, timeout_seconds)
    state = (
        f"{back_detail} serve it again"
        if back
        else f"the undo has not finished either ({back_detail})"
    )
    raise RolloutError(
        f"{where}: the rollout of model {sha256[:12]} ({model_path}) failed: {detail}. "
        f"Rolled back to the previous model ({went_back}): {state}."
    )


class _Rollout:
    """Waits for a Deployment's generation to roll out, by `kubectl rollout status`'s rules
    (kubernetes staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go,
    DeploymentStatusViewer): once the controller has observed the generation, a Progressing
    condition with reason ProgressDeadlineExceeded is a failure; otherwise done when every
    replica is updated, no old one is left and every updated one is available."""

    def __init__(self, apps, name: str, namespace: str, where: str, poll_seconds: float):
        self.apps, self.name, self.namespace = apps, name, namespace
        self.where, self.poll_seconds = where, poll_seconds

    def wait(self, generation: int, timeout_seconds: float) -> tuple[bool, str]:
        """(True, "N replicas") once complete; (False, why) at the progress deadline or the
        timeout."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:  # RBAC: get, no status subresource
                deployment = self.apps.read_namespaced_deployment(self.name, self.namespace)
            except Exception as exc:
                raise RolloutError(
                    f"{self.where}: lost while rolling out ({_one_line(exc)})"
                ) from None
            status = deployment.status
            wanted = 1 if deployment.spec.replicas is None else deployment.spec.replicas
            updated, available = status.updated_replicas or 0, status.available_replicas or 0
            if (status.observed_generation or 0) >= generation:
                progressing = next(
                    (c for c in status.conditions or [] if c.type == "Progressing"), None
                )
                if progressing is not None and progressing.reason == TIMED_OUT:
                    return False, (
                        f"no progress within its progressDeadlineSeconds "
                        f"({deployment.spec.progress_deadline_seconds} s): {progressing.message} "
                        f"(updated {updated}, available {available} of {wanted})"
                    )
                if updated >= wanted and (status.replicas or 0) <= updated and available >= updated:
                    return True, f"{updated} replicas"
            if time.monotonic() > deadline:
                conditions = [(c.type, c.reason) for c in status.conditions or []]
                return False, (
                    f"not rolled out after {timeout_seconds:g} s (updated {updated}, "
                    f"available {available} of {wanted}; conditions: {conditions})"
                )
            time.sleep(self.poll_seconds)
