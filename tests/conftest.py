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
    from kubedetect.preprocess import preprocess

    out = tmp_path_factory.mktemp("synth-shards")
    preprocess(str(synth_dir), str(out), PreprocessConfig(image_size=128, num_shards=2, workers=2, progress=False))
    return out
