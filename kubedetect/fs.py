"""Paths and URIs: local paths use the OS directly; URIs (gs://, s3://, file://...) go through
`tf.io.gfile`.

Local work never pays for a TensorFlow import: image workers and the serving path read local
files with plain Python. TensorFlow is imported only when a URI asks for it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterator
from typing import BinaryIO

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return bool(_SCHEME.match(str(path)))


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - only for URIs

    return tf.io.gfile


def join(base: str, *parts: str) -> str:
    base = str(base)
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def relpath(path: str, start: str) -> str:
    """`path` relative to `start`, with forward slashes (stable across machines)."""
    if is_uri(path):
        return posixpath.relpath(path.split("://", 1)[1], str(start).split("://", 1)[1])
    return os.path.relpath(path, start).replace(os.sep, "/")


def read_bytes(path: str) -> bytes:
    if is_uri(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write atomically: readers never see a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open_write(tmp) as f:
        f.write(data)
    rename(tmp, path)


def open_write(path: str) -> BinaryIO:
    """A file opened for writing bytes (a new file, or one emptied)."""
    return _gfile().GFile(path, "wb") if is_uri(path) else open(path, "wb")  # noqa: SIM115


def rename(source: str, target: str) -> None:
    """Move `source` onto `target`, replacing it: atomic for local files."""
    if is_uri(source):
        _gfile().rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_uri(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_uri(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
    if is_uri(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    if is_uri(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def listdir(path: str) -> list[str]:
    return sorted(_gfile().listdir(path) if is_uri(path) else os.listdir(path))


def walk_files(root: str) -> Iterator[str]:
    """Every file below `root`, in a stable (sorted) order; hidden folders are skipped."""
    if is_uri(root):
        for folder, subdirs, files in _gfile().walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.rstrip("/").startswith("."))
            for name in sorted(files):
                yield posixpath.join(folder, name)
        return
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            yield os.path.join(folder, name)


def walk_relative(root: str) -> Iterator[str]:
    """`walk_files`, as paths relative to `root` with forward slashes (as `relpath` gives)."""
    root = str(root)
    walker = _gfile().walk(root) if is_uri(root) else os.walk(root)
    base = root.rstrip("/") if is_uri(root) else os.path.normpath(root)
    for folder, subdirs, files in walker:
        subdirs[:] = sorted(d for d in subdirs if not d.rstrip("/").startswith("."))
        rel = relpath(folder, base) if folder.rstrip("/") != base else "."
        prefix = "" if rel == "." else rel.rstrip("/") + "/"
        for name in sorted(files):
            yield prefix + name


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    if is_uri(path):
        digest.update(read_bytes(path))
        return digest.hexdigest()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
