"""The one decode (numpy, TF-free), for float outputs and for int8 outputs once dequantized."""

from __future__ import annotations

import numpy as np
import pytest

from kubedetect.evaluation.coco import box_iou
from kubedetect.inference.decode import decode, decode_batch, dequantize, peaks


def maps(objects, cells=16, classes=2):
    """Output maps with one sharp peak per object: (class, cx, cy, w, h, score), normalised."""
    heatmap = np.zeros((cells, cells, classes), np.float32)
    size = np.zeros((cells, cells, 2), np.float32)
    offset = np.zeros((cells, cells, 2), np.float32)
    yy, xx = np.mgrid[0:cells, 0:cells]
    for cls, cx, cy, w, h, score in objects:
        ix, iy = int(cx * cells), int(cy * cells)
        heatmap[..., cls] = np.maximum(
            heatmap[..., cls], score * np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / 2.0)
        )
        size[iy, ix] = (w, h)
        offset[iy, ix] = (cx * cells - ix, cy * cells - iy)
    return heatmap, size, offset


OBJECTS = [
    (0, 0.30, 0.30, 0.2, 0.1, 0.9),
    (1, 0.70, 0.55, 0.1, 0.3, 0.6),
    (0, 0.75, 0.80, 0.2, 0.2, 0.4),
]


def test_decode_finds_every_object_with_box_score_and_class():
    d = decode(*maps(OBJECTS), score_threshold=0.1)
    assert len(d) == 3
    np.testing.assert_allclose(d.scores, [0.9, 0.6, 0.4], rtol=1e-6)  # best first
    np.testing.assert_array_equal(d.class_ids, [0, 1, 0])
    for (_, cx, cy, w, h, _), box in zip(OBJECTS, d.boxes, strict=True):
        np.testing.assert_allclose(box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)


def test_threshold_and_top_k():
    heatmap, size, offset = maps(OBJECTS)
    assert len(decode(heatmap, size, offset, score_threshold=0.5)) == 2
    top = decode(heatmap, size, offset, score_threshold=0.1, max_detections=1)
    assert len(top) == 1 and top.scores[0] == pytest.approx(0.9)
    assert len(decode(np.zeros((8, 8, 3), np.float32), size[:8, :8], offset[:8, :8])) == 0


def test_peaks_suppress_neighbours_and_ties_count_once():
    """3x3 peaks do the work of NMS; a plateau of equal scores (int8) is one detection."""
    heatmap = np.zeros((6, 6, 1), np.float32)
    heatmap[2, 2], heatmap[2, 3], heatmap[3, 2] = 0.8, 0.5, 0.7  # one object and its shoulders
    heatmap[4, 4] = heatmap[4, 5] = heatmap[5, 4] = 0.6  # a tie, as int8 outputs make them
    assert np.argwhere(peaks(heatmap)[..., 0] & (heatmap[..., 0] > 0)).tolist() == [[2, 2], [4, 4]]


def test_dequantize_is_the_identity_for_float_tensors():
    values = np.array([0.25, 0.5], np.float32)
    assert dequantize(values, 0.0, 0) is values
    np.testing.assert_allclose(
        dequantize(np.array([-128, 0, 127], np.int8), 1 / 256, -128), [0.0, 0.5, 255 / 256]
    )


def quantize(values, scale, zero_point):
    return np.clip(np.round(values / scale) + zero_point, -128, 127).astype(np.int8)


def test_int8_decode_matches_float_decode_within_quantization_error(
    quantized_models, trained_shards
):
    """The float32 model's outputs, quantized with the int8 model's own output scales and
    dequantized, decode to the same detections: scores within half a step, boxes within half a
    size step and half an offset step. (Where a neighbouring cell's score is within one step of
    the peak's, int8 cannot tell which cell is the peak: there the detection must still be
    found, on the same object.)"""
    from kubedetect.evaluation.evaluate import load_split
    from kubedetect.inference.runtime import TFLiteDetector

    float_model = TFLiteDetector(str(quantized_models / "float32"))
    specs = TFLiteDetector(str(quantized_models / "int8")).card.outputs
    images = load_split(str(trained_shards), "val", max_images=16).images
    outputs = float_model.raw_outputs(images)
    roundtrip = {
        name: dequantize(
            quantize(outputs[name], specs[name].scale, specs[name].zero_point),
            specs[name].scale,
            specs[name].zero_point,
        )
        for name in ("heatmap", "size", "offset")
    }
    step = specs["heatmap"].scale
    cells = outputs["heatmap"].shape[1]
    box_tolerance = specs["size"].scale / 2 + specs["offset"].scale / 2 / cells + 1e-6
    exact = ambiguous = 0
    float_found = decode_batch(outputs, score_threshold=0.3)
    int8_found = decode_batch(roundtrip, score_threshold=0.3 - step)
    for i, (reference, approx) in enumerate(zip(float_found, int8_found, strict=True)):
        for box, score, cls in zip(
            reference.boxes, reference.scores, reference.class_ids, strict=True
        ):
            same_class = approx.class_ids == cls
            iou = box_iou(box[None], approx.boxes[same_class])[0]
            assert iou.size, "a float detection has no int8 counterpart"
            match = np.flatnonzero(same_class)[int(np.argmax(iou))]
            ix, iy = (int((box[0] + box[2]) / 2 * cells), int((box[1] + box[3]) / 2 * cells))
            around = np.pad(outputs["heatmap"][i, ..., cls], 1)[iy : iy + 3, ix : ix + 3].copy()
            around[1, 1] = -1.0
            if around.max() > score - step:
                # int8 may take the neighbour for the peak: the same object, one cell away
                centre = (approx.boxes[match, :2] + approx.boxes[match, 2:]) / 2
                assert np.abs(centre - (box[:2] + box[2:]) / 2).max() <= 1.5 / cells
                ambiguous += 1
                continue
            assert iou.max() >= 0.5, "a float detection has no int8 counterpart"
            assert abs(approx.scores[match] - score) <= step / 2 + 1e-6
            np.testing.assert_allclose(approx.boxes[match], box, atol=box_tolerance)
            exact += 1
    assert exact >= 10 and ambiguous <= exact  # the session model finds objects in these images


def test_int8_model_finds_what_the_float_model_finds(quantized_models, trained_shards):
    """End to end (int8 weights and activations, not just outputs): the confident float32
    detections are found by the int8 variant too, with the same class, in nearly the same place."""
    from kubedetect.evaluation.evaluate import load_split
    from kubedetect.inference.runtime import TFLiteDetector

    images = load_split(str(trained_shards), "val", max_images=40).images
    reference = TFLiteDetector(str(quantized_models / "float32")).predict(
        images, score_threshold=0.5
    )
    int8 = TFLiteDetector(str(quantized_models / "int8")).predict(images, score_threshold=0.2)
    matched = total = 0
    for ref, q in zip(reference, int8, strict=True):
        for box, cls in zip(ref.boxes, ref.class_ids, strict=True):
            total += 1
            same = q.class_ids == cls
            matched += int(same.any() and box_iou(box[None], q.boxes[same]).max() >= 0.7)
    assert total >= 10 and matched >= 0.9 * total
