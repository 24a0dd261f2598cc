"""The large model against the tiny one (issue 19, point 6), on real photos at the same budget.

For cards and bccd (../shared/datasets), each model size is trained from scratch in one process
(`python -m kubedetect.training.train ... --model-size S`) for the same number of epochs, then
`kubedetect quantize --mode float32,int8 --report --split test` measures the Keras export and
its variants with the one evaluator on the held-out test split, and times them on this CPU
(its model and SIMD flags printed beside every latency). Parameters and FLOPs per image come
from the exported model (kubedetect.network.architecture.count_flops).

Target: the large model at least 5 points of test mAP@0.5 above the tiny one on both sets, at a
budget long enough to converge (the default, 300 epochs: many hours on two CPU cores; the large
model is meant for GPU pods). Budgets under 100 epochs are smoke runs and are not judged. The
section is written again after each set, so a run stopped part-way keeps the sets it finished.

    python -m bench.models [--epochs 300] [--datasets cards,bccd] [--sizes tiny,large]
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.report import table, verdict, write_section
from bench.train import SHARED, WORK, load, python, run

TARGET_POINTS = 5.0
SMOKE_EPOCHS = 100  # below this a run shows the benchmark works, not what the models can do
IMAGE_SIZE = 256


def shards_of(dataset: str):
    source, shards = SHARED / "datasets" / dataset, WORK / "models" / dataset / "shards"
    shards.parent.mkdir(parents=True, exist_ok=True)
    if not (shards / "dataset.json").exists():
        run(
            python("-m", "cli", "preprocess", str(source), str(shards),
                   "--image-size", str(IMAGE_SIZE), "--quiet"),
            WORK / "models" / dataset / "preprocess.log",
        )  # fmt: skip
    return shards


def measure(dataset: str, size: str, args) -> dict:
    """Train one size on one set, quantize, report; the row of the results table."""
    import keras

    from kubedetect.network.architecture import count_flops

    work = WORK / "models" / dataset / size
    shards, model, variants = shards_of(dataset), work / "model", work / "variants"
    before = load()
    seconds = run(
        python("-m", "kubedetect.training.train", str(shards), str(model), "--model-size", size,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--eval-every", str(max(1, args.epochs // 10)), "--no-progress"),
        work.with_suffix(".train.log"),
    )  # fmt: skip
    run(
        python("-m", "cli", "quantize", str(model), str(variants),
               "--mode", "float32,int8", "--report", "--split", "test",
               "--threads", str(args.threads)),
        work.with_suffix(".quantize.log"),
    )  # fmt: skip
    report = json.loads((variants / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    exported = keras.saving.load_model(str(model / "model.keras"), compile=False)
    return {
        "dataset": dataset,
        "size": size,
        "parameters": exported.count_params(),
        "gflops": count_flops(exported) / 1e9,
        "train_minutes": seconds / 60,
        "map50": rows["keras"]["map50"],
        "map50_95": rows["keras"]["map50_95"],
        "int8_map50": rows["int8"]["map50"],
        "int8_ms": rows["int8"]["latency_ms"],
        "float32_ms": rows["float32"]["latency_ms"],
        "int8_kb": rows["int8"]["size_bytes"] / 1024,
        "test_images": report["images"],
        "cpu": report["cpu"],
        "load": f"{before}; {load()}",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument("--epochs", type=int, default=300, help="the same budget for each size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--datasets", default="cards,bccd")
    parser.add_argument("--sizes", default="tiny,large")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (latency)")
    args = parser.parse_args(argv)
    datasets, sizes = args.datasets.split(","), args.sizes.split(",")
    missing = [d for d in datasets if not (SHARED / "datasets" / d).exists()]
    if missing:
        print(f"{', '.join(missing)} absent under {SHARED / 'datasets'}: skipping", file=sys.stderr)
        return 0
    results = []
    for dataset in datasets:  # written after each set: a run stopped early keeps what it measured
        results += [measure(dataset, size, args) for size in sizes]
        write_section("models", "Model sizes: large against tiny on real photos",
                      section(results, args))  # fmt: skip
    return 0


def section(results: list[dict], args) -> str:
    from kubedetect.cpuinfo import cpu_line

    smoke = args.epochs < SMOKE_EPOCHS
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        by_size = {r["size"]: r for r in results if r["dataset"] == dataset}
        if {"tiny", "large"} <= set(by_size):
            gain = 100 * (by_size["large"]["map50"] - by_size["tiny"]["map50"])
            judged = "not judged (smoke run)" if smoke else verdict(gain >= TARGET_POINTS)
            lines.append(
                f"- {dataset}: large - tiny = **{gain:+.1f} points** of test mAP@0.5, "
                f"target >= +{TARGET_POINTS:g}: {judged}"
            )
    cpu = results[0]["cpu"]
    return f"""
Each size trained from scratch in one process for **{args.epochs} epochs** (batch
{args.batch_size}, {IMAGE_SIZE} px, default settings otherwise), then `kubedetect quantize
--mode float32,int8 --report --split test`: mAP on the held-out test split, latency of one image
per LiteRT invocation ({args.threads} threads, best of interleaved rounds) on
{cpu_line(cpu)}. FLOPs: 2 per multiply-add of the convolutions, one {IMAGE_SIZE} px image.
{"**Smoke run**: a budget this short shows the benchmark runs, not what the models reach." if smoke else ""}
The machine is shared: the load average (1 / 5 / 15 min) before; after each run is given.

{
        table(
            ["set", "size", "parameters", "GFLOP", "training (min)", "test mAP@0.5",
             "mAP@0.5:0.95", "int8 mAP@0.5", "int8 ms", "float32 ms", "int8 kB", "load"],
            [
                [r["dataset"], r["size"], f"{r['parameters']:,}", f"{r['gflops']:.2f}",
                 f"{r['train_minutes']:.1f}", f"{r['map50']:.3f}", f"{r['map50_95']:.3f}",
                 f"{r['int8_map50']:.3f}", f"{r['int8_ms']:.2f}", f"{r['float32_ms']:.2f}",
                 f"{r['int8_kb']:.0f}", r["load"]]
                for r in results
            ],
        )
    }

{chr(10).join(lines)}
"""  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
