"""The web page in headless Chromium (Debian's, driven by Playwright) against a real Gunicorn:
choose an image and see it with labelled boxes; drop one; move the score slider; phone width.
Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# Flags that work on these machines (root, no GPU, no network beyond loopback).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    subprocess.run(["bash", str(Path(__file__).with_name("ensure-chromium.sh"))], check=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives each launch a new, empty profile of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detections_on_page(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#detections li')].map(li => li.textContent)"""
    )


def test_choose_an_image_and_see_labelled_boxes(
    browser, server, shapes, trained, artifacts_dir, tmp_path
):
    data, objects = shapes[2]
    image = tmp_path / "shapes.jpg"
    image.write_bytes(data)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('detector (')")
    if not trained:
        # An untrained model scores everything near its prior (about 0.01): show all it finds.
        page.fill("#threshold", "0.01")
    with page.expect_response("**/v1/detect?*") as answer:
        page.set_input_files("#file", str(image))
    assert answer.value.status == 200
    page.wait_for_selector("#count[data-shown]")
    shown = int(page.get_attribute("#count", "data-shown"))
    items = detections_on_page(page)
    assert shown >= 1 and len(items) == shown
    assert "ms round trip" in page.inner_text("#latency")
    page.screenshot(path=str(artifacts_dir / "web-page.png"), full_page=True)
    # The canvas shows the image at its own size with the boxes drawn over it.
    body = answer.value.json()
    size = page.evaluate(
        "() => [document.getElementById('canvas').width, document.getElementById('canvas').height]"
    )
    assert size == [body["width"], body["height"]]
    threshold = float(page.input_value("#threshold"))
    boxes = [d for d in body["detections"] if d["score"] >= threshold]
    assert len(boxes) == shown
    painted = page.evaluate(
        """([x, y]) => Array.from(document.getElementById('canvas').getContext('2d')
                          .getImageData(Math.round(x), Math.round(y), 1, 1).data)""",
        [boxes[0]["box"]["xmin"], (boxes[0]["box"]["ymin"] + boxes[0]["box"]["ymax"]) / 2],
    )
    assert painted[3] == 255  # the box's left edge is painted
    if trained:
        # Real boxes: a shape of the picture is found where it is, with its name.
        truth = [(o.xmin, o.ymin, o.xmax, o.ymax, o.name) for o in objects]
        found = [
            (d["box"]["xmin"], d["box"]["ymin"], d["box"]["xmax"], d["box"]["ymax"], d["label"])
            for d in boxes
        ]
        matched = [t for t in truth if any(f[4] == t[4] and iou(f, t) >= 0.5 for f in found)]
        assert matched, (truth, found)
    # Raising the slider to the top hides everything below it, without asking the server again.
    page.fill("#threshold", "1")
    page.wait_for_function("document.getElementById('count').dataset.shown === '0'")
    assert detections_on_page(page) == []
    page.close()


def test_drop_an_image_at_phone_width(browser, server, shapes, trained, artifacts_dir):
    data, _ = shapes[3]
    page = browser.new_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('detector (')")
    if not trained:
        page.fill("#threshold", "0.01")
    with page.expect_response("**/v1/detect?*") as answer:
        page.evaluate(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
                const drop = document.getElementById('drop');
                for (const kind of ['dragenter', 'dragover', 'drop']) {
                    drop.dispatchEvent(new DragEvent(kind,
                        {dataTransfer: transfer, bubbles: true, cancelable: true}));
                }
            }""",
            base64.b64encode(data).decode(),
        )
    assert answer.value.status == 200
    page.wait_for_selector("#count[data-shown]")
    assert int(page.get_attribute("#count", "data-shown")) >= 1
    # Nothing wider than the phone: no sideways scrolling, the picture scaled to fit.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("document.getElementById('canvas').getBoundingClientRect().width") <= 390
    page.screenshot(path=str(artifacts_dir / "web-page-phone.png"), full_page=True)
    page.close()


def test_a_bad_file_shows_the_servers_error(browser, server, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image at all")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "not a decodable image" in page.inner_text("#status")
    page.close()
