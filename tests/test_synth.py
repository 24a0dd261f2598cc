"""Synthetic data (`kubedetect data synth`): a real VOC folder, identical for the same seed, with
1 to 6 objects per image from at least 3 classes, that `data check` passes without problems."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lxml import etree
from PIL import Image
from test_data_support import kubedetect

from kubedetect.data.check import check
from kubedetect.data.synth import synthesize


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_another_seed_other_images(tmp_path):
    synthesize(str(tmp_path / "a"), 8, seed=5, progress=False)
    synthesize(str(tmp_path / "b"), 8, seed=5, progress=False)
    synthesize(str(tmp_path / "c"), 8, seed=6, progress=False)
    a, b, c = (files(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 8 * 2 + 2  # images, annotations, train.txt and val.txt
    assert all(a[name] != c[name] for name in a if name.startswith("JPEGImages/"))


def test_a_smaller_set_is_the_start_of_a_larger_one(tmp_path):
    synthesize(str(tmp_path / "small"), 3, seed=2, progress=False)
    synthesize(str(tmp_path / "large"), 6, seed=2, progress=False)
    small, large = files(tmp_path / "small"), files(tmp_path / "large")
    assert all(large[name] == data for name, data in small.items() if "ImageSets" not in name)


def test_a_valid_voc_tree_with_1_to_6_objects_from_3_classes(synth_dir):
    xmls = sorted((synth_dir / "Annotations").glob("*.xml"))
    assert len(xmls) == 60
    counts, classes = [], Counter()
    for xml in xmls:
        root = etree.parse(str(xml)).getroot()
        image_path = synth_dir / "JPEGImages" / root.findtext("filename")
        with Image.open(image_path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            width, height = image.size
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (
            width,
            height,
        )
        objects = root.findall("object")
        counts.append(len(objects))
        for obj in objects:
            classes[obj.findtext("name")] += 1
            x0, y0, x1, y1 = (
                int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")
            )
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, xml.name
    assert min(counts) >= 1 and max(counts) <= 6
    assert len(set(counts)) >= 4  # the counts vary
    assert len(classes) >= 3 and min(classes.values()) >= 10
    lists = {
        s: (synth_dir / "ImageSets" / "Main" / f"{s}.txt").read_text().split()
        for s in ("train", "val")
    }
    assert sorted(lists["train"] + lists["val"]) == sorted(x.stem for x in xmls)
    assert lists["val"]


def test_data_check_passes_without_problems(synth_dir, tmp_path):
    report = check(str(synth_dir), workers=2, progress=False)
    assert (report.images, report.problems) == (60, ())
    assert len(report.classes) >= 3
    result = kubedetect(
        "data", "check", synth_dir, "--strict", "--report", tmp_path / "r.json", "--quiet"
    )
    assert result.returncode == 0, result.stderr


def test_synth_command_writes_the_same_set_as_the_library(tmp_path):
    result = kubedetect(
        "data", "synth", tmp_path / "cli", "--images", "4", "--seed", "9", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 4 images" in result.stdout
    synthesize(str(tmp_path / "lib"), 4, seed=9, progress=False)
    assert files(tmp_path / "cli") == files(tmp_path / "lib")


def test_any_number_of_worker_processes_writes_the_same_files(tmp_path):
    """The images are drawn by a pool of processes: the files must not depend on how many."""
    one = synthesize(str(tmp_path / "one"), 70, seed=4, progress=False, workers=1)
    two = synthesize(str(tmp_path / "two"), 70, seed=4, progress=False, workers=2)
    assert one == two
    assert files(tmp_path / "one") == files(tmp_path / "two")
