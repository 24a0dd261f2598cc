"""Distributed training with real worker processes and real TF_CONFIG on localhost: two workers
under MultiWorkerMirroredStrategy end with identical weights and only the chief exports; each
sizes its cache by its share of the memory limit; both predict their part of the validation; a
killed worker's job resumes from the latest checkpoint to the very weights of an uninterrupted
job; a missing peer is a clear error."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubedetect.training.launch import reserve_ports, tf_config

pytestmark = pytest.mark.slow

EXPORT = {"model.keras", "model.json", "labels.json", "history.csv"}


class Launcher:
    """`kubedetect train --workers N ...` as a subprocess, its output collected line by line."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "train", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> dict[int, int]:
        found = (
            re.search(r"\[launcher\] worker (\d+) started \(pid (\d+)", line)
            for line in list(self.lines)
        )
        return {int(m[1]): int(m[2]) for m in found if m}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def digests(output: str) -> dict[str, str]:
    return dict(
        re.findall(
            r"\[(worker \d+)\] worker \d+: final step \d+, weights sha256 ([0-9a-f]{64})", output
        )
    )


# One job's settings, for the uninterrupted run and the interrupted one it is compared with.
JOB = [
    "--workers",
    "2",
    "--epochs",
    "4",
    "--steps-per-epoch",
    "25",
    "--batch-size",
    "8",
    "--width",
    "4",
    "--checkpoint-every",
    "10",
    "--eval-every",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def two_workers(synth_shards, tmp_path_factory):
    """`kubedetect train --workers 2` run to the end, uninterrupted, under a memory limit too
    small for the training cache (KUBEDETECT_MEMORY_LIMIT, as a pod's limit): its launcher, its
    model folder and its workers' TMPDIR."""
    root = tmp_path_factory.mktemp("two-workers")
    scratch = root / "tmp"  # the workers' TMPDIR: where a non-chief writes and cleans up
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), KUBEDETECT_MEMORY_LIMIT="2Mi")
    run = Launcher([str(synth_shards), str(root / "model"), *JOB], env)
    assert run.wait() == 0, run.output
    return run, root / "model", scratch


def worker_lines(run: Launcher, index: int) -> str:
    return "\n".join(line for line in run.lines if line.startswith(f"[worker {index}]"))


def test_two_workers_end_with_identical_weights_and_only_the_chief_exports(two_workers):
    run, model_dir, scratch = two_workers
    out = run.output

    # Both workers ran, in a cluster of two, with prefixed logs and per-epoch lines.
    assert "[worker 0] worker 0: cluster of 2 replicas formed" in out
    assert "[worker 1] worker 1: cluster of 2 replicas formed" in out
    assert re.search(r"\[worker 1\] worker 1: epoch 4/4 step 100 loss [\d.]+ \(heatmap", out)
    assert re.search(r"\[worker 0\] worker 0: epoch 2/4 .* images/s .* val mAP@0\.5 [\d.]+", out)
    assert re.search(r"\[worker 0\] worker 0: epoch 4/4 .* images/s .* val mAP@0\.5 [\d.]+", out)
    assert "val mAP" not in worker_lines(run, 1)  # the chief reports it

    # Identical weights on both workers, and in the chief's export.
    weights = digests(out)
    assert set(weights) == {"worker 0", "worker 1"}, out
    assert weights["worker 0"] == weights["worker 1"]
    card = json.loads((model_dir / "model.json").read_text())
    assert card["provenance"]["weights_sha256"] == weights["worker 0"]
    assert card["provenance"]["workers"] == 2 and card["provenance"]["replicas"] == 2

    # Only the chief exported; the other worker's temporary export and checkpoints are gone.
    assert {p.name for p in model_dir.iterdir()} == EXPORT  # default checkpoints removed at the end
    assert "[worker 1] not the chief: export written to" in out
    assert list(scratch.iterdir()) == []


def test_each_worker_sizes_its_training_cache_by_its_share_of_the_memory_limit(two_workers):
    """The launcher gives each of its 2 workers half of KUBEDETECT_MEMORY_LIMIT (2 MiB): the
    decoded images of a worker's share (1.2 MiB) are over half of that (the default budget), so
    each streams them from the shards, and says so."""
    run, _, _ = two_workers
    for index in (0, 1):
        decision = re.search(
            rf"\[worker {index}\] worker {index}: cache: (\d+) decoded training images take "
            r"([\d.]+) MiB, over the budget of 0\.5 MiB \(--cache-budget 0\.5 of the memory "
            r"limit, 1\.0 MiB\): streamed every epoch",
            run.output,
        )
        assert decision, run.output
        assert int(decision[1]) > 0


def test_every_worker_predicts_its_part_of_the_validation(two_workers, synth_shards):
    """Validation is split over the workers (each predicts its slice, none waits for the
    chief to get through the whole split), and their detections together score exactly what
    `kubedetect evaluate` scores on the exported model."""
    run, model_dir, _ = two_workers
    val_images = json.loads((synth_shards / "dataset.json").read_text())["splits"]["val"]["images"]
    shares = [
        [
            (int(m[1]), int(m[2]))
            for m in re.finditer(
                r"validation: predicted (\d+) of (\d+) val images", worker_lines(run, i)
            )
        ]
        for i in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == 2  # epochs 2 and 4
    for (mine, total), (theirs, _) in zip(*shares, strict=True):
        assert total == val_images and mine + theirs == val_images and mine and theirs

    from kubedetect.config import EvalConfig
    from kubedetect.evaluation.evaluate import evaluate

    card = json.loads((model_dir / "model.json").read_text())
    during = card["provenance"]["metrics"]
    after = evaluate(str(model_dir), str(synth_shards), None, EvalConfig(plots=False))
    assert during["map50"] == pytest.approx(after["map50"], abs=1e-6)
    assert during["map50_95"] == pytest.approx(after["map50_95"], abs=1e-6)


def test_a_killed_worker_resumes_from_the_latest_checkpoint(two_workers, synth_shards, tmp_path):
    """Worker 1 is SIGKILLed after a checkpoint: the launcher stops worker 0 too and fails;
    launched again, the job resumes at the checkpoint's step, finishes the same total and ends
    with the very weights of the uninterrupted job: it trained on exactly the same data (this
    time cached in memory, where the uninterrupted job streamed it)."""
    model_dir, checkpoints = tmp_path / "model", tmp_path / "checkpoints"
    args = [str(synth_shards), str(model_dir), *JOB, "--checkpoint-dir", str(checkpoints)]
    first = Launcher(args)
    deadline = time.monotonic() + 240
    # A checkpoint counts once the manager's state file names it (CheckpointManager.save writes
    # the files, then the state: tensorflow/python/checkpoint/checkpoint_management.py); a kill
    # between the two leaves files a restart rightly ignores.
    while not (checkpoints / "checkpoint").exists():
        assert first.process.poll() is None, first.output
        assert time.monotonic() < deadline, first.output
        time.sleep(0.05)
    pids = first.pids()
    os.kill(pids[1], signal.SIGKILL)
    code = first.wait()
    assert code != 0
    assert "[launcher] worker 1 failed" in first.output and "stopped the others" in first.output
    assert not alive(pids[0]) and not alive(pids[1])
    saved = sorted(int(p.name[5:-6]) for p in checkpoints.glob("ckpt-*.index"))
    assert saved and saved[-1] < 100, "the job should not have finished before the kill"

    second = Launcher(args)
    assert second.wait() == 0, second.output
    assert "kept in memory" in second.output
    resumed = re.findall(
        r"\[worker (\d)\] worker \d: resumed from \S+ckpt-(\d+) at step (\d+)", second.output
    )
    assert {w for w, _, _ in resumed} == {"0", "1"}
    steps = {int(s) for _, _, s in resumed}
    assert len(steps) == 1 and steps.pop() == max(int(c) for _, c, _ in resumed) >= saved[0]
    assert "weights sha256" in second.output and "final step 100," in second.output
    weights = digests(second.output)
    assert weights["worker 0"] == weights["worker 1"]
    assert weights["worker 0"] == digests(two_workers[0].output)["worker 0"]
    history = (model_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [
        "1",
        "2",
        "3",
        "4",
    ]  # no epoch lost or repeated
    assert json.loads((model_dir / "model.json").read_text())["provenance"]["steps"] == 100


def test_a_missing_peer_ends_with_a_clear_timeout_error(synth_shards, tmp_path):
    """Worker 0 of two, whose peer never starts: a clear error after --cluster-timeout, no hang."""
    ports, reserved = reserve_ports(2)
    reserved.close()
    env = dict(os.environ, TF_CONFIG=tf_config(ports, 0), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedetect.training.train",
            str(synth_shards),
            str(tmp_path / "model"),
            "--cluster-timeout",
            "4",
            "--epochs",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "did not come up within --cluster-timeout 4 s" in result.stderr
    assert f"no answer from localhost:{ports[1]}" in result.stderr
    assert not (tmp_path / "model").exists()


def test_workers_flag_that_contradicts_tf_config_is_refused(synth_shards, tmp_path):
    env = dict(os.environ, TF_CONFIG=tf_config([1111, 2222, 3333], 0))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubedetect.training.train",
            str(synth_shards),
            str(tmp_path),
            "--workers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "--workers 2, but TF_CONFIG describes a cluster of 3" in result.stderr
