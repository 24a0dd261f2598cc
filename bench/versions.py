"""Two versions of kubedetect side by side: this checkout and an earlier commit (a `git worktree`),
each run through its own entrypoints with the same Python environment, for the training
benchmarks that compare today's recipe with an earlier one in the same run.

The earlier version trains on shards it preprocessed itself (its own resize), and is evaluated
by its own `kubedetect evaluate`: each recipe is measured as a user of that version would run it.
Both versions run on the same machine, in alternation, so that whatever else the machine does
weighs on both.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("KUBEDETECT_BENCH_DIR", "/tmp/kubedetect-bench"))
SHARED = Path(os.environ.get("KUBEDETECT_SHARED", REPO.parent / "shared"))
BASELINE = "1162898"  # main before issue 19: stretched images, 24 epochs, Keras batch norm


@dataclass(frozen=True)
class Version:
    """A kubedetect source tree, run as `python -m kubedetect...` from its own folder."""

    name: str
    root: Path

    def module(self, role: str) -> str:
        """The module this version runs as `python -m` for `role` ("cli" or "train"): trees
        before issue 21's regroup had both at the top of kubedetect/."""
        regrouped = (self.root / "cli" / "main.py").exists()
        if role == "cli":
            return "cli" if regrouped else "cli"
        return "kubedetect.training.train" if regrouped else "kubedetect.train"

    def run(self, args: list[str], log: Path) -> float:
        """Run a kubedetect command of this version; its output to `log`; seconds taken."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(self.root))
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(log, "w") as out:
            done = subprocess.run(
                [sys.executable, "-m", *args],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if done.returncode:
            tail = log.read_text().splitlines()[-15:]
            raise RuntimeError(
                f"{self.name}: {' '.join(args)} failed ({done.returncode}); {log}:\n"
                + "\n".join(tail)
            )
        return time.perf_counter() - started

    def shards(self, data: Path, name: str, image_size: int = 256) -> Path:
        """`data` preprocessed by this version (once; reused while its manifest is there)."""
        out = WORK / "versions" / self.name / f"{name}-{image_size}"
        if not (out / "dataset.json").exists():
            self.run(
                [self.module("cli"), "preprocess", str(data), str(out), "--image-size",
                 str(image_size), "--quiet"],
                out.parent / f"{name}-preprocess.log",
            )  # fmt: skip
        return out

    def train(self, shards: Path, model: Path, flags: list[str]) -> float:
        """Training (one process) with `flags`; wall seconds."""
        return self.run(
            [self.module("train"), str(shards), str(model), "--no-progress", *flags],
            model.parent / f"{model.name}-train.log",
        )

    def evaluate(self, model: Path, shards: Path, split: str) -> dict:
        out = model.parent / f"{model.name}-{split}"
        self.run(
            [self.module("cli"), "evaluate", str(model), str(shards), "--split", split, "--out",
             str(out), "--quiet", "--no-plots"],
            model.parent / f"{model.name}-{split}.log",
        )  # fmt: skip
        return json.loads((out / "metrics.json").read_text())


def current() -> Version:
    return Version("current", REPO)


def baseline(commit: str = BASELINE) -> Version:
    """The earlier commit as a git worktree of this repository (made once, reused)."""
    root = WORK / "versions" / f"tree-{commit}"
    if not (root / "kubedetect").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
        done = subprocess.run(
            ["git", "worktree", "add", "--detach", str(root), commit],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(
                f"cannot check out {commit} as a worktree of {REPO} (a git clone with its "
                f"history is needed): {done.stderr.strip()}"
            )
    return Version(commit, root)


def history(model: Path) -> list[dict]:
    """A trained model's history.csv, numbers as floats."""
    with open(model / "history.csv", newline="") as f:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(f)]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def dataset(name: str) -> Path | None:
    """../shared/datasets/NAME, or None (with a message) where it is absent."""
    path = SHARED / "datasets" / name
    if not path.exists():
        print(f"{path} is absent: skipped", file=sys.stderr)
        return None
    return path
