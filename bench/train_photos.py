"""Real photos, default settings (issue 19): this checkout's `kubedetect train` with no flags
against the baseline's recipe (main before issue 19) given the same wall time, on the cards
and bccd sets of ../shared/datasets, one process each; test-split mAP@0.5 of both, over
several seeds of each.

For each set, in one run:

1. this checkout preprocesses the set (letterboxed) and trains with its defaults (the length
   follows from the --images-seen budget; the best validation's averaged weights exported):
   the wall time T of `python -m kubedetect.training.train` with seed 0;
2. the baseline preprocesses the set its way (stretched) and trains with the recipe its own
   benchmark used for cards (`--batch-size 16 --eval-every 10`, and its other defaults) for as
   many epochs as fit in T: a short calibration run measures its images/s first;
3. both train again with seeds 1, 2, ... (--seeds in all), alternately, the baseline for the
   same number of epochs;
4. each version's own `kubedetect evaluate` measures each model on the test split.

Seeds matter here: the test splits hold 67 and 72 images, and one recipe's test mAP@0.5 moves
by a few points from seed to seed (initial weights, shuffling, augmentation), as much as the
two recipes differ. The verdict is on the means.

Target: this checkout's mean at least 8 points of mAP@0.5 above the baseline's on each set.

    python -m bench.train_photos [cards] [bccd] [--seeds 3]      (default: both sets)

Work files go to $KUBEDETECT_BENCH_DIR (default /tmp/kubedetect-bench). Smoke run:
KUBEDETECT_BENCH_SMOKE=1 (a budget of 2,000 images instead of the default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

from bench.report import table, verdict, write_section
from bench.versions import WORK, baseline, current, dataset, history, load

TARGET_POINTS = 8.0
BASELINE_RECIPE = ["--batch-size", "16", "--eval-every", "10"]
CALIBRATION_EPOCHS = 6
SETS = ("cards", "bccd")


def baseline_epochs(old, old_shards, work, wall: float) -> int:
    """Epochs of the baseline's recipe that fit in `wall` seconds, from a short run's speed."""
    old.train(
        old_shards,
        work / "calibration",
        [*BASELINE_RECIPE, "--epochs", str(CALIBRATION_EPOCHS), "--eval-every", "0"],
    )
    rows = history(work / "calibration")
    steps = rows[-1]["step"] - rows[0]["step"]
    per_second = steps / (rows[-1]["wall_seconds"] - rows[0]["wall_seconds"])  # steps, epochs 2+
    startup = rows[0]["wall_seconds"] - rows[0]["epoch_seconds"]
    steps_per_epoch = rows[0]["step"]
    return max(1, round((wall - startup) * per_second / steps_per_epoch))


def compare(name: str, seeds: int) -> dict | None:
    data = dataset(name)
    if data is None:
        return None
    new, old = current(), baseline()
    work = WORK / "train-photos" / name
    shutil.rmtree(work, ignore_errors=True)
    smoke = ["--images-seen", "2000"] if os.environ.get("KUBEDETECT_BENCH_SMOKE") else []
    shards, old_shards = new.shards(data, name), old.shards(data, name)
    before = load()
    runs = {"new": [], "old": []}
    epochs = 0
    for seed in range(seeds):
        model = work / f"current-seed{seed}"
        wall = new.train(shards, model, [*smoke, "--seed", str(seed)])
        card = json.loads((model / "model.json").read_text())
        test = new.evaluate(model, shards, "test")
        runs["new"].append(
            {"wall": wall, "map50": test["map50"], "map50_95": test["map50_95"],
             "exported_epoch": card["provenance"]["exported_epoch"],
             "plan": card["provenance"]["plan"]["why"]}
        )  # fmt: skip
        if seed == 0:
            epochs = baseline_epochs(old, old_shards, work, wall)
        model = work / f"baseline-seed{seed}"
        wall = old.train(
            old_shards, model, [*BASELINE_RECIPE, "--epochs", str(epochs), "--seed", str(seed)]
        )
        test = old.evaluate(model, old_shards, "test")
        runs["old"].append({"wall": wall, "map50": test["map50"], "map50_95": test["map50_95"]})
    manifest = json.loads((shards / "dataset.json").read_text())
    return {
        "set": name,
        "splits": {k: v["images"] for k, v in manifest["splits"].items()},
        "epochs": epochs,
        "load": f"{before} -> {load()}",
        **runs,
    }


def mean(runs: list[dict], key: str) -> float:
    return statistics.mean(run[key] for run in runs)


def scores(runs: list[dict]) -> str:
    """'0.871 (0.857-0.884; 0.609)': mean test mAP@0.5, its range over seeds, mean @0.5:0.95."""
    low, high = min(r["map50"] for r in runs), max(r["map50"] for r in runs)
    return f"{mean(runs, 'map50'):.3f} ({low:.3f}-{high:.3f}; {mean(runs, 'map50_95'):.3f})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_photos")
    parser.add_argument("sets", nargs="*", help=f"Of {', '.join(SETS)} (default: both).")
    parser.add_argument("--seeds", type=int, default=3, help="Training runs of each recipe.")
    args = parser.parse_args(argv)
    unknown = set(args.sets) - set(SETS)
    if unknown or args.seeds < 1:
        parser.error(f"sets are {', '.join(SETS)} and --seeds at least 1 (got {argv})")
    results = [r for r in (compare(name, args.seeds) for name in args.sets or SETS) if r]
    if not results:
        return 0
    rows, notes, met = [], [], []
    for r in results:
        gain = 100 * (mean(r["new"], "map50") - mean(r["old"], "map50"))
        met.append(gain >= TARGET_POINTS)
        walls = f"{mean(r['old'], 'wall') / 60:.1f} / {mean(r['new'], 'wall') / 60:.1f}"
        rows.append(
            [r["set"], scores(r["old"]), scores(r["new"]), f"{gain:+.1f}", walls,
             verdict(gain >= TARGET_POINTS)]
        )  # fmt: skip
        by_seed = ", ".join(
            f"{n['map50']:.3f} / {o['map50']:.3f}" for n, o in zip(r["new"], r["old"], strict=True)
        )
        exported = ", ".join(str(n["exported_epoch"]) for n in r["new"])
        notes.append(
            f"- {r['set']} (splits {r['splits']}): this checkout {r['new'][0]['plan']}; exported "
            f"the weights of epochs {exported} (seeds 0, 1, ...). The baseline: {r['epochs']} "
            f"epochs to fill the same time. Test mAP@0.5 by seed (this / baseline): {by_seed}. "
            f"Load average {r['load']}."
        )
    body = f"""
One process each (`python -m kubedetect.training.train`), in one run, {args.seeds} seed(s) of each recipe
(`--seed 0, 1, ...`), alternately. **This checkout**: `kubedetect train SHARDS MODEL` with no
flags, on shards it letterboxed. **Baseline** (main at {baseline().name}, today's recipe before
issue 19): stretched shards, `{" ".join(BASELINE_RECIPE)}` (its cards benchmark's recipe) for as
many epochs as fit in this checkout's wall time with seed 0 (its images/s measured by a
{CALIBRATION_EPOCHS}-epoch run first). Each model evaluated by its own version's `kubedetect
evaluate` on the **test** split (ImageSets/Main/test.txt: never trained on, never used to pick
weights). Scores: the mean over seeds (lowest-highest; mean mAP@0.5:0.95); the points and the
verdict compare the means. The machine is shared with other work: the wall times differ by
what it did meanwhile.

{table(["set", "baseline test mAP@0.5", "this checkout", "points", "mean wall min (baseline / this)", f"target +{TARGET_POINTS:g}"], rows)}

{chr(10).join(notes)}
"""
    write_section(
        "train-photos", "Training on real photos: default settings against the baseline", body
    )
    print({r["set"]: ok for r, ok in zip(results, met, strict=True)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
