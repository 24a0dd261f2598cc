"""Exact resume with several replicas per worker (several GPUs in one pod), on this CPU machine:
two logical CPU devices under MirroredStrategy stand in for two GPUs. The distributed dataset
hands one worker's consecutive batches to its replicas in turn, so a step takes two batches from
the worker's stream; a job resumed at step k must skip 2k of them, not k, or it trains again on
data it has seen. Checked on the stream itself (which examples each replica gets at each step,
and their pixels and targets) and on a real training run killed after a checkpoint and resumed,
which must end with the weights of the run that was never interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

TWO_DEVICES = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import kubedetect.training.train  # sets the allocator before TensorFlow starts
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
"""

STREAM = (
    TWO_DEVICES
    + r"""
import dataclasses, hashlib, json
from kubedetect.config import TrainConfig
from kubedetect.training.inputs import distributed_training_data
from kubedetect.data.shards import load_manifest, shard_paths

shards = sys.argv[1]
manifest = load_manifest(shards)
files = shard_paths(shards, "train")
counts = [f["records"] for f in manifest["shards"] if f["split"] == "train"]
config = TrainConfig(batch_size=8, shuffle_buffer=16)

def digest(array):
    return hashlib.sha256(array.numpy().tobytes()).hexdigest()[:16]

def steps(start, count, cache):
    data = distributed_training_data(
        strategy, files, counts, num_classes=len(manifest["classes"]), image_size=128,
        config=dataclasses.replace(config, cache=cache), start_step=start, log=lambda m: None,
    )
    iterator, seen = iter(data), []
    for _ in range(count):
        images, targets, ids = next(iterator)
        local = strategy.experimental_local_results
        seen.append([
            {"ids": i.numpy().tolist(), "pixels": digest(p), "heatmap": digest(h)}
            for i, p, h in zip(local(ids), local(images), local(targets["heatmap"]))
        ])
    return seen

print(json.dumps({
    "train_images": manifest["splits"]["train"]["images"],
    "whole": steps(0, 16, "memory"),
    "resumed": steps(9, 7, "memory"),
    "streamed": steps(9, 7, "none"),
}))
"""
)


def test_a_resumed_stream_gives_each_replica_what_the_uninterrupted_one_did(synth_shards):
    result = subprocess.run(
        [sys.executable, "-c", STREAM, str(synth_shards)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    whole = seen["whole"]
    # Two replicas, 4 examples each per step (global batch 8), never the same example twice in a
    # step, and no example twice within a pass over this worker's data.
    assert all(len(step) == 2 and all(len(r["ids"]) == 4 for r in step) for step in whole)
    one_pass = seen["train_images"] // 8
    ids = [i for step in whole[:one_pass] for replica in step for i in replica["ids"]]
    assert len(set(ids)) == len(ids) == one_pass * 8
    # Resumed at step 9 (in the second pass): every replica, every step, what it got before.
    assert seen["resumed"] == whole[9:]
    # Streamed from the shards instead of cached: the same stream.
    assert seen["streamed"] == whole[9:]


TRAIN = (
    TWO_DEVICES
    + r"""
import json
from kubedetect.config import ModelConfig, TrainConfig
from kubedetect.training.train import train

shards, model_dir, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
train(shards, model_dir, TrainConfig(**settings), ModelConfig(width=4), strategy=strategy)
"""
)


def start_training(shards, model_dir, checkpoints) -> subprocess.Popen:
    settings = {
        "epochs": 3,
        "steps_per_epoch": 15,
        "batch_size": 8,
        "checkpoint_every": 5,
        "checkpoint_dir": str(checkpoints),
        "evaluations": 1,
        "eval_images": 4,
        "progress": False,
    }
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(shards), str(model_dir), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def final_weights(output: str) -> str:
    found = re.findall(r"final step 45, weights sha256 ([0-9a-f]{64})", output)
    assert len(found) == 1, output
    return found[0]


def test_two_replicas_per_worker_resume_to_the_weights_of_an_uninterrupted_run(
    synth_shards, tmp_path
):
    whole = start_training(synth_shards, tmp_path / "whole", tmp_path / "whole-checkpoints")
    output, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, output
    assert "over 2 replica(s)" in output
    uninterrupted = final_weights(output)

    checkpoints = tmp_path / "checkpoints"
    first = start_training(synth_shards, tmp_path / "model", checkpoints)
    deadline = time.monotonic() + 300
    # A checkpoint counts once the manager's state file names it (CheckpointManager.save writes
    # the files, then the state: tensorflow/python/checkpoint/checkpoint_management.py); a kill
    # between the two leaves files a restart rightly ignores.
    while not (checkpoints / "checkpoint").exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    saved = sorted(int(p.name[5:-6]) for p in checkpoints.glob("ckpt-*.index"))
    assert saved and saved[-1] < 45, "the run should not have finished before the kill"

    second = start_training(synth_shards, tmp_path / "model", checkpoints)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    resumed = re.search(r"resumed from \S+ckpt-(\d+) at step (\d+)", output)
    assert resumed and 0 < int(resumed[2]) < 45, output
    assert final_weights(output) == uninterrupted
