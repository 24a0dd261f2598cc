"""The pipeline's cluster steps against a Kubernetes API server stand-in on 127.0.0.1.

`run_tfjob` and `roll_deployment` go through the real kubeflow-training SDK and `kubernetes`
client; the server (tests/pipeline/k8s_api_stub.py) records what they send and answers as the
API server, the Training Operator v1.9.4, the Deployment controller and the garbage collector
would (their upstream code is cited there), with the progress of jobs and rollouts scripted per
test. What is checked is what a pipeline user relies on: the job submitted is the one built,
the step waits for the cluster's verdict (and no longer), no TFJob outlives a failed, timed-out
or cancelled step, a retried step neither fails on its own job nor trains twice, a rollout that
misses its progress deadline is undone, and every failure names the object, the endpoint and
the reason.
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


def _job(name: str, owner: dict | None = None, **cluster):
    config = ClusterConfig(namespace=NAMESPACE, **cluster)
    return build_tfjob(name, ARGS, 2, config, **({"owner": owner} if owner else {}))


def _run(job, kubeconfig: str, *, timeout_seconds: float | None = 30, log=None, owner=None):
    """run_tfjob polling quickly; its log lines are returned (or go to `log`)."""
    lines: list[str] = []
    run_tfjob(
        job,
        kubeconfig=kubeconfig,
        timeout_seconds=timeout_seconds,
        poll_seconds=0.05,
        log=log or lines.append,
        **({"owner": owner} if owner else {}),
    )
    return lines


def _deleted(api: K8sApiStub, name: str) -> bool:
    """The step deleted the job, and with it (the garbage collector) every pod of the job."""
    asked = api.requests_to("DELETE", f"{TFJOBS}/{name}")
    return bool(asked) and (NAMESPACE, name) not in api.tfjobs and not api.pods_of(NAMESPACE, name)


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
        '  File "/app/kubedetect/training/train.py", line 212, in main\n'
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
    assert message.startswith(
        f"TFJob {NAMESPACE}/kubedetect-r2 at {api.url} failed: "
        f"TFJob {NAMESPACE}/kubedetect-r2 has failed because 1 Worker replica(s) failed.\n"
    )
    assert "--- kubedetect-r2-worker-1 (last 20 lines)" in message
    assert "ResourceExhaustedError: OOM when allocating tensor" in message
    assert "step 029" in message and "step 000" not in message  # the last lines, not all
    assert "--- kubedetect-r2-worker-0 (last 20 lines)\n" + CHIEF_LOG.rstrip() in message
    assert "--- events of pod/kubedetect-r2-worker-1" in message
    assert "Back-off restarting failed container tensorflow" in message
    assert "Back-off restarting failed container tensorflow in pod kubedetect-r2" in message
    assert "not about this job" not in message
    # Cleaned up after the failure: the job and its pods are gone.
    assert _deleted(api, "kubedetect-r2")


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
    # Cleaned up after the timeout: nothing keeps running (and holding GPUs) behind the step.
    assert _deleted(api, "kubedetect-r3")


@pytest.mark.timeout(60)
def test_the_job_carries_a_deadline_that_the_operator_enforces(api, kubeconfig):
    """activeDeadlineSeconds is in the object, so the operator stops a job that runs too long
    even if nobody watches it; the step waits for that verdict and then deletes the job."""
    api.script_tfjob(
        NAMESPACE, "kubedetect-r4", conditions=("Created", "Running"), logs={0: CHIEF_LOG}
    )
    job = _job("kubedetect-r4", job_timeout_seconds=1)
    assert to_manifest(job)["spec"]["runPolicy"]["activeDeadlineSeconds"] == 1
    with pytest.raises(TrainingJobError) as error:
        _run(job, kubeconfig, timeout_seconds=None)  # the default: the deadline and a minute
    assert str(error.value).startswith(
        f"TFJob {NAMESPACE}/kubedetect-r4 at {api.url} failed: Job kubedetect-r4 has failed "
        "because it was active longer than specified deadline"
    )
    (created,) = api.requests_to("POST", TFJOBS)
    assert created.body["spec"]["runPolicy"]["activeDeadlineSeconds"] == 1
    assert _deleted(api, "kubedetect-r4")


# ----------------------------------------------------------------------------------------------
# A retried step: the same run, so the same job name
# ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_retried_step_follows_its_running_job_and_becomes_one_of_its_owners(api, kubeconfig):
    first = _owner(api.add_pod(NAMESPACE, "run-1-train-attempt-1"))
    api.add_tfjob(
        to_manifest(_job("kubedetect-r5", owner=first)),
        conditions=("Running", "Running", "Succeeded"),
        logs={0: CHIEF_LOG},
    )
    second = _owner(api.add_pod(NAMESPACE, "run-1-train-attempt-2"))
    job = _job("kubedetect-r5", owner=second)
    lines = _run(job, kubeconfig, owner=second)

    (refused,) = api.requests_to("POST", TFJOBS)  # one submission: a 409, then the job is found
    assert refused.body["metadata"]["name"] == "kubedetect-r5"
    assert api.requests_to("DELETE", f"{TFJOBS}/kubedetect-r5") == []  # not trained twice
    assert any("still running: following it" in line for line in lines)
    assert lines[-1] == f"TFJob {NAMESPACE}/kubedetect-r5 at {api.url} succeeded"
    owners = api.tfjobs[(NAMESPACE, "kubedetect-r5")]["metadata"]["ownerReferences"]
    assert owners == [first, second]
    # Either pod keeps the job: the first attempt's pod may be deleted before the job ends.
    api.delete_pod(NAMESPACE, first["name"])
    assert (NAMESPACE, "kubedetect-r5") in api.tfjobs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ended", ["Failed", "Succeeded"])
def test_a_retried_step_replaces_its_finished_job(api, kubeconfig, ended):
    """A job an earlier attempt left behind, finished: deleted and created again (the new one
    resumes from the run's checkpoints, whose folder is in the job's arguments)."""
    old = api.add_tfjob(to_manifest(_job("kubedetect-r6")), conditions=(ended,))
    api.script_tfjob(
        NAMESPACE, "kubedetect-r6", conditions=("Created", "Running", "Succeeded"), logs={0: "ok"}
    )
    lines = _run(_job("kubedetect-r6"), kubeconfig)

    refused, created = api.requests_to("POST", TFJOBS)
    assert created.body == refused.body
    assert len(api.requests_to("DELETE", f"{TFJOBS}/kubedetect-r6")) == 1
    assert any(f"has {ended.lower()}: replacing it" in line for line in lines)
    new = api.tfjobs[(NAMESPACE, "kubedetect-r6")]
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert lines[-1] == f"TFJob {NAMESPACE}/kubedetect-r6 at {api.url} succeeded"


# ----------------------------------------------------------------------------------------------
# Owned by the step's pod: the garbage collector deletes a cancelled run's job
# ----------------------------------------------------------------------------------------------


def _owner(pod: dict) -> dict:
    """An ownerReference to a step's pod, as components/steppod.py makes it."""
    meta = pod["metadata"]
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}


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

    # GET 0: the template to go back to; after the patch, GET 1: the old generation; 2, 3:
    # mid-rollout; 4: done. Not one GET fewer.
    assert len(api.requests_to("GET", DEPLOYMENT_PATH)) == 5
    assert lines[-1] == (
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: 3 replicas serve model {SHA256[:12]}"
    )


def _rolled_back(api: K8sApiStub, error: RolloutError, lines: list[str]) -> None:
    """The failed rollout was undone, loudly: the Deployment serves the previous model again."""
    message = str(error)
    assert message.startswith(
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: the rollout of model {SHA256[:12]} "
        f"({MODEL}) failed: "
    )
    assert (
        "Rolled back to the previous model (/models/runs/r0/model_int8): 3 replicas serve it"
        in (message)
    )
    assert any(line.startswith("ROLLOUT FAILED: ") for line in lines)
    undo = api.requests_to("PATCH", DEPLOYMENT_PATH)[-1]
    assert undo.content_type == "application/json-patch+json"
    assert [op["op"] for op in undo.body] == ["test", "replace"]  # only our own rollout
    template = api.deployments[(NAMESPACE, DEPLOYMENT)]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["env"] == OLD_ENV
    assert MODEL_ANNOTATION not in template["metadata"].get("annotations", {})


@pytest.mark.timeout(60)
def test_a_rollout_past_its_progress_deadline_is_undone(api, kubeconfig):
    """The Deployment controller declares the rollout failed (Progressing False,
    ProgressDeadlineExceeded, at the Deployment's progressDeadlineSeconds): the step does not
    wait for its own timeout, puts the previous model back, and fails."""
    api.add_deployment(NAMESPACE, DEPLOYMENT, replicas=3, env=OLD_ENV, rollout_gets=None)
    lines: list[str] = []
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=30, log=lines.append)
    assert "no progress within its progressDeadlineSeconds (600 s): ReplicaSet " in str(error.value)
    assert "has timed out progressing. (updated 1, available 3 of 3)" in str(error.value)
    _rolled_back(api, error.value, lines)


@pytest.mark.timeout(60)
def test_a_rollout_the_controller_never_judges_is_undone_after_the_timeout(api, kubeconfig):
    api.add_deployment(
        NAMESPACE, DEPLOYMENT, replicas=3, env=OLD_ENV, rollout_gets=None, deadline_gets=10**6
    )
    lines: list[str] = []
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=1, log=lines.append)
    assert (
        "failed: not rolled out after 1 s (updated 1, available 3 of 3; conditions: "
        "[('Available', 'MinimumReplicasAvailable'), ('Progressing', 'ReplicaSetUpdated')])"
    ) in str(error.value)
    _rolled_back(api, error.value, lines)


@pytest.mark.timeout(60)
def test_rollout_of_a_missing_deployment_is_a_clear_error(api, kubeconfig):
    with pytest.raises(RolloutError) as error:
        _roll(kubeconfig, timeout_seconds=5, log=lambda _: None)
    message = str(error.value)
    # The API server's own words, not the response headers that str(ApiException) starts with.
    assert message == (
        f"Deployment {NAMESPACE}/{DEPLOYMENT} at {api.url}: could not be read ((404) "
        f'deployments.apps "{DEPLOYMENT}" not found)'
    )
    assert api.requests_to("PATCH", DEPLOYMENT_PATH) == []  # nothing changed, nothing to wait for
