"""Container image sizes: the server image against its 400 MB budget, and the trainer image.

Builds both targets with k8s/build-images.sh (as `make images` does) on the base image this
machine has, then measures each image as the engine stores it (uncompressed, what a node's disk
holds), what it adds on top of its base, and its gzip-compressed export (roughly what a pull
downloads). Results go to the "images" section of docs/BENCHMARKS.md.

    python -m bench.images [--base-image IMAGE] [--tag TAG] [--gpu] [--no-build]

Needs a Docker engine (k8s/ci/docker-engine.sh starts one, and makes the stand-in base image
where python:3.11-slim cannot be pulled).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.report import table, verdict, write_section

REPO = Path(__file__).resolve().parent.parent
SERVER_BUDGET_MB = 400
BASE_CANDIDATES = ("kubedetect-base:bookworm", "python:3.11-slim")


def docker(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def present(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def size_bytes(image: str) -> int:
    return json.loads(docker("image", "inspect", image))[0]["Size"]


def compressed_bytes(image: str) -> int:
    """Bytes of `docker save IMAGE | gzip -1`, streamed (nothing written to disk)."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    total = 0

    class Counter:
        def write(self, data: bytes) -> int:
            nonlocal total
            total += len(data)
            return len(data)

        def flush(self) -> None:
            pass

    with gzip.GzipFile(fileobj=Counter(), mode="wb", compresslevel=1) as out:
        while chunk := save.stdout.read(1 << 20):
            out.write(chunk)
    if save.wait() != 0:
        raise RuntimeError(f"docker save {image} failed")
    return total


def mb(n: int) -> str:
    return f"{n / 1e6:.0f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.images", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--base-image", default=os.environ.get("KUBEDETECT_BASE_IMAGE"))
    parser.add_argument("--tag", default="bench")
    parser.add_argument("--gpu", action="store_true", help="also the tf-gpu trainer (large)")
    parser.add_argument("--no-build", action="store_true", help="measure images already built")
    args = parser.parse_args(argv)

    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        print(
            f"bench.images: no Docker engine ({exc}); run k8s/ci/docker-engine.sh", file=sys.stderr
        )
        return 1
    base = args.base_image or next((b for b in BASE_CANDIDATES if present(b)), None)
    if base is None or not present(base):
        print(f"bench.images: no base image ({' or '.join(BASE_CANDIDATES)})", file=sys.stderr)
        return 1

    images = {
        "server": f"kubedetect-server:{args.tag}",
        "trainer": f"kubedetect-trainer:{args.tag}",
    }
    if args.gpu:
        images["trainer (tf-gpu)"] = f"kubedetect-trainer:{args.tag}-gpu"
    build_seconds = None
    if not args.no_build:
        started = time.perf_counter()
        builds = [["--tag", args.tag]] + (
            [["--tag", args.tag, "--gpu", "--only", "trainer"]] if args.gpu else []
        )
        for extra in builds:
            command = ["k8s/build-images.sh", *extra, "--base-image", base, "--network", "host"]
            print("+", " ".join(command), flush=True)
            if subprocess.run(command, cwd=REPO).returncode != 0:
                return 1
        build_seconds = time.perf_counter() - started

    base_size = size_bytes(base)
    rows, sizes = [], {}
    for label, image in images.items():
        size = size_bytes(image)
        sizes[label] = size
        print(f"measuring {image} ...", flush=True)
        target = f"<= {SERVER_BUDGET_MB} MB" if label == "server" else "-"
        met = verdict(size <= SERVER_BUDGET_MB * 10**6) if label == "server" else "-"
        rows.append(
            [f"`{image}`", mb(size), mb(size - base_size), mb(compressed_bytes(image)), target, met]
        )
    rows.append([f"`{base}` (base)", mb(base_size), "-", mb(compressed_bytes(base)), "-", "-"])

    stand_in = base != "python:3.11-slim"
    body = [
        table(
            [
                "image",
                "size (MB)",
                "added over the base (MB)",
                "gzip export (MB)",
                "target",
                "verdict",
            ],
            rows,
        ),
        "",
        f"Base image: `{base}`"
        + (
            " (the Debian bookworm stand-in for python:3.11-slim built by k8s/ci/docker-engine.sh, "
            "trimmed as Debian's slim images are; no image can be pulled on this machine)."
            if stand_in
            else "."
        ),
        "Sizes are as the engine stores them (uncompressed, what a node's disk holds); the gzip "
        "export approximates what a pull downloads. The server image holds LiteRT, Flask, Gunicorn "
        "and prometheus-client, no TensorFlow and no matplotlib; the trainer image holds "
        "tensorflow-cpu, kfp, the training SDK and the project.",
    ]
    if build_seconds is not None:
        body.append(
            f"Both builds took {build_seconds:.0f} s in this run (BuildKit, pip cache mounts; "
            "warm or cold caches as they were)."
        )
    write_section("images", "Container images", "\n".join(body))
    return 0 if sizes["server"] <= SERVER_BUDGET_MB * 10**6 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
