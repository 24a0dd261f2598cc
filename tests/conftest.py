"""Fixtures shared by the whole suite.

`../shared` (real datasets, schemas, specs) sits beside developer and CI checkouts but not beside
a user's clone: tests that need it skip with the reason, except under KUBEDETECT_REQUIRE_SHARED=1
(set by .ci/run), where a missing file is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KUBEDETECT_SHARED", REPO.parent / "shared"))
ARTIFACTS = REPO / "test-artifacts"  # screenshots and plots kept for people to look at

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip (a failure under KUBEDETECT_REQUIRE_SHARED=1)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is absent (../shared lies beside developer and CI checkouts only)"
        if os.environ.get("KUBEDETECT_REQUIRE_SHARED") == "1":
            pytest.fail(f"KUBEDETECT_REQUIRE_SHARED=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def cards_dir() -> Path:
    return shared_path("datasets", "cards")


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return shared_path("datasets", "bccd")


@pytest.fixture(scope="session")
def tfjob_crd() -> Path:
    return shared_path("schemas", "kubeflow.org_tfjobs.v1.9.4.yaml")


@pytest.fixture(scope="session")
def oip_spec() -> Path:
    return shared_path("specs", "open-inference-protocol-rest.yaml")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic VOC set (60 images), made once per session."""
    from kubedetect.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(str(out), 60, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_shards(synth_dir, tmp_path_factory) -> Path:
    """The synthetic set preprocessed to 128 px shards (2 per split)."""
    from kubedetect.config import PreprocessConfig
    from kubedetect.data.shards import preprocess

    out = tmp_path_factory.mktemp("synth-shards")
    preprocess(
        str(synth_dir),
        str(out),
        PreprocessConfig(image_size=128, num_shards=2, workers=2, progress=False),
    )
    return out


# ----------------------------------------------------------------------------------------------
# A trained detector and its quantized variants, for the training, evaluation, quantization and
# serving tests. Trained once per session through the real entrypoint (`python -m
# kubedetect.training.train`), briefly: it finds synthetic shapes, roughly (val mAP@0.5 about
# 0.6-0.7).
# ----------------------------------------------------------------------------------------------

TRAINED_IMAGE_SIZE = 128
TRAINED_EPOCHS = 28


@pytest.fixture(scope="session")
def trained_shards(tmp_path_factory) -> Path:
    """The shards `trained_model` learnt from: 400 synthetic images at 128 px, 2 shards a split."""
    from kubedetect.config import PreprocessConfig
    from kubedetect.data.shards import preprocess
    from kubedetect.data.synth import synthesize

    root = tmp_path_factory.mktemp("trained-data")
    synthesize(str(root / "voc"), 400, seed=11, progress=False)
    preprocess(
        str(root / "voc"),
        str(root / "shards"),
        PreprocessConfig(image_size=TRAINED_IMAGE_SIZE, num_shards=2, workers=2, progress=False),
    )
    return root / "shards"


@pytest.fixture(scope="session")
def trained_model(trained_shards, tmp_path_factory) -> Path:
    """A model folder (model.keras, model.json, labels.json, history.csv): a small detector
    trained for about a minute on `trained_shards` by `python -m kubedetect.training.train`."""
    import subprocess
    import sys

    model_dir = tmp_path_factory.mktemp("trained") / "model"
    command = [
        sys.executable,
        "-m",
        "kubedetect.training.train",
        str(trained_shards),
        str(model_dir),
        "--epochs",
        str(TRAINED_EPOCHS),
        "--batch-size",
        "16",
        "--width",
        "8",
        "--learning-rate",
        "6e-3",
        "--evaluations",
        "1",
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode:
        pytest.fail(
            f"training the session's model failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return model_dir


@pytest.fixture(scope="session")
def quantized_models(trained_model, tmp_path_factory) -> Path:
    """The variants folder of `trained_model`: float32/, float16/, dynamic/, int8/, each with
    model.tflite, model.json and labels.json, and report.json/report.md (through `kubedetect
    quantize --report`)."""
    from cli.main import main

    out = tmp_path_factory.mktemp("quantized") / "variants"
    code = main(
        [
            "quantize",
            str(trained_model),
            str(out),
            "--calibration-images",
            "100",
            "--report",
            "--latency-runs",
            "50",
        ]
    )
    if code:
        pytest.fail(f"kubedetect quantize exited {code}")
    return out
