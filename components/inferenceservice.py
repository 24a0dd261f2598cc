"""Rolling KServe's InferenceService to a new model, through the Kubernetes API: the deploy
step's target `inferenceservice` (k8s/overlays/kserve).

The model folder is already on the workspace volume; the rollout points the predictor's
STORAGE_URI at it (`pvc://PVC/models/VERSION`, which KServe mounts at /mnt/models) and stamps the
predictor's pods with the model's sha256. KServe then rolls its Deployment. The step waits
until that Deployment runs the new model on every replica, or fails naming the
InferenceService and what it is stuck on.

Why the Deployment, and not only the InferenceService's Ready condition: in Standard (raw)
mode KServe derives Ready from the Deployment's Available condition, which stays True all
through a rolling update (kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go,
PropagateRawStatus); the Deployment has the new model once its pod template carries the new
source URI (KServe writes it as an annotation, pkg/controller/v1beta1/inferenceservice/
components/predictor.go) and its rollout is complete.

Custom resources take no strategic-merge patch, so the container list is read, changed and
written back whole with a JSON merge patch, guarded by the resourceVersion read (a concurrent
change makes the API server answer 409 instead of losing it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from components.apierrors import one_line
from components.rollout import MODEL_ANNOTATION, RolloutError, load_config

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CONTAINER = "kserve-container"  # KServe's name for a custom predictor's container
STORAGE_ENV = "STORAGE_URI"  # where KServe reads a custom predictor's model from
SOURCE_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"


def storage_uri(pvc: str, path_in_volume: str) -> str:
    """`pvc://PVC/PATH`: a folder of a PersistentVolumeClaim, as KServe's STORAGE_URI names it."""
    return f"pvc://{pvc}/{path_in_volume.strip('/')}"


def model_patch(service: dict, uri: str, sha256: str) -> dict:
    """The merge patch that points `service`'s predictor at the model at `uri`."""
    predictor = service.get("spec", {}).get("predictor", {})
    containers = copy.deepcopy(predictor.get("containers") or [])
    found = [c for c in containers if c.get("name") == CONTAINER]
    if not found:
        raise RolloutError(f"no container {CONTAINER!r} in spec.predictor.containers")
    env = [e for e in found[0].get("env", []) if e.get("name") != STORAGE_ENV]
    found[0]["env"] = [{"name": STORAGE_ENV, "value": uri}, *env]
    return {
        "metadata": {"resourceVersion": service["metadata"]["resourceVersion"]},
        "spec": {
            "predictor": {
                "annotations": {MODEL_ANNOTATION: sha256},
                "containers": containers,
            }
        },
    }


def waiting_for(service: dict, generation: int, deployment: dict | None, uri: str) -> str | None:
    """What the rollout of `service`'s `generation` still waits for, or None once every
    replica of its predictor serves the model at `uri`."""
    status = service.get("status") or {}
    if (status.get("observedGeneration") or 0) < generation:
        return "KServe to see the change"
    if deployment is None:
        return "the predictor's Deployment"
    template = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    if template.get(SOURCE_ANNOTATION) != uri:
        return "the predictor's Deployment to get the new model"
    state, wanted = deployment.get("status") or {}, deployment["spec"].get("replicas", 1)
    counts = [state.get(k) or 0 for k in ("updatedReplicas", "availableReplicas", "replicas")]
    observed = state.get("observedGeneration") or 0
    if observed < deployment["metadata"]["generation"] or counts != [wanted] * 3:
        updated, available, _ = counts
        return f"replicas with the new model (updated {updated}, available {available} of {wanted})"
    ready = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    if ready.get("Ready") != "True":
        return "the InferenceService to be Ready"
    return None


def roll_inference_service(
    name: str,
    namespace: str,
    uri: str,
    sha256: str,
    *,
    kubeconfig: str | None = None,
    timeout_seconds: int = 600,
    poll_seconds: int = 5,
    log: Callable[[str], None] = print,
) -> None:
    from kubernetes import client  # noqa: PLC0415

    where = f"InferenceService {namespace}/{name}"
    load_config(where, kubeconfig)
    custom, apps = client.CustomObjectsApi(), client.AppsV1Api()
    where = f"{where} at {custom.api_client.configuration.host}"
    address = (GROUP, VERSION, namespace, PLURAL, name)
    try:
        service = custom.get_namespaced_custom_object(*address)
        patched = custom.patch_namespaced_custom_object(*address, model_patch(service, uri, sha256))
    except RolloutError as exc:
        raise RolloutError(f"{where}: {exc}") from None
    except Exception as exc:
        raise RolloutError(f"{where}: could not be patched ({one_line(exc)})") from None
    log(f"{where}: rolling to model {sha256[:12]} ({uri})")
    deadline = time.monotonic() + timeout_seconds
    predictor = f"{name}-predictor"  # KServe's name for it (constants.PredictorServiceName)
    while True:
        try:  # RBAC: get on inferenceservices and deployments
            service = custom.get_namespaced_custom_object(*address)
        except Exception as exc:
            raise RolloutError(f"{where}: lost while rolling out ({one_line(exc)})") from None
        try:  # as the API server's JSON (camelCase), like the InferenceService
            found = apps.read_namespaced_deployment(predictor, namespace)
            deployment = apps.api_client.sanitize_for_serialization(found)
        except client.ApiException as exc:
            if exc.status != 404:
                raise RolloutError(f"{where}: {one_line(exc)}") from None
            deployment = None
        missing = waiting_for(service, patched["metadata"]["generation"], deployment, uri)
        if missing is None:
            replicas = deployment["spec"].get("replicas", 1)
            log(f"{where}: {replicas} replicas serve model {sha256[:12]}")
            return
        if time.monotonic() > deadline:
            raise RolloutError(
                f"{where}: not rolled out after {timeout_seconds} s (waiting for {missing})"
            )
        time.sleep(poll_seconds)
