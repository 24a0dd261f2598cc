"""The problem report: every defect found in a dataset, with what was done about it.

Nothing is dropped silently. Each problem names the file (relative to the data folder, so reports
compare across machines), a kind from the table below, and a detail saying what was done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

# kind -> what kubedetect does about it (documented in docs/DATA.md)
KINDS = {
    "bad_xml": (
        "annotation not readable or unsafe (not XML, entities, wrong structure): file skipped"
    ),
    "bad_object": "object without a name or a numeric bndbox: object dropped",
    "missing_image": "no image file matches the annotation's <filename>: annotation skipped",
    "ambiguous_image": "several image files match the annotation's <filename>: annotation skipped",
    "duplicate_image": (
        "image used by two annotations (later one skipped), or same bytes as another (both kept)"
    ),
    "bad_image": "image undecodable, truncated or over the pixel limit: image skipped",
    "size_mismatch": "<size> disagrees with the real image: boxes rescaled to the real size",
    "degenerate_box": "zero-area or inverted box: box dropped",
    "clipped_box": "box beyond the image border: box clipped to the image",
    "unknown_class": "class not in the given class list: object dropped",
    "no_objects": "annotation without objects: image kept as a background example",
    "split_conflict": "stem listed in several ImageSets files: the first of test, val, train wins",
    "empty_split": (
        "no image fell in val (none listed, or too few images for --val-fraction): the train "
        "images with the lowest stem hashes moved to val"
    ),
    "unlabelled_image": "image that no annotation refers to: not used",
}


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    kind: str
    detail: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "file": self.file, "detail": self.detail}

    @classmethod
    def from_dict(cls, payload: dict[str, str]) -> Problem:
        return cls(file=payload["file"], kind=payload["kind"], detail=payload["detail"])


@dataclass(frozen=True)
class Report:
    """What a dataset holds once its problems are dealt with."""

    images: int
    objects: int
    classes: tuple[str, ...]
    problems: tuple[Problem, ...]
    objects_per_class: dict[str, int]

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload["classes"] = list(self.classes)
        payload["problems"] = [p.to_dict() for p in self.problems]
        payload["problem_counts"] = self.counts
        return payload

    @classmethod
    def from_dict(cls, payload: dict) -> Report:
        return cls(
            images=payload["images"],
            objects=payload["objects"],
            classes=tuple(payload["classes"]),
            problems=tuple(Problem.from_dict(p) for p in payload["problems"]),
            objects_per_class=dict(payload["objects_per_class"]),
        )

    def summary(self) -> str:
        """A plain-text table for terminals and logs."""
        lines = [f"{'images':<20}{self.images:>8}", f"{'objects':<20}{self.objects:>8}"]
        lines.append(f"{'classes':<20}{len(self.classes):>8}")
        for name in self.classes:
            lines.append(f"  {name:<18}{self.objects_per_class.get(name, 0):>8}")
        lines.append(f"{'problems':<20}{len(self.problems):>8}")
        for kind, count in self.counts.items():
            lines.append(f"  {kind:<18}{count:>8}  {KINDS[kind]}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ImageSummary:
    """What the report needs to know of one usable image."""

    key: str
    image: str
    sha256: str
    split: str
    class_ids: tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "image": self.image,
            "sha256": self.sha256,
            "split": self.split,
            "class_ids": list(self.class_ids),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> ImageSummary:
        return cls(**(payload | {"class_ids": tuple(payload["class_ids"])}))


def summarize(
    classes: tuple[str, ...], images: Iterable[ImageSummary], problems: Iterable[Problem]
) -> Report:
    """The report of a dataset from its usable images and the problems met on the way.

    Images with identical bytes under different names are found here, where every image's hash
    is known (also after shards were processed on different machines).
    """
    images = sorted(images, key=lambda s: s.key)
    problems = set(problems)
    first_with: dict[str, ImageSummary] = {}
    for summary in images:
        twin = first_with.setdefault(summary.sha256, summary)
        if twin is not summary:
            problems.add(
                Problem(summary.image, "duplicate_image", f"same bytes as {twin.image}: both kept")
            )
    per_class = Counter(classes[c] for s in images for c in s.class_ids)
    return Report(
        images=len(images),
        objects=sum(per_class.values()),
        classes=tuple(classes),
        problems=tuple(sorted(problems)),
        objects_per_class={name: per_class.get(name, 0) for name in classes},
    )


def describe(problems: Iterable[Problem]) -> str:
    """Problems in one line, for an error that stops a run before any report is written: the
    count of each kind and the first one in full."""
    problems = sorted(problems)
    if not problems:
        return "no problems found"
    counts = Counter(p.kind for p in problems)
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    return f"{kinds}; first: {problems[0].file}: {problems[0].detail}"
