"""Train/val/test splits: the dataset's own ImageSets lists where present, else a stable hash.

A hash of the file stem (not a random draw) puts an image in the same split on every run and
every machine, and keeps it there when other images are added: evaluation numbers stay comparable
as a dataset grows.
"""

from __future__ import annotations

import hashlib

from kubedetect import fs
from kubedetect.data.report import Problem
from kubedetect.errors import KubedetectError

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


def _stems(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip()]
