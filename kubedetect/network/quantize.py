"""Post-training quantization: the exported Keras detector to TFLite variants.

Each variant is a folder that `kubedetect serve` and `kubedetect evaluate` take as it is:
`model.tflite`, `model.json` (input dtype with scale and zero point, output quantization,
classes, sha256) and `labels.json`.

- float32: the reference, converted as is.
- float16: weights stored as float16 (half the size), computed in float32.
- dynamic: weights int8, activations float, quantized on the fly.
- int8: weights and activations int8 (per-channel weight ranges), calibrated on images drawn
  from the training shards; int8 input (pixel - 128) and int8 outputs, which the runtime
  dequantizes before the shared decode.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.io import fs
from kubedetect.io.labels import ClassMap
from kubedetect.io.modelcard import OUTPUTS, ModelCard, TensorSpec, sha256_bytes

MODES = ("float32", "float16", "dynamic", "int8")


def representative_images(shards: list[str], count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Calibration input: `count` training images, shuffled with a fixed seed."""
    import tensorflow as tf  # noqa: PLC0415 - not for the quality gate, which reads reports

    from kubedetect.data.example import parse_example  # noqa: PLC0415

    dataset = (
        tf.data.TFRecordDataset(shards)
        .shuffle(4096, seed=seed, reshuffle_each_iteration=False)
        .map(lambda s: parse_example(s)["image"])
        .take(count)
    )
    for image in dataset.as_numpy_iterator():
        yield image[None].astype(np.float32)


def convert(model, mode: str, calibration: list[np.ndarray] | None = None) -> bytes:
    """One Keras detector to TFLite bytes in the given mode."""
    import tensorflow as tf  # noqa: PLC0415

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if not calibration:
            raise ValueError("int8 quantization needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode != "float32":
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return converter.convert()


def describe(tflite: bytes) -> tuple[TensorSpec, dict[str, TensorSpec]]:
    """The input and named outputs of a converted model, with their quantization."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    runner = Interpreter(model_content=tflite).get_signature_runner()
    ((name, detail),) = runner.get_input_details().items()
    scale, zero_point = detail["quantization"]
    spec = TensorSpec(name, np.dtype(detail["dtype"]).name, float(scale), int(zero_point))
    outputs = {}
    for out_name, out in runner.get_output_details().items():
        scale, zero_point = out["quantization"]
        outputs[out_name] = TensorSpec(
            out_name, np.dtype(out["dtype"]).name, float(scale), int(zero_point)
        )
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"converted model lacks outputs {missing}; has {sorted(outputs)}")
    return spec, outputs


def write_variant(out_dir: str, mode: str, tflite: bytes, source: ModelCard) -> ModelCard:
    """Write `out_dir/<mode>/` with the model, its card and its labels."""
    folder = fs.join(out_dir, mode)
    fs.makedirs(folder)
    fs.write_bytes(fs.join(folder, "model.tflite"), tflite)
    input_spec, outputs = describe(tflite)
    card = ModelCard(
        kind="tflite",
        variant=mode,
        file="model.tflite",
        sha256=sha256_bytes(tflite),
        classes=source.classes,
        input_size=source.input_size,
        stride=source.stride,
        input=input_spec,
        outputs=outputs,
        preprocessing=source.preprocessing,
        decode=source.decode,
        provenance={"source_model_sha256": source.sha256, "quantization": mode} | source.provenance,
    )
    card.save(folder)
    ClassMap(source.classes).save(folder)
    return card


def variant_dir(out_dir: str, mode: str) -> str:
    return os.path.join(out_dir, mode) if not fs.is_uri(out_dir) else fs.join(out_dir, mode)


# ----------------------------------------------------------------------------------------------
# `kubedetect quantize MODEL_DIR OUT_DIR [--mode ...] [--report]`
# ----------------------------------------------------------------------------------------------


def _shards_of(card: ModelCard, config) -> str:
    shards = config.shards or card.provenance.get("trained_on", {}).get("shards")
    if not shards:
        raise KubedetectError("no shards to calibrate or evaluate with: pass --shards")
    if not fs.exists(fs.join(shards, "dataset.json")):
        raise KubedetectError(
            f"{shards}: no dataset.json (the shards the model was trained on are not here); "
            "pass --shards"
        )
    return shards


def quantize_model(model_dir: str, out_dir: str, config, *, log=print) -> dict[str, ModelCard]:
    """Every variant of `config.modes` from the Keras export in model_dir, into out_dir/<mode>/."""
    import keras  # noqa: PLC0415

    from kubedetect.data.shards import shard_paths  # noqa: PLC0415

    unknown = [m for m in config.modes if m not in MODES]
    if unknown:
        raise KubedetectError(f"--mode {','.join(unknown)}: unknown; choose from {','.join(MODES)}")
    card = ModelCard.load(model_dir)
    if card.kind == "ensemble":  # every member quantized, then the ensemble of each variant
        from kubedetect.network.quantize_ensemble import quantize_ensemble  # noqa: PLC0415

        return quantize_ensemble(model_dir, out_dir, config, log=log)
    if card.kind != "keras":
        raise KubedetectError(
            f"{model_dir}: quantize takes a training export (kind keras), not {card.kind}"
        )
    model = keras.saving.load_model(card.verify(model_dir), compile=False)
    calibration = None
    if "int8" in config.modes:
        shards = _shards_of(card, config)
        calibration = list(
            representative_images(shard_paths(shards, "train"), config.calibration_images)
        )
        log(f"int8 calibration: {len(calibration)} training images from {shards}")
    cards = {}
    for mode in config.modes:
        started = time.perf_counter()
        tflite = convert(model, mode, calibration)
        cards[mode] = write_variant(out_dir, mode, tflite, card)
        log(
            f"{mode:<8} {len(tflite) / 1024:8.1f} kB  -> {variant_dir(out_dir, mode)} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return cards


def single_image_latency(detector, image: np.ndarray, runs: int, warmup: int = 20) -> dict:
    """Milliseconds per interpreter invocation on one image (median and 90th percentile)."""
    tensor = detector.quantize_input(image[None])
    for _ in range(warmup):
        detector.invoke(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.invoke(tensor)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def interleaved_latency(detectors: dict, image: np.ndarray, runs: int, rounds: int) -> dict:
    """Per variant, the round with the lowest median of `runs` single-image invocations, the
    variants taking turns in every round: a burst of load elsewhere on the machine slows one
    round of every variant rather than all rounds of one, and interference only ever slows a
    run down. {variant: {'median_ms', 'p90_ms', 'round_medians_ms'}}."""
    measured: dict[str, list[dict]] = {name: [] for name in detectors}
    for _ in range(max(1, rounds)):
        for name, detector in detectors.items():
            measured[name].append(single_image_latency(detector, image, runs))
    best = {}
    for name, results in measured.items():
        fastest = min(results, key=lambda r: r["median_ms"])
        best[name] = fastest | {"round_medians_ms": [r["median_ms"] for r in results]}
    return best


# Variants whose latencies are this close to the fastest count as equally fast: the smallest
# file of them is served (on a busy machine, a few per cent is noise).
EQUALLY_FAST = 0.05


def choose_variant(report: dict, max_map_drop: float, override: str = "") -> dict | None:
    """The report's row of the variant to serve: `override` if given, otherwise the fastest TFLite
    variant (of those within EQUALLY_FAST of it, the smallest) whose mAP@0.5 is at most
    `max_map_drop` points below the reference's, on the CPU the report was measured on. None if
    no variant is within the budget."""
    rows = [r for r in report["variants"] if r["latency_ms"] is not None]
    if override:
        chosen = [r for r in rows if r["variant"] == override]
        if not chosen:
            raise KubedetectError(
                f"serve_variant {override!r}: not among the quantized variants "
                f"({', '.join(r['variant'] for r in rows)})"
            )
        return chosen[0]
    within = [r for r in rows if r["map50_drop_points"] <= max_map_drop]
    if not within:
        return None
    fastest = min(r["latency_ms"] for r in within)
    close = [r for r in within if r["latency_ms"] <= fastest * (1 + EQUALLY_FAST)]
    return min(close, key=lambda r: (r["size_bytes"], r["latency_ms"]))


@dataclass(frozen=True)
class GateDecision:
    """What the quality gate decided: whether to deploy, which variant, and the checks made."""

    passed: bool
    variant: str  # "" when no variant could be chosen
    checks: tuple[tuple[str, bool], ...]
    why: str  # how the variant was chosen

    def markdown(self) -> str:
        lines = [f"# Quality gate: {'deploy' if self.passed else 'hold'}", ""]
        lines += [f"- {'pass' if ok else 'FAIL'}: {text}" for text, ok in self.checks]
        return "\n".join([*lines, "", self.why]) + "\n"

    def summary(self) -> str:
        """One line: the verdict, the variant and every check."""
        verdict = "deploy" if self.passed else "hold"
        return (
            f"{verdict} {self.variant or '(no variant)'} ({'; '.join(t for t, _ in self.checks)})"
        )

    def with_check(self, text: str, ok: bool) -> GateDecision:
        """The decision with one more check (the champion's): it passes only if this does too."""
        return GateDecision(self.passed and ok, self.variant, (*self.checks, (text, ok)), self.why)


def gate(
    report: dict, min_map: float, max_map_drop: float, serve_variant: str = ""
) -> GateDecision:
    """The quality gate on a quantization report: the variant to serve is `serve_variant` if
    given, else the fastest within `max_map_drop` on the CPU the report was measured on; it is
    deployed only if its mAP@0.5 is at least `min_map` and at most `max_map_drop` points below
    the reference's."""
    from kubedetect.cpuinfo import cpu_line  # noqa: PLC0415

    ref = report["reference"]
    chosen = choose_variant(report, max_map_drop, serve_variant)
    if chosen is None:
        text = f"a variant within {max_map_drop:.2f} points of {ref}"
        return GateDecision(False, "", ((text, False),), "Nothing to serve.")
    name = chosen["variant"]
    checks = (
        (f"{name} mAP@0.5 {chosen['map50']:.3f} >= {min_map:.3f}", chosen["map50"] >= min_map),
        (
            f"drop against {ref} {chosen['map50_drop_points']:.2f} points <= {max_map_drop:.2f}",
            chosen["map50_drop_points"] <= max_map_drop,
        ),
    )
    how = (
        "as serve_variant asks"
        if serve_variant
        else f"the fastest variant within {max_map_drop:.2f} mAP points of {ref}"
    )
    ratio = chosen["latency_ratio"]
    why = (
        f"Variant: **{name}**, {how}: {chosen['latency_ms']:.3f} ms"
        + (f" ({ratio:.2f}x {ref})" if ratio is not None else "")
        + f", {report['threads']} threads, on {cpu_line(report['cpu'])}. Its speed holds for "
        "this CPU: serving nodes of another kind may rank the variants differently "
        "(set serve_variant)."
    )
    return GateDecision(all(ok for _, ok in checks), name, checks, why)


def report(model_dir: str, out_dir: str, config, *, log=print) -> dict:
    """Evaluate every variant in out_dir with the one evaluator and time it on this CPU;
    report.json + report.md."""
    from kubedetect.config import EvalConfig  # noqa: PLC0415
    from kubedetect.cpuinfo import cpu_line, describe_cpu  # noqa: PLC0415
    from kubedetect.evaluation.evaluate import evaluate, load_split  # noqa: PLC0415
    from kubedetect.inference.detectors import load_detector  # noqa: PLC0415
    from kubedetect.inference.ensemble import model_bytes  # noqa: PLC0415

    card = ModelCard.load(model_dir)
    shards = _shards_of(card, config)
    data = load_split(shards, config.split)
    eval_config = EvalConfig(split=config.split, plots=False)
    keras_metrics = evaluate(model_dir, shards, None, eval_config, data=data, progress=False)
    rows = [
        {
            "variant": "keras",
            "file": card.file,
            "size_bytes": model_bytes(model_dir),
            "latency_ms": None,
            "latency_p90_ms": None,
            "map50": keras_metrics["map50"],
            "map50_95": keras_metrics["map50_95"],
        }
    ]
    detectors = {}
    for mode in config.modes:
        folder = variant_dir(out_dir, mode)
        if not fs.exists(fs.join(folder, "model.json")):
            raise KubedetectError(f"{folder}: no variant; run quantize with --mode {mode} first")
        metrics = evaluate(folder, shards, None, eval_config, data=data, progress=False)
        detectors[mode] = load_detector(folder, num_threads=config.threads)  # or an ensemble
        rows.append(
            {
                "variant": mode,
                "file": detectors[mode].card.file,
                "size_bytes": model_bytes(folder),
                "map50": metrics["map50"],
                "map50_95": metrics["map50_95"],
            }
        )
    cpu = describe_cpu()
    latency = interleaved_latency(
        detectors, data.images[0], config.latency_runs, config.latency_rounds
    )
    for row in rows[1:]:
        measured = latency[row["variant"]]
        row |= {"latency_ms": measured["median_ms"], "latency_p90_ms": measured["p90_ms"]}
    reference = next((r for r in rows if r["variant"] == "float32"), rows[0])
    for row in rows:
        row["map50_drop_points"] = (reference["map50"] - row["map50"]) * 100
        row["map50_95_drop_points"] = (reference["map50_95"] - row["map50_95"]) * 100
        row["size_ratio"] = row["size_bytes"] / reference["size_bytes"]
        row["latency_ratio"] = (
            row["latency_ms"] / reference["latency_ms"]
            if row["latency_ms"] is not None and reference["latency_ms"]
            else None
        )
        # Whether the variant is faster than the reference on this CPU (None: not timed).
        row["faster_on_this_cpu"] = (
            None if row["latency_ratio"] is None or row is reference else row["latency_ratio"] < 1
        )
        if row["latency_ms"] is not None:
            log(
                f"{row['variant']:<8} mAP@0.5 {row['map50']:.4f} mAP@0.5:0.95 "
                f"{row['map50_95']:.4f} latency {row['latency_ms']:.3f} ms "
                f"({config.threads} threads, {cpu_line(cpu)})"
            )
    result = {
        "model": model_dir,
        "shards": shards,
        "split": config.split,
        "images": len(data.images),
        "threads": config.threads,
        "latency_runs": config.latency_runs,
        "latency_rounds": config.latency_rounds,
        "cpu": cpu,
        "reference": reference["variant"],
        "variants": rows,
    }
    chosen = choose_variant(result, config.max_map_drop)
    result["fastest_within_budget"] = {
        "max_map_drop": config.max_map_drop,
        "variant": chosen["variant"] if chosen else None,
    }
    fs.write_text(fs.join(out_dir, "report.json"), json.dumps(result, indent=1) + "\n")
    fs.write_text(fs.join(out_dir, "report.md"), report_table(result) + "\n")
    log(verdict_line(result))
    return result


def verdict_line(result: dict) -> str:
    """Which variant the report recommends on its CPU, and why."""
    choice = result["fastest_within_budget"]
    if choice["variant"] is None:
        return f"no variant within {choice['max_map_drop']:g} points of {result['reference']}"
    return (
        f"fastest within {choice['max_map_drop']:g} mAP points of {result['reference']} on this "
        f"CPU: {choice['variant']}"
    )


def report_table(result: dict) -> str:
    """The report as a markdown table (drops are in mAP points against the reference), with the
    CPU every latency was measured on."""
    from kubedetect.cpuinfo import cpu_line  # noqa: PLC0415

    ref = result["reference"]
    lines = [
        f"| variant | size (kB) | size vs {ref} | latency (ms, {result['threads']} threads) "
        f"| latency vs {ref} | on this CPU | mAP@0.5 | mAP@0.5:0.95 | drop @0.5 (points) "
        "| drop @0.5:0.95 (points) |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["variants"]:
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        ratio = "-" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f}x"
        wins = {None: "-", True: f"faster than {ref}", False: f"**slower** than {ref}"}[
            r["faster_on_this_cpu"]
        ]
        cells = [
            r["variant"], f"{r['size_bytes'] / 1024:.1f}", f"{r['size_ratio']:.2f}x",
            latency, ratio, wins,
            f"{r['map50']:.4f}", f"{r['map50_95']:.4f}", f"{r['map50_drop_points']:+.2f}",
            f"{r['map50_95_drop_points']:+.2f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{result['images']} images of the '{result['split']}' split of {result['shards']}; "
        "latency: one image per LiteRT (XNNPACK) invocation, the best of "
        f"{result['latency_rounds']} interleaved rounds' medians, on "
        f"{cpu_line(result['cpu'])}, {result['cpu']['cores']} cores. {verdict_line(result)}."
    )
    return "\n".join(lines)
