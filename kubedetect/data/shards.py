"""Parallel preprocessing: a VOC folder to TFRecord shards and a manifest.

The unit of distribution is the shard. Every image belongs to one shard, fixed by a hash of its
annotation's path, so any machine can process shard i of K without talking to the others; one
run can also process all K. Each shard run leaves a part file (`part-0000i-of-0000K.json`) with
its record counts, checksums and problems; `merge_shards` turns the parts into `dataset.json`.
A full run ends with the same merge, so one run and K shard runs produce the same bytes.

Within a run, images are decoded, checked, resized, JPEG-encoded and serialised as examples by
a pool of processes (`kubedetect.data.pool.OrderedPool`); this process only appends the records
to files, in a fixed order, so the output does not depend on the number of workers. Nothing
here imports TensorFlow: TFRecords are written by `kubedetect.io.tfrecord`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from tqdm import tqdm

from kubedetect.config import DataConfig, PreprocessConfig
from kubedetect.data.check import summary_of
from kubedetect.data.pool import OrderedPool
from kubedetect.data.prepare import Prepared, PrepareSettings, image_pool
from kubedetect.data.report import ImageSummary, Problem, Report, describe, summarize
from kubedetect.data.scan import Dataset, Record, scan
from kubedetect.data.splits import SPLITS
from kubedetect.errors import KubedetectError, UnusableInputError
from kubedetect.io import fs
from kubedetect.io.labels import ClassMap
from kubedetect.io.tfrecord import TFRecordWriter

FORMAT = "kubedetect.dataset/v1"
MANIFEST = "dataset.json"
_PART = re.compile(r"^part-(\d{5})-of-(\d{5})\.json$")
# Every file a run writes into OUT_DIR (and the temporary names they are written under): what a
# full run replaces; anything else found there is left alone.
_OURS = re.compile(
    r"^(part-\d{5}-of-\d{5}\.json|\w+-\d{5}-of-\d{5}\.tfrecord|dataset\.json|labels\.json)"
    r"(\.tmp(-\d+)?)?$"
)


def shard_file(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def part_file(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.json"


def shard_of(key: str, num_shards: int) -> int:
    """A stable shard for a record: the same on every machine, whatever else is in the data."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


@dataclass(frozen=True)
class ShardResult:
    index: int
    part: dict


def preprocess(
    data_dir: str,
    out_dir: str,
    config: PreprocessConfig = PreprocessConfig(),
    data: DataConfig = DataConfig(),
) -> dict:
    """Process all shards (and merge them) or only `config.shard_index`.

    Returns the manifest after a full run, the part after a shard run.
    """
    count = config.num_shards
    if count < 1:
        raise KubedetectError(f"--num-shards must be at least 1, got {count}")
    if config.shard_index is not None and not 0 <= config.shard_index < count:
        raise KubedetectError(f"--shard-index must be in [0, {count}), got {config.shard_index}")
    if config.image_size < 1:
        raise KubedetectError(f"--image-size must be at least 1, got {config.image_size}")
    if not 1 <= config.jpeg_quality <= 100:
        raise KubedetectError(f"--jpeg-quality must be in [1, 100], got {config.jpeg_quality}")

    settings = PrepareSettings(
        root=data_dir,
        image_size=config.image_size,
        jpeg_quality=config.jpeg_quality,
        max_image_pixels=data.max_image_pixels,
    )
    # The workers start (and import their modules) while this process scans the annotations.
    workers = config.worker_count()
    pool = image_pool(settings, workers)
    with pool:
        dataset = scan(data_dir, data, progress=config.progress)
        if not dataset.records:
            raise UnusableInputError(
                f"{data_dir}: no annotation has an image to use ({describe(dataset.problems)}); "
                f"`kubedetect data check {data_dir}` writes the full report"
            )
        if not any(r.split == "train" for r in dataset.records):
            counts = {s: sum(r.split == s for r in dataset.records) for s in SPLITS}
            raise UnusableInputError(
                f"{data_dir}: no training images: ImageSets/Main puts all "
                f"{len(dataset.records)} images in "
                + " and ".join(f"{s} ({n})" for s, n in counts.items() if n)
                + "; list some in ImageSets/Main/train.txt, or leave them out of every list"
            )
        if config.shard_index is not None:
            fs.makedirs(out_dir)
            parts = _write_shards(pool, out_dir, [config.shard_index], dataset, config)
            return parts[config.shard_index]
        # A full run writes the new version of OUT_DIR beside it and swaps it in when complete:
        # a run that fails on the way leaves the previous shards and manifest as they were.
        staging = fs.staging_dir(out_dir)
        try:
            parts = _write_shards(pool, staging, range(count), dataset, config)
            # The parts are at hand and their files were checksummed as they were written: the
            # merge of a full run skips what `merge_shards` checks of parts left by other runs.
            manifest = _write_manifest(staging, [parts[index] for index in range(count)])
        except BaseException:
            fs.rmtree(staging)
            raise
    try:
        fs.replace_dir(staging, out_dir, keep=lambda name: not _OURS.match(name), last=MANIFEST)
    except OSError as exc:
        raise KubedetectError(
            f"{out_dir}: could not move the new shards in from {staging}, where they are "
            f"complete ({exc})"
        ) from None
    return manifest


def _write_shards(
    pool: OrderedPool,
    out_dir: str,
    indices: Iterable[int],
    dataset: Dataset,
    config: PreprocessConfig,
) -> dict[int, dict]:
    """Prepare the images of the shards `indices` in the pool and write their files into
    out_dir; returns each shard's part."""
    count = config.num_shards
    indices = list(indices)
    shard = {r.key: shard_of(r.key, count) for r in dataset.records}
    records = sorted(
        (r for r in dataset.records if shard[r.key] in indices),
        key=lambda r: (shard[r.key], r.key),
    )
    splits = [s for s in SPLITS if any(r.split == s for r in dataset.records)]
    bar = tqdm(
        pool.map(records, classes=dataset.classes.names),
        total=len(records),
        desc="preprocess",
        unit="img",
        disable=not config.progress,
    )
    parts = {}
    with bar:
        # Results arrive sorted by shard: each shard's files are written and closed in turn.
        for index, prepared in groupby(bar, key=lambda p: shard[p.record.key]):
            parts[index] = _write_shard(out_dir, index, count, prepared, dataset, splits, config)
    for index in indices:  # a shard that no record hashed to still gets its (empty) files
        if index not in parts:
            parts[index] = _write_shard(out_dir, index, count, (), dataset, splits, config)
    return parts


def _write_shard(
    out_dir: str,
    index: int,
    count: int,
    prepared: Iterable[Prepared],
    dataset: Dataset,
    splits: list[str],
    config: PreprocessConfig,
) -> dict:
    """Write one shard's TFRecord files (one per split) and its part file."""
    paths = {s: fs.join(out_dir, shard_file(s, index, count)) for s in splits}
    writers = {s: TFRecordWriter(paths[s] + ".tmp") for s in splits}
    problems: list[Problem] = list(dataset.problems)
    images: list[ImageSummary] = []
    try:
        for item in prepared:
            problems.extend(item.problems)
            if not item.ok:
                continue
            writers[item.record.split].write_framed(item.record_bytes)
            images.append(summary_of(item))
    finally:
        for writer in writers.values():
            writer.close()
    files = []
    for split in splits:
        fs.rename(paths[split] + ".tmp", paths[split])
        in_split = [s for s in images if s.split == split]
        files.append(
            {
                "path": shard_file(split, index, count),
                "split": split,
                "index": index,
                "records": len(in_split),
                "objects": sum(len(s.class_ids) for s in in_split),
                "sha256": writers[split].sha256,
            }
        )
    part = {
        "format": FORMAT,
        "index": index,
        "num_shards": count,
        "settings": _settings(config, dataset.classes),
        "files": files,
        "images": [s.to_dict() for s in sorted(images, key=lambda s: s.key)],
        "problems": [p.to_dict() for p in sorted(set(problems))],
    }
    # Part files are read by merge_shards, not by people: compact JSON is several times faster.
    fs.write_text(fs.join(out_dir, part_file(index, count)), json.dumps(part) + "\n")
    return part


def merge_shards(out_dir: str) -> dict:
    """Check that every shard of one run is present and unchanged, and write `dataset.json` and
    `labels.json`."""
    parts = [name for name in fs.listdir(out_dir) if _PART.match(name)]
    if not parts:
        raise UnusableInputError(f"{out_dir}: no part-*.json files: run preprocess first")
    loaded = [json.loads(fs.read_text(fs.join(out_dir, name))) for name in parts]
    counts = {p["num_shards"] for p in loaded}
    settings = {json.dumps(p["settings"], sort_keys=True) for p in loaded}
    if len(counts) > 1 or len(settings) > 1:
        raise KubedetectError(
            f"{out_dir}: parts of different runs (shard counts {sorted(counts)}, "
            f"{len(settings)} different settings); clear the folder and run again"
        )
    count = counts.pop()
    have = {p["index"] for p in loaded}
    missing = sorted(set(range(count)) - have)
    if missing:
        raise KubedetectError(
            f"{out_dir}: shards {missing} of {count} are missing; run preprocess with "
            f"--shard-index for each, then merge-shards"
        )
    loaded.sort(key=lambda p: p["index"])
    for part in loaded:
        for entry in part["files"]:
            path = fs.join(out_dir, entry["path"])
            if not fs.exists(path) or fs.sha256_file(path) != entry["sha256"]:
                raise KubedetectError(f"{path}: missing or changed since its part file was written")
    return _write_manifest(out_dir, loaded)


def _write_manifest(out_dir: str, parts: list[dict]) -> dict:
    """`dataset.json` and `labels.json` from the parts of one run, in shard order."""
    settings = parts[0]["settings"]
    classes = tuple(settings["classes"])
    images = [ImageSummary.from_dict(i) for p in parts for i in p["images"]]
    problems = [Problem.from_dict(x) for p in parts for x in p["problems"]]
    report = summarize(classes, images, problems)
    files = [f for p in parts for f in p["files"]]
    manifest = {
        "format": FORMAT,
        "image_size": settings["image_size"],
        "resize": settings["resize"],
        "jpeg_quality": settings["jpeg_quality"],
        "num_shards": parts[0]["num_shards"],
        "classes": list(classes),
        "splits": {
            split: {
                "images": sum(f["records"] for f in files if f["split"] == split),
                "objects": sum(f["objects"] for f in files if f["split"] == split),
                "shards": [f["path"] for f in files if f["split"] == split],
            }
            for split in SPLITS
            if any(f["split"] == split for f in files)
        },
        "shards": files,
        "report": report.to_dict(),
    }
    fs.write_text(fs.join(out_dir, MANIFEST), _dump(manifest))
    ClassMap(classes).save(out_dir)
    return manifest


def load_manifest(shards_dir: str) -> dict:
    path = fs.join(shards_dir, MANIFEST)
    if not fs.exists(path):
        raise UnusableInputError(f"{shards_dir}: no {MANIFEST}: run preprocess (and merge-shards)")
    manifest = json.loads(fs.read_text(path))
    if manifest.get("format") != FORMAT:
        raise KubedetectError(f"{path}: not a {FORMAT} manifest")
    return manifest


def resize_mode(manifest: dict) -> str:
    """How the shards' images were fitted into the square (kubedetect.io.images.RESIZE_MODES):
    'letterbox', or 'stretch' for shards of earlier versions, whose manifest does not say."""
    return manifest.get("resize", "stretch")


def shard_paths(shards_dir: str, split: str) -> list[str]:
    """The TFRecord files of one split, in manifest order."""
    manifest = load_manifest(shards_dir)
    if split not in manifest["splits"]:
        raise KubedetectError(
            f"{shards_dir}: no '{split}' split (have: {', '.join(manifest['splits'])})"
        )
    return [fs.join(shards_dir, name) for name in manifest["splits"][split]["shards"]]


def report_of(manifest: dict) -> Report:
    return Report.from_dict(manifest["report"])


def _settings(config: PreprocessConfig, classes: ClassMap) -> dict:
    return {
        "image_size": config.image_size,
        "resize": "letterbox",  # kubedetect.io.images.Frame; earlier versions stretched
        "jpeg_quality": config.jpeg_quality,
        "classes": list(classes.names),
    }


def _dump(payload: dict) -> str:
    return json.dumps(payload, indent=1, sort_keys=False) + "\n"


__all__ = ["Record", "load_manifest", "merge_shards", "preprocess", "shard_of", "shard_paths"]
