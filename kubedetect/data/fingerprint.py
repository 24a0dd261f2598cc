"""A fingerprint of a data folder: changes whenever an image, a label or a split list changes.

Kubeflow Pipelines reuses a step's earlier output when the step's inputs are the same, and a
folder's path says nothing about what is in it. The pipeline's plan step takes this fingerprint
on every run and hands it to the data steps as an input, so that their cache key changes with the
data, and only with it.

What is hashed, for every file under the folder (hidden folders skipped, as the scan skips
them): its path relative to the folder, and
- the content of annotations and lists (.xml, .txt: VOC XML and ImageSets/Main split lists).
  They are small, and a label fix can keep both the size and, on file systems with a coarse
  clock or through tools that keep modification times, the mtime: "nine" and "jack" are both four
  letters long;
- the size and modification time of every other file (the images). Reading every image again on
  every run would cost as much as preprocessing them; a replaced or edited image gets a new
  mtime from every ordinary tool, and almost always a new size.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass

from kubedetect.io import fs

CONTENT_HASHED = frozenset({".xml", ".txt"})  # annotations and split lists: hashed whole


@dataclass(frozen=True)
class Fingerprint:
    """The folder's digest and what it covered."""

    digest: str  # "sha256:<hex>"
    files: int
    bytes: int


def _stat(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a local file or a tf.io.gfile URI."""
    if fs.is_uri(path):
        import tensorflow as tf  # noqa: PLC0415 - only for URIs

        info = tf.io.gfile.stat(path)
        return int(info.length), int(info.mtime_nsec)
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def fingerprint(root: str) -> Fingerprint:
    """The fingerprint of every file under `root` (see the module's docstring)."""
    digest = hashlib.sha256()
    files = total = 0
    for rel in fs.walk_relative(root):
        path = fs.join(root, rel)
        size, mtime = _stat(path)
        digest.update(rel.encode() + b"\0" + str(size).encode() + b"\0")
        if posixpath.splitext(rel)[1].lower() in CONTENT_HASHED:
            digest.update(fs.sha256_file(path).encode())
        else:
            digest.update(str(mtime).encode())
        digest.update(b"\n")
        files += 1
        total += size
    return Fingerprint(f"sha256:{digest.hexdigest()}", files, total)
