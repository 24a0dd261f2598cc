"""Scanning a data folder: annotations parsed, images found, classes and splits decided.

The scan reads every XML but no image: it is cheap enough that every shard run repeats it and
so agrees with the others on classes, splits and shard assignment without talking to them.
Image-level checks (decoding, real size, box bounds) happen in `kubedetect.data.prepare`, in the
worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm

from kubedetect.config import DataConfig
from kubedetect.data.layout import ImageIndex, discover
from kubedetect.data.record import Box, Record
from kubedetect.data.report import Problem, describe
from kubedetect.data.splits import SplitPlan, carve_validation, stem_of
from kubedetect.data.voc import Annotation, parse_voc
from kubedetect.errors import AnnotationError, UnusableInputError
from kubedetect.io import fs
from kubedetect.io.labels import ClassMap


@dataclass(frozen=True)
class Dataset:
    root: str
    records: tuple[Record, ...]
    classes: ClassMap
    problems: tuple[Problem, ...]  # found by the scan; image-level ones come later

    def image_path(self, record: Record) -> str:
        return fs.join(self.root, record.image)


def scan(root: str, config: DataConfig = DataConfig(), *, progress: bool = False) -> Dataset:
    if not fs.isdir(root):
        raise UnusableInputError(f"{root}: no such folder")
    files = discover(root)
    if not files.annotations:
        raise UnusableInputError(f"{root}: no Pascal VOC annotations (*.xml) found")

    problems: list[Problem] = []
    annotations: list[Annotation] = []
    for rel in tqdm(files.annotations, desc="annotations", unit="xml", disable=not progress):
        try:
            data = fs.read_bytes(fs.join(root, rel))
            annotation = parse_voc(data, rel, max_bytes=config.max_xml_bytes)
        except AnnotationError as exc:
            problems.append(Problem(rel, "bad_xml", exc.detail))
            continue
        except OSError as exc:
            problems.append(Problem(rel, "bad_xml", f"not readable ({exc.strerror or exc})"))
            continue
        annotations.append(annotation)
        problems.extend(annotation.problems)

    classes = _class_map(root, annotations, config, problems)
    plan = SplitPlan(root, config.val_fraction)
    problems.extend(plan.problems)
    index = ImageIndex(files)

    records: list[Record] = []
    used_by: dict[str, str] = {}
    for annotation in annotations:
        match = index.find(annotation.filename, annotation.file)
        if match.image is None:
            problems.append(_unmatched(annotation, match.candidates))
            continue
        if match.image in used_by:
            problems.append(
                Problem(
                    annotation.file,
                    "duplicate_image",
                    f"{match.image} is already the image of {used_by[match.image]}: skipped",
                )
            )
            continue
        used_by[match.image] = annotation.file
        boxes, box_problems = _boxes(annotation, classes)
        problems.extend(box_problems)
        if not boxes:
            problems.append(
                Problem(annotation.file, "no_objects", "no usable objects: kept as background")
            )
        stem = stem_of(annotation.file)
        records.append(
            Record(
                key=annotation.file,
                image=match.image,
                declared_width=annotation.width,
                declared_height=annotation.height,
                boxes=boxes,
                split=plan.split_of(stem),
            )
        )

    records, carved = carve_validation(records, config.val_fraction, plan.lists_found)
    problems.extend(carved)
    for rel in files.images:
        if rel not in used_by:
            problems.append(
                Problem(rel, "unlabelled_image", "no annotation refers to it: not used")
            )
    return Dataset(root, tuple(records), classes, tuple(sorted(problems)))


def _class_map(
    root: str, annotations: list[Annotation], config: DataConfig, problems: list[Problem]
) -> ClassMap:
    if config.classes:
        return ClassMap.from_list(config.classes)
    names = {obj.name for a in annotations for obj in a.objects}
    if not names:
        raise UnusableInputError(
            f"{root}: no annotation names any object, so there are no classes to learn "
            f"({describe(problems)})"
        )
    return ClassMap.from_data(names)


def _boxes(annotation: Annotation, classes: ClassMap) -> tuple[tuple[Box, ...], list[Problem]]:
    boxes: list[Box] = []
    problems: list[Problem] = []
    for obj in annotation.objects:
        coords = f"[{obj.xmin:g}, {obj.ymin:g}, {obj.xmax:g}, {obj.ymax:g}]"
        where = f"object {obj.index} '{obj.name}'"
        if obj.name not in classes:
            problems.append(
                Problem(annotation.file, "unknown_class", f"{where} is not a known class: dropped")
            )
            continue
        if obj.xmax <= obj.xmin or obj.ymax <= obj.ymin:
            shape = "inverted" if obj.xmax < obj.xmin or obj.ymax < obj.ymin else "zero-area"
            problems.append(
                Problem(annotation.file, "degenerate_box", f"{where} {coords} is {shape}: dropped")
            )
            continue
        boxes.append(
            Box(
                obj.xmin,
                obj.ymin,
                obj.xmax,
                obj.ymax,
                classes.id(obj.name),
                difficult=obj.difficult,
                truncated=obj.truncated,
                index=obj.index,
            )
        )
    return tuple(boxes), problems


def _unmatched(annotation: Annotation, candidates: tuple[str, ...]) -> Problem:
    if candidates:
        return Problem(
            annotation.file,
            "ambiguous_image",
            f"<filename> {annotation.filename!r} matches {', '.join(candidates)}: skipped",
        )
    return Problem(
        annotation.file,
        "missing_image",
        f"no image named {annotation.filename!r} under the data folder: skipped",
    )
