"""Preprocessing: deterministic output whatever the number of workers and however the shards are
spread over runs, a manifest that describes the files, merge-shards refusing what is incomplete or
mixed, and tf.io.gfile URIs for input and output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import tensorflow as tf
from test_data_support import (
    add_image,
    kubedetect,
    output_bytes,
    read_manifest,
    read_shards,
    voc_xml,
    write,
)

from kubedetect.config import DataConfig, PreprocessConfig
from kubedetect.data.shards import merge_shards, preprocess
from kubedetect.errors import KubedetectError, UnusableInputError

SIZE = 96


def run(data: Path, out: Path, **config) -> dict:
    settings = {"image_size": SIZE, "num_shards": 3, "workers": 2, "progress": False} | config
    return preprocess(str(data), str(out), PreprocessConfig(**settings))


@pytest.fixture(scope="module")
def one_run(synth_dir, tmp_path_factory) -> Path:
    """The synthetic set in 3 shards by one full run with 2 workers: the reference output."""
    out = tmp_path_factory.mktemp("one-run")
    run(synth_dir, out)
    return out


# -- determinism ----------------------------------------------------------------------------------


def test_one_and_two_workers_write_identical_bytes(synth_dir, one_run, tmp_path):
    run(synth_dir, tmp_path, workers=1)
    reference = output_bytes(one_run)
    assert output_bytes(tmp_path) == reference
    assert sum(name.endswith(".tfrecord") for name in reference) == 6  # train and val, 3 shards


def test_shard_runs_then_merge_equal_one_run(synth_dir, one_run, tmp_path):
    for index in (2, 0, 1):  # any order, as pods finish
        part = run(synth_dir, tmp_path, shard_index=index, workers=1)
        assert part["index"] == index and part["num_shards"] == 3
    assert not (tmp_path / "dataset.json").exists()  # only merge-shards writes the manifest
    merge_shards(str(tmp_path))
    assert output_bytes(tmp_path) == output_bytes(one_run)


def test_shard_runs_and_merge_from_the_command_line(synth_dir, tmp_path):
    """The documented commands: `preprocess --num-shards K --shard-index I` on each machine,
    then `merge-shards`, which refuses to run before every shard is there."""
    shared = ["--image-size", str(SIZE), "--num-shards", "2", "--workers", "2"]
    first = kubedetect("preprocess", synth_dir, tmp_path / "out", *shared, "--shard-index", "0")
    assert first.returncode == 0, first.stderr
    assert "merge-shards" in first.stdout
    assert "img/s" not in first.stderr  # progress bars on terminals only, not into a pipe
    early = kubedetect("merge-shards", tmp_path / "out")
    assert early.returncode == 1
    assert "shards [1] of 2 are missing" in early.stderr and "Traceback" not in early.stderr
    second = kubedetect(
        "preprocess", synth_dir, tmp_path / "out", *shared, "--shard-index", "1", "--quiet"
    )
    assert second.returncode == 0, second.stderr
    merged = kubedetect("merge-shards", tmp_path / "out")
    assert merged.returncode == 0, merged.stderr
    assert "train" in merged.stdout and "shards" in merged.stdout
    run(synth_dir, tmp_path / "reference", num_shards=2)
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "reference")


# -- merge-shards refuses what does not fit together ----------------------------------------------


def test_merge_refuses_a_missing_shard(synth_dir, tmp_path):
    for index in (0, 2):
        run(synth_dir, tmp_path, shard_index=index, workers=1)
    with pytest.raises(KubedetectError, match=r"shards \[1\] of 3 are missing"):
        merge_shards(str(tmp_path))
    assert not (tmp_path / "dataset.json").exists()


def test_merge_refuses_parts_of_runs_with_different_shard_counts(synth_dir, tmp_path):
    run(synth_dir, tmp_path, shard_index=0, num_shards=2, workers=1)
    run(synth_dir, tmp_path, shard_index=1, num_shards=3, workers=1)
    with pytest.raises(KubedetectError, match=r"parts of different runs \(shard counts \[2, 3\]"):
        merge_shards(str(tmp_path))


def test_merge_refuses_parts_of_runs_with_different_settings(synth_dir, tmp_path):
    run(synth_dir, tmp_path, shard_index=0, num_shards=2, workers=1)
    run(synth_dir, tmp_path, shard_index=1, num_shards=2, workers=1, image_size=64)
    with pytest.raises(KubedetectError, match="2 different settings"):
        merge_shards(str(tmp_path))


def test_merge_refuses_a_shard_changed_or_lost_after_its_run(synth_dir, tmp_path):
    for index in range(3):
        run(synth_dir, tmp_path, shard_index=index, workers=1)
    shard = tmp_path / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(KubedetectError, match="train-00001-of-00003.tfrecord: missing or changed"):
        merge_shards(str(tmp_path))
    shard.unlink()
    with pytest.raises(KubedetectError, match="train-00001-of-00003.tfrecord: missing or changed"):
        merge_shards(str(tmp_path))


def test_merge_of_a_folder_without_parts_is_unusable_input(tmp_path):
    with pytest.raises(UnusableInputError, match="no part-"):
        merge_shards(str(tmp_path))


# -- the manifest ---------------------------------------------------------------------------------


def test_manifest_describes_the_files(one_run, synth_dir):
    manifest = read_manifest(one_run)
    records = read_shards(one_run)
    assert manifest["format"] == "kubedetect.dataset/v1"
    assert (manifest["image_size"], manifest["num_shards"]) == (SIZE, 3)
    assert manifest["classes"] == json.loads((one_run / "labels.json").read_text())["classes"]
    for entry in manifest["shards"]:
        path = one_run / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        examples = list(tf.data.TFRecordDataset(str(path)))
        assert len(examples) == entry["records"], entry["path"]
        assert entry["path"].startswith(entry["split"] + "-")
    for split, entry in manifest["splits"].items():
        in_split = [r for r in records.values() if r["split"] == split]
        assert entry["images"] == len(in_split)
        assert entry["objects"] == sum(len(r["names"]) for r in in_split)
    report = manifest["report"]
    assert report["images"] == len(records) == len(list((synth_dir / "Annotations").iterdir()))
    assert report["objects"] == sum(len(r["names"]) for r in records.values())
    assert report["problems"] == []


def test_every_shard_gets_its_files_even_when_no_image_hashes_to_it(tmp_path):
    add_image(tmp_path / "data", "only.jpg", "only.xml", (40, 30), [("cat", 1, 1, 20, 20)])
    manifest = run(tmp_path / "data", tmp_path / "out", num_shards=4, workers=1)
    assert len(manifest["shards"]) == 4
    assert sorted(e["records"] for e in manifest["shards"]) == [0, 0, 0, 1]
    assert all((tmp_path / "out" / e["path"]).exists() for e in manifest["shards"])
    assert list(read_shards(tmp_path / "out")) == ["only.xml"]


def test_a_full_run_replaces_the_outputs_of_an_earlier_one(synth_dir, tmp_path):
    run(synth_dir, tmp_path / "out", num_shards=3, workers=1)
    run(synth_dir, tmp_path / "out", num_shards=2, workers=1)
    run(synth_dir, tmp_path / "fresh", num_shards=2, workers=1)
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "fresh")


# -- URIs and options -----------------------------------------------------------------------------


def test_file_uris_for_input_and_output(synth_dir, one_run, tmp_path):
    run(f"file://{synth_dir}", f"file://{tmp_path}", workers=1)
    assert output_bytes(tmp_path) == output_bytes(one_run)


@pytest.mark.parametrize(
    "option, value, flag",
    [
        ("image_size", 0, "--image-size"),
        ("jpeg_quality", 101, "--jpeg-quality"),
        ("num_shards", 0, "--num-shards"),
        ("shard_index", 3, "--shard-index"),
    ],
)
def test_out_of_range_options_are_refused_naming_the_flag(synth_dir, tmp_path, option, value, flag):
    with pytest.raises(KubedetectError, match=flag):
        run(synth_dir, tmp_path, **{option: value})
    assert not any(tmp_path.iterdir())


def test_out_of_range_val_fraction_is_a_clear_error(synth_dir, tmp_path):
    with pytest.raises(KubedetectError, match="--val-fraction"):
        preprocess(
            str(synth_dir),
            str(tmp_path),
            PreprocessConfig(progress=False),
            DataConfig(val_fraction=1.5),
        )
    result = kubedetect(
        "data",
        "check",
        synth_dir,
        "--val-fraction",
        "1.5",
        "--report",
        tmp_path / "r.json",
        "--quiet",
    )
    assert result.returncode == 1
    assert "--val-fraction must be in [0, 1)" in result.stderr and "Traceback" not in result.stderr


def test_preprocess_with_no_image_to_use_says_why(tmp_path):
    write(tmp_path / "data" / "a.xml", voc_xml("a.jpg", (40, 30), [("cat", 1, 1, 20, 20)]))
    with pytest.raises(UnusableInputError) as error:
        run(tmp_path / "data", tmp_path / "out")
    assert error.value.exit_code == 2
    assert "no annotation has an image to use (1 missing_image; first: a.xml:" in str(error.value)
    assert "kubedetect data check" in str(error.value)
