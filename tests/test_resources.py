"""Pools and budgets are sized by what the pod may use, not by the node it landed on.

The cgroup files are laid out as the kernel lays them out (cgroup v1 and v2 trees, in a temporary
folder), and, where this machine lets a test make one, in a real cgroup the test process's child
is moved into: the kernel's own files, read by a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kubedetect import resources
from kubedetect.resources import cgroup_cpu_quota, cgroup_memory_limit, parse_quantity


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("text", "value"),
    [("2", 2), ("500m", 0.5), ("1Gi", 2**30), ("1.5Gi", 1.5 * 2**30), ("512Mi", 2**29),
     ("4G", 4e9), ("4e9", 4e9), ("1073741824", 2**30)],
)  # fmt: skip
def test_kubernetes_quantities(text, value):
    assert parse_quantity(text) == pytest.approx(value)


def test_a_bad_quantity_is_a_clear_error():
    with pytest.raises(ValueError, match="'1 GB'"):
        parse_quantity("1 GB")


def test_cgroup_v2_limits_of_a_pod(tmp_path):
    """A container with its own cgroup namespace: path '/', the limits at the mount's root."""
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "150000 100000")
    write(root / "memory.max", str(2**30))
    proc = tmp_path / "proc-cgroup"
    write(proc, "0::/")
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert cgroup_memory_limit(root, proc) == 2**30


def test_cgroup_v2_the_tightest_ancestor_wins(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "kubepods/cpu.max", "400000 100000")
    write(root / "kubepods/memory.max", str(8 * 2**30))
    write(root / "kubepods/pod1/ctr/cpu.max", "max 100000")
    write(root / "kubepods/pod1/ctr/memory.max", "max")
    write(root / "kubepods/pod1/cpu.max", "200000 100000")
    proc = tmp_path / "proc-cgroup"
    write(proc, "0::/kubepods/pod1/ctr")
    assert cgroup_cpu_quota(root, proc) == 2.0
    assert cgroup_memory_limit(root, proc) == 8 * 2**30


def test_cgroup_v2_without_limits(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "max 100000")
    write(root / "memory.max", "max")
    proc = tmp_path / "proc-cgroup"
    write(proc, "0::/")
    assert cgroup_cpu_quota(root, proc) is None
    assert cgroup_memory_limit(root, proc) is None


def test_cgroup_v1_limits(tmp_path):
    """Hybrid v1 hierarchy (as on this machine): controllers mounted one folder each."""
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct/pod/cpu.cfs_quota_us", "250000")
    write(root / "cpu,cpuacct/pod/cpu.cfs_period_us", "100000")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1")
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000")
    write(root / "memory/pod/memory.limit_in_bytes", str(3 * 2**30))
    write(root / "memory/memory.limit_in_bytes", "9223372036854771712")  # v1's "no limit"
    proc = tmp_path / "proc-cgroup"
    write(proc, "4:memory:/pod\n3:cpu,cpuacct:/pod\n0::/")
    assert cgroup_cpu_quota(root, proc) == 2.5
    assert cgroup_memory_limit(root, proc) == 3 * 2**30


def test_cgroup_v1_host_path_not_mounted_in_the_container(tmp_path):
    """Older runtimes without a cgroup namespace: /proc says the host's path, the container's
    own cgroup is mounted at the root."""
    root = tmp_path / "cgroup"
    write(root / "memory/memory.limit_in_bytes", str(2**30))
    proc = tmp_path / "proc-cgroup"
    write(proc, "4:memory:/docker/0123abcd")
    assert cgroup_memory_limit(root, proc) == 2**30


def run_python(code: str, env: dict | None = None, preexec=None) -> str:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=preexec,
    ).stdout.strip()


def test_explicit_settings_win():
    """The downward API's numbers (KUBEDETECT_CPUS, KUBEDETECT_MEMORY_LIMIT) are what the pod
    asked for, whatever the cgroup or the node say."""
    code = "from kubedetect import resources as r; print(r.available_cores(), r.memory_limit())"
    out = run_python(code, {"KUBEDETECT_CPUS": "3", "KUBEDETECT_MEMORY_LIMIT": "1Gi"})
    assert out.split() == ["3", str(2**30)]
    out = run_python(code, {"KUBEDETECT_CPUS": "1500m", "KUBEDETECT_MEMORY_LIMIT": "123456789"})
    assert out.split() == ["2", "123456789"]


def test_a_bad_explicit_setting_names_the_variable():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_python(
            "from kubedetect import resources as r; r.memory_limit()",
            {"KUBEDETECT_MEMORY_LIMIT": "lots"},
        )
    assert "KUBEDETECT_MEMORY_LIMIT='lots'" in failed.value.stderr


def test_without_limits_the_machine_is_the_limit():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDETECT_")}
    code = "from kubedetect import resources as r; print(r.memory_limit(), r.physical_memory())"
    limit, ram = map(int, subprocess.check_output([sys.executable, "-c", code], env=env).split())
    assert 0 < limit <= ram


@pytest.fixture
def real_cgroup_v1():
    """A child cgroup of this machine's cpu and memory hierarchies (v1), removed afterwards."""
    name = f"kubedetect-test-{uuid.uuid4().hex[:8]}"
    made = []
    try:
        for controller in ("cpu", "memory"):
            folder = resources.CGROUP_ROOT / controller / name
            folder.mkdir()
            made.append(folder)
    except OSError as exc:
        for folder in made:
            folder.rmdir()
        pytest.skip(f"cannot make a cgroup v1 child here ({exc}); the parsing tests above cover it")
    yield {folder.parent.name: folder for folder in made}
    for folder in made:
        folder.rmdir()


def test_a_real_cgroup_quota_and_limit(real_cgroup_v1):
    """The kernel's own files: a process moved into a cgroup with a 1.5-core quota and a
    600 MB limit on a machine with more sees 2 cores and 600 MB."""
    cpu, memory = real_cgroup_v1["cpu"], real_cgroup_v1["memory"]
    (cpu / "cpu.cfs_period_us").write_text("100000")
    (cpu / "cpu.cfs_quota_us").write_text("150000")
    (memory / "memory.limit_in_bytes").write_text(str(600 * 2**20))

    def enter():
        for folder in (cpu, memory):
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDETECT_")}
    out = subprocess.run(
        [sys.executable, "-c", "from kubedetect import resources as r;"
         "print(r.available_cores(), r.memory_limit())"],
        env=env, capture_output=True, text=True, check=True, preexec_fn=enter,
    ).stdout.split()  # fmt: skip
    cores = min(2, len(os.sched_getaffinity(0)))
    assert out == [str(cores), str(600 * 2**20)]
