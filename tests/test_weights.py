"""`--weights PATH`: a detector that starts from the weights of a file, local or behind a URI,
matched by layer name; end to end, a model fine-tuned from an earlier run is trained, quantized
to int8 and served. Every weights file here is written by the test itself (no downloads)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from kubedetect.config import ModelConfig  # noqa: E402
from kubedetect.errors import KubedetectError  # noqa: E402
from kubedetect.network.architecture import HEATMAP_PRIOR, build_detector  # noqa: E402
from kubedetect.network.weights import named_layers  # noqa: E402


def weights_by_name(model) -> dict[str, list[np.ndarray]]:
    return {
        name: [np.asarray(w) for w in layer.get_weights()] for name, layer in named_layers(model)
    }


def assert_same(ours: list[np.ndarray], theirs: list[np.ndarray], name: str) -> None:
    assert len(ours) == len(theirs), name
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def scrambled(model):
    """Weights no fresh model could have: every variable drawn anew, moving statistics too."""
    rng = np.random.default_rng(5)
    model.set_weights(
        [rng.normal(0.5, 0.2, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


@pytest.fixture(scope="module")
def earlier_uri():
    """An earlier model (3 classes, width 4) saved behind a tf.io.gfile URI, as on a bucket."""
    model = scrambled(build_detector(3, 64, ModelConfig(width=4)))
    uri = "ram://weights/earlier.keras"
    with tf.io.gfile.GFile(uri, "wb") as f, open(_local_keras(model), "rb") as local:
        f.write(local.read())
    return uri, weights_by_name(model)


def _local_keras(model) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix="weights-test-") + "/model.keras"
    model.save(path)
    return path


def test_a_model_starts_from_the_files_weights_layer_by_layer(earlier_uri):
    """Every layer takes the file's weights, whatever else the process built before (layer
    names are the model's own, not Keras' counters)."""
    uri, expected = earlier_uri
    build_detector(2, 64, ModelConfig(width=4))  # shifts any automatic layer names
    model = build_detector(3, 96, ModelConfig(width=4, weights=uri))  # any input size
    got = weights_by_name(model)
    assert set(got) == set(expected)
    for name in expected:
        assert_same(got[name], expected[name], name)


def test_other_classes_take_everything_but_the_class_head(earlier_uri, capsys):
    uri, expected = earlier_uri
    model = build_detector(5, 64, ModelConfig(width=4, weights=uri))
    got = weights_by_name(model)
    for name in set(expected) - {"heatmap"}:
        assert_same(got[name], expected[name], name)
    kernel, bias = got["heatmap"]
    assert kernel.shape[-1] == 5
    np.testing.assert_allclose(bias, np.log(HEATMAP_PRIOR / (1 - HEATMAP_PRIOR)), rtol=1e-6)
    assert "starting fresh: heatmap (3 classes in the file, 5 here)" in capsys.readouterr().out


def test_a_file_of_another_width_is_refused_naming_the_file_and_the_layer(earlier_uri):
    uri, _ = earlier_uri
    with pytest.raises(KubedetectError) as error:
        build_detector(3, 64, ModelConfig(width=8, weights=uri))
    message = str(error.value)
    assert uri in message and "'stem'" in message
    assert "(3, 3, 3, 4) in the file, (3, 3, 3, 8) here" in message


def test_a_file_of_another_backbone_is_refused(earlier_uri):
    uri, _ = earlier_uri
    with pytest.raises(KubedetectError, match=r"has no layer 'Conv1' of this model's backbone"):
        build_detector(3, 96, ModelConfig(backbone="mobilenetv2", width=4, weights=uri))


def test_mobilenetv2_takes_imagenet_style_weights_from_a_keras_h5_file(tmp_path, capsys):
    """The offline stand-in for --weights imagenet: Keras Applications' own MobileNetV2 (alpha
    0.35, no top), its weights written by Keras as a named-layer HDF5 file. The backbone takes
    them all; the neck and heads, which the file lacks, start fresh."""
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=None, alpha=0.35
    )
    scrambled(base)
    path = tmp_path / "mobilenet_v2_0.35_no_top.h5"
    base.save(path)  # Keras' HDF5 format: layers under their names
    model = build_detector(3, 96, ModelConfig(backbone="mobilenetv2", width=4, weights=str(path)))
    got, expected = weights_by_name(model), weights_by_name(base)
    for name in expected:
        assert_same(got[name], expected[name], name)
    assert "starting fresh: p5_lateral" in capsys.readouterr().out


def test_files_without_layer_names_or_of_other_kinds_are_clear_errors(tmp_path):
    model = build_detector(3, 64, ModelConfig(width=4))
    positional = tmp_path / "model.weights.h5"
    model.save_weights(positional)
    with pytest.raises(KubedetectError, match="by position.*export folder or its model.keras"):
        build_detector(3, 64, ModelConfig(width=4, weights=str(positional)))
    with pytest.raises(KubedetectError, match=r"missing\.keras: cannot read it"):
        build_detector(3, 64, ModelConfig(width=4, weights=str(tmp_path / "missing.keras")))
    with pytest.raises(KubedetectError, match="expected a kubedetect export folder"):
        build_detector(3, 64, ModelConfig(width=4, weights=str(tmp_path)))
    with pytest.raises(KubedetectError, match="only --backbone mobilenetv2 has ImageNet"):
        build_detector(3, 64, ModelConfig(weights="imagenet"))


# ----------------------------------------------------------------------------------------------
# End to end: train from an earlier model's file, quantize to int8, serve.
# ----------------------------------------------------------------------------------------------


def train(shards, out, *flags: str) -> None:
    command = [
        sys.executable, "-m", "kubedetect.training.train", str(shards), str(out),
        "--batch-size", "16", "--width", "8", "--eval-every", "0", "--no-progress", *flags,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def weights_file(trained_model, tmp_path_factory):
    """The session's trained detector, written by this test as a .keras weights file."""
    model = keras.saving.load_model(str(trained_model / "model.keras"), compile=False)
    path = tmp_path_factory.mktemp("earlier") / "earlier-run.keras"
    model.save(path)
    return path, weights_by_name(model)


def test_training_starts_from_the_files_weights(weights_file, trained_shards, tmp_path):
    """Step 0 of `python -m kubedetect.training.train --weights FILE` is the file's model: after one
    step at learning rate 0 every trainable weight of the export is the file's, bit for bit."""
    path, expected = weights_file
    out = tmp_path / "step0"
    train(trained_shards, out, "--weights", str(path), "--epochs", "1", "--steps-per-epoch", "1",
          "--learning-rate", "0")  # fmt: skip
    exported = keras.saving.load_model(str(out / "model.keras"), compile=False)
    for name, layer in named_layers(exported):
        for variable, stored in zip(layer.weights, expected[name], strict=True):
            if variable.trainable:
                np.testing.assert_array_equal(np.asarray(variable), stored, err_msg=name)


def test_a_model_trained_from_a_weights_file_is_quantized_and_served(
    weights_file, trained_shards, tmp_path
):
    """Two epochs from the earlier model's file against two from scratch, each quantized to
    int8 and measured with the one evaluator: the file's head start shows in the int8 mAP (the
    run from scratch has barely begun); the int8 model then answers /v1/detect through the
    serving app (the code a Gunicorn worker runs)."""
    from kubedetect.config import EvalConfig, QuantizeConfig, ServeConfig
    from kubedetect.data.synth import synthesize
    from kubedetect.evaluation.evaluate import evaluate
    from kubedetect.network.quantize import quantize_model
    from serving.app import create_app

    path, _ = weights_file
    scores = {}
    for start, flags in (("file", ["--weights", str(path), "--learning-rate", "1e-3"]),
                         ("scratch", ["--learning-rate", "1e-3"])):  # fmt: skip
        train(trained_shards, tmp_path / start, "--epochs", "2", *flags)
        variants = str(tmp_path / f"{start}-variants")
        config = QuantizeConfig(modes=("int8",), calibration_images=50)
        quantize_model(str(tmp_path / start), variants, config, log=lambda _: None)
        int8 = evaluate(
            f"{variants}/int8", str(trained_shards), None, EvalConfig(plots=False), progress=False
        )
        scores[start] = int8["map50"]
    assert scores["file"] > scores["scratch"] + 0.3, scores  # e.g. 0.49 against 0.02

    app = create_app(ServeConfig(model_dir=str(tmp_path / "file-variants" / "int8")))
    try:
        synthesize(str(tmp_path / "photo"), 1, seed=999, progress=False)
        data = (tmp_path / "photo" / "JPEGImages" / "synth_000000.jpg").read_bytes()
        response = app.test_client().post("/v1/detect", data=data, content_type="image/jpeg")
        assert response.status_code == 200
        found = response.get_json()["detections"]
        assert found and {d["label"] for d in found} <= {"circle", "square", "triangle"}
    finally:
        app.extensions["kubedetect"].batcher.stop()
