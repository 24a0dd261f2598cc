"""A corpus of bad inputs, made here: every defect gets its documented report entry (kind and file),
the run completes and keeps the good images, and `--strict` fails.

The corpus holds one file (or pair) per defect beside a few good images, in a VOC tree. The unsafe
XML payloads (XXE to a local file, billion laughs, entities and DTDs pointing at a TCP listener
on 127.0.0.1) must be refused without being expanded or fetched.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree
from test_data_support import (
    add_image,
    assert_boxes_match,
    expected_boxes,
    jpeg_bytes,
    kubedetect,
    output_bytes,
    photo,
    png_bomb,
    png_bytes,
    read_manifest,
    read_shards,
    voc_xml,
    write,
)

from kubedetect.config import DataConfig, PreprocessConfig
from kubedetect.data.check import check
from kubedetect.data.report import KINDS
from kubedetect.data.shards import preprocess
from kubedetect.data.voc import parse_voc
from kubedetect.errors import AnnotationError

CLASSES = ("cat", "dog")
SECRET = "kubedetect-xxe-canary-7f3a9c1e"


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE annotation [\n' + "\n".join(entities) + "\n]>\n"
        "<annotation><filename>good.jpg</filename><object><name>&lol9;</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>\n"
    ).encode()


def xxe(secret_file: Path) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY leak SYSTEM "file://{secret_file}">]>\n'
        "<annotation><filename>good.jpg</filename><object><name>&leak;</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>\n"
    ).encode()


def xxe_parameter(secret_file: Path) -> bytes:
    return (
        f'<!DOCTYPE annotation [<!ENTITY % leak SYSTEM "file://{secret_file}"> %leak;]>\n'
        "<annotation><filename>good.jpg</filename></annotation>\n"
    ).encode()


# -- the corpus ---------------------------------------------------------------------------------

# (kind, file) of every problem the corpus must report, each exactly as often as listed.
EXPECTED = Counter(
    [
        ("bad_xml", "Annotations/not_xml.xml"),
        ("bad_xml", "Annotations/binary.xml"),
        ("bad_xml", "Annotations/wrong_root.xml"),
        ("bad_xml", "Annotations/xxe.xml"),
        ("bad_xml", "Annotations/xxe_parameter.xml"),
        ("bad_xml", "Annotations/billion_laughs.xml"),
        ("bad_object", "Annotations/bad_object.xml"),
        ("missing_image", "Annotations/missing.xml"),
        ("ambiguous_image", "Annotations/dup.xml"),
        ("duplicate_image", "Annotations/shared_b.xml"),
        ("duplicate_image", "JPEGImages/twin_2.jpg"),
        ("bad_image", "JPEGImages/truncated.jpg"),
        ("bad_image", "JPEGImages/bomb.png"),
        ("bad_image", "JPEGImages/garbage.jpg"),
        ("bad_image", "JPEGImages/postscript.jpg"),
        ("size_mismatch", "Annotations/wrong_size.xml"),
        ("degenerate_box", "Annotations/boxes.xml"),  # 0x0
        ("degenerate_box", "Annotations/boxes.xml"),  # inverted
        ("degenerate_box", "Annotations/boxes.xml"),  # wholly outside the image
        ("clipped_box", "Annotations/boxes.xml"),
        ("clipped_box", "Annotations/boxes.xml"),
        ("unknown_class", "Annotations/zebra.xml"),
        ("no_objects", "Annotations/empty.xml"),
        ("split_conflict", "ImageSets/Main/train.txt"),
        ("unlabelled_image", "JPEGImages/orphan.jpg"),
        ("unlabelled_image", "a/dup.jpg"),
        ("unlabelled_image", "b/dup.jpg"),
    ]
)
# Annotations whose images reach the shards.
KEPT = [
    "good",
    "png_as_jpg",
    "boxes",
    "wrong_size",
    "zebra",
    "empty",
    "shared_a",
    "twin_1",
    "twin_2",
    "bad_object",
]
# The boxes.xml objects that survive, clipped to its 100x80 image, normalised.
CLIPPED = [
    ("cat", (0.0, 10 / 80, 40 / 100, 1.0), False),
    ("dog", (90 / 100, 0.0, 1.0, 30 / 80), False),
    ("dog", (30 / 100, 30 / 80, 60 / 100, 60 / 80), False),
]


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, secret_file) -> Path:
    root = tmp_path_factory.mktemp("bad-corpus")
    ann, img = "Annotations", "JPEGImages"
    add_image(
        root,
        f"{img}/good.jpg",
        f"{ann}/good.xml",
        (96, 64),
        [("cat", 10, 10, 40, 40), ("dog", 50, 20, 90, 60, {"difficult": 1})],
        seed=1,
    )
    # PNG bytes behind a .jpg name: decoded by content, kept.
    add_image(
        root,
        f"{img}/png_as_jpg.jpg",
        f"{ann}/png_as_jpg.xml",
        (80, 60),
        [("dog", 5, 5, 30, 30)],
        data=png_bytes(photo(80, 60, seed=2)),
    )
    truncated = jpeg_bytes(photo(96, 64, seed=3))
    add_image(
        root,
        f"{img}/truncated.jpg",
        f"{ann}/truncated.xml",
        (96, 64),
        [("cat", 1, 1, 9, 9)],
        data=truncated[: len(truncated) // 2],
    )
    add_image(
        root,
        f"{img}/bomb.png",
        f"{ann}/bomb.xml",
        (100_000, 100_000),
        [("cat", 1, 1, 9, 9)],
        data=png_bomb(100_000, 100_000),
    )
    add_image(
        root,
        f"{img}/garbage.jpg",
        f"{ann}/garbage.xml",
        (64, 64),
        [("cat", 1, 1, 9, 9)],
        data=b"this is not an image",
    )
    # PostScript, which Pillow would hand to Ghostscript: not one of the formats decoded.
    add_image(
        root,
        f"{img}/postscript.jpg",
        f"{ann}/postscript.xml",
        (10, 10),
        [("cat", 1, 1, 9, 9)],
        data=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    )
    add_image(
        root,
        f"{img}/boxes.jpg",
        f"{ann}/boxes.xml",
        (100, 80),
        [
            ("cat", 20, 20, 20, 20),  # 0x0: dropped
            ("dog", 60, 50, 30, 10),  # inverted: dropped
            ("cat", -15, 10, 40, 95),  # beyond the left and bottom edges: clipped
            ("dog", 90, -5, 130, 30),  # beyond the top and right edges: clipped
            ("cat", 120, 10, 150, 40),  # wholly right of the image: dropped
            ("dog", 30, 30, 60, 60),
        ],
        seed=4,
    )
    # <size> says twice the real 120x90: boxes are rescaled to the real image.
    add_image(
        root,
        f"{img}/wrong_size.jpg",
        f"{ann}/wrong_size.xml",
        (120, 90),
        [("cat", 24, 18, 120, 90)],
        declared=(240, 180),
        seed=5,
    )
    add_image(
        root,
        f"{img}/zebra.jpg",
        f"{ann}/zebra.xml",
        (64, 64),
        [("zebra", 1, 1, 30, 30), ("cat", 32, 32, 60, 60)],
        seed=6,
    )
    add_image(root, f"{img}/empty.jpg", f"{ann}/empty.xml", (64, 48), [], seed=7)
    add_image(
        root, f"{img}/shared.jpg", f"{ann}/shared_a.xml", (64, 64), [("cat", 1, 1, 20, 20)], seed=8
    )
    write(root / ann / "shared_b.xml", voc_xml("shared.jpg", (64, 64), [("dog", 5, 5, 25, 25)]))
    twin = jpeg_bytes(photo(64, 64, seed=9))
    add_image(
        root, f"{img}/twin_1.jpg", f"{ann}/twin_1.xml", (64, 64), [("cat", 1, 1, 20, 20)], data=twin
    )
    add_image(
        root, f"{img}/twin_2.jpg", f"{ann}/twin_2.xml", (64, 64), [("dog", 1, 1, 20, 20)], data=twin
    )
    bad_object = voc_xml("bad_object.jpg", (64, 64), [("cat", 2, 2, 30, 30)]).replace(
        b"</annotation>", b"<object><name>dog</name></object>\n</annotation>"
    )
    write(root / img / "bad_object.jpg", jpeg_bytes(photo(64, 64, seed=10)))
    write(root / ann / "bad_object.xml", bad_object)
    write(root / ann / "missing.xml", voc_xml("nowhere.jpg", (64, 64), [("cat", 1, 1, 20, 20)]))
    for folder in ("a", "b"):  # the same name twice, equally far from the annotation
        write(root / folder / "dup.jpg", jpeg_bytes(photo(64, 64, seed=11)))
    write(root / ann / "dup.xml", voc_xml("dup.jpg", (64, 64), [("cat", 1, 1, 20, 20)]))
    write(root / img / "orphan.jpg", jpeg_bytes(photo(32, 32, seed=12)))
    write(root / ann / "not_xml.xml", "width,height\n96,64\n")
    write(root / ann / "binary.xml", jpeg_bytes(photo(16, 16)))
    write(root / ann / "wrong_root.xml", "<html><filename>good.jpg</filename></html>")
    write(root / ann / "xxe.xml", xxe(secret_file))
    write(root / ann / "xxe_parameter.xml", xxe_parameter(secret_file))
    write(root / ann / "billion_laughs.xml", billion_laughs())
    write(root / "ImageSets" / "Main" / "train.txt", "good\nboxes\nzebra\n")
    write(root / "ImageSets" / "Main" / "test.txt", "good\nwrong_size\n")
    return root


@pytest.fixture(scope="module")
def corpus_report(corpus):
    return check(str(corpus), DataConfig(classes=CLASSES), workers=2, progress=False)


@pytest.fixture(scope="module")
def corpus_shards(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad-corpus-shards")
    preprocess(
        str(corpus),
        str(out),
        PreprocessConfig(image_size=64, num_shards=2, workers=2, progress=False),
        DataConfig(classes=CLASSES),
    )
    return out


def details(report, kind: str, file: str) -> list[str]:
    return [p.detail for p in report.problems if (p.kind, p.file) == (kind, file)]


# -- the report -----------------------------------------------------------------------------------


def test_every_defect_has_its_report_entry(corpus_report):
    assert Counter((p.kind, p.file) for p in corpus_report.problems) == EXPECTED


def test_the_corpus_exercises_every_documented_problem_kind(corpus_report):
    # (but empty_split: the corpus has a val split; tests/test_data_layout.py empties one)
    assert {p.kind for p in corpus_report.problems} == set(KINDS) - {"empty_split"}


def test_report_details_say_what_was_wrong_and_what_was_done(corpus_report):
    r = corpus_report
    boxes = details(r, "degenerate_box", "Annotations/boxes.xml")
    assert any("zero-area" in d for d in boxes)
    assert any("inverted" in d for d in boxes)
    assert any("outside" in d for d in boxes)
    assert all(d.endswith("dropped") for d in boxes)
    # Each names the object's position in the XML (counting from 0), dropped or not.
    assert sorted(d.split()[1] for d in boxes) == ["0", "1", "4"]
    clipped = details(r, "clipped_box", "Annotations/boxes.xml")
    assert sorted(d.split()[1] for d in clipped) == ["2", "3"]
    assert details(r, "bad_object", "Annotations/bad_object.xml")[0].startswith("object 1:")
    assert all(d.endswith("clipped") for d in details(r, "clipped_box", "Annotations/boxes.xml"))
    assert "truncated or corrupt" in details(r, "bad_image", "JPEGImages/truncated.jpg")[0]
    assert "decompression bomb" in details(r, "bad_image", "JPEGImages/bomb.png")[0]
    for name in ("garbage", "postscript"):
        assert details(r, "bad_image", f"JPEGImages/{name}.jpg") == [
            "not a decodable image (not JPEG, PNG, BMP, GIF, TIFF, WEBP data): skipped"
        ]
    assert "240x180" in details(r, "size_mismatch", "Annotations/wrong_size.xml")[0]
    assert "120x90" in details(r, "size_mismatch", "Annotations/wrong_size.xml")[0]
    assert "not well-formed" in details(r, "bad_xml", "Annotations/not_xml.xml")[0]
    assert "<html>" in details(r, "bad_xml", "Annotations/wrong_root.xml")[0]
    for name in ("xxe", "xxe_parameter", "billion_laughs"):
        assert "<!ENTITY>): refused" in details(r, "bad_xml", f"Annotations/{name}.xml")[0]
    assert "nowhere.jpg" in details(r, "missing_image", "Annotations/missing.xml")[0]
    assert "a/dup.jpg" in details(r, "ambiguous_image", "Annotations/dup.xml")[0]
    assert "b/dup.jpg" in details(r, "ambiguous_image", "Annotations/dup.xml")[0]
    assert "zebra" in details(r, "unknown_class", "Annotations/zebra.xml")[0]
    assert "twin_1.jpg" in details(r, "duplicate_image", "JPEGImages/twin_2.jpg")[0]
    assert "shared_a.xml" in details(r, "duplicate_image", "Annotations/shared_b.xml")[0]


def test_the_good_images_are_counted(corpus_report):
    assert corpus_report.images == len(KEPT)
    assert corpus_report.classes == CLASSES


# -- the shards -----------------------------------------------------------------------------------


def test_preprocess_completes_and_writes_every_usable_image(corpus_shards, corpus_report):
    records = read_shards(corpus_shards)
    assert sorted(records) == sorted(f"Annotations/{name}.xml" for name in KEPT)
    manifest = read_manifest(corpus_shards)
    # The manifest carries the same problem report as `data check`.
    assert manifest["report"]["problems"] == [p.to_dict() for p in corpus_report.problems]
    assert manifest["classes"] == list(CLASSES)


def test_the_output_of_a_bad_corpus_is_the_same_for_any_number_of_workers(
    corpus, corpus_shards, tmp_path
):
    """Problem details included: they hold no addresses, timings or other per-run text."""
    config = PreprocessConfig(image_size=64, num_shards=2, workers=1, progress=False)
    preprocess(str(corpus), str(tmp_path), config, DataConfig(classes=CLASSES))
    assert output_bytes(tmp_path) == output_bytes(corpus_shards)


def test_out_of_bounds_boxes_are_clipped_in_the_shards(corpus_shards):
    record = read_shards(corpus_shards)["Annotations/boxes.xml"]
    assert_boxes_match(record, CLIPPED, "boxes.xml")


def test_boxes_of_a_wrong_size_annotation_are_rescaled_to_the_real_image(corpus_shards):
    record = read_shards(corpus_shards)["Annotations/wrong_size.xml"]
    assert record["original_size"] == (90, 120)
    assert_boxes_match(record, [("cat", (0.1, 0.1, 0.5, 0.5), False)], "wrong_size.xml")


def test_other_records_hold_their_xml_boxes(corpus, corpus_shards):
    records = read_shards(corpus_shards)
    for name in ("good", "png_as_jpg", "shared_a", "twin_1", "twin_2", "empty"):
        xml = (corpus / "Annotations" / f"{name}.xml").read_bytes()
        size = tuple(int(etree.fromstring(xml).findtext(f"size/{t}")) for t in ("width", "height"))
        assert_boxes_match(records[f"Annotations/{name}.xml"], expected_boxes(xml, size), name)
    # Objects the report says were dropped are not in the shards; the rest of their file is.
    assert records["Annotations/zebra.xml"]["names"] == ["cat"]
    assert records["Annotations/bad_object.xml"]["names"] == ["cat"]
    assert records["Annotations/empty.xml"]["boxes"].shape == (0, 4)


# -- the command line -----------------------------------------------------------------------------


def test_data_check_exits_0_and_writes_the_json_report(corpus, tmp_path):
    report_path = tmp_path / "report.json"
    result = kubedetect(
        "data", "check", corpus, "--classes", "cat,dog", "--report", report_path, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["images"] == len(KEPT)
    assert report["classes"] == list(CLASSES)
    assert isinstance(report["objects"], int)
    assert Counter((p["kind"], p["file"]) for p in report["problems"]) == EXPECTED
    assert all(set(p) == {"kind", "file", "detail"} for p in report["problems"])
    for kind in {k for k, _ in EXPECTED}:  # the summary table names every kind found
        assert kind in result.stdout


def test_data_check_strict_exits_1_on_problems(corpus, tmp_path):
    result = kubedetect(
        "data",
        "check",
        corpus,
        "--classes",
        "cat,dog",
        "--strict",
        "--report",
        tmp_path / "r.json",
        "--quiet",
    )
    assert result.returncode == 1
    assert f"{sum(EXPECTED.values())} problems" in result.stderr


@pytest.mark.parametrize("layout", ["empty", "no_xml", "absent", "only_bad_xml"])
def test_unusable_input_exits_2(tmp_path, layout):
    folder = tmp_path / "data"
    if layout != "absent":
        folder.mkdir()
    if layout == "no_xml":
        write(folder / "JPEGImages" / "a.jpg", jpeg_bytes(photo(32, 32)))
    if layout == "only_bad_xml":
        write(folder / "a.xml", "width,height")
        write(folder / "b.xml", "<annotation><filename>b.jpg</filename>")
    check_run = kubedetect("data", "check", folder, "--report", tmp_path / "r.json", "--quiet")
    assert check_run.returncode == 2
    assert str(folder) in check_run.stderr and "Traceback" not in check_run.stderr
    if layout == "only_bad_xml":  # the error says why, as no report is written
        assert "2 bad_xml; first: a.xml: not well-formed XML" in check_run.stderr


def test_preprocess_cli_completes_on_the_corpus_and_refuses_an_empty_folder(
    corpus, secret_file, tmp_path
):
    out = tmp_path / "shards"
    result = kubedetect(
        "preprocess",
        corpus,
        out,
        "--classes",
        "cat,dog",
        "--image-size",
        "64",
        "--num-shards",
        "2",
        "--workers",
        "2",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert read_manifest(out)["splits"]["train"]["images"] + read_manifest(out)["splits"]["test"][
        "images"
    ] + read_manifest(out)["splits"].get("val", {}).get("images", 0) == len(KEPT)
    # Nothing the XXE payloads pointed at leaked into the output or the messages.
    for path in out.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert SECRET not in result.stdout + result.stderr
    (tmp_path / "empty").mkdir()
    empty = kubedetect("preprocess", tmp_path / "empty", tmp_path / "out2", "--quiet")
    assert empty.returncode == 2 and "no Pascal VOC annotations" in empty.stderr


# -- unsafe XML ----------------------------------------------------------------------------------


def test_xxe_payload_is_real_but_kubedetect_never_reads_the_file(secret_file, corpus_report):
    # The payload works against a parser that resolves entities...
    naive = etree.fromstring(xxe(secret_file), etree.XMLParser(resolve_entities=True))
    assert SECRET in naive.findtext("object/name")
    # ... but kubedetect refuses it, and the file's content appears nowhere.
    with pytest.raises(AnnotationError) as error:
        parse_voc(xxe(secret_file), "xxe.xml")
    assert SECRET not in str(error.value)
    with pytest.raises(AnnotationError):
        parse_voc(xxe_parameter(secret_file), "xxe_parameter.xml")
    assert SECRET not in json.dumps(corpus_report.to_dict())


def test_billion_laughs_is_refused_not_expanded():
    with pytest.raises(AnnotationError) as error:
        parse_voc(billion_laughs(), "laughs.xml")
    assert error.value.file == "laughs.xml"
    assert len(str(error.value)) < 500


@pytest.mark.parametrize(
    "payload",
    [
        b"<annotation>"
        + b"<a>" * 5000
        + b"</a>" * 5000
        + b"</annotation>",  # deeper than any VOC file
        b"<annotation><filename>a.jpg</filename>"
        + b"<!-- x -->" * 10
        + b"</annotation" * 1,  # unclosed
        b"",
        b"\xef\xbb\xbf",
        b'<?xml version="1.0" encoding="utf-16"?><annotation/>',
    ],
    ids=["deep", "unclosed", "empty", "bom-only", "wrong-encoding"],
)
def test_malformed_xml_raises_annotation_error_naming_the_file(payload):
    with pytest.raises(AnnotationError) as error:
        parse_voc(payload, "odd.xml")
    assert error.value.file == "odd.xml" and str(error.value).startswith("odd.xml: ")


def test_oversized_annotation_is_refused_before_parsing():
    with pytest.raises(AnnotationError, match="limit"):
        parse_voc(b"<annotation>" + b" " * 2000 + b"</annotation>", "big.xml", max_bytes=1000)


@pytest.fixture
def listener():
    """A TCP socket listening on 127.0.0.1: any connection attempt lands in its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def connections(sock: socket.socket) -> int:
    """Connections that reached the listener (a completed connect() is queued by the kernel
    before the connecting call returns, so nothing here depends on timing)."""
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def network_payloads(port: int) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{port}"
    body = (
        "<filename>net.jpg</filename><size><width>64</width><height>64</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object>"
    )
    dtd = f'<!DOCTYPE annotation SYSTEM "{url}/voc.dtd">'
    entity = f'<!DOCTYPE annotation [<!ENTITY e SYSTEM "{url}/e">]>'
    ftp = f'<!DOCTYPE annotation [<!ENTITY e SYSTEM "ftp://127.0.0.1:{port}/e">]>'
    xinclude = f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{url}/x"/>'
    schema = (
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:noNamespaceSchemaLocation="{url}/s.xsd"'
    )
    return {
        "external_dtd": f"{dtd}<annotation>{body}</annotation>",
        "public_dtd": f'<!DOCTYPE annotation PUBLIC "-//X//DTD VOC//EN" "{url}/voc.dtd">'
        f"<annotation>{body}</annotation>",
        "http_entity": f"{entity}<annotation>{body}<pose>&e;</pose></annotation>",
        "ftp_entity": f"{ftp}<annotation>{body}<pose>&e;</pose></annotation>",
        "parameter_entity": f'<!DOCTYPE annotation [<!ENTITY % p SYSTEM "{url}/p"> %p;]>'
        f"<annotation>{body}</annotation>",
        "dtd_entity_use": f"{dtd}<annotation>{body}<pose>&e;</pose></annotation>",
        "xinclude": f"<annotation>{body}{xinclude}</annotation>",
        "stylesheet": f'<?xml-stylesheet type="text/xsl" href="{url}/s.xsl"?>'
        f"<annotation>{body}</annotation>",
        "schema": f"<annotation {schema}>{body}</annotation>",
    }


def test_the_listener_sees_a_connection(listener):
    """The check below can fail: a real connection attempt is counted."""
    socket.create_connection(listener.getsockname(), timeout=5).close()
    assert connections(listener) == 1


def test_dtds_and_entities_on_the_network_are_never_fetched(listener, tmp_path):
    port = listener.getsockname()[1]
    payloads = network_payloads(port)
    outcomes = {}
    for name, text in payloads.items():
        try:
            annotation = parse_voc(text.encode(), f"{name}.xml")
            outcomes[name] = ("parsed", [o.name for o in annotation.objects])
        except AnnotationError:
            outcomes[name] = ("refused", None)
    assert connections(listener) == 0
    # An entity is refused whatever it points at; a DTD or include that is only referred to is
    # ignored, and the annotation is used as if it were not there.
    for name in ("http_entity", "ftp_entity", "parameter_entity", "dtd_entity_use"):
        assert outcomes[name][0] == "refused", name
    for name in ("external_dtd", "public_dtd", "xinclude", "stylesheet", "schema"):
        assert outcomes[name] == ("parsed", ["cat"]), name

    # The same files through the command line (scan, then image workers): still no connection.
    for name, text in payloads.items():
        write(tmp_path / "data" / f"{name}.xml", text.replace("net.jpg", f"{name}.jpg"))
        write(tmp_path / "data" / f"{name}.jpg", jpeg_bytes(photo(64, 64)))
    result = kubedetect(
        "data", "check", tmp_path / "data", "--report", tmp_path / "r.json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert connections(listener) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 5
    assert sorted(p["file"] for p in report["problems"] if p["kind"] == "bad_xml") == sorted(
        f"{n}.xml" for n in ("http_entity", "ftp_entity", "parameter_entity", "dtd_entity_use")
    )
