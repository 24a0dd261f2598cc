"""The training export: a self-describing model folder.

    MODEL_DIR/model.keras    the detector (Keras 3 format, float32, inference-ready)
    MODEL_DIR/model.json     its card: classes, input size, preprocessing, tensors, sha256 of the
                             file, and provenance (training and model settings, final metrics,
                             a digest of the weights, the data it was trained on)
    MODEL_DIR/labels.json    the class map
    MODEL_DIR/history.csv    one row per epoch: losses, images/s, validation mAP

Only the chief writes MODEL_DIR. The other workers run the same export into a temporary folder
and remove it: saving is the same code on every worker, and nothing else is written twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile

import numpy as np

from kubedetect.io import fs
from kubedetect.io.labels import ClassMap
from kubedetect.io.modelcard import OUTPUTS, ModelCard, TensorSpec, preprocessing_for
from kubedetect.network.architecture import STRIDE

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"


def weights_digest(weights: list[np.ndarray]) -> str:
    """sha256 over every weight array's dtype, shape and bytes: equal weights, equal digest."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def history_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()


def write_export(
    folder: str,
    model,
    classes: ClassMap,
    history: list[dict],
    provenance: dict,
    resize: str = "letterbox",
) -> ModelCard:
    """Write the model, its card, labels and history into `folder` (local path or URI)."""
    fs.makedirs(folder)
    # Keras saves to local files only: save next to the destination (or in a temp dir for
    # URIs) and move the bytes into place, so a reader never sees half a model.
    with tempfile.TemporaryDirectory(prefix="kubedetect-export-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as f:
            data = f.read()
    fs.write_bytes(fs.join(folder, MODEL_FILE), data)
    size = int(model.inputs[0].shape[1])
    card = ModelCard(
        kind="keras",
        variant="float",
        file=MODEL_FILE,
        sha256=hashlib.sha256(data).hexdigest(),
        classes=classes.names,
        input_size=size,
        stride=STRIDE,
        input=TensorSpec("image", "float32"),
        outputs={name: TensorSpec(name, "float32") for name in OUTPUTS},
        preprocessing=preprocessing_for(resize),
        provenance=provenance,
    )
    fs.write_text(fs.join(folder, HISTORY_FILE), history_csv(history))
    classes.save(folder)
    card.save(folder)  # last: a folder with a card is a complete folder
    return card


def export(
    model_dir: str,
    is_chief: bool,
    model,
    classes: ClassMap,
    history: list[dict],
    provenance: dict,
    log=print,
    resize: str = "letterbox",
) -> ModelCard:
    """The chief writes model_dir; another worker writes a temporary folder and removes it."""
    if is_chief:
        card = write_export(model_dir, model, classes, history, provenance, resize)
        log(f"exported to {model_dir} (model.keras sha256 {card.sha256[:12]}...)")
        return card
    scratch = tempfile.mkdtemp(prefix="kubedetect-worker-export-")
    try:
        card = write_export(scratch, model, classes, history, provenance, resize)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"not the chief: export written to {scratch} and removed")
    return card
