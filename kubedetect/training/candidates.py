"""Candidate trainings: several runs that differ in what the user lists, scored, ranked, chosen.

One training run is one draw: on a few hundred photos another seed or learning rate can move
mAP by several points. So K candidates are trained (`CandidatesConfig`: every combination of
the seeds, learning rates and model sizes listed, repeated for each bootstrap sample of the
training split), each is scored on the validation split by mAP@0.5:0.95, and the best goes on,
or the best k fused into one model (kubedetect.inference.ensemble) whose members are weighted by
their validation scores: the bagging ensemble of CNNs weighted by validation scores that this
project grew from, with weighted box fusion for boxes.

On a cluster each candidate is a TFJob of its own (the pipeline's ParallelFor over `plan`).
Here `kubedetect candidates` runs them through the local launcher, one after another, or side
by side where the cores allow (one per CORES_PER_RUN cores), each then given its share of the
cores and of the memory limit. Both paths train with the same entrypoint and flags, and score
and choose with the functions below.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from kubedetect.config import CandidatesConfig
from kubedetect.errors import KubedetectError
from kubedetect.flags import add_arguments, from_args
from kubedetect.io import fs

CORES_PER_RUN = 2  # a training keeps about two cores busy (op threads and the input pipeline)
METRIC = "map50_95"  # what candidates are ranked by, on the validation split
BOOTSTRAP_SEED = 20  # with the sample number, seeds the draw: sample b is the same every run
RESULTS = "candidates.json"


@dataclass(frozen=True)
class Candidate:
    """One training of the set: its place, and the settings it changes (None: the training's
    own)."""

    index: int
    seed: int | None = None
    learning_rate: float | None = None
    model_size: str | None = None
    bootstrap: int = 0  # the bootstrap sample it trains on; 0: the whole training split

    @property
    def name(self) -> str:
        return f"c{self.index}"

    def settings(self) -> dict:
        """What this candidate sets, by TrainConfig/ModelConfig field name (and its sample)."""
        values = {
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "model_size": self.model_size,
            "bootstrap": self.bootstrap or None,
        }
        return {k: v for k, v in values.items() if v is not None}

    def describe(self) -> str:
        shown = [
            f"{key.replace('_', ' ')} {value:g}" if isinstance(value, float) else
            f"{key.replace('_', ' ')} {value}"
            for key, value in self.settings().items()
        ]  # fmt: skip
        return ", ".join(shown) or "the training's own settings"

    def train_flags(self) -> list[str]:
        """Flags for `kubedetect train` (after the common ones: the last of a flag wins)."""
        flags = []
        if self.seed is not None:
            flags += ["--seed", str(self.seed)]
        if self.learning_rate is not None:
            flags += ["--learning-rate", repr(self.learning_rate)]
        if self.model_size is not None:
            flags += ["--model-size", self.model_size]
        return flags

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise KubedetectError(f"not a candidate: {text!r} ({exc})") from None


def parse_flags(text: str) -> CandidatesConfig:
    """The candidates' settings from flags, as the pipeline's `candidates` parameter holds them
    (e.g. "--seeds 0,1,2 --ensemble-size 3"); a bad flag is an error naming it."""
    import argparse  # noqa: PLC0415
    import shlex  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="candidates", exit_on_error=False, add_help=False, allow_abbrev=False
    )
    add_arguments(parser, CandidatesConfig)
    try:
        namespace, unknown = parser.parse_known_args(shlex.split(text))
    except (argparse.ArgumentError, ValueError) as exc:
        raise KubedetectError(f"candidates {text!r}: {exc}") from None
    if unknown:
        known = ", ".join("--" + f.name.replace("_", "-") for f in fields(CandidatesConfig))
        raise KubedetectError(
            f"candidates {text!r}: unknown {' '.join(unknown)}; the candidates take {known}"
        )
    return from_args(CandidatesConfig, namespace)


def _values(field: str, raw, parse, check, what: str) -> list:
    if not raw:
        return [None]
    values = []
    for text in raw:
        try:
            value = parse(text)
        except ValueError:
            raise KubedetectError(f"--{field.replace('_', '-')} {text!r}: not {what}") from None
        if not check(value):
            raise KubedetectError(f"--{field.replace('_', '-')} {text!r}: not {what}")
        values.append(value)
    if len(set(values)) != len(values):
        raise KubedetectError(f"--{field.replace('_', '-')} {','.join(raw)}: a value is repeated")
    return values


def plan(config: CandidatesConfig) -> list[Candidate]:
    """The candidates, in order: every combination of the listed values, for each bootstrap
    sample (1..bootstrap) or the whole split."""
    from kubedetect.network.architecture import SIZES  # noqa: PLC0415 - the sizes the model knows

    seeds = _values("seeds", config.seeds, int, lambda v: v >= 0, "a seed (a whole number >= 0)")
    rates = _values("learning_rates", config.learning_rates, float, lambda v: 0 < v < 1,
                    "a learning rate (a number between 0 and 1)")  # fmt: skip
    sizes = _values("model_sizes", config.model_sizes, str, lambda v: v in SIZES,
                    f"a model size ({', '.join(SIZES)})")  # fmt: skip
    if config.bootstrap < 0:
        raise KubedetectError(f"--bootstrap {config.bootstrap}: a count of samples, 0 or more")
    samples = range(1, config.bootstrap + 1) if config.bootstrap else [0]
    grid = itertools.product(samples, seeds, rates, sizes)
    candidates = [
        Candidate(i, seed, rate, size, sample) for i, (sample, seed, rate, size) in enumerate(grid)
    ]
    if not 1 <= config.ensemble_size <= len(candidates):
        raise KubedetectError(
            f"--ensemble-size {config.ensemble_size}: between 1 and the number of candidates "
            f"({len(candidates)})"
        )
    if not 0 < config.fusion_iou < 1 or not 0 <= config.fusion_skip < 1:
        raise KubedetectError(
            f"--fusion-iou {config.fusion_iou} must be in (0, 1) and --fusion-skip "
            f"{config.fusion_skip} in [0, 1)"
        )
    return candidates


def machine_parallelism() -> int:
    """Trainings this machine runs well at once: one per CORES_PER_RUN cores available (on
    two cores, one after another: a training keeps both busy)."""
    from kubedetect.resources import available_cores  # noqa: PLC0415

    return max(1, available_cores() // CORES_PER_RUN)


def side_by_side(count: int) -> int:
    """How many of `count` trainings to run at once on this machine."""
    return max(1, min(count, machine_parallelism()))


# ----------------------------------------------------------------------------------------------
# Bootstrap samples of the training split
# ----------------------------------------------------------------------------------------------


def bootstrap_shards(shards_dir: str, out_dir: str, sample: int) -> dict:
    """Write into `out_dir` the shards of `shards_dir` with its training split replaced by
    bootstrap sample `sample`: as many images as the split has, drawn with replacement (about
    63 % of them distinct), the same draw for the same sample number. Validation and test
    splits are copied as they are. Returns the new manifest."""
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.data.shards import MANIFEST, load_manifest, shard_paths  # noqa: PLC0415
    from kubedetect.io.labels import ClassMap  # noqa: PLC0415
    from kubedetect.io.tfrecord import TFRecordWriter  # noqa: PLC0415

    if sample < 1:
        raise KubedetectError(f"bootstrap sample {sample}: samples are numbered from 1")
    manifest = load_manifest(shards_dir)
    records = list(tf.data.TFRecordDataset(shard_paths(shards_dir, "train")).as_numpy_iterator())
    if not records:
        raise KubedetectError(f"{shards_dir}: no training images to draw a bootstrap sample from")
    draw = np.random.default_rng([BOOTSTRAP_SEED, sample]).integers(0, len(records), len(records))
    fs.makedirs(out_dir)
    train_files = [f for f in manifest["shards"] if f["split"] == "train"]
    files = []
    for k, entry in enumerate(train_files):  # the same number of files, the draw dealt out
        picked = draw[k :: len(train_files)]
        with TFRecordWriter(fs.join(out_dir, entry["path"])) as writer:
            objects = 0
            for index in picked:
                writer.write(records[index])
                objects += _object_count(tf, records[index])
        files.append(entry | {"records": len(picked), "objects": objects, "sha256": writer.sha256})
    for entry in manifest["shards"]:
        if entry["split"] != "train":
            fs.write_bytes(
                fs.join(out_dir, entry["path"]), fs.read_bytes(fs.join(shards_dir, entry["path"]))
            )
            files.append(entry)
    train = manifest["splits"]["train"] | {
        "images": len(draw),
        "objects": sum(f["objects"] for f in files if f["split"] == "train"),
    }
    sampled = manifest | {
        "splits": manifest["splits"] | {"train": train},
        "shards": files,
        "bootstrap": {
            "sample": sample,
            "distinct_images": len(set(draw.tolist())),
            "of": fs.sha256_file(fs.join(shards_dir, MANIFEST)),
        },
    }
    fs.write_text(fs.join(out_dir, MANIFEST), json.dumps(sampled, indent=1) + "\n")
    ClassMap(tuple(manifest["classes"])).save(out_dir)
    return sampled


def _object_count(tf, record: bytes) -> int:
    example = tf.train.Example.FromString(record)
    return len(example.features.feature["image/object/class/label"].int64_list.value)


# ----------------------------------------------------------------------------------------------
# Scoring and choosing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A trained candidate: where its model is and how it scored on the validation split."""

    candidate: Candidate
    model_dir: str
    map50: float
    map50_95: float
    train_seconds: float

    def row(self) -> dict:
        return {
            "name": self.candidate.name,
            "settings": self.candidate.settings(),
            "map50": self.map50,
            "map50_95": self.map50_95,
            "train_seconds": self.train_seconds,
            "model": self.model_dir,
        }


def score(model_dir: str, shards_dir: str, *, threads: int = 0) -> dict:
    """The model's COCO metrics on the validation split (the one evaluator, no plots)."""
    from kubedetect.config import EvalConfig  # noqa: PLC0415
    from kubedetect.evaluation.evaluate import evaluate  # noqa: PLC0415

    config = EvalConfig(split="val", plots=False, threads=threads)
    return evaluate(model_dir, shards_dir, None, config, progress=False)


def rank(results: list[Result]) -> list[Result]:
    """Best first: by validation mAP@0.5:0.95, then mAP@0.5, then the earlier candidate."""
    return sorted(results, key=lambda r: (-r.map50_95, -r.map50, r.candidate.index))


def choose(results: list[Result], config: CandidatesConfig, out_dir: str) -> list[Result]:
    """Write the model that goes on into `out_dir`: a copy of the best candidate's export, or
    an ensemble of the best `ensemble_size` weighted by their validation scores. Returns the
    chosen, best first."""
    from kubedetect.inference.ensemble import Fusion, write_ensemble  # noqa: PLC0415

    if not results:
        raise KubedetectError("no candidate was trained: nothing to choose from")
    chosen = rank(results)[: config.ensemble_size]
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    if len(chosen) == 1:
        shutil.copytree(chosen[0].model_dir, out_dir)
        return chosen
    members = [
        # A member that scored 0 still counts a little: weights must be positive.
        (r.model_dir, max(r.map50_95, 1e-3), f"{r.candidate.name} ({r.candidate.describe()})")
        for r in chosen
    ]
    fusion = Fusion(iou_threshold=config.fusion_iou, skip_threshold=config.fusion_skip)
    provenance = {"candidates": [r.candidate.name for r in chosen]}
    write_ensemble(out_dir, members, fusion, provenance)
    return chosen


TABLE_HEADER = ("", "candidate", "settings", "val mAP@0.5:0.95", "val mAP@0.5", "training time")


def table_rows(results: list[Result], chosen: list[Result]) -> tuple[list[list[str]], str]:
    """The candidates' rows, best first, the chosen marked (cells as in TABLE_HEADER), and a
    sentence saying what was chosen."""
    names = [r.candidate.name for r in chosen]
    rows = []
    for r in rank(results):
        mark = ""
        if r.candidate.name in names:
            place = names.index(r.candidate.name) + 1
            mark = "chosen" if len(chosen) == 1 else f"fused ({place} of {len(chosen)})"
        rows.append(
            [mark, r.candidate.name, r.candidate.describe(), f"{r.map50_95:.4f}",
             f"{r.map50:.4f}", _duration(r.train_seconds)]
        )  # fmt: skip
    how = (
        f"the best by validation mAP@0.5:0.95, {names[0]}"
        if len(chosen) == 1
        else f"the boxes of the best {len(chosen)} fused (weighted box fusion, each weighted by "
        f"its validation mAP@0.5:0.95): {', '.join(names)}"
    )
    return rows, f"Chosen: {how}."


def table(results: list[Result], chosen: list[Result]) -> str:
    """The candidates as a Markdown table, best first, the chosen marked."""
    rows, chosen_text = table_rows(results, chosen)
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|---|---|---|---:|---:|---:|"]
    for mark, *cells in rows:
        lines.append("| " + " | ".join([f"**{mark}**" if mark else "", *cells]) + " |")
    return "\n".join([*lines, "", chosen_text])


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def plot(results: list[Result], chosen: list[Result], path: str) -> str:
    """Validation mAP of every candidate (bars, the chosen in colour) beside its training time."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ordered = rank(results)
    names = {r.candidate.name for r in chosen}
    labels = [f"{r.candidate.name}: {r.candidate.describe()}" for r in ordered]
    y = np.arange(len(ordered))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 1.2 + 0.45 * len(ordered)), sharey=True,
        gridspec_kw={"width_ratios": [2, 1]},
    )  # fmt: skip
    colours = ["#1565c0" if r.candidate.name in names else "#b0bec5" for r in ordered]
    left.barh(y, [r.map50_95 for r in ordered], color=colours, label="mAP@0.5:0.95")
    left.scatter([r.map50 for r in ordered], y, color="#e65100", marker="|", s=200, zorder=3,
                 label="mAP@0.5")  # fmt: skip
    left.set(yticks=y, yticklabels=labels, xlim=(0, 1), xlabel="validation mAP")
    left.invert_yaxis()
    left.legend(loc="lower right", fontsize="small")
    right.barh(y, [r.train_seconds / 60 for r in ordered], color=colours)
    right.set(xlabel="training time (min)")
    for side in (left, right):
        side.grid(axis="x", alpha=0.3)
    fig.suptitle("Candidates (chosen in blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# `kubedetect candidates SHARDS_DIR OUT_DIR`: train, score and choose here
# ----------------------------------------------------------------------------------------------


def shares(parallel: int) -> tuple[int, int]:
    """Cores and memory (bytes) of each of `parallel` trainings that share this machine."""
    from kubedetect.resources import available_cores, memory_limit  # noqa: PLC0415

    return max(1, available_cores() // parallel), memory_limit() // parallel


def train_locally(
    shards_dir: str,
    model_dir: str,
    train_argv: list[str],
    workers: int,
    *,
    parallel: int = 1,
    log_dir: str | None = None,
    out=None,
) -> float:
    """Train one model through the local launcher (`workers` processes) with its share of this
    machine when `parallel` trainings run at once; the training's wall-clock seconds."""
    from kubedetect.resources import MEMORY_ENV  # noqa: PLC0415
    from kubedetect.training.launch import launch  # noqa: PLC0415

    cores, memory = shares(parallel)
    flags = list(train_argv)
    if parallel > 1 and "--threads" not in flags:  # else as the user said
        flags += ["--threads", str(max(1, cores // workers))]
    env = dict(os.environ, **{MEMORY_ENV: str(memory)}) if parallel > 1 else None
    started = time.monotonic()
    code = launch(
        [shards_dir, model_dir, *flags],
        workers,
        threads=1 if "--threads" in flags else 0,  # 0: the launcher shares out all the cores
        env=env,
        log_dir=log_dir,
        out=out,
    )
    if code:
        raise KubedetectError(f"training {model_dir} failed (exit {code}): see its workers' log")
    return time.monotonic() - started


class _Prefixed:
    """A console stream whose lines are prefixed with a candidate's name (trainings side by
    side would otherwise interleave unlabelled)."""

    def __init__(self, prefix: str, out, lock: threading.Lock):
        self.prefix, self.out, self.lock, self.partial = prefix, out, lock, ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        with self.lock:
            for line in lines:
                self.out.write(f"[{self.prefix}] {line}\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def run(
    shards_dir: str,
    out_dir: str,
    config: CandidatesConfig,
    train_argv: list[str],
    *,
    workers: int = 1,
    log=print,
    out=None,
) -> dict:
    """Train every candidate into out_dir/<name>/ (a bootstrap candidate on its sample,
    written to out_dir/<name>-shards/ and kept: what it trained on), score each on the
    validation split, write the chosen model into out_dir/chosen/ and the table
    (candidates.md), the plot (candidates.png) and every figure (candidates.json) beside
    them."""
    import sys  # noqa: PLC0415

    candidates = plan(config)
    parallel = config.parallel or side_by_side(len(candidates))
    parallel = max(1, min(parallel, len(candidates)))
    out = out or sys.stdout
    os.makedirs(out_dir, exist_ok=True)
    log(
        f"{len(candidates)} candidate(s), {parallel} at a time, {workers} worker(s) each: "
        + "; ".join(f"{c.name} {c.describe()}" for c in candidates)
    )
    lock = threading.Lock()

    def one(candidate: Candidate) -> Result:
        model_dir = os.path.join(out_dir, candidate.name)
        shards = shards_dir
        if candidate.bootstrap:
            shards = os.path.join(out_dir, f"{candidate.name}-shards")
            bootstrap_shards(shards_dir, shards, candidate.bootstrap)
        stream = _Prefixed(candidate.name, out, lock) if parallel > 1 else out
        seconds = train_locally(
            shards, model_dir, [*train_argv, *candidate.train_flags()], workers,
            parallel=parallel, log_dir=os.path.join(out_dir, "logs", candidate.name), out=stream,
        )  # fmt: skip
        metrics = score(model_dir, shards_dir, threads=shares(parallel)[0])
        result = Result(candidate, model_dir, metrics["map50"], metrics["map50_95"], seconds)
        log(
            f"{candidate.name} ({candidate.describe()}): val mAP@0.5:0.95 {result.map50_95:.4f}, "
            f"mAP@0.5 {result.map50:.4f}, trained in {_duration(seconds)}"
        )
        return result

    if parallel == 1:
        results = [one(c) for c in candidates]
    else:
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            results = list(pool.map(one, candidates))
    chosen = choose(results, config, os.path.join(out_dir, "chosen"))
    text = table(results, chosen)
    fs.write_text(os.path.join(out_dir, "candidates.md"), text + "\n")
    plot(results, chosen, os.path.join(out_dir, "candidates.png"))
    summary = {
        "candidates": [r.row() for r in rank(results)],
        "chosen": [r.candidate.name for r in chosen],
        "metric": f"val {METRIC}",
        "parallel": parallel,
        "model": os.path.join(out_dir, "chosen"),
    }
    fs.write_text(os.path.join(out_dir, RESULTS), json.dumps(summary, indent=1) + "\n")
    log(text)
    return summary
