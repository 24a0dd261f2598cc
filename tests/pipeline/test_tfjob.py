"""The TFJob the pipeline submits: schema-valid, shaped as the operator needs, and failing
clearly (never hanging) when the cluster cannot be reached."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from servers import free_port

from components.tfjob import TrainingJobError, build_tfjob, run_tfjob, to_manifest
from kubedetect.config import ClusterConfig

ARGS = ["/workspace/runs/r1/shards", "/workspace/runs/r1/model", "--epochs", "3"]


@pytest.fixture(scope="module")
def tfjob_schema(tfjob_crd):
    crd = yaml.safe_load(tfjob_crd.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("workers", [2, 4])
def test_gpu_tfjob_validates_against_the_operator_crd(tfjob_schema, workers):
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, workers, ClusterConfig(gpus_per_worker=1)))
    jsonschema.validate(job, tfjob_schema)
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == workers
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]


def test_a_deliberately_broken_tfjob_fails_the_schema(tfjob_schema):
    """The schema check is a real check: a container without a name is refused."""
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, 2, ClusterConfig()))
    del job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, tfjob_schema)


def test_tfjob_is_shaped_for_the_training_operator():
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, 2, ClusterConfig()))
    spec = job["spec"]
    # Explicit run policy: the operator's own default for cleanPodPolicy is None.
    assert spec["runPolicy"] == {
        "backoffLimit": 3,
        "cleanPodPolicy": "Running",
        "ttlSecondsAfterFinished": 86400,
    }
    worker = spec["tfReplicaSpecs"]["Worker"]
    assert worker["restartPolicy"] == "OnFailure"  # a failed worker restarts and resumes
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # the only container that gets TF_CONFIG
    assert container["command"] == ["python", "-m", "kubedetect.train"]
    assert container["args"] == ARGS
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # CPU job: no GPU asked
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["volumes"] == [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "kubedetect-workspace"}}
    ]
    assert container["volumeMounts"] == [{"mountPath": "/workspace", "name": "workspace"}]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.timeout(60)
def test_unreachable_cluster_fails_fast_naming_job_and_endpoint(tmp_path):
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    job = build_tfjob("kubedetect-r9", ARGS, 2, ClusterConfig(namespace="ml"))
    with pytest.raises(TrainingJobError) as error:
        run_tfjob(job, kubeconfig=str(kubeconfig), log=lambda _: None)
    message = str(error.value)
    assert "TFJob ml/kubedetect-r9" in message
    assert f"https://127.0.0.1:{port}" in message
    assert "could not be created" in message


def test_missing_kubeconfig_is_a_clear_error(tmp_path):
    job = build_tfjob("kubedetect-r9", ARGS, 2, ClusterConfig())
    with pytest.raises(
        TrainingJobError, match="TFJob kubeflow/kubedetect-r9: no Kubernetes configuration"
    ):
        run_tfjob(job, kubeconfig=str(tmp_path / "absent"), log=lambda _: None)
