"""model.json across releases: a model folder written by an earlier kubedetect is still a model.

Model folders outlive the code that wrote them: they sit in registries, on workspace volumes and
in the served Deployment's volume, and the quality gate compares every new model with the one in
service. The card's format identifier is that contract; renaming modules must not change it.
"""

from __future__ import annotations

import json

import pytest

from kubedetect.errors import KubedetectError
from kubedetect.io.modelcard import ModelCard

# The int8 variant's model.json as main at 16e5e33 (before the regroup of issue 21) wrote it for a
# model trained on the cards photos; provenance trimmed.
EARLIER_CARD = {
    "format": "kubedetect.model/v1",
    "kind": "tflite",
    "variant": "int8",
    "file": "model.tflite",
    "sha256": "19833979a687f3224710057260293cc2676abf4486e33e45a9ad807359f67aa6",
    "classes": ["ace", "jack", "king", "nine", "queen", "ten"],
    "input_size": 256,
    "stride": 4,
    "input": {"name": "image", "dtype": "int8", "scale": 1.0, "zero_point": -128},
    "outputs": {
        name: {"name": name, "dtype": "int8", "scale": 0.00390625, "zero_point": -128}
        for name in ("heatmap", "offset", "size")
    },
    "preprocessing": {
        "resize": "letterbox",
        "pad_value": 114,
        "resample": "bilinear-antialiased",
        "channels": "RGB",
        "pixel_range": [0, 255],
        "exif_orientation": "applied",
    },
    "decode": {"score_threshold": 0.3, "max_detections": 100},
    "provenance": {"quantization": "int8"},
}


def test_a_card_an_earlier_release_wrote_loads(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(EARLIER_CARD, indent=1))
    card = ModelCard.load(str(tmp_path))
    assert (card.kind, card.variant, card.classes) == (
        "tflite",
        "int8",
        tuple(EARLIER_CARD["classes"]),
    )
    assert card.input.zero_point == -128 and card.resize == "letterbox"


def test_a_card_written_today_is_what_earlier_releases_read(tmp_path):
    """The other direction: a model trained now can still be served by a server of the release
    before (a rollback of the Deployment keeps the model it was given)."""
    (tmp_path / "model.json").write_text(json.dumps(EARLIER_CARD))
    (tmp_path / "again").mkdir()
    ModelCard.load(str(tmp_path)).save(str(tmp_path / "again"))
    written = json.loads((tmp_path / "again" / "model.json").read_text())
    assert written["format"] == "kubedetect.model/v1"


def test_a_card_of_another_format_is_refused_by_name(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(EARLIER_CARD | {"format": "other/v9"}))
    with pytest.raises(
        KubedetectError, match=r"model\.json: not a kubedetect\.model/v1 model card"
    ):
        ModelCard.load(str(tmp_path))
