"""The whole pipeline, run for real by kfp.local on this machine: the `make demo` path (data,
ParallelFor preprocessing, two MWMS worker processes, evaluation, quantization, gate, deploy,
then the served model) and the console a person reads meanwhile, a step that fails and says why,
a starved run that the quality gate must hold back, and the train step failing clearly against
an unreachable cluster."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from PIL import Image
from servers import free_port

from kubedetect.data.synth import synthesize
from pipelines.run import run_local

pytestmark = pytest.mark.slow
GATE = 0.2  # int8 mAP@0.5 the tiny runs must reach to be deployed
# The steps of the pipeline as the console names them, with two shards.
STEPS = [
    "plan shards",
    "preprocess shard 0",
    "preprocess shard 1",
    "merge shards",
    "plan candidates",
    "train 0",
    "select candidates",
    "evaluate",
    "quantize",
    "quality gate",
    "deploy",
]
STEP_LINE = r"^ *\d+:\d\d  {name} +{what}"


def step_lines(console: str, name: str, what: str) -> list[str]:
    return re.findall(STEP_LINE.format(name=re.escape(name), what=what), console, re.MULTILINE)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-data")
    synthesize(str(root), 240, seed=5, progress=False)
    return root


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


@pytest.mark.timeout(1500)
def test_demo_runs_the_pipeline_and_serves_the_gated_model(voc, tmp_path):
    out, port = tmp_path / "demo", free_port()
    command = [
        sys.executable,
        "-m",
        "pipelines.demo",
        "--out",
        str(out),
        "--data",
        str(voc),
        "--image-size",
        "128",
        "--epochs",
        "24",
        "--batch-size",
        "16",
        "--num-shards",
        "2",
        "--min-map",
        str(GATE),
        "--port",
        str(port),
    ]
    log = open(tmp_path / "demo.log", "w+")  # noqa: SIM115 - the demo writes it while it runs
    demo = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    try:
        deadline = time.monotonic() + 1400
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                if _get(f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(2)
        log.seek(0)
        text = log.read()
        assert demo.poll() is None, (
            f"the demo ended (exit {demo.returncode}) before serving:\n{text[-4000:]}"
        )

        # The summary table: every variant with its mAP, the gate's decision, where things are.
        for variant in ("keras", "float32", "float16", "dynamic", "int8"):
            assert f"\n{variant} " in text
        assert "Quality gate: deploy" in text
        assert f"Serving {os.path.realpath(out / 'serving' / 'current')}" in text

        # The console, until the server starts: a line as each step starts and one as it ends
        # (with its figure), the summary, and nothing else: no executor inputs as JSON, no
        # warnings, errors or tracebacks for things that went right, no progress bar redrawn.
        console = text.split("\nServing ")[0]
        for name in STEPS:
            assert len(step_lines(console, name, "started")) == 1, (name, console)
            assert len(step_lines(console, name, r"done in (\d+ min )?[\d.]+ s")) == 1, console
        assert re.search(r"train 0 +done in .*: val mAP@0\.5:0\.95 0\.\d{3}", console)
        assert re.search(r"select candidates +done in .*: c0 chosen", console)
        assert re.search(r"quality gate +done in .*: deploy ", console)
        logs = out / "logs"
        assert f"every step's full log: {logs}/" in console
        assert not re.search(r"(?i)warn|error|traceback|executor_input|\{", console), console
        assert "\r" not in console
        assert len(console.splitlines()) <= 60, console

        # ... and everything else in the log files the console named.
        assert "Got executor_input" in (logs / "plan-shards.log").read_text()
        assert "Running pipeline" in (logs / "kfp-local.log").read_text()
        assert (logs / "preprocess-shard-1.log").is_file()
        assert re.search(r"worker 0: epoch 24/24", (logs / "train-0.log").read_text())
        for worker in (0, 1):  # every line of each training worker, in its own file
            worker_log = logs / "c0" / f"worker-{worker}.log"  # the candidate's workers
            assert f"worker {worker}: final step" in worker_log.read_text()

        # The artifacts of the run.
        run_root = next((out / "kfp-local").iterdir())
        manifest = json.loads((run_root / "merge-shards" / "dataset" / "dataset.json").read_text())
        assert manifest["num_shards"] == 2 and manifest["splits"]["train"]["images"] > 150
        card = json.loads((run_root / "select-candidates" / "chosen" / "model.json").read_text())
        assert card["kind"] == "keras" and card["classes"] == ["circle", "square", "triangle"]
        report = json.loads((run_root / "quantize" / "variants" / "report.json").read_text())
        int8 = next(row for row in report["variants"] if row["variant"] == "int8")
        assert int8["map50"] >= GATE
        assert (
            "<img" in (run_root / "evaluate" / "plots").read_text()
        )  # plots inlined for the KFP UI

        # The served model is the variant the gate chose (the fastest within the accuracy
        # budget on this CPU, as the report names it), and it finds shapes in a new image.
        served = json.loads((out / "serving" / "current" / "model.json").read_text())
        chosen = report["fastest_within_budget"]["variant"]
        assert (
            served["variant"] == chosen
            and served["sha256"]
            in (run_root / "quantize" / "variants" / chosen / "model.json").read_text()
        )
        image = tmp_path / "shapes"
        synthesize(str(image), 1, seed=999, progress=False)
        body = (image / "JPEGImages" / "synth_000000.jpg").read_bytes()
        # A model trained for a minute at 128 px is not sure of itself: ask for its guesses too.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/detect?score_threshold=0.1",
            data=body,
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        detections = answer["detections"] if isinstance(answer, dict) else answer
        assert detections, "the served model found nothing in an image of shapes"
        width, height = Image.open(io.BytesIO(body)).size
        for found in detections:
            assert found["label"] in ("circle", "square", "triangle")
            box = found["box"]
            assert (
                0 <= box["xmin"] < box["xmax"] <= width and 0 <= box["ymin"] < box["ymax"] <= height
            )
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        log.close()


@pytest.mark.timeout(600)
def test_a_failing_step_shows_its_error_and_the_path_of_its_log(voc, tmp_path):
    """A batch larger than the data: the train step fails, and the console says so with the
    workers' own error and where the full log is; the steps after it never start."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pipelines.demo", "--out", str(out), "--data", str(voc)]
    command += ["--image-size", "64", "--num-shards", "1", "--epochs", "1"]
    command += ["--batch-size", "4096", "--no-serve"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=500)
    assert result.returncode != 0, result.stdout
    console, log = result.stdout, out / "logs" / "train-0.log"
    assert len(step_lines(console, "merge shards", "done in")) == 1, console
    assert len(step_lines(console, "train 0", "FAILED after")) == 1, console
    # The failing step's last lines: the launcher's account and the workers' own error.
    assert "fewer than one batch of 4096" in console, console
    assert re.search(r"\[launcher\] worker \d failed \(exit status \d+\)", console), console
    assert f"full log: {log}" in console
    assert "Traceback" not in console  # folded to the error's own line; the log keeps it all
    assert "Traceback" in log.read_text()
    assert not step_lines(console, "evaluate", "started")
    assert result.stderr.strip().splitlines()[-1] == (
        f"demo: error: the pipeline stopped: step 'train 0' failed (its log: {log})"
    )


@pytest.mark.timeout(900)
def test_a_starved_run_is_held_back_by_the_quality_gate(voc, tmp_path):
    serving = tmp_path / "serving"
    params = {
        "data_uri": str(voc),
        "image_size": 128,
        "num_shards": 2,
        "workers": 1,
        "epochs": 1,
        "batch_size": 8,
        "train_flags": "--steps-per-epoch 1",
        "quantize_modes": "float32,int8",
        "min_map": GATE,
        "serving_dir": str(serving),
    }
    run = run_local(params, str(tmp_path / "root"))
    assert not run.deployed
    assert not serving.exists(), "a held model must not reach the serving folder"
    with open(run.gate) as f:
        decision = f.read()
    assert decision.startswith("# Quality gate: hold")
    assert re.search(r"FAIL: \w+ mAP@0\.5", decision)  # the chosen variant's, not good enough
    assert os.path.isfile(
        os.path.join(run.variants, "int8", "model.tflite")
    )  # quantized all the same


@pytest.mark.timeout(300)
def test_train_step_fails_fast_and_clearly_when_the_cluster_is_unreachable(
    synth_shards, tmp_path, capfd, monkeypatch
):
    """The TFJob launcher, driven through the SDK's real TrainingClient at a closed port."""
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from components.train import train
    from kubedetect.config import ClusterConfig
    from kubedetect.flags import to_dict

    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    cluster = json.dumps(
        to_dict(ClusterConfig(workspace_mount=str(tmp_path / "workspace"), namespace="ml"))
    )
    train_op = dsl.component(train, base_image="unused-locally", install_kfp_package=False)

    @dsl.pipeline(name="train-only")
    def train_only():
        shards = dsl.importer(artifact_uri=str(synth_shards), artifact_class=Dataset)
        train_op(
            dataset=shards.output,
            launcher="tfjob",
            workers=2,
            epochs=1,
            images_seen=0,
            batch_size=8,
            train_flags="",
            run_name="run-42",
            cluster=cluster,
        )

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # what the step's TrainingClient reads
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with pytest.raises(RuntimeError, match="Inner task failed"):
        train_only()
    output = capfd.readouterr()
    logs = output.out + output.err
    assert "TFJob ml/kubedetect-run-42-" in logs
    assert f"at https://127.0.0.1:{port}: could not be created" in logs
    assert "Connection refused" in logs
