"""The local launcher: the TF_CONFIG a TFJob would give, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubedetect.training.launch import _without_workers, reserve_ports, tf_config


def test_tf_config_is_the_training_operators():
    config = json.loads(tf_config([4001, 4002, 4003], 2))
    assert config == {
        "cluster": {"worker": ["localhost:4001", "localhost:4002", "localhost:4003"]},
        "task": {"type": "worker", "index": 2},
    }


def test_reserved_ports_are_distinct_and_free_once_released():
    import socket

    ports, reserved = reserve_ports(3)
    assert len(set(ports)) == 3
    reserved.close()
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_workers_get_the_flags_minus_workers():
    assert _without_workers(["a", "b", "--workers", "2", "--epochs", "3", "--workers=4"]) == [
        "a",
        "b",
        "--epochs",
        "3",
    ]


def test_cluster_parsing_from_tf_config():
    from kubedetect.training.cluster import Cluster, ClusterError

    worker = Cluster.from_env({"TF_CONFIG": tf_config([1, 2], 1)})
    assert (worker.size, worker.index, worker.is_chief, worker.name) == (2, 1, False, "worker 1")
    assert worker.peers == ["localhost:1"]
    with_chief = {
        "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
        "task": {"type": "worker", "index": 0},
    }
    w0 = Cluster.from_env({"TF_CONFIG": json.dumps(with_chief)})
    assert (w0.size, w0.is_chief, w0.name) == (3, False, "worker 0")  # the chief task is the chief
    chief = Cluster.from_env(
        {"TF_CONFIG": json.dumps(dict(with_chief, task={"type": "chief", "index": 0}))}
    )
    assert chief.is_chief and chief.name == "chief"
    assert Cluster.from_env({}).size == 1 and Cluster.from_env({}).is_chief
    for bad in (
        "{not json",
        json.dumps({"cluster": {"ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}),
        tf_config([1, 2], 5),
    ):
        with pytest.raises(ClusterError):
            Cluster.from_env({"TF_CONFIG": bad})


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _interruptible() -> None:
    """SIGINT as a terminal's foreground job has it. A shell without job control starts its
    background jobs with SIGINT ignored (POSIX), their children inherit that, and Python then
    leaves it ignored instead of raising KeyboardInterrupt: a test suite started that way would
    otherwise send a Ctrl-C nobody can receive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker(synth_shards, tmp_path):
    """SIGINT to the launcher (what Ctrl-C sends) kills its workers (their own sessions do not
    get the terminal's signal) and exits 130."""
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "train",
            str(synth_shards),
            str(tmp_path / "m"),
            "--workers",
            "2",
            "--epochs",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
    )
    pids, lines = {}, []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        line = launcher.stdout.readline()
        lines.append(line)
        if m := re.search(r"\[launcher\] worker (\d+) started \(pid (\d+)", line):
            pids[int(m[1])] = int(m[2])
    assert len(pids) == 2, "".join(lines)
    assert all(_alive(pid) for pid in pids.values())
    launcher.send_signal(signal.SIGINT)
    rest, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, "".join(lines) + rest
    assert "interrupted: every worker stopped" in rest
    assert not any(_alive(pid) for pid in pids.values())
