"""The folder layouts users have, how an annotation finds its image, splits and class lists.

Scanning reads XML only, so most of these run `kubedetect.data.scan.scan` in-process on small
trees made here; the image files only need to exist.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from test_data_support import add_image, jpeg_bytes, photo, read_shards, voc_xml, write

from cli.main import build_parser
from kubedetect.config import DataConfig, PreprocessConfig
from kubedetect.data.scan import scan
from kubedetect.data.shards import preprocess
from kubedetect.errors import UnusableInputError
from kubedetect.flags import from_args

JPEG = jpeg_bytes(photo(48, 32))


def records(root: Path, **config) -> dict[str, str]:
    """annotation -> image, for every usable annotation."""
    return {r.key: r.image for r in scan(str(root), DataConfig(**config)).records}


def problems(root: Path, **config) -> list[tuple[str, str]]:
    return [(p.kind, p.file) for p in scan(str(root), DataConfig(**config)).problems]


def pair(root: Path, image: str, xml: str, *, filename: str | None = None, name="cat") -> None:
    """An image file and an annotation naming it (or naming `filename` instead)."""
    write(root / image, JPEG)
    write(root / xml, voc_xml(filename or Path(image).name, (48, 32), [(name, 1, 1, 20, 20)]))


# -- layouts --------------------------------------------------------------------------------------


def test_standard_voc_tree(synth_dir):
    found = records(synth_dir)
    xmls = sorted(p.name for p in (synth_dir / "Annotations").glob("*.xml"))
    assert sorted(found) == [f"Annotations/{x}" for x in xmls]
    assert all(found[f"Annotations/{x}"] == f"JPEGImages/{x[:-4]}.jpg" for x in xmls)
    assert problems(synth_dir) == []


def test_flat_labelimg_export_in_subfolders(tmp_path):
    pair(tmp_path, "a.jpg", "a.xml")
    pair(tmp_path, "batch1/b.png", "batch1/b.xml")
    pair(tmp_path, "batch1/day2/c.jpeg", "batch1/day2/c.xml")
    # The same file name in two batches, each beside its own XML: the nearer one is taken.
    pair(tmp_path, "batch1/x.jpg", "batch1/x.xml")
    pair(tmp_path, "batch2/x.jpg", "batch2/x.xml")
    assert records(tmp_path) == {
        "a.xml": "a.jpg",
        "batch1/b.xml": "batch1/b.png",
        "batch1/day2/c.xml": "batch1/day2/c.jpeg",
        "batch1/x.xml": "batch1/x.jpg",
        "batch2/x.xml": "batch2/x.jpg",
    }
    assert problems(tmp_path, val_fraction=0) == []  # (five images: none hashes to val)


def test_split_trees_with_images_beside_annotations_or_annots(tmp_path):
    pair(tmp_path, "train/images/p.jpg", "train/annotations/p.xml")
    pair(tmp_path, "valid/images/q.jpg", "valid/annots/q.xml")
    pair(tmp_path, "test/images/p.jpg", "test/annotations/p.xml")  # same name as in train/
    pair(tmp_path, "images/r.jpg", "annotations/r.xml")
    assert records(tmp_path) == {
        "annotations/r.xml": "images/r.jpg",
        "test/annotations/p.xml": "test/images/p.jpg",
        "train/annotations/p.xml": "train/images/p.jpg",
        "valid/annots/q.xml": "valid/images/q.jpg",
    }
    assert problems(tmp_path) == []


# -- matching an annotation to its image ----------------------------------------------------------


def test_filename_matches_without_regard_to_case(tmp_path):
    pair(tmp_path, "JPEGImages/IMG_0001.JPG", "Annotations/IMG_0001.xml", filename="IMG_0001.jpg")
    pair(tmp_path, "JPEGImages/img_0002.jpg", "Annotations/img_0002.xml", filename="IMG_0002.JPG")
    assert records(tmp_path) == {
        "Annotations/IMG_0001.xml": "JPEGImages/IMG_0001.JPG",
        "Annotations/img_0002.xml": "JPEGImages/img_0002.jpg",
    }


def test_stem_fallbacks_and_windows_paths(tmp_path):
    # Converted to PNG after labelling: the declared stem with another image extension.
    pair(tmp_path, "JPEGImages/photo.png", "Annotations/photo.xml", filename="photo.jpg")
    # Renamed after labelling: <filename> is the camera's name, the XML's own stem is right.
    pair(tmp_path, "JPEGImages/scene.jpg", "Annotations/scene.xml", filename="DSC_0001.JPG")
    # labelImg on Windows writes a full path.
    pair(tmp_path, "JPEGImages/w.jpg", "Annotations/w.xml", filename="C:\\Users\\me\\data\\w.jpg")
    assert records(tmp_path) == {
        "Annotations/photo.xml": "JPEGImages/photo.png",
        "Annotations/scene.xml": "JPEGImages/scene.jpg",
        "Annotations/w.xml": "JPEGImages/w.jpg",
    }


def test_ambiguous_and_missing_matches_are_reported_not_guessed(tmp_path):
    write(tmp_path / "a" / "dup.jpg", JPEG)
    write(tmp_path / "b" / "dup.jpg", JPEG)
    write(tmp_path / "dup.xml", voc_xml("dup.jpg", (48, 32), [("cat", 1, 1, 20, 20)]))
    write(tmp_path / "gone.xml", voc_xml("gone.jpg", (48, 32), [("cat", 1, 1, 20, 20)]))
    pair(tmp_path, "ok.jpg", "ok.xml")
    dataset = scan(str(tmp_path))
    assert [r.key for r in dataset.records] == ["ok.xml"]
    found = {(p.kind, p.file): p.detail for p in dataset.problems}
    assert "a/dup.jpg, b/dup.jpg" in found[("ambiguous_image", "dup.xml")]
    assert "gone.jpg" in found[("missing_image", "gone.xml")]
    # An annotation inside one of the folders is nearer to its own copy: no ambiguity.
    write(tmp_path / "a" / "dup.xml", voc_xml("dup.jpg", (48, 32), [("cat", 1, 1, 20, 20)]))
    assert records(tmp_path)["a/dup.xml"] == "a/dup.jpg"


# -- splits ---------------------------------------------------------------------------------------


def flat_tree(root: Path, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        pair(root, f"img_{i:04d}.jpg", f"img_{i:04d}.xml")


def splits(root: Path, **config) -> dict[str, str]:
    return {r.key: r.split for r in scan(str(root), DataConfig(**config)).records}


def test_imagesets_lists_decide_the_splits(tmp_path):
    flat_tree(tmp_path, 12)
    lists = {"train": range(0, 6), "val": range(6, 9), "test": range(9, 12)}
    for split, ids in lists.items():
        write(
            tmp_path / "ImageSets" / "Main" / f"{split}.txt", "".join(f"img_{i:04d}\n" for i in ids)
        )
    expected = {f"img_{i:04d}.xml": split for split, ids in lists.items() for i in ids}
    assert splits(tmp_path, val_fraction=0.5) == expected  # the lists win over the fraction


def test_without_imagesets_a_stable_hash_of_the_stem_decides(tmp_path):
    flat_tree(tmp_path, 200)
    first = splits(tmp_path, val_fraction=0.25)
    assert splits(tmp_path, val_fraction=0.25) == first  # the same on every run
    assert set(first.values()) == {"train", "val"}
    assert 0.15 < Counter(first.values())["val"] / 200 < 0.35
    # Adding images moves none of the old ones.
    flat_tree(tmp_path, 50, start=200)
    grown = splits(tmp_path, val_fraction=0.25)
    assert {k: grown[k] for k in first} == first
    # A larger fraction only moves images from train to val.
    larger = splits(tmp_path, val_fraction=0.5)
    assert all(larger[k] == "val" for k, v in grown.items() if v == "val")
    assert set(splits(tmp_path, val_fraction=0.0).values()) == {"train"}


def test_a_train_list_without_val_list_is_divided_by_the_hash(tmp_path):
    """As in the cards set: ImageSets has train and test lists, no val list."""
    flat_tree(tmp_path, 40)
    write(
        tmp_path / "ImageSets" / "Main" / "train.txt", "".join(f"img_{i:04d}\n" for i in range(30))
    )
    write(
        tmp_path / "ImageSets" / "Main" / "test.txt",
        "".join(f"img_{i:04d}\n" for i in range(30, 40)),
    )
    result = splits(tmp_path, val_fraction=0.3)
    assert all(result[f"img_{i:04d}.xml"] == "test" for i in range(30, 40))
    assert {result[f"img_{i:04d}.xml"] for i in range(30)} == {"train", "val"}
    assert set(splits(tmp_path, val_fraction=0.0).values()) == {"train", "test"}


def test_val_fraction_reaches_the_shards(tmp_path):
    flat_tree(tmp_path / "data", 30)
    out = tmp_path / "out"
    config = PreprocessConfig(image_size=32, num_shards=1, workers=1, progress=False)
    manifest = preprocess(str(tmp_path / "data"), str(out), config, DataConfig(val_fraction=0.4))
    expected = Counter(splits(tmp_path / "data", val_fraction=0.4).values())
    assert {s: e["images"] for s, e in manifest["splits"].items()} == dict(expected)
    assert Counter(r["split"] for r in read_shards(out).values()) == expected


# -- classes --------------------------------------------------------------------------------------


def test_classes_default_to_the_sorted_names_in_the_data(tmp_path):
    for i, name in enumerate(["zebra", "ant", "moose"]):
        pair(tmp_path, f"{i}.jpg", f"{i}.xml", name=name)
    assert scan(str(tmp_path)).classes.names == ("ant", "moose", "zebra")


def test_class_list_sets_the_ids_and_drops_unknown_classes(tmp_path):
    data = tmp_path / "data"
    add_image(data, "a.jpg", "a.xml", (64, 48), [("zebra", 1, 1, 20, 20), ("cat", 5, 5, 30, 30)])
    add_image(
        data, "b.jpg", "b.xml", (64, 48), [("dog", 1, 1, 20, 20), ("cat", 2, 2, 9, 9)], seed=1
    )
    dataset = scan(str(data), DataConfig(classes=("zebra", "cat"), val_fraction=0))
    assert dataset.classes.names == ("zebra", "cat")
    assert [(p.kind, p.file) for p in dataset.problems] == [("unknown_class", "b.xml")]
    out = tmp_path / "out"
    config = PreprocessConfig(image_size=32, num_shards=1, workers=1, progress=False)
    preprocess(str(data), str(out), config, DataConfig(classes=("zebra", "cat")))
    assert json.loads((out / "labels.json").read_text()) == {"classes": ["zebra", "cat"]}
    shards = read_shards(out)
    assert (shards["a.xml"]["names"], shards["a.xml"]["class_ids"]) == (["zebra", "cat"], [0, 1])
    assert (shards["b.xml"]["names"], shards["b.xml"]["class_ids"]) == (["cat"], [1])


def test_command_line_flags_become_the_data_config():
    args = build_parser().parse_args(
        ["preprocess", "in", "out", "--classes", "b, a", "--val-fraction", "0.3", "--workers", "3"]
    )
    assert from_args(DataConfig, args) == DataConfig(classes=("b", "a"), val_fraction=0.3)
    assert from_args(PreprocessConfig, args).workers == 3


@pytest.mark.parametrize("bad", ["", ",", "0.3x"])
def test_malformed_flags_are_refused_by_the_parser(bad, capsys):
    flag = "--val-fraction" if bad == "0.3x" else "--classes"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["data", "check", "in", flag, bad])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


# -- empty splits, handled before training --------------------------------------------------------


def test_a_set_too_small_for_its_val_fraction_still_gets_a_val_image(tmp_path):
    """Five images whose stems all hash above --val-fraction 0.1 would leave val empty (and
    training nothing to pick its weights by): the lowest hash moves to val, and a problem of
    kind empty_split says so."""
    from kubedetect.data.splits import stem_fraction

    stems = [f"img_{i:04d}" for i in range(40) if stem_fraction(f"img_{i:04d}") >= 0.1][:5]
    for stem in stems:
        pair(tmp_path, f"{stem}.jpg", f"{stem}.xml")
    result = splits(tmp_path, val_fraction=0.1)
    lowest = min(stems, key=stem_fraction)
    assert result == {f"{s}.xml": "val" if s == lowest else "train" for s in stems}
    assert problems(tmp_path, val_fraction=0.1) == [("empty_split", ".")]
    # --val-fraction 0 asks for no val: nothing moves.
    assert set(splits(tmp_path, val_fraction=0.0).values()) == {"train"}


def test_an_empty_val_list_is_filled_from_train(tmp_path):
    flat_tree(tmp_path, 20)
    write(
        tmp_path / "ImageSets" / "Main" / "train.txt", "".join(f"img_{i:04d}\n" for i in range(20))
    )
    write(tmp_path / "ImageSets" / "Main" / "val.txt", "")
    result = splits(tmp_path, val_fraction=0.1)
    assert Counter(result.values()) == {"train": 18, "val": 2}
    (problem,) = scan(str(tmp_path), DataConfig(val_fraction=0.1)).problems
    assert (problem.kind, problem.file) == ("empty_split", "ImageSets/Main")
    assert "val.txt lists none of them" in problem.detail


def test_a_test_list_of_some_images_leaves_the_rest_to_train_and_val(tmp_path):
    """ImageSets/Main holding only test.txt: the other images are divided by the hash."""
    flat_tree(tmp_path, 30)
    lines = "".join(f"img_{i:04d}\n" for i in range(5))
    write(tmp_path / "ImageSets" / "Main" / "test.txt", lines)
    counts = Counter(splits(tmp_path, val_fraction=0.2).values())
    assert counts["test"] == 5 and counts["train"] > 0 and counts["val"] > 0


def test_no_training_image_stops_preprocessing_before_anything_is_written(tmp_path):
    flat_tree(tmp_path / "data", 6)
    write(
        tmp_path / "data" / "ImageSets" / "Main" / "test.txt",
        "".join(f"img_{i:04d}\n" for i in range(6)),
    )
    config = PreprocessConfig(image_size=32, num_shards=1, workers=1, progress=False)
    with pytest.raises(UnusableInputError, match=r"no training images: .* all 6 images in test"):
        preprocess(str(tmp_path / "data"), str(tmp_path / "out"), config, DataConfig())
    assert not (tmp_path / "out").exists()
