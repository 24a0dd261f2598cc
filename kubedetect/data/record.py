"""What the scan hands to the image workers: one usable annotation and its boxes.

Kept apart from `kubedetect.data.scan` so that worker processes, which receive records and
import this module to unpickle them, do not also import the XML parser, the layout search and
the progress bar: a worker's start-up is a fixed cost of every preprocessing run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A box in the pixel frame declared by the annotation (x to the right, y down)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    class_id: int
    difficult: bool = False
    truncated: bool = False
    index: int = 0  # the <object>'s position in its XML file, so that reports can point at it


@dataclass(frozen=True)
class Record:
    """One usable annotation: an image, its declared frame, its boxes and its split."""

    key: str  # the annotation's path relative to the data folder: unique and stable
    image: str  # the image's path relative to the data folder
    declared_width: int | None
    declared_height: int | None
    boxes: tuple[Box, ...]
    split: str
