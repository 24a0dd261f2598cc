"""A box drawn on a 4000x3000 photo comes back where it was, in the photo's pixels: in the
training targets, in evaluation and in serving.

Every path letterboxes the photo into the model's square (scaled to fit, the aspect ratio kept,
grey above and below) and maps boxes through the same `kubedetect.io.images.Frame`: preprocessing
into the stored image, the shared decode back to the photo. Stretched, as earlier versions did,
a 4:3 photo's objects would be squashed by a quarter and a box found on it would land elsewhere.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_data_support import voc_xml, write

from kubedetect.config import DataConfig, PreprocessConfig, TrainConfig
from kubedetect.data.shards import preprocess
from kubedetect.inference.decode import Detections, decode, to_original
from kubedetect.io.images import PAD_VALUE, Frame

WIDTH, HEIGHT, SIZE = 4000, 3000, 256
BOX = (1300.0, 700.0, 2100.0, 1900.0)  # xmin, ymin, xmax, ymax in the photo's pixels
RED = (220, 20, 30)
# 4000x3000 fits the square as 256x192: 32 rows of grey above, 32 below; 1 px = 15.625 px.
CONTENT = (SIZE, 192, 0, 32)


def photo_jpeg() -> bytes:
    """A grey 4000x3000 photo with a red rectangle exactly where BOX says."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90))
    ImageDraw.Draw(image).rectangle([BOX[0], BOX[1], BOX[2] - 1, BOX[3] - 1], fill=RED)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def red_extent(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """The red rectangle's box in a uint8 image, in its pixels: from the first column (row) that
    is mostly red to the end of the last one."""
    red = (pixels[..., 0].astype(int) - pixels[..., 1]) > (RED[0] - RED[1]) / 2
    xs, ys = np.flatnonzero(red.any(axis=0)), np.flatnonzero(red.any(axis=1))
    return xs[0], ys[0], xs[-1] + 1, ys[-1] + 1


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("letterbox")
    write(root / "data" / "JPEGImages" / "photo.jpg", photo_jpeg())
    xml = voc_xml("photo.jpg", (WIDTH, HEIGHT), [("card", *BOX)])
    write(root / "data" / "Annotations" / "photo.xml", xml)
    config = PreprocessConfig(image_size=SIZE, num_shards=1, workers=1, progress=False)
    manifest = preprocess(str(root / "data"), str(root / "shards"), config, DataConfig())
    assert manifest["resize"] == "letterbox"
    assert manifest["splits"]["train"]["images"] == 1
    return root / "shards"


def test_the_stored_image_is_letterboxed_and_its_box_lies_on_the_rectangle(shards):
    from kubedetect.evaluation.evaluate import load_split

    data = load_split(str(shards), "train")
    (pixels,) = data.images
    assert (pixels[:31] == PAD_VALUE).all() and (pixels[-31:] == PAD_VALUE).all()
    frame = data.truths[0].frame
    assert (frame.content_width, frame.content_height, frame.left, frame.top) == CONTENT
    # The stored box is the red rectangle of the stored pixels (within one pixel).
    np.testing.assert_allclose(data.truths[0].boxes[0] * SIZE, red_extent(pixels), atol=1.0)
    # The rectangle is 800x1200 in the photo: 51.2x76.8 in the square, not squashed.
    xmin, ymin, xmax, ymax = data.truths[0].boxes[0] * SIZE
    assert (xmax - xmin, ymax - ymin) == pytest.approx((51.2, 76.8), abs=1e-3)


def test_training_targets_decode_to_the_drawn_box(shards):
    """The targets the model learns from, decoded by the shared decode and mapped back."""
    from kubedetect.data.shards import shard_paths
    from kubedetect.training.inputs import training_dataset

    config = TrainConfig(batch_size=1, augment=False)
    dataset = training_dataset(
        shard_paths(str(shards), "train"),
        num_classes=1,
        image_size=SIZE,
        batch_size=1,
        config=config,
    )
    _, targets, _ = next(iter(dataset))
    found = decode(
        targets["heatmap"][0].numpy(),
        targets["size"][0].numpy(),
        targets["offset"][0].numpy(),
        score_threshold=0.99,
    )
    assert len(found) == 1
    frame = Frame.of(WIDTH, HEIGHT, SIZE)
    np.testing.assert_allclose(found.in_original(frame)[0], BOX, atol=0.5)


def test_evaluation_scores_boxes_in_the_photos_pixels(shards):
    from kubedetect.evaluation.evaluate import evaluate_detections, load_split

    data = load_split(str(shards), "train")
    truth = data.truths[0]
    assert (truth.frame.width, truth.frame.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(to_original(truth.boxes, truth.frame)[0], BOX, atol=0.5)

    def scored(boxes) -> float:
        found = Detections(
            np.asarray(boxes, np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32)
        )
        return evaluate_detections(data, [found], score_threshold=0.3)["map50_95"]

    # A detection on the rectangle, as the model sees it, matches at every IoU; the same box
    # normalised by the photo's own size (where a stretching model reports it) overlaps it by
    # 0.75 only (it is a third taller), which mAP@0.5:0.95 counts at 6 of its 10 thresholds.
    assert scored(truth.boxes) == pytest.approx(1.0)
    assert scored([np.array(BOX) / [WIDTH, HEIGHT, WIDTH, HEIGHT]]) == pytest.approx(0.6)


def test_serving_letterboxes_the_upload_and_returns_the_box_in_its_pixels(tmp_path):
    """The server's three steps: preprocess puts the rectangle where the frame says, and
    postprocess maps the output maps of a detection there back to the photo."""
    from servers import untrained_models

    from serving.lifecycle import DetectorModel

    size = 128
    models = untrained_models(str(tmp_path), input_size=size, modes=("float32",))
    model = DetectorModel("detector", f"{models}/float32")
    model.load()
    assert model.card.preprocessing["resize"] == "letterbox"
    prepared = model.preprocess(photo_jpeg())
    assert (prepared.width, prepared.height) == (WIDTH, HEIGHT)
    pixels = prepared.pixels
    assert (pixels[:15] == PAD_VALUE).all() and (pixels[-15:] == PAD_VALUE).all()
    frame = Frame.of(WIDTH, HEIGHT, size)
    xmin, ymin = frame.to_input(BOX[0], BOX[1])
    xmax, ymax = frame.to_input(BOX[2], BOX[3])
    np.testing.assert_allclose(
        red_extent(pixels), np.array([xmin, ymin, xmax, ymax]) * size, atol=1.0
    )

    # The output maps of one detection of that rectangle (class 0, at its centre cell).
    cells = size // 4
    maps = {
        "heatmap": np.zeros((cells, cells, len(model.classes)), np.float32),
        "size": np.zeros((cells, cells, 2), np.float32),
        "offset": np.zeros((cells, cells, 2), np.float32),
    }
    cx, cy = (xmin + xmax) / 2 * cells, (ymin + ymax) / 2 * cells
    maps["heatmap"][int(cy), int(cx), 0] = 0.9
    maps["size"][int(cy), int(cx)] = (xmax - xmin, ymax - ymin)
    maps["offset"][int(cy), int(cx)] = (cx - int(cx), cy - int(cy))
    (detection,) = model.postprocess(maps, prepared.width, prepared.height, model.defaults)
    np.testing.assert_allclose(detection.box, BOX, atol=0.05)


def test_shards_and_models_of_earlier_versions_are_taken_as_stretched(shards, tmp_path):
    """Their dataset.json and model.json do not say `letterbox` (the manifest says nothing, the
    card `stretch`): evaluation maps their boxes as stretched, serving stretches uploads."""
    import json
    import shutil

    from servers import untrained_models

    from kubedetect.evaluation.evaluate import load_split
    from serving.lifecycle import DetectorModel

    old = tmp_path / "old-shards"
    shutil.copytree(shards, old)
    manifest = json.loads((old / "dataset.json").read_text())
    del manifest["resize"]
    (old / "dataset.json").write_text(json.dumps(manifest))
    frame = load_split(str(old), "train").truths[0].frame
    assert (frame.content_width, frame.content_height, frame.left, frame.top) == (SIZE, SIZE, 0, 0)

    models = untrained_models(str(tmp_path / "models"), input_size=128, modes=("float32",))
    card_path = tmp_path / "models" / "float32" / "model.json"
    card = json.loads(card_path.read_text())
    card["preprocessing"]["resize"] = "stretch"
    card_path.write_text(json.dumps(card))
    model = DetectorModel("detector", f"{models}/float32")
    model.load()
    pixels = model.preprocess(photo_jpeg()).pixels
    assert not (pixels[:15] == PAD_VALUE).all()  # no grey band: the photo fills the square
    np.testing.assert_allclose(
        red_extent(pixels), np.array(BOX) / [WIDTH, HEIGHT, WIDTH, HEIGHT] * 128, atol=1.0
    )
