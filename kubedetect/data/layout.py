"""Finding annotations and their images in the layouts users actually have.

The standard VOC tree (Annotations/, JPEGImages/), flat labelImg exports (image and XML side by
side, in any subfolders) and split trees (images/ beside annotations/ or annots/) are all handled
the same way: every XML under the data folder is an annotation, and its image is looked up by the
<filename> it declares, anywhere under the folder, ignoring case. Where several files match, the
one nearest to the XML in the folder tree wins; a tie is reported as ambiguous, never guessed.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass

from kubedetect.io import fs

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Files:
    """Files under a data folder, as paths relative to it (forward slashes)."""

    root: str
    annotations: tuple[str, ...]
    images: tuple[str, ...]
    others: tuple[str, ...]


def discover(root: str) -> Files:
    annotations, images, others = [], [], []
    for rel in fs.walk_relative(root):
        ext = posixpath.splitext(rel)[1].lower()
        if ext == ".xml":
            annotations.append(rel)
        elif ext in IMAGE_EXTENSIONS:
            images.append(rel)
        else:
            others.append(rel)
    return Files(root, tuple(annotations), tuple(images), tuple(others))


@dataclass(frozen=True)
class Match:
    image: str | None  # relative path, when exactly one file matched
    candidates: tuple[str, ...]  # every equally near match (more than one: ambiguous)


class ImageIndex:
    """Looks up an annotation's image by name, then by stem, ignoring case."""

    def __init__(self, files: Files):
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._by_stem: dict[str, list[str]] = defaultdict(list)
        for rel in files.images + files.others:
            name = posixpath.basename(rel).lower()
            self._by_name[name].append(rel)
        for rel in files.images:
            stem = posixpath.splitext(posixpath.basename(rel))[0].lower()
            self._by_stem[stem].append(rel)

    def find(self, filename: str, annotation: str) -> Match:
        """The image for `filename` as declared in `annotation` (a relative path).

        Tried in order: the declared name, its stem with any image extension (a .jpg declared,
        a .JPG or .png on disk), then the annotation file's own stem (files renamed after
        labelling).
        """
        declared = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
        keys = [
            (self._by_name, declared.lower()),
            (self._by_stem, posixpath.splitext(declared)[0].lower()),
            (self._by_stem, posixpath.splitext(posixpath.basename(annotation))[0].lower()),
        ]
        for table, key in keys:
            candidates = table.get(key)
            if candidates:
                nearest = _nearest(candidates, annotation)
                return Match(nearest[0] if len(nearest) == 1 else None, tuple(nearest))
        return Match(None, ())


def _nearest(candidates: list[str], annotation: str) -> list[str]:
    """The candidates whose folder shares the longest path prefix with the annotation's."""
    if len(candidates) == 1:  # the usual case, and nothing to compare
        return list(candidates)
    anchor = posixpath.dirname(annotation).split("/")

    def shared(path: str) -> int:
        parts = posixpath.dirname(path).split("/")
        count = 0
        for a, b in zip(anchor, parts, strict=False):
            if a != b:
                break
            count += 1
        return count

    best = max(shared(c) for c in candidates)
    return sorted(c for c in candidates if shared(c) == best)
