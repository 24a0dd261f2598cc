"""Candidates against one run (issue 20), on real photos: the best of three, and the three fused.

For cards and bccd (../shared/datasets): three candidates (seeds 0, 1 and 2, the training's own
settings otherwise) trained for E epochs each by `kubedetect candidates --ensemble-size 3`, each
scored on the validation split; the best of them by validation mAP@0.5:0.95, and the three
fused (weighted box fusion, weighted by those scores), against a single run

- at the same per-candidate time: E epochs, seed 0. That is candidate c0 itself, a run no
  selection touched (what one training gives);
- at the same total training time: 3E epochs, seed 0, in one process.

Every model's int8 variant (the fusion's: every member's) is measured by `kubedetect quantize
--mode int8 --report --split test` on the held-out test split (mAP; interpreter time for one
image), and served by `kubedetect serve` (one worker each, all four up at once): the round trip
of /v1/detect over the test split's images as the shards store them, the servers taking turns
image by image, so that load elsewhere on the machine falls on all of them alike.

No target is set by the issue: the table is there for a team to weigh the points of mAP against
the training time and the serving latency. Budgets under SMOKE_EPOCHS per candidate are smoke
runs: they show the benchmark works, not what the approaches reach.

    python -m bench.candidates [--epochs 150] [--datasets cards,bccd] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.report import table, write_section
from bench.train import SHARED, WORK, load, python, run

SMOKE_EPOCHS = 50
SINGLE, LONG, BEST, FUSED = (
    "one run, per-candidate time",
    "one run, total time",
    "best of 3",
    "3 fused",
)


def shards_of(dataset: str, image_size: int) -> Path:
    work = WORK / "candidates" / dataset
    shards = work / f"shards-{image_size}"
    work.mkdir(parents=True, exist_ok=True)
    if not (shards / "dataset.json").exists():
        run(
            python("-m", "cli", "preprocess", str(SHARED / "datasets" / dataset),
                   str(shards), "--image-size", str(image_size), "--quiet"),
            work / "preprocess.log",
        )  # fmt: skip
    return shards


def train_all(dataset: str, shards: Path, args) -> tuple[dict[str, Path], dict[str, float], dict]:
    """The four models of the comparison, their training minutes, and the candidates' summary."""
    work = WORK / "candidates" / dataset / f"e{args.epochs}"
    work.mkdir(parents=True, exist_ok=True)
    common = ["--batch-size", str(args.batch_size), "--eval-every", "0"]
    run(
        python("-m", "cli", "candidates", str(shards), str(work / "candidates"),
               "--seeds", "0,1,2", "--ensemble-size", "3", "--epochs", str(args.epochs),
               *common),
        work / "candidates.log",
    )  # fmt: skip
    summary = json.loads((work / "candidates" / "candidates.json").read_text())
    rows = {row["name"]: row for row in summary["candidates"]}
    best = summary["candidates"][0]["name"]  # best first
    long_seconds = run(
        python("-m", "kubedetect.training.train", str(shards), str(work / "long"), "--epochs",
               str(3 * args.epochs), "--seed", "0", "--no-progress", *common),
        work / "long.log",
    )  # fmt: skip
    models = {
        SINGLE: work / "candidates" / "c0",
        LONG: work / "long",
        BEST: work / "candidates" / best,
        FUSED: work / "candidates" / "chosen",
    }
    minutes = {
        SINGLE: rows["c0"]["train_seconds"] / 60,
        LONG: long_seconds / 60,
        BEST: sum(r["train_seconds"] for r in rows.values()) / 60,
        FUSED: sum(r["train_seconds"] for r in rows.values()) / 60,
    }
    return models, minutes, summary


def quantized(model: Path, shards: Path, threads: int) -> dict:
    """The int8 variant's folder and the test-split report of the model and the variant."""
    variants = model.parent / f"{model.name}-variants"
    if not (variants / "report.json").exists():
        run(
            python("-m", "cli", "quantize", str(model), str(variants), "--mode", "int8",
                   "--shards", str(shards), "--report", "--split", "test", "--threads",
                   str(threads)),
            variants.with_suffix(".log"),
        )  # fmt: skip
    report = json.loads((variants / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    return {
        "folder": variants / "int8",
        "map50": rows["keras"]["map50"],
        "int8_map50": rows["int8"]["map50"],
        "int8_map50_95": rows["int8"]["map50_95"],
        "int8_ms": rows["int8"]["latency_ms"],
        "images": report["images"],
        "cpu": report["cpu"],
    }


def test_images(shards: Path, limit: int) -> list[bytes]:
    """The test split's images as the shards store them (JPEG at the model's size)."""
    from kubedetect.evaluation.evaluate import split_examples
    from kubedetect.io.images import encode_jpeg

    return [encode_jpeg(e["image"], 90) for e in split_examples(str(shards), "test", limit)]


def serving_latency(folders: dict[str, Path], images: list[bytes], rounds: int) -> dict:
    """Round-trip milliseconds of /v1/detect per model (median, 90th percentile): every model
    served at once, one request at a time, the models taking turns on each image."""
    import tempfile
    import time

    from tests.servers import serve

    distinct = {str(folder) for folder in folders.values()}
    servers = {}
    with tempfile.TemporaryDirectory(prefix="bench-candidates-") as scratch:
        try:
            for i, folder in enumerate(sorted(distinct)):
                servers[folder] = serve(
                    Path(folder), Path(scratch) / str(i),
                    flags=["--workers", "1", "--no-access-log", "--log-level", "warning"],
                ).wait(timeout=120)  # fmt: skip
            times: dict[str, list[float]] = {folder: [] for folder in distinct}
            for _ in range(rounds):
                for body in images:
                    for folder, server in servers.items():
                        started = time.perf_counter()
                        server.post("/v1/detect", data=body).raise_for_status()
                        times[folder].append((time.perf_counter() - started) * 1000)
        finally:
            for server in servers.values():
                server.stop()
    result = {}
    for name, folder in folders.items():
        measured = sorted(times[str(folder)][len(images) :] or times[str(folder)])  # warm
        result[name] = {
            "median_ms": statistics.median(measured),
            "p90_ms": measured[int(0.9 * (len(measured) - 1))],
        }
    return result


def measure(dataset: str, args) -> dict:
    shards = shards_of(dataset, args.image_size)
    before = load()
    models, minutes, summary = train_all(dataset, shards, args)
    measured = {name: quantized(model, shards, args.threads) for name, model in models.items()}
    latency = serving_latency(
        {name: m["folder"] for name, m in measured.items()},
        test_images(shards, args.serve_images),
        args.serve_rounds,
    )
    return {
        "dataset": dataset,
        "models": measured,
        "minutes": minutes,
        "latency": latency,
        "candidates": summary["candidates"],
        "load": f"{before}; {load()}",
    }


def section(results: list[dict], args) -> str:
    from kubedetect.cpuinfo import cpu_line

    smoke = args.epochs < SMOKE_EPOCHS
    rows, lines = [], []
    for r in results:
        for name in (SINGLE, LONG, BEST, FUSED):
            m, served = r["models"][name], r["latency"][name]
            rows.append(
                [r["dataset"], name, f"{r['minutes'][name]:.1f}", f"{m['map50']:.3f}",
                 f"{m['int8_map50']:.3f}", f"{m['int8_map50_95']:.3f}", f"{m['int8_ms']:.2f}",
                 f"{served['median_ms']:.1f}", f"{served['p90_ms']:.1f}"]
            )  # fmt: skip
        m, ms = r["models"], r["latency"]
        points = {k: 100 * (m[k]["int8_map50"] - m[SINGLE]["int8_map50"]) for k in m}
        lines.append(
            f"- {r['dataset']} ({m[SINGLE]['images']} test images; load {r['load']}): against one "
            f"run of the same length, the best of 3 **{points[BEST]:+.1f}** and the fusion "
            f"**{points[FUSED]:+.1f}** points of int8 test mAP@0.5; one run three times as long "
            f"**{points[LONG]:+.1f}**. The fusion serves at "
            f"**{ms[FUSED]['median_ms'] / ms[SINGLE]['median_ms']:.2f}x** the round trip of one "
            f"model ({m[FUSED]['int8_ms'] / m[SINGLE]['int8_ms']:.2f}x its interpreter time). "
            "Candidates (val mAP@0.5:0.95): "
            + ", ".join(f"{c['name']} {c['map50_95']:.3f}" for c in r["candidates"])
        )
    cpu = results[0]["models"][SINGLE]["cpu"]
    return f"""
Three candidates (seeds 0, 1, 2) of **{args.epochs} epochs** each (batch {args.batch_size},
{args.image_size} px, the training's own settings otherwise) by `kubedetect candidates
--ensemble-size 3`, chosen by validation mAP@0.5:0.95; one run of the same length is candidate
c0 (seed 0: no selection touched it), one run of the same total time trains {3 * args.epochs}
epochs. mAP on the held-out test split (`kubedetect quantize --mode int8 --report --split
test`), the Keras export's and its int8 variant's (the fusion's: every member's). Interpreter:
one image per LiteRT invocation, {args.threads} thread(s), on {cpu_line(cpu)}, every member's
for the fusion. Serving: `kubedetect serve` with one worker per model, all up at once, the
round trip of /v1/detect over the test images as the shards store them ({args.serve_rounds}
round(s), the models taking turns on each image; the first round is warm-up where there are
more): decoding the image, and decoding and fusing the members' boxes, are in it.
{"**Smoke run**: budgets this short show the benchmark runs, not what the approaches reach." if smoke else ""}
The machine is shared: the load average (1 / 5 / 15 min) before; after is given per set.

{
        table(
            ["set", "model", "training (min)", "test mAP@0.5", "int8 mAP@0.5",
             "int8 mAP@0.5:0.95", "interpreter (ms)", "served p50 (ms)", "served p90 (ms)"],
            rows,
        )
    }

{chr(10).join(lines)}
"""  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.candidates", description=__doc__)
    parser.add_argument("--epochs", type=int, default=150, help="each candidate's (E)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--datasets", default="cards,bccd")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (latency)")
    parser.add_argument("--serve-images", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--serve-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    missing = [d for d in datasets if not (SHARED / "datasets" / d).exists()]
    if missing:
        print(f"{', '.join(missing)} absent under {SHARED / 'datasets'}: skipping", file=sys.stderr)
        return 0
    results = [measure(dataset, args) for dataset in datasets]
    write_section(
        "candidates", "Candidates: the best of three and their fusion against one run",
        section(results, args),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
