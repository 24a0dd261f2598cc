"""`make bench`: every benchmark in turn; each writes its own section of docs/BENCHMARKS.md.

    python -m bench [NAME ...]

The benchmarks are the modules named in BENCHMARKS, run in that order; the other modules of
bench/ (load, report, kserve/) are their libraries. The exit code is 0 when every benchmark ran
and returned 0, else 1 (naming the ones that did not).
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = [
    "preprocess",
    "train",
    "train_speed",
    "train_photos",
    "train_memory",
    "quantize",
    "int8_kernels",
    "int8_avx2",
    "serve",
    "images",
    "demo",
    "candidates",  # hours at its default 150 epochs a candidate
    "models",  # many hours at its default 300 epochs: last
]


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(
            f"no benchmark {', '.join(unknown)}; they are {', '.join(BENCHMARKS)}", file=sys.stderr
        )
        return 2
    failed = []
    for name in argv or BENCHMARKS:
        print(f"=== bench.{name}", flush=True)
        start = time.time()
        try:
            code = importlib.import_module(f"bench.{name}").main([])
        except Exception as exc:  # one broken benchmark should not hide the others' results
            print(f"bench.{name} failed: {exc!r}", file=sys.stderr)
            code = 1
        print(f"=== bench.{name}: exit {code} in {time.time() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
