"""Self-contained HTML pages of metrics, tables and plots for the KFP UI (images inlined)."""

from __future__ import annotations

import base64
import html
import os

STYLE = (
    "body{font-family:sans-serif;margin:1em}img{max-width:100%}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .6em}tr.mark{font-weight:bold;background:#e3f2fd}"
)


def _page(title: str, body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{body}</body></html>
"""


def _figure(name: str, path: str) -> str:
    return (
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{_base64_of(path)}'><figcaption>{html.escape(name.replace('_', ' '))}</figcaption>"
        "</figure>"
    )


def plots_page(title: str, metrics: dict, folder: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_num(entry['ap50'])}</td><td>{_num(entry['ap50_95'])}</td></tr>"
        for name, entry in metrics["per_class"].items()
    )
    images = "".join(
        _figure(name, os.path.join(folder, file)) for name, file in metrics.get("plots", {}).items()
    )
    return _page(
        title,
        f"""<p>mAP@0.5 <b>{metrics["map50"]:.3f}</b>, mAP@0.5:0.95 <b>{metrics["map50_95"]:.3f}</b>,
precision {metrics["precision"]:.3f}, recall {metrics["recall"]:.3f}
on {metrics["images"]} images ({metrics["objects"]} objects).</p>
<table><tr><th>class</th><th>AP@0.5</th><th>AP@0.5:0.95</th></tr>{rows}</table>
{images}""",
    )


def table_page(
    title: str, header: tuple[str, ...], rows: list[list[str]], note: str, image: str | None
) -> str:
    """A table (a row whose first cell is set is marked: bold, tinted) with a note and a plot
    beneath."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        f"<tr{' class=mark' if row[0] else ''}>"
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    figure = _figure(title.lower(), image) if image else ""
    return _page(title, f"<table><tr>{head}</tr>{body}</table><p>{html.escape(note)}</p>{figure}")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _base64_of(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()
