"""Quantization benchmark (issue 3, c): full int8 against float32 TFLite, on the make-demo model.

`kubedetect quantize MODEL OUT --report` (all four variants, the one evaluator, LiteRT with
XNNPACK) on the synthetic model trained by bench.train at the demo settings (trained here first
if bench.train has not run), on its validation split. Latency is one 256 px image per
interpreter invocation, median of many runs: once as the report measures it (2 threads, each
variant in turn), then in interleaved rounds at 2 threads and at 1, which decide the target.
On a shared 2-core machine a two-thread invocation that loses a core to another process waits
for it, so the CPU other processes took is measured beside every latency.

Targets: int8 latency <= 0.6x float32; int8 mAP@0.5 at most 1.0 point below float32; the file
size ratio is reported (a small model carries fixed overhead).

    python -m bench.quantize
"""

from __future__ import annotations

import json
import sys

from bench.load import UNDER_LOAD, OthersCpu
from bench.report import table, verdict, write_section
from bench.train import WORK, python, run, synthetic_model

LATENCY_TARGET, DROP_TARGET = 0.6, 1.0
RUNS = 500
ROUNDS = 5


def interleaved_latency(variants, image, threads: int) -> dict:
    """Per variant, the best of ROUNDS medians, the variants taking turns in every round
    (kubedetect.network.quantize.interleaved_latency), and the CPU other processes took meanwhile."""
    from kubedetect.inference.runtime import TFLiteDetector
    from kubedetect.network.quantize import MODES
    from kubedetect.network.quantize import interleaved_latency as measure

    detectors = {m: TFLiteDetector(str(variants / m), num_threads=threads) for m in MODES}
    with OthersCpu() as others:
        latency = measure(detectors, image, RUNS, ROUNDS)
    return {
        "best": {m: r["median_ms"] for m, r in latency.items()},
        "medians": {m: r["round_medians_ms"] for m, r in latency.items()},
        "others": others,
    }


def main(argv: list[str]) -> int:
    from kubedetect.cpuinfo import cpu_line
    from kubedetect.evaluation.evaluate import load_split
    from kubedetect.network.quantize import MODES, report_table

    model = synthetic_model(train_again=False)
    variants = WORK / "synthetic" / "variants"
    with OthersCpu() as during_report:
        run(
            python(
                "-m",
                "cli",
                "quantize",
                str(model),
                str(variants),
                "--report",
                "--threads",
                "2",
                "--latency-runs",
                str(RUNS),
            ),
            WORK / "quantize.log",
        )
    report = json.loads((variants / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    image = load_split(report["shards"], "val", max_images=1).images[0]
    latency = {threads: interleaved_latency(variants, image, threads) for threads in (2, 1)}
    best = {threads: result["best"] for threads, result in latency.items()}
    latency_ratio = best[2]["int8"] / best[2]["float32"]
    drop = rows["int8"]["map50_drop_points"]
    ok_latency, ok_drop = latency_ratio <= LATENCY_TARGET, drop <= DROP_TARGET
    others = ", ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: {result['others'].cores:.2f} cores"
        for threads, result in latency.items()
    )
    loaded = [during_report, *(r["others"] for r in latency.values())]
    warning = (
        "\n**Measured under load** (others took more than "
        f"{UNDER_LOAD} of a core): the latencies are higher than on an idle machine.\n"
        if any(o.under_load for o in loaded)
        else ""
    )
    body = f"""
The make-demo model (bench.train, synthetic shapes, 256 px), `kubedetect quantize --report`
(int8 calibrated on 200 training images), evaluated on the {report["images"]} validation images.
Other processes on this shared machine took {during_report.cores:.2f} cores during the report
(load average {during_report.load_before:.2f} before, {during_report.load_after:.2f} after).
{warning}
{report_table(report)}

Latency again, in {ROUNDS} interleaved rounds (each round times every variant in turn, median of
{RUNS} single-image invocations; the best round of each is shown, as interference only ever
slows a run down), on {cpu_line(report["cpu"])}. Others' CPU during the rounds: {others}.

{
        table(
            ["variant", "2 threads (ms)", "vs float32", "1 thread (ms)", "vs float32"],
            [
                [
                    m,
                    f"{best[2][m]:.3f}",
                    f"{best[2][m] / best[2]['float32']:.2f}x",
                    f"{best[1][m]:.3f}",
                    f"{best[1][m] / best[1]['float32']:.2f}x",
                ]
                for m in MODES
            ],
        )
    }

- int8 / float32 latency (2 threads, interleaved rounds): **{latency_ratio:.2f}x**, target <= {
        LATENCY_TARGET
    }x: {verdict(ok_latency)}, on {cpu_line(report["cpu"])} (on AVX2 alone XNNPACK runs other
  kernels: section "int8 against float32 on XNNPACK's AVX2 kernels")
- int8 mAP@0.5 drop: **{drop:+.2f} points** (mAP@0.5:0.95 {
        rows["int8"]["map50_95_drop_points"]:+.2f}),
  target <= {DROP_TARGET}: {verdict(ok_drop)}
- int8 / float32 file size: **{rows["int8"]["size_ratio"]:.2f}x** ({
        rows["int8"]["size_bytes"] / 1024:.0f} kB
  against {rows["float32"]["size_bytes"] / 1024:.0f} kB)
"""
    write_section("quantize", "Quantization: int8 against float32 TFLite", body)
    print({"latency": "met" if ok_latency else "missed", "drop": "met" if ok_drop else "missed"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
