"""Training in one process (`python -m kubedetect.training.train`, run by the session's
`trained_model` fixture): the export folder a user, the quantizer and the server rely on."""

from __future__ import annotations

import csv
import json

from kubedetect.io.labels import ClassMap
from kubedetect.io.modelcard import ModelCard

EXPORT = {"model.keras", "model.json", "labels.json", "history.csv"}


def test_the_export_is_a_complete_self_describing_folder(trained_model, trained_shards):
    assert {p.name for p in trained_model.iterdir()} == EXPORT  # checkpoints removed at the end
    card = ModelCard.load(str(trained_model))
    card.verify(str(trained_model))
    manifest = json.loads((trained_shards / "dataset.json").read_text())
    assert card.kind == "keras" and card.variant == "float" and card.file == "model.keras"
    assert card.classes == tuple(manifest["classes"]) == ClassMap.load(str(trained_model)).names
    assert card.input_size == manifest["image_size"] and card.stride == 4
    assert card.preprocessing["pixel_range"] == [0, 255]
    p = card.provenance
    epochs, batch = p["training"]["epochs"], p["training"]["batch_size"]
    assert p["model"]["width"] == 8 and p["trained_on"]["shards"] == str(trained_shards)
    assert p["workers"] == 1 and p["steps"] == epochs * (
        manifest["splits"]["train"]["images"] // batch
    )
    assert {"map50", "map50_95", "per_class", "precision", "recall"} <= set(p["metrics"])


def test_the_card_names_the_weights_the_file_holds(trained_model):
    """model.json's weights digest is that of the weights in model.keras."""
    import keras

    from kubedetect.network.export import weights_digest

    model = keras.saving.load_model(str(trained_model / "model.keras"), compile=False)
    card = ModelCard.load(str(trained_model))
    assert weights_digest(model.get_weights()) == card.provenance["weights_sha256"]


def test_history_has_a_row_per_epoch_with_losses_speed_and_the_final_map(trained_model):
    epochs = ModelCard.load(str(trained_model)).provenance["training"]["epochs"]
    with open(trained_model / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for column in ("loss", "heatmap_loss", "size_loss", "offset_loss", "learning_rate",
                   "images_per_second", "train_seconds", "wall_seconds"):  # fmt: skip
        assert all(float(r[column]) >= 0 for r in rows), column
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])  # it learnt
    # --evaluations 1: validation mAP after the last epoch only, on the chief.
    assert all(r["val_map50"] == "" for r in rows[:-1]) and float(rows[-1]["val_map50"]) > 0.3


def test_missing_shards_are_a_clear_error(tmp_path, capsys):
    from cli.main import main

    code = main(["train", str(tmp_path / "nowhere"), str(tmp_path / "model"), "--epochs", "1"])
    assert code != 0
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_a_batch_larger_than_the_data_is_a_clear_error(synth_shards, tmp_path, capsys):
    from cli.main import main

    code = main(["train", str(synth_shards), str(tmp_path / "m"), "--batch-size", "1000"])
    assert code == 1
    assert "fewer than one batch of 1000" in capsys.readouterr().err
