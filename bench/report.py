"""Writing benchmark results into docs/BENCHMARKS.md, one section per benchmark.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; running it
again replaces only its own section, stamped with the machine and the date, so results from
different runs stay side by side and honest about where they came from.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Measured by `make bench` (or `python -m bench.NAME` for one). Each section says on which
machine and when it ran; targets are from the issues and are checked here, not in tests.
"""


def machine() -> str:
    """The CPU model with the SIMD extensions that decide which kernels run (AVX2, AVX-512, VNNI,
    AMX: kubedetect.cpuinfo), the cores this process may use, memory, Python and kernel."""
    from kubedetect.cpuinfo import cpu_line, describe_cpu

    cpu = cpu_line(describe_cpu())
    cores = len(os.sched_getaffinity(0))
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {cores} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def stamp() -> str:
    return f"_Machine: {machine()}. Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}._"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/BENCHMARKS.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    block = (
        f"<!-- bench:{name} -->\n## {title}\n\n{stamp()}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    )
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    DOC.write_text(text)
    print(f"wrote section '{name}' of {DOC}")
