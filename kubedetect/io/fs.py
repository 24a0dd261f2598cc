"""Paths and URIs: local paths use the OS directly; URIs (gs://, s3://, file://...) go through
`tf.io.gfile`.

Local work never pays for a TensorFlow import: image workers and the serving path read local
files with plain Python. TensorFlow is imported only when a URI asks for it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import posixpath
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
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


def rmtree(path: str) -> None:
    """Remove a folder and everything in it (nothing if it is not there)."""
    if is_uri(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Replacing a folder by a new version of it, which was written beside it ("staging"): a run that
# fails on the way leaves the previous version as it was.
# ----------------------------------------------------------------------------------------------


def staging_dir(target: str) -> str:
    """A new, empty folder in which to write the next version of the folder `target`.

    Beside `target` (same parent: the same filesystem or bucket, so that moving it in is a
    rename), named `.NAME.staging-*`. When `target` is a mount point, its parent is another
    filesystem (the container's own, often small): then inside `target`, hidden.
    """
    target = _clean(target)
    tag = f"staging-{os.getpid()}-{secrets.token_hex(3)}"
    parent, name = _split(target)
    if not is_uri(target) and os.path.ismount(target):
        staging = join(target, f".{tag}")
    else:
        staging = join(parent, f".{name}.{tag}")
    makedirs(staging)
    return staging


def replace_dir(staging: str, target: str, *, keep: Callable[[str], bool], last: str) -> str:
    """Make the folder `staging` the new content of `target`; returns how it was done.

    The entries of the old `target` that `keep(name)` accepts (files not ours) stay; the others
    go. Where the filesystem allows, the swap is atomic: the two folders are exchanged in one
    rename (Linux renameat2 RENAME_EXCHANGE; or a plain rename when `target` does not exist
    yet), so that readers see either the old version or the new one, never a mix. Elsewhere
    (gs:// and other URIs, which have no folders to rename; a `target` that is a mount point;
    a filesystem without the exchange) the files are moved in one by one: the file `last`
    (the one that says the folder is complete and describes the rest) is removed first and
    moved in last, so a reader meanwhile finds no such file rather than a mix.
    """
    target = _clean(target)
    if not is_uri(target) and _split(staging)[0] == _split(target)[0]:
        if not os.path.exists(target):
            os.rename(staging, target)
            return "renamed into place"
        if _exchange(staging, target):
            previous = staging  # the exchange left the old version under the staging name
            for name in os.listdir(previous):
                if keep(name):
                    os.rename(os.path.join(previous, name), os.path.join(target, name))
            shutil.rmtree(previous)
            return "exchanged atomically"
    _move_files(staging, target, keep=keep, last=last)
    return "moved in file by file"


def _move_files(staging: str, target: str, *, keep: Callable[[str], bool], last: str) -> None:
    makedirs(target)
    new = set(listdir(staging))
    if exists(join(target, last)):
        remove(join(target, last))
    for name in sorted(new - {last}):
        rename(join(staging, name), join(target, name))
    for name in listdir(target):
        path = join(target, name)
        if name not in new and not keep(name) and _clean(path) != _clean(staging):
            remove(path)
    if last in new:
        rename(join(staging, last), join(target, last))
    rmtree(staging)


def _clean(path: str) -> str:
    path = str(path)
    return path.rstrip("/") if is_uri(path) else os.path.abspath(path)


def _split(path: str) -> tuple[str, str]:
    path = _clean(path)
    return posixpath.split(path) if is_uri(path) else os.path.split(path)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: str, second: str) -> bool:
    """Swap two local folders in one step; False where the kernel, the C library or the
    filesystem cannot (the caller then moves files instead)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without renameat2 (glibc < 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBUSY, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), second)
