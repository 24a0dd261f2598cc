"""Quantizing an ensemble (kubedetect.inference.ensemble): each member quantized like any model,
the members' variants fused again into one ensemble per variant; and what the fusion buys and
costs once quantized (mAP and interpreter time against the best member alone), the table the
quantize step reports beside the variants'.
"""

from __future__ import annotations

import json
import os
import shutil

from kubedetect.inference.ensemble import read_spec, write_ensemble
from kubedetect.io import fs
from kubedetect.io.modelcard import ModelCard


def quantize_ensemble(model_dir: str, out_dir: str, config, *, log=print) -> dict[str, ModelCard]:
    """Every variant of `config.modes` of an ensemble of Keras exports: each member quantized
    (kubedetect.network.quantize), then out_dir/<mode>/ made an ensemble of the members' <mode>
    variants, with the same weights and fusion."""
    import tempfile  # noqa: PLC0415

    from kubedetect.network.quantize import quantize_model  # noqa: PLC0415

    members, fusion = read_spec(model_dir)
    card = ModelCard.load(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ensemble-members-", dir=out_dir) as scratch:
        for i, member in enumerate(members):
            log(f"member {i} ({member.name or member.path}):")
            quantize_model(
                os.path.join(model_dir, member.path), os.path.join(scratch, str(i)), config
            )
        cards = {}
        for mode in config.modes:
            variants = [
                (os.path.join(scratch, str(i), mode), m.weight, m.name)
                for i, m in enumerate(members)
            ]
            target = os.path.join(out_dir, mode)
            shutil.rmtree(target, ignore_errors=True)
            provenance = {"source_model_sha256": card.sha256, "quantization": mode}
            cards[mode] = write_ensemble(target, variants, fusion, card.provenance | provenance)
            log(f"{mode:<8} ensemble of {len(members)} -> {target}")
    return cards


def gain_and_cost(variants_dir: str, config, *, shards: str) -> dict:
    """What fusing buys and costs, per variant: the ensemble against its best member alone
    (members/0, the best candidate) on the same images of `config.split`, mAP and interpreter
    time per image (every member's interpreter for the ensemble), timed in turns as the
    quantization report times its variants. Writes fusion.json and fusion.md into
    variants_dir; returns {"rows": [...], "table": markdown}."""
    from kubedetect.config import EvalConfig  # noqa: PLC0415
    from kubedetect.cpuinfo import cpu_line, describe_cpu  # noqa: PLC0415
    from kubedetect.evaluation.evaluate import evaluate, load_split  # noqa: PLC0415
    from kubedetect.inference.detectors import load_detector  # noqa: PLC0415
    from kubedetect.network.quantize import interleaved_latency  # noqa: PLC0415

    data = load_split(shards, config.split)
    eval_config = EvalConfig(split=config.split, plots=False)
    rows, detectors = [], {}
    for mode in config.modes:
        fused = os.path.join(variants_dir, mode)
        members, _ = read_spec(fused)
        single = os.path.join(fused, members[0].path)
        scores = {
            which: evaluate(folder, shards, None, eval_config, data=data, progress=False)
            for which, folder in (("single", single), ("ensemble", fused))
        }
        detectors[f"{mode}/single"] = load_detector(single, num_threads=config.threads)
        detectors[f"{mode}/ensemble"] = load_detector(fused, num_threads=config.threads)
        rows.append(
            {
                "variant": mode,
                "members": len(members),
                "best_member": members[0].name or members[0].path,
                **{f"{w}_{k}": float(scores[w][k]) for w in scores for k in ("map50", "map50_95")},
            }
        )
    latency = interleaved_latency(
        detectors, data.images[0], config.latency_runs, config.latency_rounds
    )
    for row in rows:
        single_ms = latency[f"{row['variant']}/single"]["median_ms"]
        ensemble_ms = latency[f"{row['variant']}/ensemble"]["median_ms"]
        row |= {
            "single_latency_ms": single_ms,
            "ensemble_latency_ms": ensemble_ms,
            "latency_ratio": ensemble_ms / single_ms if single_ms else None,
            "gain_map50_points": (row["ensemble_map50"] - row["single_map50"]) * 100,
            "gain_map50_95_points": (row["ensemble_map50_95"] - row["single_map50_95"]) * 100,
        }
    cpu = describe_cpu()
    lines = [
        "| variant | best alone mAP@0.5:0.95 | fused mAP@0.5:0.95 | gain (points) "
        "| best alone mAP@0.5 | fused mAP@0.5 | gain (points) | best alone (ms) | fused (ms) "
        "| latency cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "-" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f}x"
        lines.append(
            f"| {r['variant']} | {r['single_map50_95']:.4f} | {r['ensemble_map50_95']:.4f} "
            f"| {r['gain_map50_95_points']:+.2f} | {r['single_map50']:.4f} "
            f"| {r['ensemble_map50']:.4f} | {r['gain_map50_points']:+.2f} "
            f"| {r['single_latency_ms']:.3f} | {r['ensemble_latency_ms']:.3f} | {ratio} |"
        )
    lines += [
        "",
        f"The {rows[0]['members']} fused models against the best of them alone "
        f"({rows[0]['best_member']}), on the {len(data.images)} images of the "
        f"'{config.split}' split; latency: interpreter time per image ({config.threads} "
        f"threads, every member's for the fusion; decoding and fusing come on top), on "
        f"{cpu_line(cpu)}.",
    ]
    result = {"split": config.split, "images": len(data.images), "cpu": cpu, "rows": rows}
    result["table"] = "\n".join(lines)
    fs.write_text(os.path.join(variants_dir, "fusion.json"), json.dumps(result, indent=1) + "\n")
    fs.write_text(os.path.join(variants_dir, "fusion.md"), result["table"] + "\n")
    return result
