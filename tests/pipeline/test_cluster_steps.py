"""The pipeline's cluster steps against a Kubernetes API server stand-in on 127.0.0.1.

`run_tfjob` and `roll_deployment` go through the real kubeflow-training SDK and `kubernetes`
client; the server (tests/pipeline/k8s_api_stub.py) records what they send and answers as the
API server would, with the Training Operator's and the Deployment controller's progress
scripted per test. What is checked is what a pipeline user relies on: the job submitted is the
one built, the step waits for the cluster's verdict (and no longer), and every failure names the
object, the endpoint and the reason.
"""

from __future__ import annotations

import pytest

from components.rollout import MODEL_ANNOTATION, MODEL_ENV, RolloutError, roll_deployment
from components.tfjob import TrainingJobError, build_tfjob, run_tfjob, to_manifest
from kubedetect.config import ClusterConfig

from .k8s_api_stub import Event, K8sApiStub

ARGS = ["/workspace/runs/r1/shards", "/workspace/runs/r1/model", "--epochs", "3"]
NAMESPACE = "ml"
TFJOBS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/tfjobs"
DEPLOYMENT = "kubedetect-server"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"
SHA256 = "3f2a9c0d" * 8
MODEL = "/models/runs/r1/model_int8"
CHIEF_LOG = "epoch 1/3 loss 0.912 mAP 0.41\nepoch 2/3 loss 0.603 mAP 0.58\nepoch 3/3 loss 0.488\n"


@pytest.fixture
def api():
    with K8sApiStub() as stub:
        yield stub


@pytest.fixture
def kubeconfig(api, tmp_path) -> str:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


def _job(name: str):
    return build_tfjob(name, ARGS, 2, ClusterConfig(namespace=NAMESPACE))


# ----------------------------------------------------------------------------------------------
# run_tfjob
# ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_tfjob_is_submitted_as_built_and_watched_until_it_succeeds(api, kubeconfig):
    api.script_tfjob(
        NAMESPACE,
        "kubedetect-r1",
        conditions=("Created", "Running", "Succeeded"),
        logs={0: CHIEF_LOG, 1: "worker 1 done\n"},
    )
    job = _job("kubedetect-r1")
    lines: list[str] = []
    run_tfjob(job, kubeconfig=kubeconfig, timeout_seconds=30, poll_seconds=0.05, log=lines.append)

    (created,) = api.requests_to("POST", TFJOBS)
    assert created.body == to_manifest(job)
    assert created.body["metadata"] == {
        "name": "kubedetect-r1",
        "namespace": NAMESPACE,
        "labels": {
            "app.kubernetes.io/part-of": "kubedetect",
            "app.kubernetes.io/component": "training",
        },
    }
    worker = created.body["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"
    assert container["args"] == ARGS

    # It polled (Created, then Running: follow the chief, then Succeeded) and stopped there.
    assert len(api.requests_to("GET", f"{TFJOBS}/kubedetect-r1")) == 3
    (followed,) = api.requests_to(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/pods/kubedetect-r1-worker-0/log"
    )
    assert followed.query["container"] == "tensorflow"
    assert followed.query["follow"].lower() == "true"
    assert lines[-1] == f"TFJob {NAMESPACE}/kubedetect-r1 at {api.url} succeeded"


@pytest.mark.timeout(60)
def test_the_chiefs_log_lines_are_streamed_to_the_log_callback(api, kubeconfig):
    api.script_tfjob(
        NAMESPACE,
        "kubedetect-r1",
        conditions=("Created", "Running", "Succeeded"),
        logs={0: CHIEF_LOG},
    )
    lines: list[str] = []
    run_tfjob(
        _job("kubedetect-r1"),
        kubeconfig=kubeconfig,
        timeout_seconds=30,
        poll_seconds=0.05,
        log=lines.append,
    )
    logged = "\n".join(lines)
    for line in CHIEF_LOG.splitlines():
        assert line in logged


@pytest.mark.timeout(60)
def test_failed_tfjob_error_carries_the_workers_last_lines_and_the_events(api, kubeconfig):
    steps = "".join(f"step {i:03d} loss 0.5\n" for i in range(30))
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/kubedetect/train.py", line 212, in main\n'
        "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating "
        "tensor with shape[16,512,512,3]\n"
    )
    api.script_tfjob(
        NAMESPACE,
        "kubedetect-r2",
        conditions=("Created", "Running", "Failed"),
        logs={0: CHIEF_LOG, 1: steps + traceback},
        events=(
            Event(
                "Pod",
                "kubedetect-r2-worker-1",
                "BackOff",
                "Back-off restarting failed container tensorflow in pod kubedetect-r2-worker-1",
            ),
            Event(
                "TFJob",
                "kubedetect-r2",
                "TFJobFailed",
                "TFJob ml/kubedetect-r2 has failed because 1 Worker replica(s) failed.",
            ),
            Event("Pod", "someone-elses-job-worker-0", "BackOff", "not about this job"),
        ),
    )
    with pytest.raises(TrainingJobError) as error:
        run_tfjob(
            _job("kubedetect-r2"),
            kubeconfig=kubeconfig,
            timeout_seconds=30,
            poll_seconds=0.05,
            log=lambda _: None,
        )
    message = str(error.value)
    assert message.startswith(f"TFJob {NAMESPACE}/kubedetect-r2 at {api.url} failed.")
    assert "--- kubedetect-r2-worker-1 (last 20 lines)" in message
    assert "ResourceExhaustedError: OOM when allocating tensor" in message
    assert "step 029" in message and "step 000" not in message  # the last lines, not all
    assert "--- kubedetect-r2-worker-0 (last 20 lines)\n" + CHIEF_LOG.rstrip() in message
    assert "--- events of pod/kubedetect-r2-worker-1" in message
    assert "Back-off restarting failed container tensorflow" in message
    assert "has failed because 1 Worker replica(s) failed." in message
    assert "not about this job" not in message


@pytest.mark.timeout(60)
def test_tfjob_that_never_finishes_fails_after_the_timeout(api, kubeconfig):
    api.script_tfjob(
        NAMESPACE, "kubedetect-r3", conditions=("Created", "Running"), logs={0: CHIEF_LOG}
    )
    with pytest.raises(TrainingJobError) as error:
        run_tfjob(
            _job("kubedetect-r3"),
            kubeconfig=kubeconfig,
            timeout_seconds=1,
            poll_seconds=0.05,
            log=lambda _: None,
        )
    assert str(error.value) == (
        f"TFJob {NAMESPACE}/kubedetect-r3 at {api.url}: not finished after 1 s "
        "(conditions: ['Created', 'Running'])"
    )
    # It kept asking after the chief's log stream ended, rather than giving up or hanging.
    assert len(api.requests_to("GET", f"{TFJOBS}/kubedetect-r3")) > 3


# ----------------------------------------------------------------------------------------------
# roll_deployment
# ----------------------------------------------------------------------------------------------


def _roll(kubeconfig: str, *, timeout_seconds: float, log) -> None:
    """The deploy step's rollout of MODEL to the serving Deployment, polling quickly."""
    roll_deployment(
        DEPLOYMENT,
        NAMESPACE,
        MODEL,
        SHA256,
        kubeconfig=kubeconfig,
        timeout_seconds=timeout_seconds,
        poll_seconds=0.05,
        log=log,
    )


OLD_ENV = [
    {"name": MODEL_ENV, "value": "/models/runs/r0/model_int8"},
    {"name": "KUBEDETECT_BATCH_SIZE", "value": "8"},
]


@pytest.mark.timeout(60)
def test_rollout_patches_the_model_and_waits_until_every_replica_serves_it(api, kubeconfig):
    api.add_deployment(NAMESPACE, DEPLOYMENT, replicas=3, env=OLD_ENV, rollout_gets=4)
    lines: list[str] = []
    _roll(kubeconfig, timeout_seconds=30, log=lines.append)

    (patch,) = api.requests_to("PATCH", DEPLOYMENT_PATH)
    assert patch.content_type == "application/strategic-merge-patch+json"
    template = patch.body["spec"]["template"]
    assert template["metadata"]["annotations"] == {MODEL_ANNOTATION: SHA256}
    (server,) = template["spec"]["containers"]
    assert server["name"] == "server"
    assert server["env"] == [{"name": MODEL_ENV, "value": MODEL}]

    # Merged as the API server merges it: the model changes, the rest of the pod stays.
    deployment = api.deployments[(NAMESPACE, DEPLOYMENT)]
    assert deployment["metadata"]["generation"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"][MODEL_ANNOTATION] == SHA256
    (container,) = pod["spec"]["containers"]
    assert container["env"] == [
        {"name": MODEL_ENV, "value": MODEL},
        {"name": "KUBEDETECT_BATCH_SIZE", "value": "8"},
    ]

    # GET 1: the old generation, all "updated"; 2, 3: mid-rollout; 4: done. Not one GET fewer.
    assert len(api.requests_to("GET", DEPLOYMENT_PATH)) == 4
    assert lines[-1] == (
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: 3 replicas serve model {SHA256[:12]}"
    )


@pytest.mark.timeout(60)
def test_stuck_rollout_fails_after_the_timeout_with_the_replica_counts(api, kubeconfig):
    api.add_deployment(NAMESPACE, DEPLOYMENT, replicas=3, env=OLD_ENV, rollout_gets=None)
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=1, log=lambda _: None)
    assert str(error.value) == (
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: not rolled out after 1 s "
        "(updated 1, available 3 of 3; conditions: "
        "[('Available', 'MinimumReplicasAvailable'), ('Progressing', 'ProgressDeadlineExceeded')])"
    )


@pytest.mark.timeout(60)
def test_rollout_of_a_missing_deployment_is_a_clear_error(api, kubeconfig):
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=5, log=lambda _: None)
    message = str(error.value)
    # The API server's own words, not the response headers that str(ApiException) starts with.
    assert message == (
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: could not be patched ((404) "
        f'deployments.apps "{DEPLOYMENT}" not found)'
    )
    assert api.requests_to("GET", DEPLOYMENT_PATH) == []  # nothing to wait for
