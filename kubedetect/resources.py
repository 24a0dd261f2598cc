"""What this process may use: CPU cores and memory, as its pod (or container) allows.

A pod that requests 2 CPUs and 4 GiB on a 64-core, 256 GiB node sees all 64 cores in
`os.cpu_count()` and all 256 GiB in `/proc/meminfo`; sizing worker pools or caches by those starts
64 processes on a 2-CPU quota (throttled, every one of them slow) or fills memory until the kernel
kills the container. The limits Kubernetes actually enforces live in the container's cgroup: the
CPU quota (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1) and the memory
limit (`memory.max`, `memory.limit_in_bytes`). Read them here, once, for every pool and budget.

An explicit setting wins over both: `KUBEDETECT_CPUS` and `KUBEDETECT_MEMORY_LIMIT` (bytes, or a
Kubernetes quantity such as `1Gi`), which a manifest can fill from the downward API
(`resourceFieldRef: limits.memory`), and which is how a pod with a CPU request but no CPU limit
(no quota in its cgroup) says how many cores it asked for.

Only the standard library is used: serving, preprocessing and training all read this.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
CPUS_ENV = "KUBEDETECT_CPUS"
MEMORY_ENV = "KUBEDETECT_MEMORY_LIMIT"

# cgroup v1 writes "no limit" as the largest page-aligned 64-bit value; anything this large is
# no limit at all.
_UNLIMITED = 2**60

_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTPE]i?|[kmu]|e[0-9]+)?\s*$")
_SUFFIX = {
    "": 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "m": 10**-3, "u": 10**-6,
}  # fmt: skip


def parse_quantity(text: str) -> float:
    """A Kubernetes resource quantity ('2', '500m', '1.5Gi', '4e9') as a number."""
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix.startswith("e"):
        return number * 10 ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _cgroup_dirs(controller: str, root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup folder for `controller` and its ancestors, innermost first.

    A limit set on any ancestor applies too, so callers take the smallest. Inside a container
    with its own cgroup namespace the path is '/', and the folder is the mount itself; without a
    namespace (older runtimes on cgroup v1) the path names the host's hierarchy, which is not
    mounted in the container, so the mount root is always among the candidates.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controller == "v2" and controllers == "":
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
        elif controller != "v2" and controller in controllers.split(","):
            mount = root / controllers
            if not mount.exists():
                mount = root / controller
        else:
            continue
        relative = Path(path.lstrip("/"))
        for folder in [relative, *relative.parents]:
            candidate = mount / folder
            if candidate.is_dir() and candidate not in dirs:
                dirs.append(candidate)
    return dirs


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores (1.5 for 150000/100000), or None."""
    quotas = []
    for folder in _cgroup_dirs("v2", root, proc_cgroup):
        text = _read(folder / "cpu.max")  # "max 100000" or "150000 100000"
        if text and not text.startswith("max"):
            quota, period = text.split()[:2]
            quotas.append(int(quota) / int(period))
    for folder in _cgroup_dirs("cpu", root, proc_cgroup):
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None."""
    limits = []
    for folder in _cgroup_dirs("v2", root, proc_cgroup):
        text = _read(folder / "memory.max")
        if text and text != "max":
            limits.append(int(text))
    for folder in _cgroup_dirs("memory", root, proc_cgroup):
        text = _read(folder / "memory.limit_in_bytes")
        if text and int(text) < _UNLIMITED:
            limits.append(int(text))
    return min(limits) if limits else None


def _from_env(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = parse_quantity(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: not a number or a Kubernetes quantity") from None
    if number <= 0:
        raise ValueError(f"{name}={value!r}: must be positive")
    return number


def available_cores() -> int:
    """Whole cores this process may keep busy: KUBEDETECT_CPUS, else the least of the cores it
    may be scheduled on and its cgroup's CPU quota (rounded up: 1.5 cores keep two processes
    busy enough to use the quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    explicit = _from_env(CPUS_ENV)
    if explicit is not None:
        return max(1, math.ceil(explicit))
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def physical_memory() -> int:
    """The machine's RAM in bytes (what a process with no limit could use at most)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit() -> int:
    """Bytes this process's container may use: KUBEDETECT_MEMORY_LIMIT, else the least of its
    cgroup's memory limit and the machine's RAM."""
    explicit = _from_env(MEMORY_ENV)
    if explicit is not None:
        return int(explicit)
    limit = cgroup_memory_limit()
    ram = physical_memory()
    return min(limit, ram) if limit is not None else ram


def configure_threads(threads: int) -> bool:
    """Limit TensorFlow's op threads (several workers sharing a machine split its cores).

    False where TensorFlow already runs in this process (training called from a notebook or a
    test after other TensorFlow work): its thread pools are fixed then, and stay as they are.
    """
    import tensorflow as tf  # noqa: PLC0415

    if threads <= 0:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # "cannot be modified after initialization"
        return False
    return True
