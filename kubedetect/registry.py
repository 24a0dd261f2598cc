"""A local model registry: where `deploy` puts a model and `kubedetect serve` finds it.

Each installed model lives in `ROOT/<sha256 prefix>/` (a copy of its variant folder), and
`ROOT/current` is a symlink to the one being served. The switch is a rename over the old link,
so a reader sees the old model or the new one, never a half-copied folder.
"""

from __future__ import annotations

import os
import shutil

from kubedetect.errors import KubedetectError
from kubedetect.modelcard import ModelCard

CURRENT = "current"


def install(model_dir: str, root: str) -> str:
    """Copy a verified model folder into the registry and make it current; returns its path."""
    card = ModelCard.load(model_dir)
    card.verify(model_dir)
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, card.sha256[:16])
    if not os.path.isdir(target):
        staging = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging)
        os.replace(staging, target)
    link = os.path.join(root, CURRENT)
    tmp_link = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.basename(target), tmp_link)
    os.replace(tmp_link, link)
    return target


def current(root: str) -> str:
    """The folder of the model being served."""
    link = os.path.join(root, CURRENT)
    if not os.path.isdir(link):
        raise KubedetectError(f"{root}: no model installed (no '{CURRENT}' link)")
    return os.path.realpath(link)
