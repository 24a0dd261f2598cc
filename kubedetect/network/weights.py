"""Initial weights from a file (`--weights PATH`): pretrained backbones without internet.

PATH is local or any tf.io.gfile URI (gs://...), read once when the model is built, and is one of

- a kubedetect model from an earlier run: its export folder (MODEL_DIR, with model.json; the
  model file's sha256 is checked) or its `model.keras`. The likely use: a team's own earlier
  model, trained on their photos, is a better start than random weights for the next one, with
  more photos or other classes;
- a Keras HDF5 weights file (`.h5`) that names its layers, as Keras Applications publish their
  ImageNet weights: for `--backbone mobilenetv2`, the file `--weights imagenet` downloads
  (mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5), copied to where the
  cluster can read it.

Layers are matched by name, never by position: kubedetect names every layer of its models (and
Keras Applications name theirs), so the match does not depend on the order of layers or on what
else a process built. Every layer of this model's backbone must be in the file with the same
shapes, or the run stops before training, naming the file and the layer. The neck and heads are
taken where the file has them (an ImageNet file has none: they start fresh), and the class head
only where the number of classes agrees. Keras 3 `.weights.h5` files are not taken: they record
layers by position and class ("conv2d_7"), so they fit only the very same architecture.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.io import fs

_told: set[str] = set()  # messages already printed (the training script builds the model 3 times)


def load_weights(model, path: str, *, backbone, class_head: str, log=print) -> None:
    """Set `model`'s weights from the file at `path`, layer by layer, by name."""
    stored = read_layers(path)
    required = {name for name, _ in named_layers(backbone)}
    taken, fresh = [], []
    for name, layer in named_layers(model):
        source = stored.get(name)
        if source is None:
            if name in required:
                raise KubedetectError(
                    f"--weights {path}: has no layer {name!r} of this model's backbone (a model "
                    "of another --backbone?); it has "
                    f"{_sample(stored)}"
                )
            fresh.append(name)
            continue
        problem = _mismatch(layer, source)
        if problem and name == class_head:
            classes = source["kernel"].shape[-1] if "kernel" in source else "other"
            fresh.append(f"{name} ({classes} classes in the file, {layer.kernel.shape[-1]} here)")
            continue
        if problem:
            raise KubedetectError(
                f"--weights {path}: layer {name!r} does not fit this model: {problem} (a model "
                "of another --backbone, --model-size or --width?)"
            )
        for variable in layer.weights:
            variable.assign(source[_short(variable.name)])
        taken.append(name)
    if not taken:
        raise KubedetectError(f"--weights {path}: none of its layers is in this model")
    message = (
        f"weights from {path}: {len(taken)} layers ({len(required)} of the backbone and "
        f"{len(taken) - len(required)} others); starting fresh: {', '.join(fresh) or 'none'}"
    )
    if message not in _told:
        _told.add(message)
        log(message)


def named_layers(model):
    """(name, layer) of every layer that holds weights, nested models flattened."""
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (a backbone from Keras Applications)
            yield from named_layers(layer)
        elif layer.weights:
            yield layer.name, layer


@functools.cache
def read_layers(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {variable name: array}} of a weights file (cached: read once a process)."""
    if _is_model_folder(path):
        from kubedetect.io.modelcard import ModelCard  # noqa: PLC0415

        card = ModelCard.load(path)
        if card.kind != "keras":
            raise KubedetectError(
                f"--weights {path}: a {card.kind} model; give a training export (kind keras)"
            )
        return _read_keras(card.verify(path))
    if path.endswith(".keras"):
        return _read_keras(path)
    if path.endswith((".h5", ".hdf5")):
        return _read_hdf5(path)
    raise KubedetectError(
        f"--weights {path}: expected a kubedetect export folder, a .keras model or a Keras .h5 "
        "weights file"
    )


def _is_model_folder(path: str) -> bool:
    try:
        return fs.isdir(path) and fs.exists(fs.join(path, "model.json"))
    except Exception:  # noqa: BLE001 - an unreadable path is reported when it is read
        return False


def _read_bytes(path: str) -> bytes:
    try:
        return fs.read_bytes(path)
    except Exception as exc:  # noqa: BLE001 - OSError locally, tf.errors.OpError through URIs
        raise KubedetectError(f"--weights {path}: cannot read it ({exc})") from None


def _read_keras(path: str) -> dict[str, dict[str, np.ndarray]]:
    import keras  # noqa: PLC0415

    data = _read_bytes(path)
    with tempfile.TemporaryDirectory(prefix="kubedetect-weights-") as tmp:
        local = os.path.join(tmp, "model.keras")  # Keras reads .keras files from local disk
        with open(local, "wb") as f:
            f.write(data)
        try:
            model = keras.saving.load_model(local, compile=False)  # safe mode: no code in it
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise KubedetectError(f"--weights {path}: not a readable Keras model ({exc})") from None
    return {
        name: {_short(v.name): np.asarray(v.numpy()) for v in layer.weights}
        for name, layer in named_layers(model)
    }


def _read_hdf5(path: str) -> dict[str, dict[str, np.ndarray]]:
    import h5py  # noqa: PLC0415 - comes with Keras

    try:
        store = h5py.File(io.BytesIO(_read_bytes(path)), "r")
    except OSError as exc:
        raise KubedetectError(f"--weights {path}: not an HDF5 file ({exc})") from None
    with store:
        group = store.get("model_weights", store)  # a whole model's file, or weights only
        if "layer_names" not in group.attrs:
            raise KubedetectError(
                f"--weights {path}: its layers have no names (a Keras 3 .weights.h5 records "
                "them by position); give the model's export folder or its model.keras"
            )
        layers = {}
        for name in map(_text, group.attrs["layer_names"]):
            weights = group[name]
            names = [_text(n) for n in weights.attrs.get("weight_names", [])]
            if names:
                layers[name] = {_short(n): np.asarray(weights[n]) for n in names}
        return layers


def _mismatch(layer, source: dict[str, np.ndarray]) -> str | None:
    """What differs between a layer's variables and the file's, or None."""
    ours = {_short(v.name): tuple(v.shape) for v in layer.weights}
    theirs = {name: tuple(array.shape) for name, array in source.items()}
    if set(ours) != set(theirs):
        return f"variables {sorted(theirs)} in the file, {sorted(ours)} here"
    differ = [f"{n} {theirs[n]} in the file, {ours[n]} here" for n in ours if ours[n] != theirs[n]]
    return "; ".join(differ) or None


def _short(name: str) -> str:
    """'kernel' of 'Conv1/kernel:0' (Keras 2 files) and of 'kernel' (Keras 3 variables)."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _sample(stored: dict) -> str:
    names = sorted(stored)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
