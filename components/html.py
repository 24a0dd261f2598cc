"""A self-contained HTML page of metrics and plots for the KFP UI (images inlined)."""

from __future__ import annotations

import base64
import html
import os


def plots_page(title: str, metrics: dict, folder: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_num(entry['ap50'])}</td><td>{_num(entry['ap50_95'])}</td></tr>"
        for name, entry in metrics["per_class"].items()
    )
    images = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{_base64_of(os.path.join(folder, file))}'>"
        f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
        for name, file in metrics.get("plots", {}).items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}img{{max-width:100%}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>mAP@0.5 <b>{metrics["map50"]:.3f}</b>, mAP@0.5:0.95 <b>{metrics["map50_95"]:.3f}</b>,
precision {metrics["precision"]:.3f}, recall {metrics["recall"]:.3f}
on {metrics["images"]} images ({metrics["objects"]} objects).</p>
<table><tr><th>class</th><th>AP@0.5</th><th>AP@0.5:0.95</th></tr>{rows}</table>
{images}</body></html>
"""


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _base64_of(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()
