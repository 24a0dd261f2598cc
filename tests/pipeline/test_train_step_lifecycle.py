"""The train step, as a real process, and the TFJob it leaves behind when it is stopped.

KFP cancels a run by signalling its running step (SIGTERM) and, later, deleting its pods. The
step here is the pipeline's own `train` component function, run in a subprocess with the
downward-API variables the pipeline gives it and a kubeconfig that points at the Kubernetes API
stand-in (k8s_api_stub.py, whose garbage collector follows upstream's ownerReference rules).
What a user relies on: a cancelled run frees its GPUs, whether the step had time to clean up
(SIGTERM) or not (SIGKILL, then its pod deleted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from components.tfjob import job_name
from kubedetect.config import ClusterConfig
from kubedetect.errors import KubedetectError
from kubedetect.flags import to_dict

from .k8s_api_stub import K8sApiStub

NAMESPACE = "ml"
RUN = "3f6c1e2a-5b7d-4c8e-9a0f-1d2e3c4b5a69"  # a KFP run id
JOB = job_name(f"{RUN}-c0")  # the run's only candidate

# The component function, called as KFP's executor calls it (artifacts by local path).
STEP = """
import sys
from kfp.dsl import Dataset, Model
from components.train import train

train(
    dataset=Dataset(name="dataset", uri=sys.argv[1]),
    model=Model(name="model", uri=sys.argv[2]),
    launcher="tfjob",
    workers=2,
    epochs=1,
    images_seen=0,
    batch_size=8,
    train_flags="",
    run_name=sys.argv[3],
    cluster=sys.argv[4],
)
"""


@pytest.fixture
def api():
    with K8sApiStub() as stub:
        yield stub


def _pod_env(pod: dict) -> dict[str, str]:
    meta = pod["metadata"]
    return {
        "KUBEDETECT_POD_NAME": meta["name"],
        "KUBEDETECT_POD_UID": meta["uid"],
        "KUBEDETECT_POD_NAMESPACE": meta["namespace"],
    }


def _start_step(api: K8sApiStub, tmp_path, pod: dict) -> subprocess.Popen:
    """The train step in a subprocess, its TFJob scripted to run until stopped."""
    api.script_tfjob(NAMESPACE, JOB, conditions=("Created", "Running"), logs={0: "epoch 1/1\n"})
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset.json").write_text("{}")
    cluster = ClusterConfig(namespace=NAMESPACE, workspace_mount=str(tmp_path / "workspace"))
    env = {
        **os.environ,
        **_pod_env(pod),
        "KUBECONFIG": api.write_kubeconfig(tmp_path / "kubeconfig"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-c", STEP, str(dataset), str(tmp_path / "model"), RUN]
    command.append(json.dumps(to_dict(cluster)))
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_until_watched(api: K8sApiStub, step: subprocess.Popen) -> dict:
    """The job, once the step has created it and is following it."""
    path = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/tfjobs/{JOB}"
    deadline = time.monotonic() + 60
    while len(api.requests_to("GET", path)) < 2:
        assert step.poll() is None, f"the step ended early:\n{step.stdout.read()}"
        assert time.monotonic() < deadline, "the step never watched its TFJob"
        time.sleep(0.1)
    return api.tfjobs[(NAMESPACE, JOB)]


def _job_and_pods_gone(api: K8sApiStub) -> bool:
    return (NAMESPACE, JOB) not in api.tfjobs and not api.pods_of(NAMESPACE, JOB)


@pytest.mark.timeout(120)
def test_a_terminated_step_deletes_its_tfjob(api, tmp_path):
    pod = api.add_pod(NAMESPACE, "kubedetect-run-train-driver")
    step = _start_step(api, tmp_path, pod)
    try:
        job = _wait_until_watched(api, step)
        assert len(api.pods_of(NAMESPACE, JOB)) == 2
        # The job is the run's: its checkpoints are per run (a retry resumes from them) ...
        args = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
        run_dir = tmp_path / "workspace" / "runs" / JOB
        assert args[args.index("--checkpoint-dir") + 1] == str(run_dir / "checkpoints")
        # ... and owned by the step's pod.
        assert job["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
             "uid": pod["metadata"]["uid"]}
        ]  # fmt: skip

        step.send_signal(signal.SIGTERM)
        output, _ = step.communicate(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
    assert step.returncode != 0, output
    assert f"TFJob {NAMESPACE}/{JOB} at {api.url}: the step was terminated (SIGTERM)" in output
    assert f"deleted TFJob {NAMESPACE}/{JOB} at {api.url} (the step was terminated)" in output
    assert api.requests_to("DELETE", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/tfjobs/{JOB}")
    assert _job_and_pods_gone(api)


@pytest.mark.timeout(120)
def test_a_killed_steps_tfjob_goes_with_its_pod(api, tmp_path):
    """No chance to clean up (SIGKILL): the job stays, until the step's pod is deleted; then
    the garbage collector deletes the job, and the job's pods with it."""
    pod = api.add_pod(NAMESPACE, "kubedetect-run-train-driver")
    step = _start_step(api, tmp_path, pod)
    try:
        _wait_until_watched(api, step)
        step.send_signal(signal.SIGKILL)
        step.communicate(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
    assert (NAMESPACE, JOB) in api.tfjobs and len(api.pods_of(NAMESPACE, JOB)) == 2
    api.delete_pod(NAMESPACE, pod["metadata"]["name"])  # KFP deletes the cancelled run's pods
    assert _job_and_pods_gone(api)


def test_a_step_in_another_namespace_than_compiled_for_refuses_to_start(tmp_path, monkeypatch):
    """Its TFJob would mount another namespace's workspace volume than the step wrote to."""
    from kfp.dsl import Dataset, Model

    from components.train import train

    for name, value in _pod_env(
        {"metadata": {"name": "p", "uid": "u", "namespace": "team-a"}}
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # never reached
    (tmp_path / "dataset").mkdir()
    with pytest.raises(KubedetectError) as error:
        train(
            dataset=Dataset(name="dataset", uri=str(tmp_path / "dataset")),
            model=Model(name="model", uri=str(tmp_path / "model")),
            launcher="tfjob",
            workers=2,
            epochs=1,
            images_seen=0,
            batch_size=8,
            train_flags="",
            run_name=RUN,
            cluster=json.dumps(
                to_dict(ClusterConfig(namespace="kubeflow", workspace_mount=str(tmp_path / "ws")))
            ),
        )
    assert str(error.value).startswith(
        "this step runs in namespace 'team-a', but the pipeline was compiled for --namespace "
        "'kubeflow'"
    )
    assert not (tmp_path / "ws").exists()  # nothing copied, nothing submitted
