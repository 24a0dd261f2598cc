"""Training throughput (issue 19): where a training step's time goes, and this checkout's
images/s against the baseline's (main before issue 19), measured side by side in one run.

1. The parts, in this process, on fixed tensors (a cards batch at 256 px): the input pipeline
   alone; the model forward, forward and backward, and the whole step (loss and optimizer)
   with Keras' own batch norm (the baseline's) and with the fused one (this checkout's); the
   step compiled by XLA; CPU op threads 1 and 2. Variants alternate in rounds (medians), so
   that the machine's other work weighs on all of them. Then TensorFlow's profiler: op time of
   the baseline's step by kind (convolutions, batch norm, loss and optimizer, ...).
2. End to end: `python -m kubedetect.training.train` of the baseline commit (a git worktree, its own
   shards) and of this checkout on the cards photos, the same settings (batch, epochs,
   validation at the end only), alternately for --rounds rounds. images/s of epochs 2 to E
   from each run's history (wall clock between the ends of epoch 1 and E: checkpoints and
   logging included), and each model's test mAP@0.5 (the same settings: the speed must not
   cost accuracy).
3. The fraction of the machine's float32 peak that reaches: FLOPs per training image are three
   times the forward pass's (forward, and the two products of the backward pass), counted
   over the convolutions from the model's layers; the peak is cores x clock x float32 FLOPs a
   core issues per cycle (from the CPU's flags; see `float32_peak`).

    python -m bench.train_speed [--rounds 3] [--epochs 12] [--batch-size 16] [--parts-only]

Smoke run: `--rounds 1 --epochs 3 --part-rounds 2`. Results: docs/BENCHMARKS.md, "train-speed".
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import resource
import shutil
import statistics
import sys
import time

from bench.report import table, verdict, write_section
from bench.versions import WORK, baseline, current, dataset, history, load

SPEED_TARGET = 1.5
CLASSES = 6  # the cards set


# ----------------------------------------------------------------------------------------------
# The machine's float32 peak
# ----------------------------------------------------------------------------------------------


def cpu_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:  # the first processor speaks for all
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def float32_peak() -> tuple[float, str]:
    """GFLOP/s the cores this process may use can do in float32, and how that was computed.

    cores x the clock the kernel reports (`cpu MHz`: the nominal one; boost clocks are not
    known here) x float32 FLOPs a core issues per cycle: two fused multiply-add pipes of the
    widest vector it runs at full rate, 2 FLOPs per lane. 256-bit (8 lanes, 32 FLOP/cycle) with
    AVX2 and FMA, and on AMD before Zen 5 even with AVX-512 (Zen 4 splits 512-bit operations
    in two 256-bit halves); 512-bit (64 FLOP/cycle) on Intel CPUs with AVX-512 and AMD Zen 5.
    """
    fields = cpu_fields()
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0))
    ghz = float(fields.get("cpu MHz", "0") or 0) / 1000
    amd = fields.get("vendor_id") == "AuthenticAMD"
    family = int(fields.get("cpu family", "0") or 0)
    if "avx512f" in flags and (not amd or family >= 26):
        per_cycle, why = 64, "AVX-512, two 512-bit FMA pipes"
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
        why = "two 256-bit FMA pipes" + (
            " (AVX-512 runs as two 256-bit halves on this AMD core)" if "avx512f" in flags else ""
        )
    elif "avx" in flags:
        per_cycle, why = 16, "AVX without FMA"
    else:
        per_cycle, why = 8, "SSE"
    peak = cores * ghz * per_cycle
    how = (
        f"{cores} cores x {ghz:.2f} GHz (`cpu MHz`) x {per_cycle} float32 FLOP/cycle ({why}) "
        f"= {peak:.0f} GFLOP/s"
    )
    return peak, how


def simd_flags() -> str:
    flags = set(cpu_fields().get("flags", "").split())
    wanted = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16")
    return ", ".join(f for f in wanted if f in flags) or "unknown"


def training_gflop_per_image(model) -> float:
    """3 x the forward convolutions' FLOPs (2 per multiply-add) of one image."""
    import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * height * width * out * layer.input.shape[-1] * kh * kw
    return 3 * flops / 1e9


# ----------------------------------------------------------------------------------------------
# 1. The parts
# ----------------------------------------------------------------------------------------------


def parts(shards, batch: int, rounds: int, threads: int = 2) -> dict:
    """images/s of each part (medians over alternating rounds), the profile of the baseline's
    step by op kind, and the FLOPs of a training image."""
    import keras
    import tensorflow as tf

    from kubedetect.config import TrainConfig
    from kubedetect.data.shards import load_manifest, shard_paths
    from kubedetect.network.architecture import build_detector
    from kubedetect.network.batchnorm import with_fused_batch_norm
    from kubedetect.training.inputs import training_dataset
    from kubedetect.training.losses import detection_losses

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    size = int(load_manifest(str(shards))["image_size"])
    config = TrainConfig(batch_size=batch, threads=threads)
    stream = iter(
        training_dataset(
            shard_paths(str(shards), "train"),
            num_classes=CLASSES,
            image_size=size,
            batch_size=batch,
            config=config,
            cache=True,
        )
    )
    images, targets, _ = next(stream)

    def model_of(fused: bool):
        keras.utils.set_random_seed(0)
        model = build_detector(CLASSES, size)
        return with_fused_batch_norm(model) if fused else model

    def forward(model):
        return tf.function(lambda: model(images, training=True)["heatmap"][0, 0, 0, 0])

    def backward(model):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    detection_losses(model(images, training=True), targets)["total"]
                )
            grads = tape.gradient(loss, model.trainable_variables)
            return tf.add_n([tf.reduce_sum(g) for g in grads])

        return run

    def step(model, xla: bool = False):
        optimizer = keras.optimizers.AdamW(1e-3)
        optimizer.build(model.trainable_variables)

        @tf.function(jit_compile=xla)
        def run():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    detection_losses(model(images, training=True), targets)["total"]
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        return run

    keras_bn, fused = model_of(False), model_of(True)
    variants = {
        "input pipeline alone (augmentation, targets)": lambda: next(stream)[0][0, 0, 0, 0],
        "forward, Keras batch norm (baseline)": forward(keras_bn),
        "forward, fused batch norm": forward(fused),
        "forward + backward, Keras batch norm (baseline)": backward(keras_bn),
        "forward + backward, fused batch norm": backward(fused),
        "training step, Keras batch norm (baseline)": step(model_of(False)),
        "training step, fused batch norm": step(model_of(True)),
        "training step, fused, XLA (jit_compile)": step(model_of(True), xla=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu_rates: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        for _ in range(3):
            run()  # trace, compile, warm up
    for _ in range(rounds):
        for name, run in variants.items():
            repeats = max(4, 192 // batch)
            wall, cpu = time.perf_counter(), _cpu_seconds()
            for _ in range(repeats):
                out = run()
            float(out)
            rates[name].append(batch * repeats / (time.perf_counter() - wall))
            cpu_rates[name].append(batch * repeats / (_cpu_seconds() - cpu))
    profile = _profile(step(model_of(False)), 10)
    return {
        "rates": {k: statistics.median(v) for k, v in rates.items()},
        "cpu_rates": {k: statistics.median(v) for k, v in cpu_rates.items()},
        "profile": profile,
        "gflop": training_gflop_per_image(keras_bn),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _profile(run, steps: int) -> dict[str, float]:
    """Op time per step by kind, from TensorFlow's profiler (the host plane's op events, their
    durations summed over threads: ms of op execution, not of wall clock)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = str(WORK / "profile")
    shutil.rmtree(logdir, ignore_errors=True)
    run()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        out = run()
    float(out)
    tf.profiler.experimental.stop()
    (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    kinds: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op, _, kind = name.rpartition(":")
                if not op or op.endswith(":") or not re.fullmatch(r"_?[A-Z][A-Za-z0-9]+", kind):
                    continue  # not an op ("ExecutorState::Process", "...::Run")
                kinds[_kind(op, kind)] += event.duration_ps / 1e9 / steps
    return dict(kinds.most_common())


def _kind(op: str, kind: str) -> str:
    if "Conv2D" in kind:
        return "convolutions (forward and backward)"
    if "batch_normalization" in op:
        return "batch norm (Keras: moments, scale and shift; their gradients)"
    if "re_lu" in op or "Relu" in kind:
        return "ReLU6"
    if "kubedetect" not in op:
        return "loss and optimizer"
    return "other model ops (resizes, additions, rescaling, sigmoids)"


# ----------------------------------------------------------------------------------------------
# 2. End to end, the baseline against this checkout
# ----------------------------------------------------------------------------------------------


def end_to_end(data, rounds: int, epochs: int, batch: int) -> list[dict]:
    versions = [baseline(), current()]
    flags = ["--epochs", str(epochs), "--batch-size", str(batch)]
    end_only = {  # validation after the last epoch only, in each version's words
        versions[0].name: ["--eval-every", "0"],
        "current": ["--evaluations", "1"],
    }
    results = []
    for round_ in range(1, rounds + 1):
        for version in versions:
            shards = version.shards(data, "cards")
            model = WORK / "train-speed" / f"{version.name}-r{round_}"
            shutil.rmtree(model, ignore_errors=True)
            before = load()
            wall = version.train(shards, model, [*flags, *end_only[version.name]])
            after = load()
            rows = history(model)
            trained = rows[-1]["step"] - rows[0]["step"]
            seconds = rows[-1]["wall_seconds"] - rows[0]["wall_seconds"]
            test = version.evaluate(model, shards, "test")
            results.append(
                {
                    "version": version.name,
                    "round": round_,
                    "images_per_second": trained * batch / seconds,
                    "loop_images_per_second": statistics.median(
                        r["images_per_second"] for r in rows[1:]
                    ),
                    "wall": wall,
                    "test_map50": test["map50"],
                    "load": f"{before} -> {after}",
                }
            )
            print(results[-1], flush=True)
    return results


# ----------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed")
    parser.add_argument("--rounds", type=int, default=3, help="end-to-end rounds (each: both)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each end-to-end run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--part-rounds", type=int, default=7, help="rounds of the parts")
    parser.add_argument("--parts-only", action="store_true")
    args = parser.parse_args(argv)
    cards = dataset("cards")
    if cards is None:
        return 0
    shards = current().shards(cards, "cards")
    measured = parts(shards, args.batch_size, args.part_rounds)
    runs = [] if args.parts_only else end_to_end(cards, args.rounds, args.epochs, args.batch_size)
    write(measured, runs, args)
    return 0


def write(measured: dict, runs: list[dict], args) -> None:
    peak, how = float32_peak()
    gflop = measured["gflop"]

    def share(rate: float) -> str:
        return f"{100 * rate * gflop / peak:.0f} %"

    def part_share(name: str, rate: float) -> str:
        if name.startswith("input"):
            return "-"
        flops = gflop / 3 if name.startswith("forward,") else gflop
        return f"{100 * rate * flops / peak:.0f} %"

    part_rows = [
        [name, f"{rate:.0f}", f"{measured['cpu_rates'][name]:.0f}", part_share(name, rate)]
        for name, rate in measured["rates"].items()
    ]
    total = sum(measured["profile"].values())
    profile_rows = [
        [kind, f"{ms:.1f}", f"{100 * ms / total:.0f} %"] for kind, ms in measured["profile"].items()
    ]
    body = f"""
CPU flags: {simd_flags()}. Float32 peak: {how}. A training image costs {gflop:.2f} GFLOP
(3 x the forward pass's {gflop / 3:.3f}, convolutions only), so 100 images/s are
{100 * gflop:.0f} GFLOP/s, {100 * 100 * gflop / peak:.0f} % of the peak. Load average at the
start: {load()} (the machine is shared: ratios from alternating runs are what to read).

**Where the time goes** (cards, 256 px, batch {args.batch_size}, 2 op threads, fixed tensors;
median of {args.part_rounds} alternating rounds; 'images per CPU-second' divides by the
process's CPU time, which the machine's other work disturbs less):

{table(["part", "images/s", "images per CPU-second", "of the float32 peak (its FLOPs)"], part_rows)}

Op time of the baseline's training step by kind (TensorFlow's profiler, ms per step summed
over threads; total {total:.0f} ms):

{table(["ops", "ms per step", "share"], profile_rows)}
"""
    if runs:
        by = collections.defaultdict(list)
        for run in runs:
            by[run["version"]].append(run)
        old, new = (by[name] for name in by)
        ratios = [
            n["images_per_second"] / o["images_per_second"] for o, n in zip(old, new, strict=True)
        ]
        ratio = statistics.median(ratios)
        rows = [
            [
                r["round"], r["version"], f"{r['images_per_second']:.1f}",
                f"{r['loop_images_per_second']:.1f}", share(r["images_per_second"]),
                f"{r['test_map50']:.3f}", f"{r['wall']:.0f}", r["load"],
            ]
            for r in runs
        ]  # fmt: skip
        ok = ratio >= SPEED_TARGET
        body += f"""
**End to end** (`python -m kubedetect.training.train`, cards, `--epochs {args.epochs} --batch-size
{args.batch_size}`, validation after the last epoch only; the baseline {old[0]["version"]} on its
own stretched shards, this checkout on letterboxed ones; alternating, {args.rounds} round(s)).
images/s: epochs 2-{args.epochs} by the wall clock (from the end of epoch 1 to the end of the
last: checkpoints, logging and the input pipeline included); 'loop' is the median of the epochs'
own images/s (training steps only).

{table(["round", "version", "images/s", "loop images/s", "of the peak", "test mAP@0.5", "wall (s)", "load before -> after"], rows)}

This checkout / baseline, images/s by round: {", ".join(f"{r:.2f}" for r in ratios)}; median
**{ratio:.2f}x**. Target >= {SPEED_TARGET}x: {verdict(ok)}. Test mAP@0.5 (mean): baseline
{statistics.mean(r["test_map50"] for r in old):.3f}, this checkout
{statistics.mean(r["test_map50"] for r in new):.3f}.
"""
    write_section(
        "train-speed", "Training throughput: where the time goes, and against the baseline", body
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
