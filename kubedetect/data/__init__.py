"""Pascal VOC folders in, TFRecord shards out: discovery, hardened parsing, validation, the problem
report, splits and synthetic data (`scan`, `voc`, `layout`, `check`, `splits`, `synth`), the
per-image work of the worker processes (`prepare`, in the process pool of `pool`), the Example
schema of a shard (`example`) and the preprocessing run with its manifest (`shards`).

It imports `io` and the shared modules, never `inference`, `evaluation`, `network` or `training`;
TensorFlow only inside the functions that parse shards (`example`), never on import.

The names below are loaded on first use, not on `import kubedetect.data`: image worker processes
import `kubedetect.data.prepare`, and should not pay for the XML parser and the scan on start-up.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "KINDS": "report",
    "ImageSummary": "report",
    "Problem": "report",
    "Report": "report",
    "summarize": "report",
    "Box": "record",
    "Record": "record",
    "Dataset": "scan",
}
# Not `scan` itself: the name is also the submodule's, which Python binds on the package once
# imported. Call `kubedetect.data.scan.scan`.

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"kubedetect.data.{_EXPORTS[name]}"), name)
