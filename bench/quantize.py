"""Quantization benchmark (issue 3, c): full int8 against float32 TFLite, on the make-demo model.

`kubedetect quantize MODEL OUT --report` (all four variants, the one evaluator, LiteRT with
XNNPACK) on the synthetic model trained by bench.train at the demo settings (trained here first
if bench.train has not run), on its validation split. Latency is one 256 px image per
interpreter invocation, median of many runs, at 2 threads (the report) and at 1 thread.

Targets: int8 latency <= 0.6x float32; int8 mAP@0.5 at most 1.0 point below float32; the file
size ratio is reported (a small model carries fixed overhead).

    python -m bench.quantize
"""

from __future__ import annotations

import json
import sys

from bench.report import table, verdict, write_section
from bench.train import WORK, load, python, run, synthetic_model

LATENCY_TARGET, DROP_TARGET = 0.6, 1.0
RUNS = 500


def main(argv: list[str]) -> int:
    from kubedetect.evaluate import load_split
    from kubedetect.quantize import MODES, report_table, single_image_latency
    from kubedetect.runtime import TFLiteDetector

    model = synthetic_model(train_again=False)
    variants = WORK / "synthetic" / "variants"
    before = load()
    run(
        python(
            "-m",
            "kubedetect.cli",
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
    after = load()
    report = json.loads((variants / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    image = load_split(report["shards"], "val", max_images=1).images[0]
    one_thread = {
        m: single_image_latency(TFLiteDetector(str(variants / m), num_threads=1), image, RUNS)[
            "median_ms"
        ]
        for m in MODES
    }
    latency_ratio = rows["int8"]["latency_ratio"]
    drop = rows["int8"]["map50_drop_points"]
    ok_latency, ok_drop = latency_ratio <= LATENCY_TARGET, drop <= DROP_TARGET
    body = f"""
The make-demo model (bench.train, synthetic shapes, 256 px), `kubedetect quantize --report`
(int8 calibrated on 200 training images), evaluated on the {report["images"]} validation images.
Load average (1/5/15 min) before: {before}; after: {after}.

{report_table(report)}

Single-image latency at 1 thread (median of {RUNS}):
{
        table(
            ["variant", "latency (ms, 1 thread)", "vs float32"],
            [
                [m, f"{one_thread[m]:.3f}", f"{one_thread[m] / one_thread['float32']:.2f}x"]
                for m in MODES
            ],
        )
    }

- int8 / float32 latency (2 threads): **{latency_ratio:.2f}x**, target <= {LATENCY_TARGET}x: {
        verdict(ok_latency)
    }
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
