"""`make bench` (python -m bench) runs the benchmarks of bench/__main__.py's registry and exits 0
when every one of them ran: a library module of bench/ taken for a benchmark (bench/load.py has
no `main`) made it exit 1 on every run, hiding the runs that did fail."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def defines_main(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def test_the_registry_names_exactly_the_modules_that_can_run():
    from bench.__main__ import BENCHMARKS

    runnable = {p.stem for p in BENCH.glob("*.py") if p.stem != "__main__" and defines_main(p)}
    assert set(BENCHMARKS) == runnable
    assert len(BENCHMARKS) == len(set(BENCHMARKS))
    assert not defines_main(BENCH / "load.py") and not defines_main(BENCH / "report.py")


def test_an_unknown_benchmark_is_named_and_nothing_runs():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "nonesuch"],
        cwd=BENCH.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no benchmark nonesuch; they are preprocess, train" in done.stderr
    assert "=== bench." not in done.stdout
