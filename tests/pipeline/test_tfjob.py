"""The TFJob the pipeline submits: schema-valid, shaped as the operator needs, on the right
image, bounded in time, guarded against GPUs that are not there, and failing clearly (never
hanging) when the cluster cannot be reached."""

from __future__ import annotations

import os
import subprocess
import sys

import jsonschema
import pytest
import yaml
from servers import free_port

from components.tfjob import TrainingJobError, build_tfjob, run_tfjob, to_manifest
from kubedetect.config import ClusterConfig
from kubedetect.errors import KubedetectError

ARGS = ["/workspace/runs/r1/shards", "/workspace/runs/r1/model", "--epochs", "3"]


@pytest.fixture(scope="module")
def tfjob_schema(tfjob_crd):
    crd = yaml.safe_load(tfjob_crd.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


IMAGE = "registry.example/kubedetect-trainer:1.2"


@pytest.mark.parametrize(("workers", "gpus"), [(2, 1), (4, 2)])
def test_gpu_tfjob_validates_against_the_operator_crd(tfjob_schema, workers, gpus):
    cluster = ClusterConfig(image=IMAGE, gpus_per_worker=gpus)
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, workers, cluster))
    jsonschema.validate(job, tfjob_schema)
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == workers
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    # The GPU build of the trainer, and a worker that sees fewer GPUs stops at once.
    assert container["image"] == f"{IMAGE}-gpu"
    # GPU pods train the large model unless the flags say otherwise.
    assert container["args"] == [*ARGS, "--model-size", "large", "--require-gpus", str(gpus)]
    # NCCL's shared memory: a memory-backed /dev/shm, as k8s/tfjob/tfjob.yaml mounts it.
    (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == shm["name"]]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}


def test_the_workers_image_can_be_given_and_is_never_guessed_from_a_digest():
    given = ClusterConfig(
        image=IMAGE, tfjob_image="registry.example/trainer-cuda:7", gpus_per_worker=1
    )
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, 2, given))
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
        "image"
    ] == ("registry.example/trainer-cuda:7")
    assert ClusterConfig(image=f"{IMAGE}-gpu", gpus_per_worker=1).worker_image() == f"{IMAGE}-gpu"
    assert ClusterConfig(image=IMAGE).worker_image() == IMAGE  # CPU workers: the steps' image
    pinned = ClusterConfig(image="registry.example/trainer@sha256:" + "0" * 64, gpus_per_worker=1)
    with pytest.raises(KubedetectError, match="--tfjob-image"):
        build_tfjob("kubedetect-r1", ARGS, 2, pinned)


@pytest.mark.timeout(120)
def test_a_worker_without_the_gpus_it_requires_stops_within_seconds(synth_shards, tmp_path):
    """The real training entrypoint on this GPU-less machine, as a GPU TFJob's worker runs it."""
    model = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "kubedetect.training.train", str(synth_shards), str(model),
         "--require-gpus", "1", "--epochs", "1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("kubedetect: error:")]
    assert line.startswith(
        "kubedetect: error: --require-gpus 1: TensorFlow sees 0 GPU(s) in this worker, so it "
        "would train on the CPU while holding the GPUs it was given."
    )
    assert "Traceback" not in done.stderr
    assert "epoch" not in done.stdout.lower()  # it stopped before training
    assert not model.exists()


def test_a_deliberately_broken_tfjob_fails_the_schema(tfjob_schema):
    """The schema check is a real check: a container without a name is refused."""
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, 2, ClusterConfig()))
    del job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, tfjob_schema)


def test_tfjob_is_shaped_for_the_training_operator():
    job = to_manifest(build_tfjob("kubedetect-r1", ARGS, 2, ClusterConfig()))
    spec = job["spec"]
    # Explicit run policy: the operator's own default for cleanPodPolicy is None; a deadline so
    # that a job nobody watches any more still ends.
    assert spec["runPolicy"] == {
        "activeDeadlineSeconds": ClusterConfig().job_timeout_seconds,
        "backoffLimit": 3,
        "cleanPodPolicy": "Running",
        "ttlSecondsAfterFinished": 86400,
    }
    worker = spec["tfReplicaSpecs"]["Worker"]
    assert worker["restartPolicy"] == "OnFailure"  # a failed worker restarts and resumes
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # the only container that gets TF_CONFIG
    assert container["command"] == ["python", "-m", "kubedetect.training.train"]
    assert container["args"] == ARGS  # CPU job: no GPU to require
    assert container["image"] == ClusterConfig().image
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # CPU job: no GPU asked
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["volumes"] == [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "kubedetect-workspace"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    assert container["volumeMounts"] == [
        {"mountPath": "/workspace", "name": "workspace"},
        {"mountPath": "/dev/shm", "name": "dshm"},
    ]
    # No CPU limit, so the worker's pools are sized from its request (kubedetect.resources).
    assert "cpu" not in container["resources"]["limits"]
    cpus = {"containerName": "tensorflow", "divisor": "1", "resource": "requests.cpu"}
    assert {"name": "KUBEDETECT_CPUS", "valueFrom": {"resourceFieldRef": cpus}} in container["env"]
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
