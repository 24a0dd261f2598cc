"""`make bench`: every benchmark in turn; each writes its own section of docs/BENCHMARKS.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

ORDER = [
    "preprocess",
    "train",
    "quantize",
    "int8_kernels",
    "serve",
    "images",
    "models",  # many hours at its default 300 epochs: last
]  # others follow alphabetically


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    found = [
        m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in ("report", "__main__")
    ]
    wanted = argv or sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    failed = []
    for name in wanted:
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
