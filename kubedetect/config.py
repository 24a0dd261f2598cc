"""Configuration: one dataclass per concern, shared by the CLI, the KFP components and serving.

Each field carries its help text, so that the command line (`add_arguments`) and the components
are generated from the same source and cannot drift apart. Defaults live here and only here.
This module imports nothing heavy: serving and the CLI read it without TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, *, flag: str | None = None) -> Any:
    """A dataclass field that also describes its command-line flag."""
    return field(default=default, metadata={"help": help, "flag": flag})


def available_cores() -> int:
    """Cores this process may use (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DataConfig:
    """How a Pascal VOC folder is read: which classes, which split, which limits."""

    classes: tuple[str, ...] | None = option(
        None, "Comma-separated class names, in id order. Default: every class in the data, sorted."
    )
    val_fraction: float = option(
        0.1,
        "Share of images put in 'val' by a hash of the file stem, where ImageSets/Main has no "
        "val list.",
    )
    max_xml_bytes: int = option(
        10_000_000, "Larger annotation files are refused (no huge trees)."
    )
    max_image_pixels: int = option(
        80_000_000, "Larger images are refused as decompression bombs (width x height)."
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become TFRecord shards."""

    image_size: int = option(256, "Square training size in pixels; images are resized to it.")
    workers: int = option(
        0, "Worker processes decoding and resizing images. 0: the cores available."
    )
    num_shards: int = option(4, "Shards per split; the unit of distribution across machines.")
    shard_index: int | None = option(
        None, "Process only this shard (0-based); then run merge-shards once all are written."
    )
    jpeg_quality: int = option(90, "JPEG quality of the resized images stored in the shards.")
    progress: bool = option(True, "Show a progress bar.")

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else available_cores()


# ----------------------------------------------------------------------------------------------
# Command-line plumbing: dataclass fields become argparse flags and back.
# ----------------------------------------------------------------------------------------------


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """The concrete type of a field annotation and whether None is allowed."""
    hint = annotation
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    return hint, optional


def _parse_list(text: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    return items


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of the config dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        kind, _ = _base_type(hints[f.name])
        help_text = f.metadata["help"]
        if f.default is not None and f.default is not dataclasses.MISSING:
            help_text += f" (default: {_show(f.default)})"
        if kind is bool:
            group.add_argument(
                _flag(f), dest=f.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )
            continue
        parse = _parse_list if typing.get_origin(kind) is tuple else kind
        group.add_argument(
            _flag(f), dest=f.name, type=parse, default=argparse.SUPPRESS, help=help_text,
            metavar=f.name.upper(),
        )


def from_args(cls: type, namespace: argparse.Namespace, **overrides: Any):
    """Build the config `cls` from parsed flags; flags not given keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    values.update(overrides)
    return cls(**values)


def to_argv(config: Any, *, all_fields: bool = False) -> list[str]:
    """The flags that reproduce `config` (the inverse of add_arguments + from_args).

    Used where one process starts another with the same settings: the local launcher's
    workers, TFJob containers, pipeline steps. Fields at their default are left out unless
    `all_fields`, so commands stay short and readable.
    """
    argv: list[str] = []
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        if not all_fields and value == f.default:
            continue
        flag = _flag(f)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, _show(value)]
    return argv


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class ModelConfig:
    """The detector's architecture (the input size comes from the shards' image size)."""

    backbone: str = option("tiny", "'tiny' (from scratch, ~100k parameters) or 'mobilenetv2'.")
    width: int = option(16, "Base channel width of the tiny backbone and of the neck.")
    weights: str | None = option(
        None, "mobilenetv2 only: 'imagenet' downloads pretrained weights (needs internet)."
    )


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how the pipeline's steps and TFJobs run on Kubernetes (ignored locally)."""

    image: str = option(
        "kubedetect-trainer:latest", "The trainer image: pipeline steps and TFJob workers."
    )
    namespace: str = option(
        "kubeflow", "Namespace of TFJobs, the workspace PVC and the serving Deployment."
    )
    workspace_pvc: str = option(
        "kubedetect-workspace", "PVC holding datasets, checkpoints and models (ReadWriteMany)."
    )
    workspace_mount: str = option("/workspace", "Where the workspace PVC is mounted.")
    gpus_per_worker: int = option(0, "nvidia.com/gpu per TFJob worker (0: CPU training).")
    worker_cpu: str = option("2", "CPU request per TFJob worker.")
    worker_memory: str = option("8Gi", "Memory request and limit per TFJob worker.")
    gpu_node_selector: str = option(
        "nvidia.com/gpu.present=true", "key=value node selector for GPU workers and steps."
    )
    gpu_toleration: str = option(
        "nvidia.com/gpu", "Taint key tolerated by GPU workers and steps (NoSchedule)."
    )
    image_pull_secret: str | None = option(None, "Secret for pulling the images, if private.")
    trainer_service_account: str = option(
        "kubedetect-trainer", "Service account of TFJob pods (they need no API access)."
    )
    serving_deployment: str = option(
        "kubedetect-server", "The serving Deployment that deploy rolls to a new model."
    )
    job_backoff_limit: int = option(3, "TFJob runPolicy.backoffLimit: restarts before failing.")
    job_ttl_seconds: int = option(
        86400, "TFJob runPolicy.ttlSecondsAfterFinished: how long a finished job is kept."
    )
    job_timeout_seconds: int = option(6 * 3600, "How long the train step waits for the TFJob.")
