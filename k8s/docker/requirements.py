"""Print the requirements of some extras of pyproject.toml, one a line, for `pip install -r`.

Why: the Dockerfile installs the dependencies in a layer of their own, from pyproject.toml and
constraints.txt alone, before the source is copied in, so that editing the code reuses the cached
dependency layer (minutes of TensorFlow) instead of reinstalling it. The project itself is then
installed with `--no-deps`.

    python3 requirements.py [--core] [--exclude NAME ...] EXTRA [EXTRA ...]

`--core` adds the project's own `dependencies`; self-references such as `kubedetect[a,b]` are
expanded; `--exclude` leaves out packages an image does not use (named in the Dockerfile, with
the reason). Standard library only: it runs in the bare base image.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: dict, extras: list[str], core: bool) -> list[str]:
    own = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", [])) if core else []
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(
                f"pyproject.toml has no extra '{extra}' (it has: {', '.join(optional)})"
            )
        seen.add(extra)
        for requirement in optional[extra]:
            match = NAME.match(requirement)
            if match and canonical(match.group(1)) == own:
                pending += [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            else:
                found.append(requirement)
    return list(dict.fromkeys(found))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="+")
    parser.add_argument("--core", action="store_true", help="include the project's dependencies")
    parser.add_argument("--exclude", action="append", default=[], help="leave this package out")
    parser.add_argument("--pyproject", default="pyproject.toml")
    args = parser.parse_args(argv)
    project = tomllib.loads(Path(args.pyproject).read_text())["project"]
    excluded = {canonical(name) for name in args.exclude}
    for requirement in requirements(project, args.extras, args.core):
        match = NAME.match(requirement)
        if match and canonical(match.group(1)) in excluded:
            continue
        print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
