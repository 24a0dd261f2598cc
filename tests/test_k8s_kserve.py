"""The KServe overlay (k8s/overlays/kserve): an InferenceService and a PodMonitor, rendered by the
real `kubectl kustomize` and validated against the schemas KServe and the Prometheus Operator
publish (their PyPI packages' API models, in the KServe virtualenv: tests/k8s_schemas.py), then
checked for what KServe and Prometheus will do with them. The overlay's built-in objects go
through kubernetes-validate with every other kustomization (test_k8s_manifests.py)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from servers import kserve_python

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # the KServe virtualenv: a minute or two the first time


@cache
def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH (the project's machine image has it)")
    done = subprocess.run(
        [kubectl, "kustomize", str(REPO / "k8s/overlays/kserve")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def one(kind: str) -> dict:
    (found,) = [o for o in rendered() if o["kind"] == kind]
    return found


def schema_errors(documents: list[dict], tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "custom-resources.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    done = subprocess.run(
        [str(kserve_python()), str(REPO / "tests/k8s_schemas.py"), str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_inference_service_and_pod_monitor_validate_against_their_schemas(tmp_path):
    documents = [one("InferenceService"), one("PodMonitor")]
    assert schema_errors(documents, tmp_path) == [[], []]


def test_the_schema_check_is_a_real_check(tmp_path):
    """Typos, wrong types and missing fields, each of which the API server would refuse or
    silently drop, are reported with where they are."""
    service, monitor = copy.deepcopy(one("InferenceService")), copy.deepcopy(one("PodMonitor"))
    predictor = service["spec"]["predictor"]
    predictor["minReplica"] = 2
    predictor["maxReplicas"] = "six"
    container = predictor["containers"][0]
    container["readinessProbe"]["httpGet"]["pathh"] = "/v2/health/ready"
    del container["name"]
    monitor["spec"]["podMetricsEndpoint"] = monitor["spec"].pop("podMetricsEndpoints")
    service_errors, monitor_errors = schema_errors([service, monitor], tmp_path)
    assert len(service_errors) == 4, service_errors
    for where in ("predictor.minReplica", "predictor.maxReplicas", "httpGet.pathh", "name"):
        assert any(where in error for error in service_errors), (where, service_errors)
    assert monitor_errors == ["PodMonitor.spec.podMetricsEndpoint: unknown field"]


def test_kserve_runs_the_server_image_on_the_open_inference_protocol_with_the_workspace_model():
    service = one("InferenceService")
    assert service["metadata"]["namespace"] == one("PersistentVolumeClaim")["metadata"]["namespace"]
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    # KServe finds a custom predictor's container by this name (InferenceServiceContainerName).
    assert container["name"] == "kserve-container"
    assert container["image"].startswith("kubedetect-server:")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROTOCOL"] == "v2"
    pvc = one("PersistentVolumeClaim")["metadata"]["name"]
    assert env["STORAGE_URI"] == f"pvc://{pvc}/models/serving"
    (ref,) = [e["configMapRef"]["name"] for e in container["envFrom"]]
    (settings,) = [
        o["data"] for o in rendered() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref
    ]
    assert settings["KUBEDETECT_MODEL_DIR"] == "/mnt/models"  # where KServe mounts STORAGE_URI
    port = container["ports"][0]["containerPort"]
    assert container["args"] == ["--host", "0.0.0.0", "--port", str(port)]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == int(settings["KUBEDETECT_HEALTH_PORT"])
    limit = container["env"][[e["name"] for e in container["env"]].index("KUBEDETECT_MEMORY_LIMIT")]
    assert limit["valueFrom"]["resourceFieldRef"] == {
        "containerName": "kserve-container", "resource": "limits.memory"
    }  # fmt: skip
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_kserve_makes_the_serving_objects_and_the_base_s_policies_select_its_pods():
    kinds = {o["kind"] for o in rendered()}
    assert not kinds & {"Deployment", "Service", "HorizontalPodAutoscaler"}
    predictor = one("InferenceService")["spec"]["predictor"]
    labels = predictor["labels"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        spec = one(kind)["spec"]
        selector = spec.get("selector") or spec["podSelector"]
        assert selector["matchLabels"].items() <= labels.items(), kind
    monitor = one("PodMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    (container,) = predictor["containers"]
    assert endpoint["port"] == container["ports"][0]["name"] and endpoint["path"] == "/metrics"


def test_the_pipeline_may_roll_exactly_this_inference_service():
    """The deploy step (--deploy-to inferenceservice) patches the InferenceService and reads the
    Deployment KServe names after it; the Role grants that, by name, and nothing on others."""
    name = one("InferenceService")["metadata"]["name"]
    rules = one("Role")["rules"]
    granted = {
        (group, resource, tuple(rule.get("resourceNames", ())), tuple(rule["verbs"]))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert ("serving.kserve.io", "inferenceservices", (name,), ("get", "watch", "patch")) in granted
    assert ("apps", "deployments", (f"{name}-predictor",), ("get", "watch")) in granted
    deployments = {names for group, resource, names, _ in granted if resource == "deployments"}
    assert deployments == {(f"{name}-predictor",)}
