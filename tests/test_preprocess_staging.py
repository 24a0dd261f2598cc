"""A full preprocessing run writes its new shards beside OUT_DIR and swaps them in at the end: a
run that fails on the way (here: its worker killed while busy with the last image) leaves the
previous dataset byte for byte as it was; a run that succeeds replaces it, and leaves files that
are not its own alone; locally the swap is one atomic exchange of folders, through tf.io.gfile
URIs the files are moved in one by one with dataset.json last."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_data_support import output_bytes, voc_xml, write

from kubedetect.config import PreprocessConfig
from kubedetect.data.shards import preprocess, shard_of
from kubedetect.io import fs

SIZE, SHARDS = 96, 3


def run(data: Path, out: str, **config) -> dict:
    settings = {"image_size": SIZE, "num_shards": SHARDS, "workers": 2, "progress": False}
    return preprocess(str(data), out, PreprocessConfig(**(settings | config)))


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def add_fifo_image(root: Path) -> Path:
    """An annotation whose image is a named pipe, sorted last in the last shard: a worker that
    reads it waits until someone writes to the pipe, after every other image was prepared."""
    name = next(f"zzzz-{i}" for i in range(1000) if shard_of(f"zzzz-{i}.xml", SHARDS) == 2)
    write(root / f"{name}.xml", voc_xml(f"{name}.jpg", (96, 64), [("circle", 5, 5, 40, 40)]))
    fifo = root / f"{name}.jpg"
    os.mkfifo(fifo)
    return fifo


def wait_for_reader(fifo: Path, process: subprocess.Popen, timeout: float = 120) -> int:
    """The pipe's write end, opened once a worker waits at its read end."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no worker reached the last image"
            time.sleep(0.02)


@pytest.fixture
def data(synth_dir, tmp_path) -> Path:
    return Path(shutil.copytree(synth_dir, tmp_path / "voc"))


@pytest.mark.parametrize("uri", [False, True], ids=["local", "gfile-uri"])
def test_a_run_that_fails_midway_leaves_the_previous_dataset_intact(data, tmp_path, uri):
    out = tmp_path / "shards"
    target = f"file://{out}" if uri else str(out)
    run(data, target)
    before = output_bytes(out)
    assert "dataset.json" in before and sum(n.endswith(".tfrecord") for n in before) == 2 * SHARDS

    fifo = add_fifo_image(data)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "preprocess", str(data), target]
        + ["--image-size", str(SIZE), "--num-shards", str(SHARDS), "--workers", "1", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = wait_for_reader(fifo, process)
    try:
        for pid in children(process.pid):  # the pool's worker, busy with the last image
            os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
    finally:
        os.close(writer)
    assert process.returncode == 1, stderr
    assert "a worker process died" in stderr and "zzzz-" in stderr

    assert output_bytes(out) == before  # dataset.json, labels.json, parts and shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "voc"]  # no staging left


def test_a_run_that_succeeds_replaces_the_previous_dataset_and_keeps_other_files(data, tmp_path):
    reference = tmp_path / "reference"
    run(data, str(reference))
    out = tmp_path / "shards"
    run(data, str(out), num_shards=2, image_size=64)  # an earlier dataset, other settings
    write(out / "NOTES.md", "kept")  # not preprocessing's: left alone
    (out / "extra").mkdir()

    run(data, str(out))

    expected = output_bytes(reference) | {"NOTES.md": b"kept"}
    assert output_bytes(out) == expected  # nothing left of the 2-shard dataset
    assert (out / "extra").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "shards", "voc"]


def test_through_a_uri_the_files_are_moved_in_with_the_manifest_last(data, tmp_path):
    reference = tmp_path / "reference"
    run(data, str(reference))
    out = tmp_path / "shards"
    run(data, f"file://{out}", num_shards=2)
    write(out / "NOTES.md", "kept")

    run(data, f"file://{out}")

    assert output_bytes(out) == output_bytes(reference) | {"NOTES.md": b"kept"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference", "shards", "voc"]


def test_local_folders_are_exchanged_in_one_step(tmp_path):
    """The swap itself: the new folder takes the old one's place in one rename (readers never
    see a mix), files that are not ours move over, and the old version is gone."""
    target = tmp_path / "out"
    write(target / "dataset.json", "old")
    write(target / "train-00000-of-00001.tfrecord", "old")
    write(target / "NOTES.md", "kept")
    staging = Path(fs.staging_dir(str(target)))
    assert staging.parent == tmp_path and staging.name.startswith(".out.staging-")
    write(staging / "dataset.json", "new")

    how = fs.replace_dir(
        str(staging), str(target), keep=lambda name: name == "NOTES.md", last="dataset.json"
    )

    assert how == "exchanged atomically"
    assert output_bytes(target) == {"NOTES.md": b"kept", "dataset.json": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
