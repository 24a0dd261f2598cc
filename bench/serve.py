"""Serving throughput, latency and memory: kubedetect's Gunicorn server against the bare
interpreter and KServe's Python model server, side by side in one run, on loopback.

    python -m bench.serve [--model DIR] [--duration 60] [--concurrency 1,8,32] [--rounds 5]
                          [--pairs 30] [--pair-duration 10] [--no-heavy] [--no-write]

At each concurrency c, for `--duration` seconds each, in turn: the bare interpreter (serving's
own preprocess, predict and postprocess in one process, no HTTP, batches of up to 8 over a
closed loop of c requests: the upper bound), kubedetect /v1/detect (raw JPEG bodies) and KServe
V1 :predict (base64 JSON) on `kubedetect serve` (2 workers x 4 threads), and KServe 0.21's
ModelServer (2 workers) serving the same model through bench/kserve/detector_model.py. Load
comes from wrk on the same cores (bench.load.Wrk). Concurrency 8 runs `--rounds` rounds (every
other one in reverse order), then `--pairs` pairs of short kubedetect V1 / KServe V1 runs back
to back: two runs seconds apart see nearly the same machine, so their ratio is precise where
rounds a minute apart are not. Targets at concurrency 8 (bench.load.Paired): kubedetect at
least 0.9x KServe's throughput and 0.9x the bare interpreter's; zero errors; memory stable.

Every run records what else the shared machine did meanwhile (bench.load.OthersCpu) and each
server's CPU time per request. Last (unless --no-heavy), the memory of heavy uploads: 8 and then
32 concurrent 40-megapixel transparent PNGs against kubedetect in a 1 GiB memory cgroup, as
tests/serving/test_memory.py sends them (root and cgroup v1 needed; else skipped, saying so).
Servers start and stop through tests/servers.py, the tests' own lifecycle.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.load import UNDER_LOAD, OthersCpu, Paired, Wrk, children
from bench.report import table, verdict, write_section
from tests.servers import MemoryCgroup, Server, free_port, kserve_python, serve, uploads

REPO = Path(__file__).resolve().parent.parent
WORKERS, THREADS, MAX_BATCH, TARGET, RATIO = 2, 4, 8, 8, 0.9
BARE, OURS, V1, KSERVE = "bare interpreter", "kubedetect /v1/detect", "kubedetect V1", "KServe V1"
SERVING = ["--workers", str(WORKERS), "--threads", str(THREADS)]


def model_folder(work: Path) -> Path:
    """bench.quantize's int8 variant of the make-demo model if it exists (a trained model finds
    shapes, so the answers are of realistic size), else an untrained int8 256 px detector."""
    from bench.train import WORK
    from tests.servers import untrained_models

    int8 = WORK / "synthetic" / "variants" / "int8"
    if (int8 / "model.json").exists():
        return int8
    return Path(untrained_models(str(work / "model"), input_size=256, modes=("int8",))) / "int8"


def run_bare(model_dir: Path, files: list[Path], concurrency: int, duration: float) -> dict:
    """A closed loop of `concurrency` requests against the model in this process, no HTTP."""
    from serving.lifecycle import DetectorModel

    model = DetectorModel("detector", str(model_dir), num_threads=len(os.sched_getaffinity(0)))
    model.load()
    batch = min(concurrency, MAX_BATCH)
    model.warm_up(range(1, batch + 1))
    data = [f.read_bytes() for f in files]
    issued = collections.deque(time.perf_counter() for _ in range(concurrency))
    latencies, n, cpu, start = [], 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < duration:
        taken = [issued.popleft() for _ in range(batch)]
        prepared = [model.preprocess(data[(n + i) % len(data)]) for i in range(batch)]
        outputs = model.predict(np.stack([p.pixels for p in prepared]))
        for p, out in zip(prepared, outputs, strict=True):
            found = model.postprocess(out, p.width, p.height, model.defaults)
            json.dumps([d.to_dict() for d in found])
        now = time.perf_counter()
        latencies += [now - t for t in taken]
        issued.extend([now] * batch)
        n += batch
    ms = np.array(latencies) * 1000
    return {
        "rps": n / (time.perf_counter() - start),
        "cpu_ms": (time.process_time() - cpu) * 1000 / n,
        "errors": 0,
    } | {f"p{q}": np.percentile(ms, q) for q in (50, 95, 99)}


class RssSampler(threading.Thread):
    """Resident memory (MB) of a server's worker processes, every second."""

    def __init__(self, master: int):
        super().__init__(daemon=True)
        self.master, self.samples, self.halt = master, [], threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            with contextlib.suppress(OSError, IndexError):
                status = {p: Path(f"/proc/{p}/status").read_text() for p in children(self.master)}
                rss = {p: int(s.split("VmRSS:")[1].split()[0]) / 1024 for p, s in status.items()}
                self.samples.append(rss)

    def verdict(self) -> tuple[bool, str]:
        """Stable: no worker grew by more than max(2 %, 3 MB) over the second half of the runs
        (allocators and caches fill up in the first requests; a leak keeps growing)."""
        s = self.samples
        if len(s) <= 10:
            return False, "too few samples"
        first, middle, last = s[2], s[len(s) // 2], s[-1]
        pids = [p for p in first if p in middle and p in last]
        text = "; ".join(
            f"worker {i}: {first[p]:.0f} MB at 2 s, {middle[p]:.0f} half-way, {last[p]:.0f} at "
            f"the end (peak {max(x.get(p, 0) for x in s):.0f})"
            for i, p in enumerate(pids)
        )
        grew = [last[p] - middle[p] > max(0.02 * middle[p], 3.0) for p in pids]
        return bool(pids) and not any(grew), text


def measured(run) -> dict:
    """Run, with the CPU others on the shared machine took meanwhile."""
    with OthersCpu() as others:
        result = run()
    return result | {"load": (others.load_before, others.load_after), "others": others.cores}


def start_servers(model_dir: Path, work: Path) -> tuple[Server, Server]:
    """kubedetect and KServe on free ports of 127.0.0.1, each in its own process group."""
    for name in ("kubedetect", "kserve"):
        (work / name).mkdir()
    ours = serve(model_dir, work / "kubedetect", flags=SERVING, session=True)
    port = free_port()
    settings = {"KD_MODEL_DIR": str(model_dir), "KD_PORT": str(port), "KD_NUM_THREADS": "1"}
    settings |= {"KD_WORKERS": str(WORKERS), "PYTHONPATH": str(REPO)}
    peer = [str(kserve_python()), str(REPO / "bench/kserve/detector_model.py")]
    kserve = Server(peer, work / "kserve", port=port, env=os.environ | settings, session=True)
    return ours.wait(), kserve.wait("/v1/models/detector", timeout=120)


def heavy(model_dir: Path, work: Path) -> str:
    """Peak memory of kubedetect in a 1 GiB cgroup under 8, then 32, concurrent 40-megapixel
    transparent PNG uploads (JSON and drawn JPEG), as tests/serving/test_memory.py sends them."""
    cgroup = MemoryCgroup.make(2**30)
    if cgroup is None:
        return "Heavy uploads: skipped (a memory cgroup needs root and cgroup v1)."
    png = io.BytesIO()
    Image.new("RGBA", (6300, 6300), (200, 30, 30, 100)).save(png, "PNG")
    work.mkdir()
    server = serve(model_dir, work, flags=SERVING, preexec_fn=cgroup.enter).wait()
    rows = []
    try:
        for count in (8, 32):
            for fmt in ("json", "jpeg"):
                started = time.monotonic()
                answers = uploads(f"{server.url}/v1/detect?format={fmt}", png.getvalue(), count)
                statuses = dict(sorted(collections.Counter(a[0] for a in answers).items()))
                seconds = f"{time.monotonic() - started:.1f}"
                rows.append([count, fmt, statuses, seconds, f"{cgroup.peak / 2**20:.0f}"])
        killed = cgroup.oom_kills
    finally:
        server.stop()
        cgroup.remove()
    return (
        f"Heavy uploads: kubedetect ({WORKERS} workers x {THREADS} threads) in a memory cgroup "
        "of 1 GiB (the Deployment's limit); each upload a 6300 x 6300 transparent PNG (39.7 "
        "megapixels, 170 kB), raw and multipart alternately; 'peak' is the cgroup's "
        f"max_usage_in_bytes so far. Processes killed for memory: {killed}.\n\n"
        + table(["uploads at once", "format", "answers", "seconds", "peak MiB"], rows)
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__[:60])
    parser.add_argument("--model", type=Path, help="a TFLite model folder (see model_folder)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=5, help="rounds at concurrency 8")
    parser.add_argument("--pairs", type=int, default=30, help="pairs of V1 runs at 8")
    parser.add_argument("--pair-duration", type=float, default=10.0, help="seconds a pair run")
    parser.add_argument("--no-heavy", action="store_true", help="skip the heavy uploads")
    parser.add_argument("--no-write", action="store_true", help="leave docs/BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir, wrk = args.model or model_folder(work), Wrk(work)
    from kubedetect.data.synth import synthesize

    synthesize(str(work / "images"), 24, seed=3, progress=False)
    files = sorted((work / "images" / "JPEGImages").glob("*.jpg"))
    v1_bodies = [work / (f.stem + ".json") for f in files]
    for f, body in zip(files, v1_bodies, strict=True):
        encoded = base64.b64encode(f.read_bytes()).decode()
        body.write_text(json.dumps({"instances": [{"image": {"b64": encoded}}]}))
    results, pairs = collections.defaultdict(list), {}

    # Both servers stay up throughout (idle, neither takes CPU from the other) and the runs
    # alternate: a change in what else the machine does shows in all of them.
    ours, kserve = start_servers(model_dir, work)
    sampler = RssSampler(ours.process.pid)
    sampler.start()
    try:
        for c in levels:
            runs = [
                (BARE, lambda d, c=c: run_bare(model_dir, files, c, d)),
                (
                    OURS,
                    lambda d, c=c: wrk.run(
                        ours.url + "/v1/detect", files, "image/jpeg", c, d, ours
                    ),
                ),
            ] + [
                (
                    name,
                    lambda d, c=c, s=s: wrk.run(
                        s.url + "/v1/models/detector:predict",
                        v1_bodies,
                        "application/json",
                        c,
                        d,
                        s,
                    ),
                )
                for name, s in ((V1, ours), (KSERVE, kserve))
            ]
            for round_ in range(args.rounds if c == TARGET else 1):
                for name, run in runs[::-1] if round_ % 2 else runs:  # drift favours no one
                    r = measured(lambda run=run: run(args.duration))
                    results[(name, c)].append(r)
                    print(
                        f"{name:<22} c={c:<3} {r['rps']:8.1f} req/s  p99 {r['p99']:7.2f} ms  "
                        f"errors {r['errors']}  others {r['others']:.2f} cores",
                        flush=True,
                    )
            if c == TARGET and args.pairs > 0:
                pairs = {V1: [], KSERVE: []}
                for i in (progress := tqdm(range(args.pairs), desc="pairs", unit="pair")):
                    for name, run in runs[2:][::-1] if i % 2 else runs[2:]:
                        pairs[name].append(measured(lambda run=run: run(args.pair_duration)))
                    progress.set_postfix(
                        ratio=f"{pairs[V1][-1]['rps'] / pairs[KSERVE][-1]['rps']:.3f}"
                    )
    finally:
        sampler.halt.set()
        ours.stop()
        kserve.stop()
    memory = "Heavy uploads: not run (--no-heavy)."
    if not args.no_heavy:
        memory = heavy(model_dir, work / "heavy")
    body = report(results, pairs, levels, sampler, args, model_dir) + "\n\n" + memory
    print(body)
    if not args.no_write:
        title = "Serving: throughput, latency and memory (kubedetect, bare interpreter, KServe)"
        write_section("serve", title, body)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results, pairs, levels, sampler, args, model_dir) -> str:
    order = [BARE, OURS, V1, KSERVE]
    rows = [
        [
            name,
            c,
            i if len(runs) > 1 else "",
            f"{r['rps']:.0f}",
            f"{r['cpu_ms']:.2f}",
            r.get("split", "-"),
            f"{r['p50']:.1f}",
            f"{r['p95']:.1f}",
            f"{r['p99']:.1f}",
            r["errors"],
            "{:.2f} / {:.2f}".format(*r["load"]),
            f"{r['others']:.2f}",
            "yes" if r["others"] > UNDER_LOAD else "no",
        ]
        for (name, c), runs in sorted(
            results.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
        )
        for i, r in enumerate(runs, 1)
    ]
    header = ["server", "concurrency", "round", "req/s", "CPU ms / request"]
    header += ["connections per worker", "p50", "p95", "p99", "errors"]
    header += ["load avg before / after", "others' CPU (cores)", "under load"]
    card = json.loads((Path(model_dir) / "model.json").read_text())
    c = TARGET if TARGET in levels else levels[len(levels) // 2]
    vs_bare = Paired(results[(OURS, c)], results[(BARE, c)])
    if pairs:  # many ratios of runs seconds apart: a far narrower interval than the rounds'
        vs_kserve = Paired(pairs[V1], pairs[KSERVE], "pair")
    else:
        vs_kserve = Paired(results[(V1, c)], results[(KSERVE, c)])
    cpu = {n: statistics.mean(r["cpu_ms"] for r in results[(n, c)]) for n in (BARE, V1, KSERVE)}
    ours = [r for (n, _), runs in results.items() if n != KSERVE for r in runs] + pairs.get(V1, [])
    errors = sum(r["errors"] for r in ours)
    p99 = {n: statistics.median(r["p99"] for r in pairs.get(n) or results[(n, c)]) for n in order}
    stable, memory = sampler.verdict()
    runs = [r for group in (*results.values(), *pairs.values()) for r in group]
    disturbed = sum(r["others"] > UNDER_LOAD for r in runs)
    return "\n".join(
        [
            f"Model: `{model_dir}` ({card['variant']}, {card['input_size']} px). {args.duration:.0f} s "
            "per run; synthetic 224-352 px JPEGs; loopback; wrk on the same 2 cores. kubedetect: "
            f"{WORKERS} Gunicorn workers (gthread) x {THREADS} threads, batches of up to {MAX_BATCH}; "
            f"KServe 0.21: {WORKERS} uvicorn workers; both log as they ship. Latencies in ms. The "
            "machine is shared: 'load avg' is the 1-minute load average before / after a run, "
            "'others' CPU' what every other process took during it, in cores ('under load': more "
            f"than {UNDER_LOAD}). 'CPU ms / request': the server's processes' CPU time per answer "
            "(the bare interpreter: the benchmark's own). 'connections per worker': how the "
            "server's processes held wrk's keep-alive connections.",
            "",
            table(header, rows),
            "",
            f"Targets at concurrency {c}, a ratio met only if the lower end of the 90 % interval of "
            f"its geometric mean clears it (bench.load.Paired); runs disturbed by others: "
            f"{disturbed} of {len(runs)}.",
            "",
            f"- /v1/detect >= {RATIO}x the bare interpreter (rounds): {vs_bare}: "
            + verdict(vs_bare.low >= RATIO),
            f"- kubedetect V1 >= {RATIO}x KServe V1 ({'pairs' if pairs else 'rounds'}): {vs_kserve}: "
            + verdict(vs_kserve.low >= RATIO),
            "- p99 (median of the runs"
            + (", the pairs for V1" if pairs else "")
            + "): "
            + ", ".join(f"{n} {p:.1f} ms" for n, p in p99.items()),
            f"- zero errors (every kubedetect run): {errors}: {verdict(errors == 0)}",
            f"- workers' memory stable ({len(sampler.samples)} samples): {memory}: {verdict(stable)}",
            "",
            f"CPU per request at concurrency {c} (mean of the rounds): kubedetect V1 {cpu[V1]:.2f} "
            f"ms, KServe V1 {cpu[KSERVE]:.2f} ms, the bare interpreter {cpu[BARE]:.2f} ms (its "
            "interpreter on both cores).",
        ]
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
