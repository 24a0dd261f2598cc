"""Pascal VOC XML, read through a hardened parser.

Annotation files come from anywhere (labelling tools, vendors, scraped datasets), so they are
parsed as untrusted input: no entity expansion (XXE, billion laughs), no network, no DTD loading,
no huge trees, and a size cap before parsing. A file that is unsafe or malformed raises
`AnnotationError`, which names the file; an object that is malformed is dropped and reported,
and the rest of the file is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lxml import etree

from kubedetect.data.report import Problem
from kubedetect.errors import AnnotationError


@dataclass(frozen=True)
class VocObject:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False
    index: int = 0  # position among the file's <object> elements, counting malformed ones


@dataclass(frozen=True)
class Annotation:
    file: str
    filename: str
    width: int | None
    height: int | None
    objects: tuple[VocObject, ...]
    problems: tuple[Problem, ...] = field(default=())


def _parser() -> etree.XMLParser:
    # A parser per call: lxml parsers are not thread-safe, and building one costs microseconds.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


# An entity declaration in the encodings a document can start in without a declaration of its
# own. Looked for before parsing: libxml2 checks an entity's replacement text by expanding it
# (up to its amplification limit) even when told not to substitute entities.
_ENTITY_DECLARATIONS = tuple(
    "<!ENTITY".encode(codec)
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_REFUSED_ENTITIES = "declares XML entities (<!ENTITY>): refused, entity expansion is unsafe"


def parse_voc(data: bytes, file: str, *, max_bytes: int = 10_000_000) -> Annotation:
    """Parse one VOC annotation. Raises AnnotationError, and nothing else, for any bad input."""
    if len(data) > max_bytes:
        raise AnnotationError(file, f"{len(data)} bytes is over the {max_bytes}-byte limit")
    if any(marker in data for marker in _ENTITY_DECLARATIONS):
        raise AnnotationError(file, _REFUSED_ENTITIES)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise AnnotationError(file, f"not well-formed XML ({_first_line(exc)})") from None
    except (ValueError, etree.LxmlError) as exc:  # e.g. str with an encoding declaration
        raise AnnotationError(file, f"not readable as XML ({_first_line(exc)})") from None
    if root is None:
        raise AnnotationError(file, "empty document")
    _refuse_entities(root, file)
    if root.tag != "annotation":
        raise AnnotationError(file, f"root element is <{_tag(root)}>, expected <annotation>")

    fields = _children(root)
    filename = _text(fields, "filename")
    if not filename:
        raise AnnotationError(file, "missing <filename>")
    width, height = _size(fields.get("size"), file)

    objects: list[VocObject] = []
    problems: list[Problem] = []
    for index, node in enumerate(root.iterfind("object")):
        try:
            objects.append(_object(node, index))
        except ValueError as exc:
            problems.append(Problem(file, "bad_object", f"object {index}: {exc}: dropped"))
    return Annotation(file, filename, width, height, tuple(objects), tuple(problems))


def _refuse_entities(root: etree._Element, file: str) -> None:
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):  # in an encoding missed above
        raise AnnotationError(file, _REFUSED_ENTITIES)
    for node in root.iter(etree.Entity):
        raise AnnotationError(file, f"refers to the entity {node.text}: refused")


def _size(node: etree._Element | None, file: str) -> tuple[int | None, int | None]:
    if node is None:
        return None, None
    fields = _children(node)
    try:
        width = int(float(_text(fields, "width")))
        height = int(float(_text(fields, "height")))
    except (ValueError, OverflowError):
        raise AnnotationError(file, "<size> has a non-numeric <width> or <height>") from None
    if width <= 0 or height <= 0:
        # Some tools write 0x0 when they did not know the size: trust the image instead.
        return None, None
    return width, height


def _object(node: etree._Element, index: int) -> VocObject:
    fields = _children(node)
    name = _text(fields, "name")
    if not name:
        raise ValueError("no <name>")
    box = fields.get("bndbox")
    if box is None:
        raise ValueError(f"'{name}' has no <bndbox>")
    corners = _children(box)
    coords = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = _text(corners, tag)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"'{name}' has a non-numeric <{tag}> {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"'{name}' has a non-finite <{tag}>")
        coords.append(value)
    return VocObject(
        name,
        *coords,
        difficult=_flag(fields, "difficult"),
        truncated=_flag(fields, "truncated"),
        index=index,
    )


def _flag(fields: dict[str, etree._Element], tag: str) -> bool:
    text = _text(fields, tag)
    try:
        return int(float(text)) != 0 if text else False
    except (ValueError, OverflowError):
        return text.lower() in ("true", "yes")


def _children(node: etree._Element) -> dict[str, etree._Element]:
    """A node's child elements by tag, the first one where a tag repeats (the one `find` picks).

    One pass over the children instead of a path search per field: annotations are parsed
    before any image can be processed, so this is start-up time of every preprocessing run.
    """
    children: dict[str, etree._Element] = {}
    for child in node:
        children.setdefault(child.tag, child)
    return children


def _text(fields: dict[str, etree._Element], tag: str) -> str:
    """The stripped text of the child named `tag`, "" when it is absent or empty."""
    node = fields.get(tag)
    return node.text.strip() if node is not None and node.text else ""


def _tag(node) -> str:
    return node.tag if isinstance(node.tag, str) else type(node).__name__


def _first_line(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
