"""The real datasets in ../shared: cards and bccd check and preprocess as documented, and every
record of their shards, read back through tf.data, holds the boxes of its XML after the resize
transform (computed here from the XML with lxml, not with kubedetect's parser)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image, ImageOps
from test_data_support import assert_boxes_match, expected_boxes, oriented_size, read_shards

from kubedetect.config import PreprocessConfig
from kubedetect.data.check import check
from kubedetect.data.shards import preprocess

pytestmark = pytest.mark.shared
SIZE = 256
BCCD_ZERO_SIZE = ["Annotations/BloodImage_00338.xml", "Annotations/BloodImage_00343.xml"]


def annotations(root: Path) -> list[Path]:
    return sorted((root / "Annotations").glob("*.xml"))


def object_names(root: Path) -> list[str]:
    return [
        name.text.strip()
        for xml in annotations(root)
        for name in etree.parse(xml).iterfind("object/name")
    ]


def image_of(root: Path, xml: Path) -> Path:
    """The image an XML names, looked up without regard to case (as users expect)."""
    wanted = etree.parse(xml).findtext("filename").strip().lower()
    matches = [p for p in (root / "JPEGImages").iterdir() if p.name.lower() == wanted]
    assert len(matches) == 1, f"{xml.name}: {matches}"
    return matches[0]


def imagesets(root: Path) -> dict[str, set[str]]:
    folder = root / "ImageSets" / "Main"
    return {
        split: set((folder / f"{split}.txt").read_text().split())
        for split in ("train", "val", "test")
        if (folder / f"{split}.txt").exists()
    }


@pytest.fixture(scope="module")
def shards(request, tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, shards folder) of one real dataset, preprocessed at 256 px by 2 workers."""
    root = request.getfixturevalue(f"{request.param}_dir")
    out = tmp_path_factory.mktemp(f"{request.param}-shards")
    preprocess(str(root), str(out), PreprocessConfig(image_size=SIZE, workers=2, progress=False))
    return root, out


def test_cards_parse_to_363_images_670_objects_6_classes_and_no_problems(cards_dir):
    report = check(str(cards_dir), workers=2, progress=False)
    assert (report.images, report.objects, len(report.classes)) == (363, 670, 6)
    assert report.problems == ()
    names = object_names(cards_dir)
    assert report.classes == tuple(sorted(set(names)))
    assert report.objects_per_class == dict(Counter(names))
    # 311 of the images end in upper-case .JPG while their XML may say otherwise: all are found.
    assert sum(p.suffix == ".JPG" for p in (cards_dir / "JPEGImages").iterdir()) == 311


def test_bccd_reports_its_two_zero_size_boxes_and_keeps_every_image(bccd_dir):
    report = check(str(bccd_dir), workers=2, progress=False)
    assert [(p.kind, p.file) for p in report.problems] == [
        ("degenerate_box", f) for f in BCCD_ZERO_SIZE
    ]
    assert all("zero-area" in p.detail and "dropped" in p.detail for p in report.problems)
    assert report.images == len(annotations(bccd_dir)) == 364
    assert report.objects == len(object_names(bccd_dir)) - 2
    assert report.classes == ("Platelets", "RBC", "WBC")


@pytest.mark.parametrize("shards", ["cards", "bccd"], indirect=True)
def test_every_shard_record_holds_the_xml_boxes_after_the_resize(shards):
    root, out = shards
    records = read_shards(out)
    xmls = annotations(root)
    assert sorted(records) == [f"Annotations/{x.name}" for x in xmls]
    for xml in xmls:
        source = f"Annotations/{xml.name}"
        record = records[source]
        width, height = oriented_size(image_of(root, xml))
        assert record["original_size"] == (height, width), source
        assert record["image"].shape == (SIZE, SIZE, 3), source
        assert_boxes_match(record, expected_boxes(xml.read_bytes(), (width, height)), source)


@pytest.mark.parametrize("shards", ["cards", "bccd"], indirect=True)
def test_shard_images_are_the_source_photos_letterboxed_into_the_square(shards):
    """The stored pixels are the oriented photo scaled to fit 256x256 with its aspect ratio kept,
    centred on grey (up to JPEG loss), so the normalised boxes land on the same objects in the
    stored image. The reference is built here with Pillow alone."""
    root, out = shards
    records = read_shards(out)
    for xml in annotations(root)[::4]:
        with Image.open(image_of(root, xml)) as source:
            photo = ImageOps.exif_transpose(source).convert("RGB")
        scale = SIZE / max(photo.size)
        content = tuple(min(SIZE, max(1, round(side * scale))) for side in photo.size)
        reference = Image.new("RGB", (SIZE, SIZE), (114, 114, 114))
        corner = ((SIZE - content[0]) // 2, (SIZE - content[1]) // 2)
        reference.paste(photo.resize(content, Image.Resampling.BILINEAR), corner)
        stored = records[f"Annotations/{xml.name}"]["image"].astype(float)
        assert np.abs(stored - np.asarray(reference, dtype=float)).mean() < 6, xml.name


@pytest.mark.parametrize("shards", ["cards", "bccd"], indirect=True)
def test_splits_follow_imagesets(shards):
    root, out = shards
    listed = imagesets(root)
    records = read_shards(out)
    for source, record in records.items():
        stem = Path(source).stem
        if stem in listed.get("test", ()):
            assert record["split"] == "test", source
        elif "val" in listed:  # bccd: train/val/test lists are used as they are
            assert record["split"] == ("val" if stem in listed["val"] else "train"), source
        else:  # cards: no val list, so train.txt is divided between train and val by hash
            assert stem in listed["train"] and record["split"] in ("train", "val"), source
    counts = Counter(r["split"] for r in records.values())
    assert counts["test"] == len(listed["test"] & {Path(s).stem for s in records})
    assert counts["val"] > 0
