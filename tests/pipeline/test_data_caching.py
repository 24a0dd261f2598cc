"""A rerun on a changed data folder trains on the new data.

Kubeflow Pipelines reuses a step's result when the step's inputs are the same, and the data
folder's path does not change when its images or labels do. So `plan shards` (never cached)
fingerprints the folder and hands the fingerprint to the data steps as an input: their cache
key changes exactly with the data (tests/pipeline/test_compiled_pipeline.py checks the compiled
caching settings). Here the whole pipeline runs twice for real (kfp.local), on a folder changed
in between, and the second run's steps carry the new fingerprint through to the model.
"""

from __future__ import annotations

import json
import os

import pytest

from kubedetect.data.synth import synthesize
from kubedetect.io.fs import sha256_file
from pipelines.run import run_local

pytestmark = pytest.mark.slow

PARAMS = {  # the whole DAG, as small as it goes: the data path is what is under test
    "image_size": 64,
    "num_shards": 1,
    "workers": 1,
    "epochs": 1,
    "batch_size": 8,
    "train_flags": "--steps-per-epoch 1 --evaluations 1",
    "quantize_modes": "float32",
    "min_map": 1.0,  # held back: nothing to deploy
}


def _executor_output(run_root: str, task: str) -> dict:
    with open(os.path.join(run_root, task, "executor_output.json")) as f:
        return json.load(f)


def _run(voc, root) -> dict:
    run = run_local(
        {**PARAMS, "data_uri": str(voc), "serving_dir": str(root / "serving")}, str(root)
    )
    (item,) = _executor_output(run.root, "plan-shards")["parameterValues"]["Output"]
    (dataset,) = _executor_output(run.root, "merge-shards")["artifacts"]["dataset"]["artifacts"]
    with open(os.path.join(run.dataset, "dataset.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(run.model, "model.json")) as f:
        card = json.load(f)
    return {
        "fingerprint": item["data_fingerprint"],
        "shards_fingerprint": dataset["metadata"]["data_fingerprint"],
        "manifest": manifest,
        "manifest_sha256": sha256_file(os.path.join(run.dataset, "dataset.json")),
        "trained_on": card["provenance"]["trained_on"],
    }


@pytest.mark.timeout(1200)
def test_a_rerun_on_changed_data_fingerprints_it_anew_and_trains_on_it(tmp_path):
    voc = tmp_path / "voc"
    synthesize(str(voc), 48, seed=3, progress=False)
    first = _run(voc, tmp_path / "run-1")
    from kubedetect.data.fingerprint import fingerprint

    assert first["fingerprint"] == fingerprint(str(voc)).digest
    assert first["shards_fingerprint"] == first["fingerprint"]  # an input of the shard steps

    # The folder changes under the same path: eight images and their labels go.
    annotations = sorted((voc / "Annotations").glob("*.xml"))[:8]
    for xml in annotations:
        xml.unlink()
        (voc / "JPEGImages" / f"{xml.stem}.jpg").unlink()
    second = _run(voc, tmp_path / "run-2")

    assert second["fingerprint"] != first["fingerprint"]
    assert second["fingerprint"] == fingerprint(str(voc)).digest
    assert second["shards_fingerprint"] == second["fingerprint"]
    images = {run: sum(s["images"] for s in r["manifest"]["splits"].values()) for run, r in
              (("first", first), ("second", second))}  # fmt: skip
    assert images == {"first": 48, "second": 40}
    # The model of the second run learnt from the second run's shards.
    assert second["trained_on"]["dataset_sha256"] == second["manifest_sha256"]
    assert second["trained_on"]["train_images"] == second["manifest"]["splits"]["train"]["images"]
    assert second["trained_on"]["dataset_sha256"] != first["trained_on"]["dataset_sha256"]


def test_the_fingerprint_sees_a_relabelled_box_of_the_same_size_and_time(tmp_path):
    """A label fix that keeps the file's size and modification time (a class renamed to one as
    long, a copy that keeps mtimes) still changes the fingerprint: annotations are hashed whole;
    images by size and mtime, which every ordinary edit changes."""
    from kubedetect.data.fingerprint import fingerprint

    synthesize(str(tmp_path), 4, seed=1, progress=False)
    before = fingerprint(str(tmp_path))
    xml = sorted((tmp_path / "Annotations").glob("*.xml"))[0]
    stat = xml.stat()
    text = xml.read_text()
    name = next(n for n in ("circle", "square") if f"<name>{n}</name>" in text)
    xml.write_text(text.replace(f"<name>{name}</name>", f"<name>{name[::-1]}</name>", 1))
    os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert xml.stat().st_size == stat.st_size
    relabelled = fingerprint(str(tmp_path))
    assert relabelled.digest != before.digest

    image = sorted((tmp_path / "JPEGImages").glob("*.jpg"))[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert fingerprint(str(tmp_path)).digest != relabelled.digest
    assert fingerprint(str(tmp_path)) == fingerprint(str(tmp_path))  # nothing else moves it
