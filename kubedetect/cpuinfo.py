"""Which CPU a latency was measured on: its model name and the instruction-set extensions that
decide which XNNPACK kernels run.

A latency means little without them. XNNPACK picks its kernels when it starts, from what the CPU
offers: on x86, full int8 is fast with int8 dot products (AVX-512 VNNI, AVX-VNNI) and may be no
faster than float32 with AVX2 alone; on Arm, with the dot-product extension (asimddp) or i8mm.
So every latency kubedetect reports is printed beside the CPU it came from. Read from
/proc/cpuinfo (Linux, where kubedetect runs); elsewhere only the architecture is known.
"""

from __future__ import annotations

import os
import platform

# The extensions XNNPACK chooses kernels by, in the order people read them.
SIMD_FLAGS = (
    # x86
    "sse4_1", "avx", "fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8",
    # Arm
    "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)  # fmt: skip


def describe_cpu(cpuinfo: str | None = None) -> dict:
    """{'model': name, 'flags': the SIMD_FLAGS it has, 'cores': cores this process may use}."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor speaks for all
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Model") or platform.machine() or "unknown"
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "model": model,
        "flags": [flag for flag in SIMD_FLAGS if flag in present],
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


def cpu_line(cpu: dict) -> str:
    """'AMD EPYC (avx2 fma ... avx512_vnni)': what a latency is printed beside."""
    return f"{cpu['model']} ({' '.join(cpu['flags']) or 'no SIMD flags known'})"
