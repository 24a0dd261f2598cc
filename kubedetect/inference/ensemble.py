"""An ensemble: several detectors of one task served as one model, their boxes fused.

An ensemble is a model folder like any other, so that the quantization report, the quality gate,
the registry, deploy, evaluation and serving take it as they take one model:

    model.json      kind "ensemble"; `file` is ensemble.json, and `sha256` that file's, which
                    lists each member's own sha256: one checksum covers every member
    ensemble.json   the members (a folder each, a weight each, from their validation scores) and
                    how their boxes are fused (kubedetect.inference.fusion)
    labels.json
    members/<i>/    each member's own model folder (a Keras export, or a TFLite variant)

All members take the same input (size, preprocessing) and know the same classes, and all are of
one variant: the ensemble's variant is theirs ("float" for Keras exports, "int8", ...). Each
member runs its interpreter and the shared decode (kubedetect.inference.decode); their detections
are then fused by weighted box fusion, in the model's input frame, before the boxes are mapped to
the image's pixels.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.inference.decode import Detections, decode
from kubedetect.inference.fusion import IOU_THRESHOLD, fuse
from kubedetect.inference.runtime import Detector
from kubedetect.io import fs
from kubedetect.io.labels import FILENAME as LABELS_FILE
from kubedetect.io.labels import ClassMap
from kubedetect.io.modelcard import FILENAME, ModelCard, sha256_bytes

KIND = "ensemble"
ENSEMBLE_FILE = "ensemble.json"
MEMBERS = "members"
SKIP_THRESHOLD = 0.02  # members' boxes below this score take no part in fusion (serving's cost)


@dataclass(frozen=True)
class Member:
    """One model of an ensemble, as ensemble.json lists it."""

    path: str  # relative to the ensemble's folder
    sha256: str  # the member's model file, as its own model.json says
    weight: float
    name: str = ""


@dataclass(frozen=True)
class Fusion:
    """How the members' boxes become one set (kubedetect.inference.fusion.fuse)."""

    iou_threshold: float = IOU_THRESHOLD
    skip_threshold: float = SKIP_THRESHOLD


def write_ensemble(
    out_dir: str,
    members: Sequence[tuple[str, float, str]],
    fusion: Fusion = Fusion(),
    provenance: dict | None = None,
) -> ModelCard:
    """Make `out_dir` an ensemble of the model folders `members` ((folder, weight, name) each),
    copying each into members/<i>/; returns its card."""
    if len(members) < 2:
        raise KubedetectError(f"an ensemble needs at least two models, got {len(members)}")
    cards = [ModelCard.load(folder) for folder, _, _ in members]
    first = cards[0]
    for (folder, _, _), card in zip(members, cards, strict=True):
        card.verify(folder)
        if card.kind == KIND:
            raise KubedetectError(f"{folder}: an ensemble cannot hold another ensemble")
        if _input_and_classes(card) != _input_and_classes(first):
            raise KubedetectError(
                f"{folder}: a {card.kind} {card.variant} model of {card.input_size} px for "
                f"{list(card.classes)}, unlike {members[0][0]} ({first.kind} {first.variant}, "
                f"{first.input_size} px, {list(first.classes)}): an ensemble's members must "
                "take the same input and know the same classes"
            )
    os.makedirs(out_dir, exist_ok=True)
    listed = []
    for i, ((folder, weight, name), card) in enumerate(zip(members, cards, strict=True)):
        if not weight > 0:
            raise KubedetectError(f"{folder}: weight {weight}: an ensemble's weights are positive")
        target = os.path.join(out_dir, MEMBERS, str(i))
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        for file in (card.file, FILENAME, LABELS_FILE):
            if os.path.exists(os.path.join(folder, file)):
                shutil.copy2(os.path.join(folder, file), os.path.join(target, file))
        listed.append(Member(f"{MEMBERS}/{i}", card.sha256, float(weight), name))
    spec = {
        "members": [vars(m) for m in listed],
        "fusion": {"method": "weighted box fusion"} | vars(fusion),
    }
    payload = (json.dumps(spec, indent=1) + "\n").encode()
    fs.write_bytes(os.path.join(out_dir, ENSEMBLE_FILE), payload)
    card = ModelCard(
        kind=KIND,
        variant=first.variant,
        file=ENSEMBLE_FILE,
        sha256=sha256_bytes(payload),
        classes=first.classes,
        input_size=first.input_size,
        stride=first.stride,
        input=first.input,
        outputs=first.outputs,
        preprocessing=first.preprocessing,
        decode=first.decode,
        provenance={
            "members": len(listed),
            "trained_on": first.provenance.get("trained_on", {}),
            "metrics": {},
        }
        | (provenance or {}),
    )
    card.save(out_dir)
    ClassMap(first.classes).save(out_dir)
    return card


def _input_and_classes(card: ModelCard) -> tuple:
    """What must be the same in every member of an ensemble."""
    return card.kind, card.variant, card.classes, card.input_size, card.preprocessing


def read_spec(folder: str, card: ModelCard | None = None) -> tuple[list[Member], Fusion]:
    """The members and fusion settings of an ensemble folder, its ensemble.json checked
    against its card first."""
    card = card or ModelCard.load(folder)
    if card.kind != KIND:
        raise KubedetectError(f"{folder}: holds a {card.kind} model, not an ensemble")
    path = card.verify(folder)
    try:
        spec = json.loads(fs.read_text(path))
        members = [Member(**m) for m in spec["members"]]
        fusion = Fusion(
            **{k: v for k, v in spec["fusion"].items() if k in Fusion.__dataclass_fields__}
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise KubedetectError(f"{path}: malformed ({exc})") from None
    if len(members) < 2:
        raise KubedetectError(
            f"{path}: lists {len(members)} member(s); an ensemble has two or more"
        )
    return members, fusion


def verify(folder: str, kinds: tuple[str, ...] = ("tflite", "keras")) -> ModelCard:
    """The card of a model folder, once its file (and, for an ensemble, every member's card and
    file) matches the checksums; members must be of `kinds`."""
    card = ModelCard.load(folder)
    if card.kind != KIND:
        card.verify(folder)
        return card
    members, _ = read_spec(folder, card)
    for member in members:
        where = os.path.join(folder, member.path)
        member_card = ModelCard.load(where)
        if member_card.kind not in kinds:
            raise KubedetectError(f"{where}: a {member_card.kind} member; expected {kinds}")
        if member_card.sha256 != member.sha256:
            raise KubedetectError(
                f"{where}: its model.json says sha256 {member_card.sha256[:12]}..., "
                f"{ENSEMBLE_FILE} {member.sha256[:12]}...: the member was changed or replaced"
            )
        member_card.verify(where)
    return card


def model_bytes(folder: str) -> int:
    """The size of what a model folder runs: its model file, or all its members' files."""
    card = ModelCard.load(folder)
    if card.kind != KIND:
        return len(fs.read_bytes(fs.join(folder, card.file)))
    members, _ = read_spec(folder, card)
    return sum(model_bytes(os.path.join(folder, m.path)) for m in members)


class Ensemble(Detector):
    """The members of an ensemble folder, run in turn on the same images, their detections
    fused. `raw_outputs` gives every member's float maps under '<i>/<name>' keys (what serving
    hands from its interpreter thread to the request threads); `decode_image` decodes each
    member's and fuses them."""

    def __init__(self, folder: str, *, num_threads: int = 1, verify: bool = True):
        from kubedetect.inference.detectors import load_detector  # noqa: PLC0415 - it loads ensembles too

        self.model_dir = folder
        self.card = ModelCard.load(folder)
        specs, self.fusion = read_spec(folder, self.card)
        self.members = []
        for spec in specs:
            where = os.path.join(folder, spec.path)
            member = load_detector(where, num_threads=num_threads, verify=verify)
            if member.card.sha256 != spec.sha256 or member.card.kind == KIND:
                raise KubedetectError(f"{where}: not the member {ENSEMBLE_FILE} lists")
            self.members.append(member)
        self.weights = np.array([spec.weight for spec in specs], dtype=np.float64)
        self.names = [spec.name for spec in specs]
        self.input_size = self.card.input_size
        self.classes = self.card.classes

    def raw_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return {
            f"{i}/{name}": maps
            for i, member in enumerate(self.members)
            for name, maps in member.raw_outputs(pixels).items()
        }

    def decode_image(
        self, outputs: dict[str, np.ndarray], *, score_threshold: float, max_detections: int
    ) -> Detections:
        """One image's maps of every member (as raw_outputs keys them, less the batch axis) to
        fused detections. Members decode down to the fusion's floor (lower when a lower
        threshold is asked, as evaluation does), so that a box that only some members score
        above the threshold is fused with the others' lower scores, not left out."""
        floor = min(score_threshold, self.fusion.skip_threshold)
        found = [
            decode(
                outputs[f"{i}/heatmap"],
                outputs[f"{i}/size"],
                outputs[f"{i}/offset"],
                score_threshold=floor,
                max_detections=max_detections,
            )
            for i in range(len(self.members))
        ]
        fused = fuse(found, self.weights, iou_threshold=self.fusion.iou_threshold)
        return fused.filter(score_threshold, max_detections)

    # What the quantization report times: every member's interpreter, on its own input.
    def quantize_input(self, pixels: np.ndarray) -> list[np.ndarray]:
        return [member.quantize_input(pixels) for member in self.members]

    def invoke(self, tensors: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [member.invoke(t) for member, t in zip(self.members, tensors, strict=True)]


def open_tflite(folder: str, *, num_threads: int = 1, verify_files: bool = True):
    """What serving runs: a TFLite variant folder, or an ensemble of TFLite variants (never a
    Keras model: the server has no TensorFlow)."""
    from kubedetect.inference.runtime import TFLiteDetector  # noqa: PLC0415

    card = ModelCard.load(folder)
    if card.kind != KIND:
        return TFLiteDetector(folder, num_threads=num_threads, verify=verify_files)
    if verify_files:
        verify(folder, kinds=("tflite",))
    return Ensemble(folder, num_threads=num_threads, verify=verify_files)
