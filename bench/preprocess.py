"""Preprocessing throughput: kubedetect's process pool against a tf.data pipeline.

Images per second over the cards photos (../shared/datasets/cards) at 256 px, JPEG quality 90:

- `kubedetect preprocess` (the library call the CLI makes, shards and manifest written) with one
  worker process and with two;
- a tf.data pipeline over the same files doing the core of the same work (read, `decode_jpeg`,
  `resize`, `encode_jpeg`, parallel map with AUTOTUNE) at the same resize quality
  (`antialias=True`, as Pillow's filters are), and without antialiasing for reference.

The tf.data pipeline writes nothing and does less than kubedetect (no XML, EXIF, checks, hashes
or TFRecords), so it is a generous baseline. Every variant is timed from call to last byte, page
cache warm and TensorFlow already imported, in interleaved rounds; the machine is shared, so the
best round of each (interference only ever slows a run down) decides the targets and the median
is shown beside it.

Targets (issue 2): two workers at least 1.7x one worker; kubedetect (two workers, the default on
this machine) at least as fast as the antialiased tf.data pipeline on the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# TensorFlow and kubedetect.data.shards are imported inside main(): the worker processes are
# started with 'spawn' and re-import this module, and must not pay for TensorFlow.

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"  # beside the checkout
SIZE = 256
QUALITY = 90
SPEEDUP_TARGET = 1.7


def _cards_dir() -> Path:
    return Path(os.environ.get("KUBEDETECT_SHARED", SHARED)) / "datasets" / "cards"


def _warm_page_cache(root: Path) -> int:
    total = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def _kubedetect_run(root: Path, workers: int):
    from kubedetect.config import PreprocessConfig
    from kubedetect.data.shards import preprocess

    def run() -> int:
        with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as out:
            config = PreprocessConfig(
                image_size=SIZE, workers=workers, jpeg_quality=QUALITY, progress=False
            )
            manifest = preprocess(str(root), out, config)
            return sum(split["images"] for split in manifest["splits"].values())

    return run


def _tfdata_run(files: list[str], antialias: bool):
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (SIZE, SIZE), method="bilinear", antialias=antialias)
        image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        return tf.io.encode_jpeg(image, quality=QUALITY)

    def run() -> int:
        dataset = (
            tf.data.Dataset.from_tensor_slices(files)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )
        count = 0
        for _ in dataset:
            count += 1
        return count

    return run


def _pillow_work(files: list[str]) -> int:
    """The core of the per-image work, Pillow alone: decode (with draft), resize, encode."""
    import io

    from PIL import Image

    for path in files:
        image = Image.open(path)
        image.draft("RGB", (SIZE, SIZE))
        image = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        image.save(io.BytesIO(), format="JPEG", quality=QUALITY)
    return len(files)


def _machine_scaling(files: list[str], rounds: int) -> float:
    """How much faster two processes do twice the same Pillow work than one process does it once
    (best of `rounds`): what two cores give on this machine at this moment. A VM's two vCPUs
    may be two threads of one physical core, and then no program scales much past ~1.3x."""
    import multiprocessing

    best_one = best_two = float("inf")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_pillow_work, [files[:4], files[:4]])  # both started and warm
        for _ in range(rounds):
            start = time.perf_counter()
            pool.apply(_pillow_work, (files,))
            best_one = min(best_one, time.perf_counter() - start)
            start = time.perf_counter()
            pool.map(_pillow_work, [files, files], chunksize=1)
            best_two = min(best_two, time.perf_counter() - start)
    return 2 * best_one / best_two


def _time(run) -> tuple[float, int]:
    start = time.perf_counter()
    images = run()
    return time.perf_counter() - start, images


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.preprocess", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved timed rounds (default: 5)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not touch docs/BENCHMARKS.md"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = _cards_dir()
    if not (root / "Annotations").is_dir():
        print(
            f"bench.preprocess: {root} is absent (../shared lies beside checkouts)", file=sys.stderr
        )
        return 1
    import tensorflow as tf  # noqa: F401 - imported before any timing, as in a long-lived process

    from bench.load import OthersCpu
    from bench.report import table, verdict, write_section
    from kubedetect.resources import available_cores

    _warm_page_cache(root)
    files = sorted(str(p) for p in (root / "JPEGImages").iterdir() if p.is_file())
    variants = {
        "kubedetect preprocess, 1 worker": _kubedetect_run(root, 1),
        "kubedetect preprocess, 2 workers": _kubedetect_run(root, 2),
        "tf.data, antialias=True": _tfdata_run(files, antialias=True),
        "tf.data, antialias=False (aliased, reference only)": _tfdata_run(files, antialias=False),
    }
    for name, run in variants.items():  # warm-up: graph tracing, first imports, allocator
        seconds, images = _time(run)
        print(f"warm-up {name}: {images / seconds:.0f} images/s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, int] = {}
    with OthersCpu() as others:
        for round_index in range(args.rounds):
            for name, run in variants.items():
                seconds, images = _time(run)
                counts[name] = images
                rates[name].append(images / seconds)
            print(
                f"round {round_index + 1}: " + ", ".join(f"{rates[n][-1]:.0f}" for n in variants),
                flush=True,
            )
    machine = _machine_scaling(files, rounds=3)

    best = {name: max(values) for name, values in rates.items()}
    one, two, tf_aa = (best[n] for n in list(variants)[:3])
    speedup = two / one
    rows = [
        [name, counts[name], f"{best[name]:.0f}", f"{statistics.median(rates[name]):.0f}"]
        for name in variants
    ]
    scaling_ok = speedup >= SPEEDUP_TARGET
    vs_tf_ok = two >= tf_aa
    body = "\n".join(
        [
            f"Cards photos ({len(files)} JPEGs, mostly 378x504 and 960x540) to {SIZE}x{SIZE} "
            f"JPEG q{QUALITY}; {available_cores()} cores available; page cache warm, TensorFlow "
            f"imported before timing; {args.rounds} interleaved rounds after one warm-up each. "
            f"The machine is shared: other processes took {others.cores:.2f} cores during the "
            f"rounds{' (**under load**: the rates are lower than on an idle machine)' if others.under_load else ''}; "
            f"load average {others.load_before:.2f} before, {others.load_after:.2f} after.",
            "",
            table(["pipeline", "images", "best images/s", "median images/s"], rows),
            "",
            "kubedetect is timed end to end, as `preprocess()` runs for the CLI: scanning the XML, "
            "starting the worker processes (spawned, so their start-up is counted), decoding with "
            "EXIF orientation, checking boxes, resizing (Pillow, antialiased bilinear), encoding, "
            "hashing, and writing the TFRecord shards, part files, dataset.json and labels.json. "
            "The tf.data pipelines only read, decode, resize and encode, and write nothing.",
            "",
            "Targets (best rounds):",
            "",
            f"- 2 workers at least {SPEEDUP_TARGET}x one worker: {speedup:.3f}x, "
            f"{verdict(scaling_ok)}. For scale: two processes doing Pillow's decode, resize "
            f"and encode alone (no XML, checks, hashes or files) ran {machine:.2f}x as fast as "
            "one, measured right after the rounds: the most two cores gave at the time.",
            f"- kubedetect (2 workers) at least as fast as tf.data with antialiasing on the same "
            f"cores: {two:.0f} vs {tf_aa:.0f} images/s ({two / tf_aa:.2f}x), {verdict(vs_tf_ok)}.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("preprocess", "Preprocessing throughput (bench/preprocess.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
