"""A worker's memory, divided by design: what its peak can be is a function of its settings.

A pod has a memory limit (`kubedetect.resources.memory_limit`: KUBEDETECT_MEMORY_LIMIT, else the
cgroup's limit, else the RAM); the kernel kills the container that passes it, and every request
in flight with it. A server that decodes whatever clients send, as many at once as it has
threads, has no peak but the clients': eight 40-megapixel transparent PNGs took 4.7 GB. So each
worker plans its share once it is warm (`MemoryPlan`) and decodes only within the part of it
left for images (`DecodeBudget`):

    share  = (limit - the Gunicorn master's memory) / workers
    decode = share - the worker's own memory once warm - request bodies - a margin

Request bodies are bounded by `max_body_bytes`, and a request thread holds at most about two
copies of its body (the bytes and what is parsed from them: a form's file, base64 decoded), so
`threads x max_body_bytes x 2` is set aside for them. Memory is counted as the kernel's
proportional set size, in which pages shared with the master after the fork count once.

A decode reserves what `kubedetect.io.images.decode_cost` says it will hold at its peak, before
any pixel is decoded. Reservations are granted in arrival order; one that does not fit waits
until earlier ones end, at most until its request's deadline (then 503 with Retry-After). An
image whose decode alone would not fit in the budget is refused (400), as a decompression bomb
is: it can never be decoded here.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.errors import DecoderBusy, NotAnImage

log = logging.getLogger("kubedetect.serving")

BODY_COPIES = 2  # copies of a request body a request thread holds at once (see the docstring)
MARGIN = 0.05  # of a worker's share, for what grows after the plan (allocator, caches)
MIN_DECODE = 32 * 2**20  # a worker always decodes something: refusing every image helps no one
MIB = 2**20


def resident(pid: int | str = "self") -> int:
    """The proportional set size of a process in bytes (shared pages divided among the
    processes that share them), or its resident set size where the kernel has no rollup."""
    for source, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return 0


@dataclass(frozen=True)
class MemoryPlan:
    """How one worker's share of the server's memory is spent, in bytes."""

    limit: int  # the whole server's (the pod's) memory
    share: int  # this worker's part of it
    baseline: int  # the worker's own memory once warm: code, model, interpreters
    bodies: int  # set aside for the request bodies its threads may hold
    decode: int  # what is left for decoding images

    @classmethod
    def make(
        cls,
        *,
        limit: int,
        workers: int,
        threads: int,
        max_body_bytes: int,
        master: int = 0,
        baseline: int | None = None,
    ) -> MemoryPlan:
        share = (limit - master) // max(1, workers)
        baseline = resident() if baseline is None else baseline
        bodies = threads * max_body_bytes * BODY_COPIES
        decode = int(share * (1 - MARGIN)) - baseline - bodies
        return cls(limit, share, baseline, bodies, max(decode, MIN_DECODE))

    def describe(self) -> str:
        return (
            f"memory: {self.share / MIB:.0f} MiB of {self.limit / MIB:.0f} MiB for this worker: "
            f"{self.baseline / MIB:.0f} MiB its own, {self.bodies / MIB:.0f} MiB for request "
            f"bodies, {self.decode / MIB:.0f} MiB to decode images (about "
            f"{self.decode / 4 / 1e6:.0f} megapixels of PNG at once)"
        )


class DecodeBudget:
    """Bytes of image decoding a worker may have under way at once, granted in arrival order."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._turns: collections.deque = collections.deque()
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, cost: int, deadline: float, source: str = "image"):
        """Hold `cost` bytes of the budget while the block runs; wait for them (first come,
        first served) until `deadline` (time.monotonic()), then raise DecoderBusy."""
        if cost > self.capacity:
            raise NotAnImage(
                f"{source}: decoding it takes about {cost / MIB:.0f} MiB, more than the "
                f"{self.capacity / MIB:.0f} MiB this server may spend on images at once; "
                "send a smaller image"
            )
        with self._changed:
            turn = object()
            self._turns.append(turn)
            try:
                while self._turns[0] is not turn or self.used + cost > self.capacity:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DecoderBusy("the server is busy decoding other images; retry shortly")
                    self._changed.wait(remaining)
                self.used += cost
            finally:
                self._turns.remove(turn)
                self._changed.notify_all()  # the next in line may fit now
        try:
            yield
        finally:
            with self._changed:
                self.used -= cost
                self._changed.notify_all()


LARGE_ALLOCATION = 8 * MIB  # and larger: mapped apart, and unmapped when freed
_M_MMAP_THRESHOLD = -3  # mallopt(3)'s parameter number, from glibc's malloc.h


def release_large_frees() -> bool:
    """Have glibc give large blocks back to the kernel as soon as they are freed.

    glibc's malloc lets each thread allocate from an arena of its own, and raises its mmap
    threshold after the first large block is freed, so that later large blocks come from the
    arenas and stay there once freed: four request threads that each decoded one 40-megapixel
    image in turn kept four times 160 MB resident, while the decode budget counted one. With
    the threshold fixed (mallopt(3), M_MMAP_THRESHOLD) every block of LARGE_ALLOCATION or more,
    such as Pillow's 16 MB blocks of pixels, is mapped on its own and unmapped when freed, and
    a worker's resident memory follows what its decodes hold. Called in Gunicorn's master before
    it forks (the setting is inherited); False where the C library has no mallopt.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION))
    except (OSError, AttributeError):
        return False
