"""Champion and challenger (kubedetect.evaluation.champion, kubedetect.inference.registry): which
model is in service, on which split the two are compared, when the new one may replace the old, and
what happens when they cannot be compared. Models here are real but untrained (the project's own
build and conversion code): what is checked is the comparison, not the models."""

from __future__ import annotations

import shutil

import pytest
from servers import untrained_models

from kubedetect.evaluation.champion import Comparison, compare
from kubedetect.evaluation.evaluate import resolve_split
from kubedetect.inference import registry
from kubedetect.network.quantize import GateDecision


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """int8 variants of 128 px (the synthetic shards' size) and of 96 px."""
    root = tmp_path_factory.mktemp("champions")
    return {
        128: untrained_models(str(root / "128"), input_size=128, modes=("int8",)) + "/int8",
        96: untrained_models(str(root / "96"), input_size=96, modes=("int8",)) + "/int8",
    }


def test_the_margin_decides_in_points_of_map50_95():
    def verdict(new: float, old: float, margin: float) -> bool:
        scores = {"map50": 0.0}
        comparison = Comparison(
            "test", margin, scores | {"map50_95": new}, scores | {"map50_95": old}, "/m"
        )
        return comparison.passed

    assert verdict(0.50, 0.52, margin=3.0)  # 2 points worse, 3 allowed
    assert not verdict(0.50, 0.52, margin=1.0)
    assert verdict(0.52, 0.50, margin=0.0)
    assert not verdict(0.505, 0.50, margin=-1.0)  # must beat it by a point: 0.5 only
    assert verdict(0.52, 0.50, margin=-1.0)
    text, ok = Comparison("test", 1.0, {"map50_95": 0.4}, {"map50_95": 0.6}, "/m").check()
    assert not ok and "0.400 against 0.600 (-20.00 points, margin 1.00) on test" in text


def test_the_champion_check_is_one_more_check_of_the_gate():
    decision = GateDecision(True, "int8", (("int8 mAP@0.5 0.9 >= 0.5", True),), "why")
    held = decision.with_check("not worse than the model in service: ...", False)
    assert not held.passed and held.variant == "int8" and len(held.checks) == 2
    assert held.markdown().startswith("# Quality gate: hold")
    assert "- FAIL: not worse than the model in service" in held.markdown()
    assert held.summary().startswith("hold int8 (int8 mAP@0.5 0.9 >= 0.5; not worse")


def test_the_model_in_service_is_the_registrys_current_else_the_initial_one(models, tmp_path):
    root = tmp_path / "models"
    assert registry.in_service(str(root)) is None
    shutil.copytree(models[128], root / registry.INITIAL)  # what k8s/base serves at first
    assert registry.in_service(str(root)) == str(root / registry.INITIAL)
    installed = registry.install(models[96], str(root), make_current=False)
    assert registry.in_service(str(root)) == str(root / registry.INITIAL)  # not serving yet
    registry.set_current(str(root), installed)
    assert registry.in_service(str(root)) == installed


def test_compared_on_the_test_split_where_there_is_one(synth_shards, tmp_path):
    import json

    assert resolve_split(str(synth_shards), "auto") == "val"  # the synthetic set has none
    copy = tmp_path / "shards"
    shutil.copytree(synth_shards, copy)
    manifest = json.loads((copy / "dataset.json").read_text())
    manifest["splits"]["test"] = manifest["splits"]["val"]
    (copy / "dataset.json").write_text(json.dumps(manifest))
    assert resolve_split(str(copy), "auto") == "test"


def test_no_champion_or_one_that_cannot_run_here_leaves_the_challenger_to_its_own_merits(
    models, synth_shards, tmp_path
):
    alone = compare(models[128], None, str(synth_shards), 1.0)
    assert alone.passed and alone.champion is None and alone.split == "val"
    assert "no model in service yet" in alone.check()[0]
    assert set(alone.metrics()) == {"challenger_map50", "challenger_map50_95"}

    other_size = compare(models[128], models[96], str(synth_shards), 1.0)
    assert other_size.passed and other_size.champion is None
    assert "takes 96 px images, this data is 128 px: not comparable" in other_size.note

    broken = tmp_path / "broken"
    shutil.copytree(models[128], broken)
    (broken / "model.tflite").write_bytes(b"not a model")
    damaged = compare(models[128], str(broken), str(synth_shards), 1.0)
    assert damaged.passed and "cannot be run" in damaged.note and "does not match" in damaged.note


def test_the_same_model_in_service_scores_the_same(models, synth_shards, tmp_path):
    served = registry.install(models[128], str(tmp_path / "serving"))
    same = compare(models[128], served, str(synth_shards), 0.0)
    assert same.passed and same.champion == same.challenger
    assert set(same.metrics()) == {
        "challenger_map50", "challenger_map50_95", "champion_map50", "champion_map50_95",
        "champion_margin",
    }  # fmt: skip
