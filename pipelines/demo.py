"""`make demo`: the whole kubedetect pipeline on this machine, then the served model.

1. data: a synthetic Pascal VOC set of shapes (or DATA=path/to/voc);
2. the Kubeflow pipeline, run locally by kfp.local with the same DAG as on a cluster: ParallelFor
   preprocessing, two MultiWorkerMirroredStrategy worker processes, evaluation, quantization,
   the quality gate and deploy into a local model registry;
3. a summary table, then `kubedetect serve` on http://127.0.0.1:8080 with its web page.

The console shows a line as each step starts and ends; every step's full output is in
OUT/logs/ (kubedetect.console, pipelines.tasklog).
"""

import argparse
import json
import os
import subprocess
import sys
import time

from kubedetect.config import TrainConfig
from kubedetect.console import Console, progress_wanted, shown
from kubedetect.errors import KubedetectError
from kubedetect.training.train import DEMO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", default="demo-output", help="where everything goes (default: demo-output)"
    )
    parser.add_argument(
        "--data", default=None, help="a Pascal VOC folder instead of synthetic data"
    )
    parser.add_argument(
        "--images", type=int, default=DEMO["images"], help="synthetic images to make"
    )
    parser.add_argument("--image-size", type=int, default=DEMO["image_size"])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: the synthetic demo's; with --data, as many as "
        "kubedetect train's --images-seen budget asks for)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch (default: the synthetic demo's; with --data, kubedetect train's)",
    )
    parser.add_argument("--workers", type=int, default=2, help="local training processes (MWMS)")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument(
        "--min-map", type=float, default=0.5, help="quality gate: int8 mAP@0.5 at least"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--no-serve", dest="serve", action="store_false", help="stop after the pipeline"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every step's output as it comes"
    )
    args = parser.parse_args(argv)
    try:
        return _demo(args)
    except KubedetectError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ndemo: stopped")
        return 0


def _demo(args: argparse.Namespace) -> int:
    from pipelines.run import run_local

    out = os.path.abspath(args.out)
    data_dir = os.path.abspath(args.data) if args.data else os.path.join(out, "data")
    serving_dir = os.path.join(out, "serving")
    log_dir = os.path.join(out, "logs")
    console = Console()
    console.line(
        "kubedetect demo: "
        + ("your data" if args.data else "synthetic shapes")
        + " through the Kubeflow pipeline (run here by kfp.local), then the served model"
    )
    console.line(f"every step's full log: {shown(log_dir)}/")
    console.line()
    if not args.data:
        _synthesize(console, data_dir, args.images)

    params = {
        "data_uri": data_dir,
        "num_shards": args.num_shards,
        "image_size": args.image_size,
        "workers": args.workers,
        **training_params(args),
        "min_map": args.min_map,
        "serving_dir": serving_dir,
    }
    run = run_local(
        params,
        os.path.join(out, "kfp-local"),
        log_dir=log_dir,
        console=console,
        verbose=args.verbose,
    )

    console.line()
    console.lines(summary(run, data_dir, serving_dir))
    if not run.deployed:
        console.line("\nThe quality gate held the model back (see above): nothing new to serve.")
        return 1
    if not args.serve:
        return 0
    model = os.path.join(serving_dir, "current")
    console.line(
        f"\nServing {shown(os.path.realpath(model))} at http://{args.host}:{args.port}"
        "  (Ctrl-C stops it)\n"
    )
    command = [
        sys.executable,
        "-m",
        "cli",
        "serve",
        shown(model),
        "--host",
        args.host,
        "--port",
        str(args.port),
        # A person watching the demo: problems only, not every request as a JSON line.
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return subprocess.call(command)


def training_params(args: argparse.Namespace) -> dict:
    """The pipeline's training parameters: on synthetic shapes, the demo's settings
    (kubedetect.training.train.DEMO); on a team's own photos, kubedetect train's defaults, whose
    length follows the data (the --images-seen budget), as a first run on real data should."""
    if args.data:
        defaults = TrainConfig()
        return {
            "epochs": defaults.epochs if args.epochs is None else args.epochs,
            "batch_size": args.batch_size or defaults.batch_size,
            "train_flags": "",
        }
    return {
        "epochs": DEMO["epochs"] if args.epochs is None else args.epochs,
        "batch_size": args.batch_size or DEMO["batch_size"],
        "train_flags": f"--evaluations {DEMO['evaluations']}",
    }


def _synthesize(console: Console, data_dir: str, images: int) -> None:
    from kubedetect.data.synth import synthesize

    annotations = os.path.join(data_dir, "Annotations")
    if os.path.isdir(annotations) and len(os.listdir(annotations)) == images:
        console.skipped("synthetic data", f"{images} images already in {shown(data_dir)}")
        return
    console.started_step("synthetic data", f"{images} images of shapes into {shown(data_dir)}")
    started = time.monotonic()
    made = synthesize(data_dir, images, seed=0, progress=progress_wanted())
    seconds = time.monotonic() - started
    splits = made["splits"]
    console.done(
        "synthetic data",
        seconds,
        f"{images} images ({splits['train']} train, {splits['val']} val), "
        f"{sum(made['objects'].values()):,} objects, {images / seconds:.0f} images/s",
    )


def summary(run, data_dir: str, serving_dir: str) -> str:
    """The table people look at: mAP and size of each variant, the gate, where things are."""
    with open(run.quantization_report) as f:
        report = json.load(f)
    lines = [
        f"{'variant':<9} {'size (kB)':>10} {'latency (ms)':>13} "
        f"{'mAP@0.5':>8} {'mAP@.5:.95':>11} {'drop (pts)':>11}"
    ]
    for row in report["variants"]:
        latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.2f}"
        lines.append(
            f"{row['variant']:<9} {row['size_bytes'] / 1024:>10.1f} {latency:>13} "
            f"{row['map50']:>8.3f} {row['map50_95']:>11.3f} {row['map50_drop_points']:>11.2f}"
        )
    lines.append(
        f"(on {report['images']} {report['split']} images; "
        f"latency: one image, {report['threads']} threads)"
    )
    lines.append("")
    with open(run.gate) as f:
        lines.append(f.read().strip().replace("# ", ""))
    lines.append("")
    where = [
        ("data", data_dir),
        ("shards", run.dataset),
        ("candidates", run.candidates + "  (HTML: their table and plot)"),
        ("model", run.model),
        ("variants", run.variants),
        ("evaluation", run.evaluation + "  (HTML with plots)"),
        ("serving", os.path.join(serving_dir, "current") if run.deployed else "(not deployed)"),
        ("run", run.root),
        ("logs", run.log_dir),
    ]
    lines += [f"{name:<11} {shown(path)}" for name, path in where]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
