"""A model registry: where `deploy` puts a model, `kubedetect serve` finds it, and the quality
gate finds the model in service to compare a new one with.

Each installed model lives in `ROOT/<sha256 prefix>/` (a copy of its variant folder, or of an
ensemble with its members), and `ROOT/current` is a symlink to the one being served. The switch
is a rename over the old link, so a reader sees the old model or the new one, never a
half-copied folder. Locally ROOT is the serving folder; on a cluster it is the workspace
volume's `models/` folder, where deploy moves `current` only once the serving Deployment runs
the new model, so that `current` always names the model in service.
"""

from __future__ import annotations

import os
import shutil

from kubedetect.errors import KubedetectError
from kubedetect.inference.ensemble import verify
from kubedetect.io.modelcard import FILENAME

CURRENT = "current"
# The model the serving Deployment of k8s/base serves before any run deployed one
# (KUBEDETECT_MODEL_DIR=/models/serving, the volume's models/serving).
INITIAL = "serving"


def install(model_dir: str, root: str, *, make_current: bool = True) -> str:
    """Copy a verified model folder into the registry (and make it current); returns its path."""
    card = verify(model_dir)
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, card.sha256[:16])
    if not os.path.isdir(target):
        staging = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging)
        os.replace(staging, target)
    if make_current:
        set_current(root, target)
    return target


def set_current(root: str, installed: str) -> None:
    """Make `installed` (a folder of the registry) the one being served."""
    link = os.path.join(root, CURRENT)
    tmp_link = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.basename(installed), tmp_link)
    os.replace(tmp_link, link)


def current(root: str) -> str:
    """The folder of the model being served."""
    link = os.path.join(root, CURRENT)
    if not os.path.isdir(link):
        raise KubedetectError(f"{root}: no model installed (no '{CURRENT}' link)")
    return os.path.realpath(link)


def in_service(root: str) -> str | None:
    """The folder of the model in service, if any: `current`, else the initial model the
    serving manifests point at (ROOT/serving), else None."""
    if os.path.isdir(os.path.join(root, CURRENT)):
        return current(root)
    initial = os.path.join(root, INITIAL)
    return initial if os.path.isfile(os.path.join(initial, FILENAME)) else None
