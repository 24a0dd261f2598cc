"""The deploy step's InferenceService target (components/inferenceservice.py) through the real
`kubernetes` client, against the Kubernetes API stand-in of k8s_api_stub.py with KServe's part
added: InferenceServices, and what KServe's controller does with them in Standard (raw) mode.

What KServe does is imitated from kserve/kserve at aaac4e294dae2c7b1aa1886447793f3aa1c30912:
- the predictor's Deployment is `NAME-predictor` (pkg/constants/constants.go,
  PredictorServiceName), its pod template annotated with the storage URI of the custom
  predictor's STORAGE_URI (pkg/controller/v1beta1/inferenceservice/components/predictor.go,
  StorageInitializerSourceUriInternalAnnotationKey; GetStorageUri in
  pkg/apis/serving/v1beta1/predictor_custom.go);
- the InferenceService's Ready condition follows the Deployment's Available condition, True all
  through a rolling update (pkg/apis/serving/v1beta1/inference_service_status.go,
  PropagateRawStatus), and status.observedGeneration the generation reconciled.
And from the API server: custom resources take JSON merge patches (RFC 7386) but no
strategic-merge patch (415), and a patch carrying a stale metadata.resourceVersion is refused
with 409 Conflict (optimistic concurrency).
"""

from __future__ import annotations

import copy

import pytest

from components.inferenceservice import (
    CONTAINER,
    SOURCE_ANNOTATION,
    STORAGE_ENV,
    roll_inference_service,
    storage_uri,
)
from components.rollout import MODEL_ANNOTATION, RolloutError

from .k8s_api_stub import NAME, K8sApiStub, _not_found, merge_patch, status

SERVICES = "/apis/serving.kserve.io/v1beta1/namespaces/(?P<namespace>[^/]+)/inferenceservices"
NAMESPACE, SERVICE = "kubedetect", "kubedetect"
SERVICE_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{SERVICE}"
OLD, NEW = storage_uri("workspace", "models/v1"), storage_uri("workspace", "models/v2")
SHA256 = "ab" * 32


class KServeApiStub(K8sApiStub):
    """The stand-in, with InferenceServices and KServe's controller scripted on each GET."""

    def __init__(self):
        super().__init__()
        self.services: dict[tuple[str, str], dict] = {}
        self._seen: dict[tuple[str, str], int] = {}  # the generation KServe has reconciled
        self._routes += [
            ("GET", SERVICES + NAME, self._get_service),
            ("PATCH", SERVICES + NAME, self._patch_service),
        ]

    def add_inference_service(self, namespace: str, name: str, *, rollout_gets=3) -> None:
        container = {"name": CONTAINER, "image": "kubedetect-server:0.1.0"}
        container["env"] = [
            {"name": "PROTOCOL", "value": "v2"},
            {"name": STORAGE_ENV, "value": OLD},
        ]
        self.services[(namespace, name)] = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {**self._new_metadata(namespace, name), "generation": 1},
            "spec": {"predictor": {"minReplicas": 2, "containers": [container]}},
        }
        self._seen[(namespace, name)] = 0
        self.add_deployment(namespace, f"{name}-predictor", replicas=2, rollout_gets=rollout_gets)
        self._reconcile(namespace, name)  # as it stands: rolled out, at its first generation
        predictor = (namespace, f"{name}-predictor")
        self.deployments[predictor]["metadata"]["generation"] = 1
        self._rollouts[predictor].gets_since_change = None

    def _reconcile(self, namespace: str, name: str) -> None:
        """KServe's controller on a spec it has not seen: the Deployment's pod template."""
        service = self.services[(namespace, name)]
        if self._seen[(namespace, name)] == service["metadata"]["generation"]:
            return
        self._seen[(namespace, name)] = service["metadata"]["generation"]
        predictor = service["spec"]["predictor"]
        (container,) = [c for c in predictor["containers"] if c["name"] == CONTAINER]
        uri = next(e["value"] for e in container["env"] if e["name"] == STORAGE_ENV)
        deployment = self.deployments[(namespace, f"{name}-predictor")]
        template = deployment["spec"]["template"]
        template["spec"]["containers"] = copy.deepcopy(predictor["containers"])
        annotations = {**predictor.get("annotations", {}), SOURCE_ANNOTATION: uri}
        if template["metadata"].get("annotations") != annotations:
            template["metadata"]["annotations"] = annotations
            deployment["metadata"]["generation"] += 1
            self._rollouts[(namespace, f"{name}-predictor")].gets_since_change = 0

    def _get_service(self, request, namespace: str, name: str):
        service = self.services.get((namespace, name))
        if service is None:
            return _not_found("inferenceservices", "serving.kserve.io", name)
        self._reconcile(namespace, name)
        deployment = self.deployments[(namespace, f"{name}-predictor")]
        available = any(
            c["type"] == "Available" and c["status"] == "True"
            for c in (deployment.get("status") or {}).get("conditions", [])
        ) or not deployment.get("status")  # fully rolled out before any GET of it
        ready = {"status": "True" if available else "False"}
        service["status"] = {
            "observedGeneration": service["metadata"]["generation"],
            "conditions": [{"type": t, **ready} for t in ("PredictorReady", "Ready")],
        }
        return 200, service

    def _patch_service(self, request, namespace: str, name: str):
        service = self.services.get((namespace, name))
        if service is None:
            return _not_found("inferenceservices", "serving.kserve.io", name)
        if request.content_type != "application/merge-patch+json":
            return 415, status(415, "UnsupportedMediaType", f"{request.content_type} not supported")
        wanted = (request.body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != service["metadata"]["resourceVersion"]:
            message = (
                "the object has been modified; please apply your changes to the latest version"
            )
            return 409, status(409, "Conflict", message)
        patched = merge_patch(service, request.body)
        if patched["spec"] != service["spec"]:
            patched["metadata"]["generation"] += 1
        self._resource_version += 1
        patched["metadata"]["resourceVersion"] = str(self._resource_version)
        self.services[(namespace, name)] = patched
        return 200, patched


@pytest.fixture()
def api():
    with KServeApiStub() as stub:
        yield stub


@pytest.fixture()
def kubeconfig(api, tmp_path) -> str:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


def _roll(kubeconfig: str, **kwargs) -> None:
    roll_inference_service(
        SERVICE, NAMESPACE, NEW, SHA256, kubeconfig=kubeconfig, poll_seconds=0, **kwargs
    )


@pytest.mark.timeout(60)
def test_the_rollout_points_the_predictor_at_the_model_and_waits_for_every_replica(api, kubeconfig):
    api.add_inference_service(NAMESPACE, SERVICE, rollout_gets=4)
    lines: list[str] = []
    _roll(kubeconfig, timeout_seconds=30, log=lines.append)

    (patch,) = api.requests_to("PATCH", SERVICE_PATH)
    assert patch.content_type == "application/merge-patch+json"
    service = api.services[(NAMESPACE, SERVICE)]
    predictor = service["spec"]["predictor"]
    assert predictor["annotations"] == {MODEL_ANNOTATION: SHA256}
    (container,) = predictor["containers"]
    assert container["env"] == [
        {"name": STORAGE_ENV, "value": NEW},
        {"name": "PROTOCOL", "value": "v2"},  # the rest of the container is kept
    ]
    assert service["metadata"]["generation"] == 2 and predictor["minReplicas"] == 2
    # Ready stayed True all along (raw mode): the step waited for the Deployment instead.
    deployment_path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{SERVICE}-predictor"
    assert len(api.requests_to("GET", deployment_path)) == 4
    assert lines[-1] == (
        f"InferenceService {NAMESPACE}/{SERVICE} at {api.url}: 2 replicas serve model {SHA256[:12]}"
    )


@pytest.mark.timeout(60)
def test_a_stuck_rollout_fails_after_the_timeout_saying_what_it_waits_for(api, kubeconfig):
    api.add_inference_service(NAMESPACE, SERVICE, rollout_gets=None)
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=1, log=lambda _: None)
    assert str(error.value) == (
        f"InferenceService {NAMESPACE}/{SERVICE} at {api.url}: not rolled out after 1 s "
        "(waiting for replicas with the new model (updated 1, available 2 of 2))"
    )


@pytest.mark.timeout(60)
def test_a_missing_inference_service_is_a_clear_error(api, kubeconfig):
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=5, log=lambda _: None)
    assert str(error.value) == (
        f"InferenceService {NAMESPACE}/{SERVICE} at {api.url}: could not be patched ((404) "
        f'inferenceservices.serving.kserve.io "{SERVICE}" not found)'
    )


@pytest.mark.timeout(60)
def test_an_inference_service_without_kservice_container_is_a_clear_error(api, kubeconfig):
    api.add_inference_service(NAMESPACE, SERVICE)
    api.services[(NAMESPACE, SERVICE)]["spec"]["predictor"]["containers"][0]["name"] = "main"
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=5, log=lambda _: None)
    assert str(error.value) == (
        f"InferenceService {NAMESPACE}/{SERVICE} at {api.url}: no container "
        f"'{CONTAINER}' in spec.predictor.containers"
    )
    assert api.requests_to("PATCH", SERVICE_PATH) == []
