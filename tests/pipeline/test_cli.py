"""The command-line forms of the cluster path: `kubedetect train --emit-tfjob`, `kubedetect
pipeline compile` and `kubedetect pipeline submit`.

These are what a user types to go from a laptop to a cluster, so each is checked against the
thing it stands for: the emitted TFJob is valid under the operator's CRD and is the very job the
library builds for the same settings; the compiled file is the pipeline `compile_pipeline`
gives; a submitted run reaches a Kubeflow Pipelines API, through kfp's real `kfp.Client`, with
the compiled spec and typed parameters. That API is `KfpApiStub` (kfp_api_stub.py), a server on
127.0.0.1 that records what it is sent and answers as KFP does. Bad input is one clear line on
stderr and a non-zero exit, never a traceback, and never a request to a server.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from servers import free_port

from cli.main import main
from components.tfjob import build_tfjob, to_manifest
from kubedetect.config import ClusterConfig, ModelConfig, PipelineConfig, TrainConfig
from kubedetect.flags import to_argv
from pipelines.run import compile_pipeline

from .kfp_api_stub import API, KfpApiStub

IMAGE = "registry.example/kubedetect-trainer:9"
SHARDS_URI = "/workspace/runs/cards/shards"  # as the pods see it, on the workspace volume
DATA_URI = "data_uri=/workspace/data/cards"

# kfp.Client reads these documented variables; a developer's own must not steer the tests.
KFP_ENVIRONMENT = (
    "KF_PIPELINES_ENDPOINT",
    "KF_PIPELINES_UI_ENDPOINT",
    "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
    "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME",
    "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
    "KF_PIPELINES_APP_OAUTH2_CLIENT_ID",
    "KF_PIPELINES_APP_OAUTH2_CLIENT_SECRET",
)


@pytest.fixture(autouse=True)
def no_kfp_environment(monkeypatch):
    for name in KFP_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tfjob_schema(tfjob_crd):
    crd = yaml.safe_load(tfjob_crd.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kubedetect: error:")]


def yaml_documents(path) -> list[dict]:
    with open(path) as f:
        return list(yaml.safe_load_all(f))


# ----------------------------------------------------------------------------------------------
# kubedetect train --emit-tfjob
# ----------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize(("workers", "gpus"), [(2, 1), (4, 2)])
def test_emit_tfjob_prints_the_crd_valid_job_the_library_builds(
    tfjob_schema, tmp_path, capsys, workers, gpus
):
    model_uri = tmp_path / "model"  # a real local path: the command must not create it
    code = main(
        [
            "train",
            SHARDS_URI,
            str(model_uri),
            "--workers",
            str(workers),
            "--gpus-per-worker",
            str(gpus),
            "--image",
            IMAGE,
            "--namespace",
            "ml-team",
            "--job-name",
            "kubedetect-cards",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--width",
            "16",
            "--emit-tfjob",
        ]
    )
    assert code == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(documents) == 1
    (job,) = documents
    jsonschema.validate(job, tfjob_schema)

    assert job["kind"] == "TFJob"
    assert job["metadata"]["name"] == "kubedetect-cards"
    assert job["metadata"]["namespace"] == "ml-team"
    # Bounded in time: the operator fails a job that outlives the step's wait.
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == ClusterConfig().job_timeout_seconds
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == workers
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # the only container the operator gives TF_CONFIG
    assert container["image"] == f"{IMAGE}-gpu"  # the GPU build; the steps keep IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert container["command"] == ["python", "-m", "kubedetect.training.train"]
    args = container["args"]
    assert args[:2] == [SHARDS_URI, str(model_uri)]
    flags = dict(zip(args[2::2], args[3::2], strict=True))
    assert flags == {
        "--epochs": "3",
        "--batch-size": "16",
        "--width": "16",
        "--require-gpus": str(gpus),  # no GPU visible: fail at once, not train on the CPU
        "--model-size": "large",  # GPU pods: the large model by default
    }
    (shm,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert {"name": shm, "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]

    # The job the train step builds from the same training flags and cluster settings.
    train_argv = [
        SHARDS_URI,
        str(model_uri),
        *to_argv(TrainConfig(epochs=3, batch_size=16)),
        *to_argv(ModelConfig(width=16)),
    ]
    cluster = ClusterConfig(image=IMAGE, namespace="ml-team", gpus_per_worker=gpus)
    assert job == to_manifest(build_tfjob("kubedetect-cards", train_argv, workers, cluster))

    assert not model_uri.exists()  # printed, not trained


# ----------------------------------------------------------------------------------------------
# kubedetect pipeline compile
# ----------------------------------------------------------------------------------------------

GPU_LOCAL_FLAGS = [
    "--launcher",
    "local",
    "--parallelism",
    "3",
    "--candidate-parallelism",
    "1",
    "--gpus-per-worker",
    "2",
    "--image",
    IMAGE,
]
GPU_LOCAL_SETTINGS = (
    PipelineConfig(launcher="local", parallelism=3, candidate_parallelism=1),
    ClusterConfig(image=IMAGE, gpus_per_worker=2),
)


@pytest.mark.parametrize(
    ("flags", "settings"),
    [([], (PipelineConfig(), ClusterConfig())), (GPU_LOCAL_FLAGS, GPU_LOCAL_SETTINGS)],
    ids=["defaults", "local-launcher-on-gpus"],
)
def test_compile_writes_the_pipeline_compile_pipeline_gives(tmp_path, capsys, flags, settings):
    output = tmp_path / "out" / "kubedetect.yaml"
    output.parent.mkdir()
    assert main(["pipeline", "compile", "-o", str(output), *flags]) == 0
    assert str(output) in capsys.readouterr().out

    expected = compile_pipeline(str(tmp_path / "expected.yaml"), *settings)
    # Nothing volatile to ignore: kfp writes no timestamp, and sdkVersion is the installed kfp.
    assert yaml_documents(output) == yaml_documents(expected)


def test_compile_flags_reach_the_platform_spec(tmp_path):
    output = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "-o", str(output), *GPU_LOCAL_FLAGS]) == 0
    spec, platform = yaml_documents(output)
    executors = spec["deploymentSpec"]["executors"]
    images = {name: executor["container"]["image"] for name, executor in executors.items()}
    # Training in the step on GPUs: the GPU build there, the CPU build everywhere else.
    assert images == {**dict.fromkeys(executors, IMAGE), "exec-train": f"{IMAGE}-gpu"}
    accelerator = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "2")
    on_kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_nodes = {"labels": {"nvidia.com/gpu.present": "true"}}
    assert on_kubernetes["exec-train"]["nodeSelector"] == gpu_nodes
    tasks = spec["root"]["dag"]["tasks"]
    train = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]["train"]  # per candidate
    assert train["inputs"]["parameters"]["launcher"]["runtimeValue"]["constant"] == "local"
    assert tasks["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 3}
    assert tasks["for-loop-2"]["iteratorPolicy"] == {"parallelismLimit": 1}


OUTPUT = "{output}"  # stands for the test's own output path
UNKNOWN_SETTINGS = {
    "compile-launcher": (["compile", "-o", OUTPUT, "--launcher", "slurm"], "slurm"),
    "compile-deploy-to": (["compile", "-o", OUTPUT, "--deploy-to", "k8s"], "k8s"),
    "submit-launcher": (
        ["submit", "--host", "http://127.0.0.1:9", "--param", DATA_URI, "--launcher", "slurm"],
        "slurm",
    ),
}


@pytest.mark.parametrize(
    ("command", "value"), list(UNKNOWN_SETTINGS.values()), ids=list(UNKNOWN_SETTINGS)
)
def test_unknown_pipeline_setting_is_one_clear_error(tmp_path, capsys, command, value):
    output = tmp_path / "pipeline.yaml"
    code = main(["pipeline", *(str(output) if arg == OUTPUT else arg for arg in command)])
    assert code != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert value in line
    assert not output.exists()


@pytest.mark.parametrize("name", ["missing-folder/pipeline.yaml", "pipeline.txt"])
def test_unwritable_compile_output_is_one_clear_error_naming_it(tmp_path, capsys, name):
    output = tmp_path / name
    assert main(["pipeline", "compile", "-o", str(output)]) != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert str(output) in line


# ----------------------------------------------------------------------------------------------
# kubedetect pipeline submit
# ----------------------------------------------------------------------------------------------


def submit(host: str, *flags: str) -> int:
    return main(["pipeline", "submit", "--host", host, *flags])


def bodies(stub: KfpApiStub, method: str, endpoint: str) -> list[dict | None]:
    return [r.body for r in stub.requests if (r.method, r.path) == (method, API + endpoint)]


def experiment_lookups(stub: KfpApiStub) -> list[str]:
    """The display names the client looked experiments up by."""
    return [
        predicate["stringValue"]
        for r in stub.requests
        if (r.method, r.path) == ("GET", f"{API}/experiments")
        for predicate in json.loads(r.query["filter"])["predicates"]
    ]


def printed_run_url(stdout: str, stub: KfpApiStub) -> str:
    (run,) = stub.runs
    expected = f"submitted: {stub.url}/#/runs/details/{run['run_id']}"
    assert expected in stdout.splitlines()
    return expected


def test_submit_sends_the_compiled_pipeline_and_typed_parameters(tmp_path, capsys):
    with KfpApiStub() as stub:
        code = submit(
            stub.url,
            "--param",
            DATA_URI,
            "--param",
            "epochs=3",
            "--param",
            "min_map=0.4",
            "--experiment",
            "cards",
            "--run-name",
            "cards-r1",
            "--image",
            IMAGE,
        )
    assert code == 0
    printed_run_url(capsys.readouterr().out, stub)

    assert experiment_lookups(stub) == ["cards"]  # looked up first: an existing one is reused
    (created,) = bodies(stub, "POST", "/experiments")
    assert created["display_name"] == "cards"
    (run,) = bodies(stub, "POST", "/runs")
    assert run["experiment_id"] == stub.experiments[0]["experiment_id"]
    assert run["display_name"] == "cards-r1"

    parameters = run["runtime_config"]["parameters"]
    assert parameters == {"data_uri": "/workspace/data/cards", "epochs": 3, "min_map": 0.4}
    assert type(parameters["epochs"]) is int and type(parameters["data_uri"]) is str

    pipeline = run["pipeline_spec"]
    assert pipeline["pipeline_spec"]["pipelineInfo"]["name"] == "kubedetect"
    tasks = pipeline["pipeline_spec"]["root"]["dag"]["tasks"]
    assert {"select-candidates", "evaluate", "quantize", "quality-gate"} <= set(tasks)
    # The very pipeline `compile` writes for the same settings (--image included).
    path = compile_pipeline(str(tmp_path / "p.yaml"), PipelineConfig(), ClusterConfig(image=IMAGE))
    spec, platform = yaml_documents(path)
    assert pipeline == {"pipeline_spec": spec, "platform_spec": platform}


def test_submit_sends_the_service_account_and_can_turn_caching_off(capsys):
    with KfpApiStub() as stub:
        code = submit(
            stub.url,
            "--param",
            DATA_URI,
            "--service-account",
            "kubedetect-pipeline",
            "--no-cache",
        )
    assert code == 0
    printed_run_url(capsys.readouterr().out, stub)
    (run,) = bodies(stub, "POST", "/runs")
    assert run["service_account"] == "kubedetect-pipeline"  # multi-user KFP (docs/DEPLOY.md)
    pipeline = run["pipeline_spec"]["pipeline_spec"]
    cached = [
        task.get("cachingOptions", {}).get("enableCache", False)
        for component in [pipeline["root"], *pipeline["components"].values()]
        for task in component.get("dag", {}).get("tasks", {}).values()
    ]
    assert cached and not any(cached)  # --no-cache: every step runs


def test_submit_with_caching_keeps_the_compiled_per_step_settings(capsys):
    """KFP's run-wide enable_caching=True would cache `plan shards`, the quality gate and
    `deploy` too: it is never sent; the run carries the compiled settings."""
    with KfpApiStub() as stub:
        assert submit(stub.url, "--param", DATA_URI, "--cache") == 0
    (run,) = bodies(stub, "POST", "/runs")
    assert "service_account" not in run or not run["service_account"]
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert tasks["plan-shards"].get("cachingOptions", {}).get("enableCache", False) is False
    assert tasks["quality-gate"].get("cachingOptions", {}).get("enableCache", False) is False
    assert tasks["select-candidates"]["cachingOptions"]["enableCache"] is True


def test_submit_to_an_existing_experiment_adds_the_run_to_it(capsys):
    with KfpApiStub(experiments=("cards",)) as stub:
        assert submit(stub.url, "--param", DATA_URI, "--experiment", "cards") == 0
    printed_run_url(capsys.readouterr().out, stub)
    assert bodies(stub, "POST", "/experiments") == []
    (run,) = bodies(stub, "POST", "/runs")
    assert run["experiment_id"] == stub.experiments[0]["experiment_id"]


@pytest.mark.timeout(60)
def test_submit_to_a_closed_port_fails_fast_naming_the_host(capsys, caplog):
    host = f"http://127.0.0.1:{free_port()}"
    assert submit(host, "--param", DATA_URI) != 0
    stderr = capsys.readouterr().err
    (line,) = error_lines(stderr)
    assert line.startswith(f"kubedetect: error: {host}: could not submit the run")
    assert "Traceback" not in stderr
    assert [r for r in caplog.records if r.exc_info] == []  # nor one logged to the terminal


@pytest.mark.slow  # kfp.Client retries the health check 5 times, 5 s apart
@pytest.mark.timeout(120)
def test_submit_to_an_unready_api_is_one_clear_error(capsys, caplog):
    with KfpApiStub(unavailable=True) as stub:
        assert submit(stub.url, "--param", DATA_URI) != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"kubedetect: error: {stub.url}: could not submit the run")
    assert [r for r in caplog.records if r.exc_info] == []  # what an unconfigured CLI would print


@pytest.mark.parametrize(
    ("param", "named"),
    [
        ("colour=red", "colour"),
        ("epochs=abc", "epochs"),
        ("min_map=high", "min_map"),
        ("epochs", "epochs"),
    ],
)
def test_bad_param_is_refused_before_any_request(capsys, param, named):
    with KfpApiStub() as stub:
        code = submit(stub.url, "--param", DATA_URI, "--param", param)
    assert code != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("kubedetect: error: --param") and named in line
    assert stub.requests == []


def test_missing_data_uri_is_refused_before_any_request(capsys):
    with KfpApiStub() as stub:
        assert submit(stub.url, "--param", "epochs=3") != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert "--param data_uri" in line
    assert stub.requests == []
