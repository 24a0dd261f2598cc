"""Candidate trainings and the ensemble they can become, as a user runs them: `kubedetect
candidates` (two bootstrap candidates side by side through the real local launcher), the table,
plot and choice it writes, the ensemble folder quantized by `kubedetect quantize`, evaluated,
and served by a real Gunicorn behind the same APIs; plus the plan of candidates and the
bootstrap samples, and the errors a user can make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from servers import serve

from cli.main import main
from kubedetect.config import CandidatesConfig
from kubedetect.errors import KubedetectError
from kubedetect.training.candidates import Candidate, bootstrap_shards, parse_flags, plan

# -- the plan ------------------------------------------------------------------------------------


def test_candidates_are_every_combination_of_what_is_listed_for_each_bootstrap_sample():
    config = CandidatesConfig(seeds=("0", "1"), learning_rates=("2e-3", "4e-3"), bootstrap=2)
    candidates = plan(config)
    assert len(candidates) == 8
    assert [c.name for c in candidates] == [f"c{i}" for i in range(8)]
    assert candidates[0] == Candidate(0, seed=0, learning_rate=2e-3, bootstrap=1)
    assert candidates[-1] == Candidate(7, seed=1, learning_rate=4e-3, bootstrap=2)
    assert candidates[3].train_flags() == ["--seed", "1", "--learning-rate", "0.004"]
    assert candidates[3].describe() == "seed 1, learning rate 0.004, bootstrap 1"
    assert Candidate.from_json(candidates[3].to_json()) == candidates[3]
    # Nothing listed: one candidate, the training's own settings.
    (only,) = plan(CandidatesConfig())
    assert only.train_flags() == [] and only.describe() == "the training's own settings"


def test_the_pipeline_parameter_is_read_as_the_commands_flags():
    config = parse_flags("--model-sizes tiny,large --seeds 3 --ensemble-size 2")
    assert config.model_sizes == ("tiny", "large") and config.ensemble_size == 2
    assert [c.train_flags() for c in plan(config)] == [
        ["--seed", "3", "--model-size", "tiny"],
        ["--seed", "3", "--model-size", "large"],
    ]
    assert parse_flags("") == CandidatesConfig()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--seeds 0,x", r"--seeds 'x': not a seed"),
        ("--learning-rates 0.01,2", r"--learning-rates '2': not a learning rate"),
        ("--model-sizes tiny,huge", r"--model-sizes 'huge': not a model size \(tiny, large\)"),
        ("--seeds 1,1", "--seeds 1,1: a value is repeated"),
        ("--seeds 0,1 --ensemble-size 3", "--ensemble-size 3: between 1 and the number of "),
        ("--bootstrap -1", "--bootstrap -1"),
        ("--seed 0,1", r"unknown --seed 0,1; the candidates take --seeds, "),
        ("--ensemble-size two", "--ensemble-size: invalid int value: 'two'"),
    ],
)
def test_bad_candidates_are_refused_naming_the_flag(flags, message):
    with pytest.raises(KubedetectError, match=message):
        plan(parse_flags(flags))


# -- bootstrap samples ---------------------------------------------------------------------------


def _records(shards: Path, split: str) -> list[bytes]:
    import tensorflow as tf

    from kubedetect.data.shards import shard_paths

    return list(tf.data.TFRecordDataset(shard_paths(str(shards), split)).as_numpy_iterator())


def test_a_bootstrap_sample_draws_the_training_split_with_replacement(synth_shards, tmp_path):
    original = _records(synth_shards, "train")
    manifest = bootstrap_shards(str(synth_shards), str(tmp_path / "b1"), 1)
    drawn = _records(tmp_path / "b1", "train")
    assert len(drawn) == len(original) == manifest["splits"]["train"]["images"]
    assert set(drawn) <= set(original)  # every image is one of the split's, unchanged
    distinct = len(set(drawn))
    assert distinct < len(original) and distinct == manifest["bootstrap"]["distinct_images"]
    # The other splits as they were; the manifest's checksums those of the new files.
    assert _records(tmp_path / "b1", "val") == _records(synth_shards, "val")
    from kubedetect.io import fs

    for entry in manifest["shards"]:
        assert fs.sha256_file(str(tmp_path / "b1" / entry["path"])) == entry["sha256"]
    # The same sample number draws the same sample; another, another.
    bootstrap_shards(str(synth_shards), str(tmp_path / "again"), 1)
    bootstrap_shards(str(synth_shards), str(tmp_path / "b2"), 2)
    assert _records(tmp_path / "again", "train") == drawn
    assert _records(tmp_path / "b2", "train") != drawn


# -- `kubedetect candidates`, the ensemble, quantized and served --------------------------------


@pytest.fixture(scope="module")
def candidates_run(synth_shards, tmp_path_factory):
    """Two bootstrap candidates trained side by side (--parallel 2), their boxes fused."""
    out = tmp_path_factory.mktemp("candidates") / "run"
    code = main(
        [
            "candidates", str(synth_shards), str(out), "--bootstrap", "2", "--ensemble-size",
            "2", "--parallel", "2", "--epochs", "6", "--batch-size", "8", "--eval-every", "0",
        ]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_candidates_are_trained_scored_tabled_plotted_and_the_best_fused(candidates_run):
    out = candidates_run
    summary = json.loads((out / "candidates.json").read_text())
    rows = {row["name"]: row for row in summary["candidates"]}
    assert set(rows) == {"c0", "c1"} and summary["parallel"] == 2
    assert rows["c0"]["settings"] == {"bootstrap": 1} and rows["c1"]["settings"] == {"bootstrap": 2}
    ranked = [row["name"] for row in summary["candidates"]]  # best first
    assert summary["chosen"] == ranked
    scores = [row["map50_95"] for row in summary["candidates"]]
    assert scores == sorted(scores, reverse=True)
    for name, row in rows.items():  # each trained on its own sample, and its own logs
        assert (out / name / "model.keras").is_file() and row["train_seconds"] > 0
        assert json.loads((out / f"{name}-shards" / "dataset.json").read_text())["bootstrap"]
        assert "final step" in (out / "logs" / name / "worker-0.log").read_text()

    # The chosen model: an ensemble of both, best first, weighted by their validation scores.
    card = json.loads((out / "chosen" / "model.json").read_text())
    assert card["kind"] == "ensemble" and card["variant"] == "float"
    spec = json.loads((out / "chosen" / "ensemble.json").read_text())
    assert [m["name"].split()[0] for m in spec["members"]] == ranked
    assert [m["weight"] for m in spec["members"]] == pytest.approx([max(s, 1e-3) for s in scores])
    table = (out / "candidates.md").read_text()
    assert f"| **fused (1 of 2)** | {ranked[0]} | bootstrap" in table
    assert f"| **fused (2 of 2)** | {ranked[1]} | bootstrap" in table
    assert (out / "candidates.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def ensemble_variants(candidates_run, synth_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "variants"
    code = main(
        [
            "quantize", str(candidates_run / "chosen"), str(out), "--mode", "float32,int8",
            "--shards", str(synth_shards), "--calibration-images", "20", "--report",
            "--latency-runs", "10", "--latency-rounds", "1",
        ]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_ensemble_is_quantized_and_measured_as_one_model(ensemble_variants, synth_shards):
    from kubedetect.config import QuantizeConfig
    from kubedetect.inference.ensemble import model_bytes
    from kubedetect.network.quantize_ensemble import gain_and_cost

    report = json.loads((ensemble_variants / "report.json").read_text())
    rows = {row["variant"]: row for row in report["variants"]}
    for mode in ("float32", "int8"):
        folder = ensemble_variants / mode
        card = json.loads((folder / "model.json").read_text())
        assert card["kind"] == "ensemble" and card["variant"] == mode
        members = sorted((folder / "members").iterdir())
        assert len(members) == 2
        # Its size is its members' together; its latency every member's interpreter.
        sizes = [(m / "model.tflite").stat().st_size for m in members]
        assert rows[mode]["size_bytes"] == sum(sizes) == model_bytes(str(folder))
        assert rows[mode]["latency_ms"] > 0
    # What fusing buys and costs, against the best member alone, on the same images.
    config = QuantizeConfig(modes=("int8",), latency_runs=10, latency_rounds=1)
    result = gain_and_cost(str(ensemble_variants), config, shards=str(synth_shards))
    (row,) = result["rows"]
    assert row["gain_map50_95_points"] == pytest.approx(
        (row["ensemble_map50_95"] - row["single_map50_95"]) * 100
    )
    assert row["latency_ratio"] > 1.2  # two interpreters cost more than one
    assert "| int8 |" in (ensemble_variants / "fusion.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_served_ensemble_answers_what_the_library_fuses(ensemble_variants, tmp_path):
    """A real Gunicorn serving the int8 ensemble: the same APIs, every member's interpreter,
    the shared decode per member, then weighted box fusion; the same boxes as the library."""
    from kubedetect.data.synth import synthesize
    from kubedetect.inference.ensemble import open_tflite
    from kubedetect.io.images import load_for_model

    folder = ensemble_variants / "int8"
    synthesize(str(tmp_path / "image"), 1, seed=321, progress=False)
    body = (tmp_path / "image" / "JPEGImages" / "synth_000000.jpg").read_bytes()
    ensemble = open_tflite(str(folder))
    pixels, frame = load_for_model(
        body, size=ensemble.input_size, max_pixels=10**8, resize=ensemble.card.resize
    )
    (expected,) = ensemble.predict(pixels[None], score_threshold=0.001, max_detections=20)
    assert len(expected) > 0

    server = serve(folder, tmp_path / "server", flags=["--workers", "1"]).wait()
    try:
        status = server.get("/v1/models/detector").json()
        assert status["members"] == 2 and status["variant"] == "int8"
        answer = server.post("/v1/detect?score_threshold=0.001&max_detections=20", data=body).json()
        found = answer["detections"]
        assert [d["score"] for d in found] == pytest.approx(expected.scores.tolist(), abs=1e-4)
        boxes = [[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in found]
        assert np.asarray(boxes) == pytest.approx(expected.in_original(frame), abs=0.02)
        # KServe V2 too: the same model behind every protocol.
        v2 = server.get("/v2/models/detector").json()
        assert v2["parameters"]["members"] == 2
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_changed_member_is_refused_by_serve_and_the_registry(ensemble_variants, tmp_path, capsys):
    from kubedetect.inference import registry

    folder = tmp_path / "int8"
    shutil.copytree(ensemble_variants / "int8", folder)
    member = folder / "members" / "1" / "model.tflite"
    member.write_bytes(member.read_bytes()[:-1] + b"\0")
    assert main(["serve", str(folder), "--port", "1"]) != 0
    error = capsys.readouterr().err
    assert str(member) in error and "does not match" in error
    with pytest.raises(KubedetectError, match="does not match"):
        registry.install(str(folder), str(tmp_path / "registry"))
    assert not (tmp_path / "registry" / registry.CURRENT).exists()


def test_an_ensemble_of_members_unlike_each_other_is_refused_naming_the_member(
    ensemble_variants, tmp_path
):
    """Members that take different inputs (an int8 and a float32 variant) or an ensemble as a
    member cannot be fused: refused before anything is written, naming the folder."""
    from kubedetect.inference.ensemble import write_ensemble

    int8 = str(ensemble_variants / "int8" / "members" / "0")
    float32 = str(ensemble_variants / "float32" / "members" / "1")
    out = tmp_path / "mixed"
    with pytest.raises(KubedetectError, match="must take the same input") as refused:
        write_ensemble(str(out), [(int8, 1.0, "a"), (float32, 1.0, "b")])
    assert float32 in str(refused.value) and "float32" in str(refused.value)
    nested = str(ensemble_variants / "int8")
    with pytest.raises(KubedetectError, match=f"{nested}: an ensemble cannot hold another"):
        write_ensemble(str(out), [(int8, 1.0, "a"), (nested, 1.0, "b")])
    assert not out.exists()
