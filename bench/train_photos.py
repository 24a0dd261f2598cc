"""Real photos, default settings (issue 19): this checkout's `kubedetect train` with no flags
against the baseline's recipe (main before issue 19) given the same wall time, on the cards
and bccd sets of ../shared/datasets, one process each; test-split mAP@0.5 of both.

For each set, in one run:

1. this checkout preprocesses the set (letterboxed) and trains with its defaults (the length
   follows from the --images-seen budget; the best validation's averaged weights exported):
   the wall time T of `python -m kubedetect.train`;
2. the baseline preprocesses the set its way (stretched) and trains with the recipe its own
   benchmark used for cards (`--batch-size 16 --eval-every 10`, and its other defaults) for as
   many epochs as fit in T: a short calibration run measures its images/s first;
3. each version's own `kubedetect evaluate` measures its model on the test split.

Target: this checkout at least 8 points of mAP@0.5 above the baseline on each set.

    python -m bench.train_photos [cards] [bccd]      (default: both)

Work files go to $KUBEDETECT_BENCH_DIR (default /tmp/kubedetect-bench). Smoke run:
KUBEDETECT_BENCH_SMOKE=1 (a budget of 2,000 images instead of the default).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from bench.report import table, verdict, write_section
from bench.versions import WORK, baseline, current, dataset, history, load

TARGET_POINTS = 8.0
BASELINE_RECIPE = ["--batch-size", "16", "--eval-every", "10"]
CALIBRATION_EPOCHS = 6
SETS = ("cards", "bccd")


def compare(name: str) -> dict | None:
    data = dataset(name)
    if data is None:
        return None
    new, old = current(), baseline()
    work = WORK / "train-photos" / name
    shutil.rmtree(work, ignore_errors=True)
    smoke = ["--images-seen", "2000"] if os.environ.get("KUBEDETECT_BENCH_SMOKE") else []

    shards = new.shards(data, name)
    before = load()
    new_wall = new.train(shards, work / "current", smoke)
    card = json.loads((work / "current" / "model.json").read_text())
    new_test = new.evaluate(work / "current", shards, "test")

    old_shards = old.shards(data, name)
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
    epochs = max(1, round((new_wall - startup) * per_second / steps_per_epoch))
    old_wall = old.train(old_shards, work / "baseline", [*BASELINE_RECIPE, "--epochs", str(epochs)])
    old_test = old.evaluate(work / "baseline", old_shards, "test")
    after = load()
    manifest = json.loads((shards / "dataset.json").read_text())
    return {
        "set": name,
        "splits": {k: v["images"] for k, v in manifest["splits"].items()},
        "plan": card["provenance"]["plan"]["why"],
        "exported_epoch": card["provenance"]["exported_epoch"],
        "new": {"wall": new_wall, "map50": new_test["map50"], "map50_95": new_test["map50_95"]},
        "old": {
            "wall": old_wall,
            "epochs": epochs,
            "map50": old_test["map50"],
            "map50_95": old_test["map50_95"],
        },
        "load": f"{before} -> {after}",
    }


def main(argv: list[str]) -> int:
    wanted = argv or list(SETS)
    results = [r for r in (compare(name) for name in wanted) if r]
    if not results:
        return 0
    rows, notes, met = [], [], []
    for r in results:
        gain = 100 * (r["new"]["map50"] - r["old"]["map50"])
        met.append(gain >= TARGET_POINTS)
        rows.append(
            [
                r["set"],
                f"{r['old']['map50']:.3f} ({r['old']['map50_95']:.3f})",
                f"{r['new']['map50']:.3f} ({r['new']['map50_95']:.3f})",
                f"{gain:+.1f}",
                f"{r['old']['wall'] / 60:.1f} / {r['new']['wall'] / 60:.1f}",
                verdict(gain >= TARGET_POINTS),
            ]
        )
        notes.append(
            f"- {r['set']} (splits {r['splits']}): this checkout {r['plan']}; exported the "
            f"weights of epoch {r['exported_epoch']}. The baseline: {r['old']['epochs']} epochs "
            f"to fill the same time. Load average {r['load']}."
        )
    body = f"""
One process each (`python -m kubedetect.train`), in one run. **This checkout**: `kubedetect
train SHARDS MODEL` with no flags, on shards it letterboxed. **Baseline** (main at
{baseline().name}, today's recipe before issue 19): stretched shards, `{" ".join(BASELINE_RECIPE)}`
(its cards benchmark's recipe) for as many epochs as fit in this checkout's wall time (its
images/s measured by a {CALIBRATION_EPOCHS}-epoch run first). Each evaluated by its own
`kubedetect evaluate` on the **test** split (ImageSets/Main/test.txt: never trained on, never
used to pick weights). The machine is shared with other work: the wall times differ by what it
did meanwhile.

{table(["set", "baseline test mAP@0.5 (@0.5:0.95)", "this checkout", "points", "wall min (baseline / this)", f"target +{TARGET_POINTS:g}"], rows)}

{chr(10).join(notes)}
"""
    write_section(
        "train-photos", "Training on real photos: default settings against the baseline", body
    )
    print({r["set"]: ok for r, ok in zip(results, met, strict=True)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
