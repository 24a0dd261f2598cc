"""Three candidates through the whole pipeline, run for real by kfp.local on synthetic shapes with
a test split, against a model put in service before the run: the candidates' table and plot
for the KFP UI, the choice, and the quality gate's champion-and-challenger decision in the
run's metrics and in deploy's log. Once the model in service is better than what three short
trainings make, and the new model is held; once it is a starved one, and the new model (the
three fused) is deployed in its place."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubedetect.data.synth import synthesize
from kubedetect.inference import registry
from pipelines.run import run_local

pytestmark = pytest.mark.slow
IMAGE_SIZE = 96
CANDIDATE_PARAMS = {  # three short trainings, one after another on two cores
    "image_size": IMAGE_SIZE,
    "num_shards": 2,
    "workers": 1,
    "epochs": 6,
    "batch_size": 16,
    "train_flags": "--eval-every 0",
    "quantize_modes": "int8",
    "min_map": 0.0,
}


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    """200 synthetic images; 40 of the training list moved to a test split."""
    root = tmp_path_factory.mktemp("candidates-data") / "voc"
    synthesize(str(root), 200, seed=21, progress=False)
    lists = root / "ImageSets" / "Main"
    train = (lists / "train.txt").read_text().split()
    (lists / "train.txt").write_text("\n".join(train[40:]) + "\n")
    (lists / "test.txt").write_text("\n".join(train[:40]) + "\n")
    return root


def _python(*args: str, log: Path) -> None:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _champion(voc: Path, work: Path, train_flags: list[str]) -> str:
    """A model trained and quantized outside the pipeline, on the same data and size."""
    shards, model, variants = work / "shards", work / "model", work / "variants"
    size = str(IMAGE_SIZE)
    _python("-m", "cli", "preprocess", str(voc), str(shards), "--image-size", size,
            "--num-shards", "2", "--quiet", log=work / "preprocess.log")  # fmt: skip
    _python("-m", "kubedetect.training.train", str(shards), str(model), "--batch-size", "16",
            "--no-progress", "--eval-every", "0", *train_flags, log=work / "train.log")  # fmt: skip
    _python("-m", "cli", "quantize", str(model), str(variants), "--mode", "int8",
            "--calibration-images", "20", log=work / "quantize.log")  # fmt: skip
    return str(variants / "int8")


@pytest.fixture(scope="module")
def strong_champion(voc, tmp_path_factory) -> str:
    return _champion(voc, tmp_path_factory.mktemp("strong"), ["--epochs", "30"])


@pytest.fixture(scope="module")
def starved_champion(voc, tmp_path_factory) -> str:
    starved = ["--epochs", "1", "--steps-per-epoch", "1"]
    return _champion(voc, tmp_path_factory.mktemp("starved"), starved)


def _in_service(serving: Path, champion: str) -> str:
    return registry.install(champion, str(serving))


def logged_champion_score(deploy_log: str) -> float:
    """The champion's mAP@0.5:0.95 as deploy's log gives it (3 decimals; the run's metrics hold
    it to 4, so the two are compared within rounding)."""
    found = re.search(r"against (\d+\.\d{3})", deploy_log)
    assert found, deploy_log
    return float(found[1])


def _metrics(run_root: str, task: str) -> dict:
    with open(Path(run_root) / task / "executor_output.json") as f:
        return json.load(f)["artifacts"]["metrics"]["artifacts"][0]["metadata"]


@pytest.mark.timeout(1200)
def test_three_candidates_a_table_a_choice_and_a_better_champion_holds_the_new_model(
    voc, strong_champion, tmp_path
):
    serving = tmp_path / "serving"
    champion = _in_service(serving, strong_champion)
    params = CANDIDATE_PARAMS | {
        "data_uri": str(voc),
        "candidates": "--seeds 0,1,2",
        "champion_margin": 1.0,
        "serving_dir": str(serving),
    }
    run = run_local(params, str(tmp_path / "root"))

    # The candidates, one train step each, each scored on the validation split.
    trained = sorted(Path(run.root).glob("for-loop-*-iteration-*/train/model"))
    assert len(trained) == 3
    scores = {}
    for model in trained:
        meta = json.loads((model.parent / "executor_output.json").read_text())
        meta = meta["artifacts"]["model"]["artifacts"][0]["metadata"]
        name = json.loads(meta["candidate"])["index"]
        scores[f"c{name}"] = meta["map50_95"]
        assert meta["settings"] == f"seed {name}" and meta["train_seconds"] > 0
    best = max(sorted(scores), key=lambda n: scores[n])

    # The table and plot for the KFP UI: one row per candidate, best first, the chosen marked.
    table = (Path(run.root) / "select-candidates" / "table").read_text()
    rows = re.findall(r"^\|[^|]*\| (c\d) \| seed \d \| ([\d.]+) \|", table, re.MULTILINE)
    assert [name for name, _ in rows] == sorted(scores, key=lambda n: (-scores[n], n))
    assert f"| **chosen** | {best} | seed {best[1]} |" in table
    page = Path(run.candidates).read_text()
    assert "<img" in page and page.count("<tr") == 4 and "class=mark" in page
    selected = _metrics(run.root, "select-candidates")
    assert selected["chosen_val_map50_95"] == pytest.approx(scores[best], abs=1e-4)
    assert {f"c{i}_val_map50_95" for i in range(3)} <= set(selected)
    chosen_card = json.loads((Path(run.model) / "model.json").read_text())
    assert chosen_card["kind"] == "keras"

    # The gate: on the test split, the model in service is better: held, and it stays.
    gate = _metrics(run.root, "quality-gate")
    assert gate["deploy"] == 0.0
    assert gate["champion_map50_95"] > gate["challenger_map50_95"] + 0.01
    decision = Path(run.gate).read_text()
    assert decision.startswith("# Quality gate: hold")
    assert re.search(r"- FAIL: not worse than the model in service: .* on test", decision)
    assert not run.deployed
    assert registry.current(str(serving)) == champion
    # ... and deploy's log says so, with both scores.
    deploy_log = (Path(run.log_dir) / "deploy.log").read_text()
    assert "quality gate: hold int8" in deploy_log
    assert logged_champion_score(deploy_log) == pytest.approx(gate["champion_map50_95"], abs=6e-4)
    assert "held: the model in service stays" in deploy_log


@pytest.mark.timeout(1200)
def test_three_candidates_fused_beat_a_starved_champion_and_replace_it(
    voc, starved_champion, tmp_path
):
    serving = tmp_path / "serving"
    champion = _in_service(serving, starved_champion)
    params = CANDIDATE_PARAMS | {
        "data_uri": str(voc),
        "candidates": "--seeds 0,1,2 --ensemble-size 3",
        "champion_margin": 0.0,  # not worse at all
        "serving_dir": str(serving),
    }
    run = run_local(params, str(tmp_path / "root"))

    table = (Path(run.root) / "select-candidates" / "table").read_text()
    assert all(f"**fused ({k} of 3)**" in table for k in (1, 2, 3))
    chosen_card = json.loads((Path(run.model) / "model.json").read_text())
    assert chosen_card["kind"] == "ensemble" and chosen_card["provenance"]["members"] == 3
    report = (Path(run.root) / "quantize" / "report").read_text()
    assert "## The fusion against its best member alone" in report
    quantized = _metrics(run.root, "quantize")
    assert quantized["int8_fusion_latency_ratio"] > 1.5  # three interpreters, not one

    gate = _metrics(run.root, "quality-gate")
    assert gate["deploy"] == 1.0
    assert gate["challenger_map50_95"] > gate["champion_map50_95"]
    decision = Path(run.gate).read_text()
    assert decision.startswith("# Quality gate: deploy")
    assert "- pass: not worse than the model in service" in decision
    assert run.deployed
    served = registry.current(str(serving))
    assert served != champion
    card = json.loads((Path(served) / "model.json").read_text())
    assert card["kind"] == "ensemble" and card["variant"] == "int8"
    deploy_log = (Path(run.log_dir) / "deploy.log").read_text()
    assert "quality gate: deploy int8" in deploy_log
    assert logged_champion_score(deploy_log) == pytest.approx(gate["champion_map50_95"], abs=6e-4)
    assert f"deployed int8 model to {served}" in deploy_log
