"""Pascal VOC ingestion: discovery, hardened parsing, validation, the problem report, splits and
synthetic data. TensorFlow-free.

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
