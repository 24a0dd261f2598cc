"""Fuzzing the VOC parser: random bytes, mutated valid annotations and annotations with random
field values. `parse_voc` must return an Annotation the rest of the pipeline can rely on, or raise
AnnotationError naming the file; never anything else.

KUBEDETECT_FUZZ_EXAMPLES raises the number of examples per test for a longer hunt.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from test_data_support import voc_xml

from kubedetect.data.report import KINDS
from kubedetect.data.voc import Annotation, parse_voc
from kubedetect.errors import AnnotationError

EXAMPLES = int(os.environ.get("KUBEDETECT_FUZZ_EXAMPLES", "300"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VALID = voc_xml(
    "img.jpg",
    (640, 480),
    [("cat", 10, 20, 200, 300, {"difficult": 1}), ("dog", 5.5, 6, 7, 8, {"truncated": 1})],
)

# Fragments that XML parsers and VOC readers trip over.
TOKENS = [
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b";",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&#65;",
    b"&e;",
    b"<!DOCTYPE annotation [",
    b"]>",
    b'<!ENTITY e "x">',
    b'<!ENTITY % p "x"> %p;',
    b'<!DOCTYPE annotation SYSTEM "http://127.0.0.1:9/x.dtd">',
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?pi x?>",
    b'<?xml version="1.0" encoding="utf-16"?>',
    b'<?xml version="1.0" encoding="bogus"?>',
    b"\x00",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"nan",
    b"inf",
    b"-inf",
    b"1e999",
    b"-1e999",
    b"1e308",
    b"0x10",
    b"-0",
    b"",
    b" ",
    b"\t\n",
    b"<object>",
    b"</object>",
    b"<bndbox>",
    b"</bndbox>",
    b"<xmin>",
    b"</xmin>",
    b"<name>",
    b"</name>",
    b"<size>",
    b"</size>",
    b"<width>0</width>",
    b"<height>-3</height>",
    b"<filename>",
    b"</filename>",
    b'xmlns="urn:x"',
    b"<a:b xmlns:a='urn:a'/>",
    b"<annotation>",
    b"</annotation>",
    b"<difficult>yes</difficult>",
    b"<truncated>1e400</truncated>",
    b"C:\\images\\x.jpg",
    b"../../x.jpg",
]


def check_outcome(data: bytes) -> None:
    try:
        annotation = parse_voc(data, "fuzz.xml")
    except AnnotationError as error:
        assert error.file == "fuzz.xml"
        assert str(error).startswith("fuzz.xml: ") and error.detail
        return
    assert isinstance(annotation, Annotation)
    assert annotation.file == "fuzz.xml"
    assert isinstance(annotation.filename, str) and annotation.filename.strip()
    for value in (annotation.width, annotation.height):
        assert value is None or (isinstance(value, int) and value > 0)
    assert (annotation.width is None) == (annotation.height is None)
    for obj in annotation.objects:
        assert isinstance(obj.name, str) and obj.name.strip()
        coords = (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
        assert all(isinstance(v, float) and math.isfinite(v) for v in coords)
        assert isinstance(obj.difficult, bool) and isinstance(obj.truncated, bool)
    for problem in annotation.problems:
        assert problem.kind in KINDS and problem.file == "fuzz.xml"


# Field values as labelling tools and hand edits produce them.
numeric_text = st.one_of(
    st.integers(-50, 5000).map(str),
    st.floats(-100, 5000, allow_nan=False).map(lambda v: f"{v:.2f}"),
)
field_text = st.one_of(
    numeric_text,
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "1e999", "nan", "inf", "-0", "0x1A", " 12 ", "1,5", "", "1e-320"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)


def _text_spans(data: bytes) -> list[tuple[int, int]]:
    """Where the text between tags lies (start, end), for mutations that keep the markup."""
    spans, start = [], None
    for i, byte in enumerate(data):
        if byte == ord(">"):
            start = i + 1
        elif byte == ord("<") and start is not None:
            spans.append((start, i))
            start = None
    return spans


@st.composite
def mutated(draw) -> bytes:
    """The valid annotation after a few edits: mostly of field values (markup intact), sometimes
    deletions, insertions, replacements, bit flips or a truncation anywhere."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(
            st.sampled_from(
                ["field", "field", "field", "delete", "insert", "replace", "truncate", "flip"]
            )
        )
        at = draw(st.integers(0, len(data)))
        if action == "field":
            spans = _text_spans(bytes(data))
            if not spans:
                continue
            start, end = draw(st.sampled_from(spans))
            value = draw(
                st.one_of(
                    st.sampled_from(TOKENS), st.binary(max_size=6), field_text.map(str.encode)
                )
            )
            data[start:end] = value
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif action == "insert":
            data[at:at] = draw(
                st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8))
            )
        elif action == "replace":
            data[at : at + draw(st.integers(1, 12))] = draw(st.sampled_from(TOKENS))
        elif action == "truncate":
            del data[at:]
        elif data:
            at = min(at, len(data) - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def _xml_safe(text: str) -> str:
    """lxml refuses to store characters XML cannot carry; drop them (the parser never sees them)."""
    return "".join(
        c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
    )


@st.composite
def random_fields(draw) -> bytes:
    """A well-formed annotation whose every field holds a random value, some fields missing."""
    root = etree.Element("annotation")
    if draw(st.integers(0, 4)):
        name = draw(st.one_of(st.just("img.jpg"), field_text))
        etree.SubElement(root, "filename").text = _xml_safe(name)
    if draw(st.booleans()):
        size = etree.SubElement(root, "size")
        for tag in ("width", "height"):
            if draw(st.integers(0, 4)):
                etree.SubElement(size, tag).text = _xml_safe(
                    draw(st.one_of(numeric_text, field_text))
                )
    for _ in range(draw(st.integers(0, 4))):
        obj = etree.SubElement(root, "object")
        for tag in ("name", "difficult", "truncated"):
            if draw(st.integers(0, 4)):
                etree.SubElement(obj, tag).text = _xml_safe(draw(field_text))
        if draw(st.integers(0, 4)):
            box = etree.SubElement(obj, "bndbox")
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                if draw(st.integers(0, 6)):
                    etree.SubElement(box, tag).text = _xml_safe(
                        draw(st.one_of(numeric_text, field_text))
                    )
    return etree.tostring(
        root, encoding=draw(st.sampled_from(["utf-8", "utf-16", "iso-8859-1", "ascii"]))
    )


def test_the_valid_annotation_parses():
    annotation = parse_voc(VALID, "fuzz.xml")
    assert [o.name for o in annotation.objects] == ["cat", "dog"]
    assert (annotation.width, annotation.height) == (640, 480)


@fuzz
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check_outcome(data)


@fuzz
@given(mutated())
def test_mutated_annotations(data):
    check_outcome(data)


@fuzz
@given(random_fields())
def test_random_field_values(data):
    check_outcome(data)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_entity_declarations_are_refused_in_any_encoding(encoding):
    payload = (
        f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE annotation [<!ENTITY a "b">]>'
        "<annotation><filename>&a;</filename></annotation>"
    )
    with pytest.raises(AnnotationError, match="refused"):
        parse_voc(payload.encode(encoding), "fuzz.xml")
