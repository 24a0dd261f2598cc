"""Evaluation: pycocotools' AP on hand-made detections whose AP is known by hand, precision and
recall at the operating point, the confusion matrix, and `kubedetect evaluate` on a trained
model (Keras export and a .tflite variant) with its metrics.json and plots."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kubedetect.evaluation.coco import GroundTruth, confusion_matrix, evaluate
from kubedetect.inference.decode import Detections
from kubedetect.io.images import Frame

CLASSES = ("circle", "square")


def truth(boxes, classes, difficult=None, size=(200, 100)):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return GroundTruth(
        boxes=boxes,
        class_ids=np.asarray(classes, np.int64),
        difficult=np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool),
        frame=Frame.of(*size, 256, "stretch"),  # normalised boxes are the image's own
    )


def found(boxes, scores, classes):
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(classes, np.int32),
    )


A, B, C, D = [0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9], [0.6, 0.1, 0.8, 0.3], [0.1, 0.6, 0.3, 0.9]
NOWHERE = [0.40, 0.02, 0.45, 0.07]


def coco_ap(points):
    """COCO's 101-point interpolated AP for a precision envelope given as [(recall, precision)]."""
    recalls = np.linspace(0, 1, 101)
    return float(
        np.mean([max([p for r, p in points if r >= t - 1e-9], default=0.0) for t in recalls])
    )


def test_perfect_detections_score_one():
    truths = [truth([A, B], [0, 1]), truth([C], [0])]
    dets = [found([A, B], [0.9, 0.8], [0, 1]), found([C], [0.7], [0])]
    m = evaluate(truths, dets, CLASSES, score_threshold=0.5)
    assert m["map50"] == pytest.approx(1.0) and m["map50_95"] == pytest.approx(1.0)
    assert m["per_class"]["circle"]["ap50"] == pytest.approx(1.0)
    assert m["precision"] == 1.0 and m["recall"] == 1.0


def test_ap_of_a_ranked_list_with_a_false_alarm_and_misses():
    """4 circles; detections ranked TP (0.9), FP (0.8), TP (0.7); two circles never found.
    Precision envelope: 1.0 up to recall 0.25, 2/3 up to recall 0.5, nothing beyond."""
    truths = [truth([A, B], [0, 0]), truth([C, D], [0, 0])]
    dets = [found([A, NOWHERE], [0.9, 0.8], [0, 0]), found([C], [0.7], [0])]
    m = evaluate(truths, dets, ("circle",), score_threshold=0.75)
    expected = coco_ap([(0.25, 1.0), (0.5, 2 / 3)])
    assert expected == pytest.approx((26 + 25 * 2 / 3) / 101)
    assert m["map50"] == pytest.approx(expected, abs=1e-6)
    # At score >= 0.75: one right (A), one wrong (NOWHERE), of four objects.
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.25)


def test_map50_95_counts_a_loose_box_only_at_the_iou_thresholds_it_passes():
    """A box with IoU 0.62 to its object is right at IoU 0.50, 0.55 and 0.60 only: 3 of COCO's
    10 thresholds, so mAP@0.5:0.95 is 0.3 while mAP@0.5 is 1."""
    loose = [0.1, 0.1, 0.3, 0.4 * 0.62 + 0.1 * 0.38]  # same x range, 62 % of the height
    from kubedetect.evaluation.coco import box_iou

    assert box_iou(np.array([A]), np.array([loose]))[0, 0] == pytest.approx(0.62, abs=1e-3)
    m = evaluate([truth([A], [0])], [found([loose], [0.9], [0])], ("circle",), score_threshold=0.5)
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(0.3)


def test_per_class_ap_and_its_mean():
    """circle found perfectly (AP 1); square: the only detection is the wrong class, AP 0."""
    truths = [truth([A, B], [0, 1])]
    dets = [found([A, B], [0.9, 0.8], [0, 0])]
    m = evaluate(truths, dets, CLASSES, score_threshold=0.5)
    assert m["per_class"]["circle"]["ap50"] == pytest.approx(1.0)
    assert m["per_class"]["square"]["ap50"] == pytest.approx(0.0)
    assert m["map50"] == pytest.approx(0.5)
    assert (
        m["per_class"]["square"]["recall"] == 0.0 and m["per_class"]["circle"]["precision"] == 0.5
    )


def test_difficult_objects_neither_count_nor_cost():
    truths = [truth([A, B], [0, 0], difficult=[False, True])]
    # The difficult one is missed (costs nothing) ...
    assert evaluate(truths, [found([A], [0.9], [0])], ("circle",), score_threshold=0.5)[
        "map50"
    ] == pytest.approx(1.0)
    # ... or found (no false alarm either).
    m = evaluate(truths, [found([A, B], [0.9, 0.95], [0, 0])], ("circle",), score_threshold=0.5)
    assert m["map50"] == pytest.approx(1.0) and m["precision"] == 1.0
    assert m["objects"] == 1


def test_no_detections_at_all_is_zero_not_an_error():
    m = evaluate([truth([A], [0])], [found(np.zeros((0, 4)), [], [])], CLASSES, score_threshold=0.5)
    assert m["map50"] == 0.0 and m["recall"] == 0.0
    assert m["per_class"]["square"]["ap50"] is None  # no square in the data: no AP at all


def test_confusion_matrix_counts_hits_confusions_misses_and_false_alarms():
    truths = [truth([A, B, C], [0, 1, 1])]
    # A right, B found as a circle (a confusion), C missed, NOWHERE a false alarm; a low-score
    # detection below the threshold does not count.
    dets = [found([A, B, NOWHERE, C], [0.9, 0.8, 0.7, 0.1], [0, 0, 1, 1])]
    cm = confusion_matrix(truths, dets, 2, score_threshold=0.5)
    # rows: true circle, square, background; columns: predicted circle, square, background
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 0, 1], [0, 1, 0]])


@pytest.mark.slow
def test_evaluate_command_on_the_export_and_on_a_tflite_file(
    trained_model, quantized_models, trained_shards, tmp_path, artifacts_dir
):
    from cli.main import main

    keras_out, int8_out = tmp_path / "keras", tmp_path / "int8"
    assert (
        main(
            [
                "evaluate",
                str(trained_model),
                str(trained_shards),
                "--out",
                str(keras_out),
                "--quiet",
            ]
        )
        == 0
    )
    tflite = quantized_models / "int8" / "model.tflite"
    assert (
        main(
            [
                "evaluate",
                str(tflite),
                str(trained_shards),
                "--out",
                str(int8_out),
                "--quiet",
                "--score-threshold",
                "0.4",
            ]
        )
        == 0
    )
    for out in (keras_out, int8_out):
        m = json.loads((out / "metrics.json").read_text())
        assert {"map50", "map50_95", "per_class", "precision", "recall", "confusion_matrix"} <= set(
            m
        )
        assert set(m["per_class"]) == {"circle", "square", "triangle"}
        assert 0.0 <= m["map50_95"] <= m["map50"] <= 1.0
        for plot in ("pr_curves.png", "confusion_matrix.png", "detections.png"):
            assert (out / plot).stat().st_size > 10_000
    keras_m = json.loads((keras_out / "metrics.json").read_text())
    int8_m = json.loads((int8_out / "metrics.json").read_text())
    assert (
        keras_m["kind"] == "keras"
        and int8_m["variant"] == "int8"
        and int8_m["score_threshold"] == 0.4
    )
    assert keras_m["map50"] > 0.3  # the briefly trained session model does detect shapes
    assert (keras_out / "training_curves.png").exists()  # history.csv sits beside the export
    for plot in ("pr_curves.png", "confusion_matrix.png", "detections.png", "training_curves.png"):
        shutil.copy(keras_out / plot, artifacts_dir / f"evaluate-{plot}")


def test_evaluate_refuses_a_model_for_other_data(trained_model, synth_dir, tmp_path):
    """A model evaluated on shards of another image size is a clear error, not garbage metrics."""
    from kubedetect.config import EvalConfig, PreprocessConfig
    from kubedetect.data.shards import preprocess
    from kubedetect.errors import KubedetectError
    from kubedetect.evaluation.evaluate import evaluate as evaluate_model

    preprocess(
        str(synth_dir),
        str(tmp_path / "s"),
        PreprocessConfig(image_size=96, num_shards=1, workers=1, progress=False),
    )
    with pytest.raises(KubedetectError, match="96 px"):
        evaluate_model(
            str(trained_model), str(tmp_path / "s"), None, EvalConfig(plots=False), progress=False
        )
