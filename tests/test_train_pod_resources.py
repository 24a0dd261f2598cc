"""A training process sized by its pod, not its node: its TensorFlow op threads from the cores
it may use (here KUBEDETECT_CPUS, as a pod without a CPU limit states its request), its training
cache from the memory it may use (KUBEDETECT_MEMORY_LIMIT, as the downward API fills it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kubedetect.resources import available_cores

pytestmark = pytest.mark.slow


def train(shards, model_dir, **env) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kubedetect.training.train", str(shards), str(model_dir)]
        + ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--width", "4"]
        + ["--eval-images", "4", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **env),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_threads_and_cache_follow_the_pods_limits(synth_shards, tmp_path):
    small = train(
        synth_shards, tmp_path / "small", KUBEDETECT_CPUS="1", KUBEDETECT_MEMORY_LIMIT="1Mi"
    )
    assert "1 CPU op thread(s)" in small
    assert "(--cache-budget 0.5 of the memory limit, 1.0 MiB): streamed every epoch" in small

    roomy = train(synth_shards, tmp_path / "roomy", KUBEDETECT_MEMORY_LIMIT="1Gi")
    assert f"{available_cores()} CPU op thread(s)" in roomy  # the cores this test may use
    assert "within the budget of 0.50 GiB" in roomy and "kept in memory" in roomy
