"""Train/val/test splits: the dataset's own ImageSets lists where present, else a stable hash.

A hash of the file stem (not a random draw) puts an image in the same split on every run and
every machine, and keeps it there when other images are added: evaluation numbers stay comparable
as a dataset grows.

Training needs a val split (it picks the weights to export by validation mAP) and a train split.
An empty val (an empty val.txt, or a set so small that no stem hashes below --val-fraction) is
filled before training from train (`carve_validation`, reported as a problem of kind
`empty_split`); an empty train stops preprocessing with a clear error.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import replace

from kubedetect.data.record import Record
from kubedetect.data.report import Problem
from kubedetect.errors import KubedetectError
from kubedetect.io import fs

SPLITS = ("train", "val", "test")
_PRECEDENCE = ("test", "val", "train")  # a stem listed twice goes to the first of these


def stem_fraction(stem: str) -> float:
    """A number in [0, 1) fixed by the stem alone."""
    digest = hashlib.sha256(stem.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SplitPlan:
    """Assigns a split to each image stem."""

    def __init__(self, root: str, val_fraction: float):
        if not 0.0 <= val_fraction < 1.0:
            raise KubedetectError(f"--val-fraction must be in [0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.listed: dict[str, str] = {}
        self.problems: list[Problem] = []
        self.lists_found: tuple[str, ...] = ()
        self._read_imagesets(fs.join(root, "ImageSets", "Main"))

    def _read_imagesets(self, folder: str) -> None:
        lists: dict[str, list[str]] = {}
        for split in SPLITS:
            path = fs.join(folder, f"{split}.txt")
            if fs.exists(path):
                lists[split] = _stems(fs.read_text(path))
        if not lists and fs.exists(fs.join(folder, "trainval.txt")):
            lists["train"] = _stems(fs.read_text(fs.join(folder, "trainval.txt")))
        self.lists_found = tuple(lists)
        for split in _PRECEDENCE:
            for stem in lists.get(split, ()):
                if stem in self.listed and self.listed[stem] != split:
                    self.problems.append(
                        Problem(
                            f"ImageSets/Main/{split}.txt",
                            "split_conflict",
                            f"'{stem}' is also in {self.listed[stem]}.txt: "
                            f"kept in {self.listed[stem]}",
                        )
                    )
                    continue
                self.listed[stem] = split

    def split_of(self, stem: str) -> str:
        """The listed split; images in no list (or in train, when there is no val list) are
        divided between train and val by the stem hash."""
        split = self.listed.get(stem)
        if split in ("test", "val"):
            return split
        if split == "train" and "val" in self.lists_found:
            return split
        return "val" if stem_fraction(stem) < self.val_fraction else "train"


def stem_of(key: str) -> str:
    """The stem an annotation's split is decided by (its file name without the extension)."""
    return posixpath.splitext(posixpath.basename(key))[0]


def carve_validation(
    records: list[Record], val_fraction: float, lists_found: tuple[str, ...] = ()
) -> tuple[list[Record], list[Problem]]:
    """`records` with a val split: where none came out, the train images with the lowest stem
    hashes (val_fraction of them, at least one) move to val, and a problem says so. Nothing
    changes with --val-fraction 0 (no val asked for) or fewer than two train images."""
    train = [r for r in records if r.split == "train"]
    if val_fraction <= 0 or len(train) < 2 or any(r.split == "val" for r in records):
        return records, []
    count = max(1, round(val_fraction * len(train)))
    by_hash = sorted(train, key=lambda r: (stem_fraction(stem_of(r.key)), r.key))
    moved = {r.key for r in by_hash[:count]}
    where = (
        "ImageSets/Main/val.txt lists none of them"
        if "val" in lists_found
        else f"no stem hashed below --val-fraction {val_fraction:g}"
    )
    problem = Problem(
        "ImageSets/Main" if lists_found else ".",
        "empty_split",
        f"no image fell in val ({where}): {count} of the {len(train)} train images moved to val",
    )
    return [replace(r, split="val") if r.key in moved else r for r in records], [problem]


def _stems(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip()]
