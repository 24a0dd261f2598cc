"""How long training runs: a budget of images seen, turned into epochs of the data at hand
(kubedetect.training.budget), said in one line; and the exported weights are the validated best.

The plan is arithmetic, checked directly; one short real run (`python -m kubedetect.training.train`)
checks that the loop follows it, logs why, validates where it said it would and exports the
weights of the best validation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from kubedetect.config import TrainConfig
from kubedetect.errors import KubedetectError
from kubedetect.training.budget import plan_training


def test_the_budget_of_images_seen_sets_the_epochs_of_a_small_set():
    """270 photos (the cards set's train split) at batch 16: 16 steps an epoch, 256 images; a
    budget of 60,000 images is 234 epochs."""
    plan = plan_training(270, TrainConfig(batch_size=16, images_seen=60_000))
    assert (plan.epochs, plan.steps_per_epoch, plan.total_steps) == (234, 16, 3744)
    assert plan.reason == (
        "training for 234 epochs of 16 steps (3,744 steps, 59,904 images seen; 270 training "
        "images, batch 16): --images-seen 60,000 / 256 images an epoch"
    )


def test_a_larger_set_gets_fewer_epochs_but_sees_as_many_images():
    small = plan_training(500, TrainConfig(images_seen=64_000))
    large = plan_training(4000, TrainConfig(images_seen=64_000))
    assert small.epochs > large.epochs
    assert small.total_steps * 32 == pytest.approx(64_000, rel=0.03)
    assert large.total_steps * 32 == pytest.approx(64_000, rel=0.03)


def test_the_epochs_stay_within_their_bounds_and_say_so():
    config = TrainConfig(images_seen=60_000, min_epochs=5, max_epochs=300)
    tiny = plan_training(40, config)  # 1 step an epoch: 1,875 epochs wanted
    assert tiny.epochs == 300
    assert tiny.reason.endswith("= 1875.0 epochs, kept to --max-epochs 300")
    huge = plan_training(100_000, config)  # 0.6 epochs wanted
    assert huge.epochs == 5
    assert huge.reason.endswith("= 0.6 epochs, kept to --min-epochs 5")


def test_epochs_given_override_the_budget():
    plan = plan_training(270, TrainConfig(epochs=24, batch_size=32))
    assert (plan.epochs, plan.steps_per_epoch) == (24, 8)
    assert plan.reason.endswith("): --epochs 24")


def test_validations_and_warm_up_are_spread_over_the_run():
    plan = plan_training(270, TrainConfig(batch_size=16, images_seen=60_000, evaluations=10))
    assert plan.eval_every == 24  # 234 epochs, about 10 validations (and one after the last)
    assert plan.warmup_steps == 48  # 3 epochs of 16 steps
    short = plan_training(270, TrainConfig(batch_size=16, epochs=10, evaluations=10))
    assert short.eval_every == 1
    assert short.warmup_steps == 16  # at most a tenth of the run
    assert plan_training(270, TrainConfig(epochs=10, eval_every=3)).eval_every == 3


@pytest.mark.parametrize(
    ("images", "config", "message"),
    [
        (10, TrainConfig(batch_size=16), "10 training images, fewer than one batch of 16"),
        (100, TrainConfig(min_epochs=10, max_epochs=5), "--min-epochs 10 and --max-epochs 5"),
    ],
)
def test_impossible_plans_are_clear_errors(images, config, message):
    with pytest.raises(KubedetectError, match=message):
        plan_training(images, config)


def test_training_follows_the_plan_and_exports_the_best_validation(synth_shards, tmp_path):
    """A real run on the 60-image synthetic set (128 px): the budget gives the epochs, the log
    says why before the first step, validation runs where the plan says, and the exported
    weights are those of the validation that scored best."""
    manifest = json.loads((synth_shards / "dataset.json").read_text())
    train_images = manifest["splits"]["train"]["images"]
    config = TrainConfig(batch_size=8, images_seen=8 * 24, evaluations=3)
    plan = plan_training(train_images, config)
    model_dir = tmp_path / "model"
    command = [
        *(sys.executable, "-m", "kubedetect.training.train", str(synth_shards), str(model_dir)),
        *("--batch-size", "8", "--images-seen", str(8 * 24), "--evaluations", "3"),
        *("--width", "4", "--no-progress", "--checkpoint-every", "0"),
        *("--checkpoint-dir", str(tmp_path / "checkpoints")),  # kept: see the end
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    said = next(i for i, line in enumerate(lines) if "training for" in line)
    assert lines[said] == f"worker 0: {plan.reason}"
    assert said < next(i for i, line in enumerate(lines) if " epoch 1/" in line)

    with open(model_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == plan.epochs
    validated = [r for r in rows if r["val_map50"]]
    assert [int(r["epoch"]) for r in validated] == [
        e for e in range(1, plan.epochs + 1) if e % plan.eval_every == 0 or e == plan.epochs
    ]
    best = max(validated, key=lambda r: (float(r["val_map50"]), int(r["epoch"])))
    card = json.loads((model_dir / "model.json").read_text())
    assert card["provenance"]["exported_epoch"] == int(best["epoch"])
    assert card["provenance"]["metrics"]["map50"] == pytest.approx(float(best["val_map50"]))
    assert f"exporting the weights of epoch {best['epoch']}, the best in validation" in (
        result.stdout
    )
    # The exported model scores what its validation scored: it is those weights.
    from kubedetect.config import EvalConfig
    from kubedetect.evaluation.evaluate import evaluate

    again = evaluate(str(model_dir), str(synth_shards), config=EvalConfig(split="val"))
    assert again["map50"] == pytest.approx(float(best["val_map50"]), abs=1e-3)

    # Run again over the kept checkpoints: the job resumes after its last step, trains no more,
    # and exports the same best weights (measuring them again: their metrics were not saved).
    first = card["provenance"]["weights_sha256"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"at step {plan.total_steps}" in again.stdout
    card = json.loads((model_dir / "model.json").read_text())
    assert card["provenance"]["weights_sha256"] == first
    assert card["provenance"]["exported_epoch"] == int(best["epoch"])
