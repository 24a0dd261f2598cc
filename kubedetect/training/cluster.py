"""Who this training process is, who its peers are, and the distribution strategy they share.

The cluster comes from `TF_CONFIG`, as a TFJob (and the local launcher) sets it:
`{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}`, with an
optional "chief" task. With more than one task, training uses MultiWorkerMirroredStrategy; with
one (or no TF_CONFIG) the default strategy, or MirroredStrategy over several local GPUs.

Joining the cluster is guarded: the strategy's constructor blocks, holding the GIL, until every
peer answers, forever if one never starts. A small watchdog process, which needs nothing from
this one, waits `--cluster-timeout` seconds; if the constructor has not returned by then, it
names the peers that do not answer, prints a clear error and kills this process (SIGKILL: the
strategy traps SIGTERM, and no Python code can run here while the constructor blocks).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from kubedetect.errors import KubedetectError

# Exit status of a worker killed by its watchdog is -9 (shells: 137); the message says why.
_WATCHDOG = r"""
import os, select, signal, socket, sys, time
parent, timeout, who, peers = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if ready:  # the parent wrote "joined" or closed the pipe (it exited): nothing to do
    sys.exit(0)
def answers(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False
silent = [p for p in peers if not answers(p)]
detail = (f"no answer from {', '.join(silent)}" if silent else
          "every peer's port answers, but the cluster did not form "
          "(do all workers share one TF_CONFIG?)")
sys.stderr.write(
    f"kubedetect: error: {who}: the training cluster did not come up within --cluster-timeout "
    f"{timeout:g} s: {detail}. Is every worker of TF_CONFIG running and reachable?\n")
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


class ClusterError(KubedetectError):
    """TF_CONFIG that makes no sense, or a cluster that does not come up."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the training job."""

    tasks: tuple[str, ...]  # every task's address, chief first; () without TF_CONFIG
    index: int  # this task's position in `tasks`
    name: str  # "chief" or "worker i", as TF_CONFIG names it

    @classmethod
    def from_env(cls, environ=None) -> Cluster:
        environ = os.environ if environ is None else environ
        text = environ.get("TF_CONFIG", "").strip()
        if not text:
            return cls((), 0, "worker 0")
        try:
            config = json.loads(text)
            spec, task = config.get("cluster", {}), config.get("task", {})
            task_type, index = task.get("type", "worker"), int(task.get("index", 0))
        except (ValueError, AttributeError, TypeError) as exc:
            raise ClusterError(
                f"TF_CONFIG is not valid JSON of a cluster and a task ({exc})"
            ) from None
        unknown = sorted(set(spec) - {"chief", "worker"})
        if unknown:
            raise ClusterError(
                f"TF_CONFIG has {unknown} tasks; kubedetect trains with workers "
                "(and an optional chief) only"
            )
        chief, workers = list(spec.get("chief", [])), list(spec.get("worker", []))
        if len(chief) > 1:
            raise ClusterError(f"TF_CONFIG has {len(chief)} chief tasks; at most one is allowed")
        if task_type not in ("chief", "worker"):
            raise ClusterError(f"TF_CONFIG task type {task_type!r}: expected 'worker' or 'chief'")
        group = chief if task_type == "chief" else workers
        if not 0 <= index < len(group):
            raise ClusterError(
                f"TF_CONFIG task {task_type} {index} is not in its cluster "
                f"({len(group)} {task_type}s)"
            )
        position = index if task_type == "chief" else len(chief) + index
        name = "chief" if task_type == "chief" else f"worker {index}"
        return cls(tuple(chief + workers), position, name)

    @property
    def size(self) -> int:
        return max(1, len(self.tasks))

    @property
    def is_chief(self) -> bool:
        """The chief exports, evaluates and writes the shared checkpoints: the chief task if the
        cluster has one, otherwise worker 0 (as the Training Operator's success policy assumes)."""
        return self.index == 0

    @property
    def peers(self) -> list[str]:
        return [t for i, t in enumerate(self.tasks) if i != self.index]


def make_strategy(cluster: Cluster, timeout: float, log=print):
    """The distribution strategy for this cluster; raises or exits with a clear error if the
    cluster does not form within `timeout` seconds."""
    import tensorflow as tf  # noqa: PLC0415

    if cluster.size == 1:
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    log(
        f"{cluster.name}: joining a cluster of {cluster.size} "
        f"({', '.join(cluster.tasks)}); waiting up to {timeout:g} s for every peer"
    )
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WATCHDOG,
            str(os.getpid()),
            str(timeout),
            cluster.name,
            *cluster.peers,
        ],
        stdin=subprocess.PIPE,
    )
    try:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        try:
            watchdog.stdin.write(b"joined\n")
            watchdog.stdin.close()
        except OSError:
            pass
        watchdog.wait()
    log(f"{cluster.name}: cluster of {strategy.num_replicas_in_sync} replicas formed")
    return strategy


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
