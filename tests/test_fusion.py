"""Weighted box fusion (kubedetect.inference.fusion) on cases small enough to compute by hand: the
fused corners are the score-weighted means, the fused score the members' mean scaled by how many of
the models found the box, and the weights from validation scores count as the paper applies them."""

import numpy as np
import pytest

from kubedetect.inference.decode import Detections
from kubedetect.inference.fusion import fuse, iou


def found(*boxes) -> Detections:
    """Detections from (xmin, ymin, xmax, ymax, score, class) tuples."""
    rows = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    order = np.argsort(-rows[:, 4], kind="stable")
    rows = rows[order]
    return Detections(
        rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int32)
    )


A = (0.10, 0.10, 0.30, 0.30)
B = (0.12, 0.10, 0.32, 0.30)  # IoU with A: 0.036 / 0.044 = 0.818
FAR = (0.60, 0.60, 0.80, 0.90)


def test_iou_by_hand():
    assert iou(np.array(A), np.array([B, FAR])) == pytest.approx([0.036 / 0.044, 0.0])


def test_two_models_agreeing_give_the_score_weighted_mean_box_and_their_mean_score():
    fused = fuse([found((*A, 0.8, 0)), found((*B, 0.4, 0))])
    assert len(fused) == 1
    # x: (0.8 * 0.10 + 0.4 * 0.12) / 1.2; the y edges are the same in both
    assert fused.boxes[0] == pytest.approx([0.128 / 1.2, 0.10, 0.368 / 1.2, 0.30], abs=1e-6)
    assert fused.scores[0] == pytest.approx((0.8 + 0.4) / 2)  # x min(2 boxes, 2 models) / 2
    assert fused.class_ids[0] == 0


def test_a_box_only_one_model_of_three_found_keeps_a_third_of_its_score():
    fused = fuse([found((*A, 0.9, 1)), found(), found()])
    assert fused.scores == pytest.approx([0.3])
    assert fused.boxes[0] == pytest.approx(A)


def test_weights_scale_each_models_say():
    """Weights 3 and 1: scores become 2.4 and 0.4; the box leans to the heavier model; the score
    is their mean times min(2, 2) over the weights' sum (4)."""
    fused = fuse(
        [found((*A, 0.8, 0), (*FAR, 0.5, 2)), found((*B, 0.4, 0), (0.0, 0.0, 0.1, 0.1, 0.5, 1))],
        weights=[3.0, 1.0],
    )
    by_class = {
        int(c): (b, s) for b, s, c in zip(fused.boxes, fused.scores, fused.class_ids, strict=True)
    }
    box, score = by_class[0]
    assert box[0] == pytest.approx((2.4 * 0.10 + 0.4 * 0.12) / 2.8, abs=1e-6)
    assert score == pytest.approx((2.4 + 0.4) / 2 * 2 / 4)
    assert by_class[2][1] == pytest.approx(0.5 * 3 / 4)  # only the heavy model: 0.375
    assert by_class[1][1] == pytest.approx(0.5 * 1 / 4)  # only the light one: 0.125
    assert list(fused.scores) == sorted(fused.scores, reverse=True)
    # Only the weights' ratio matters.
    same = fuse(
        [found((*A, 0.8, 0), (*FAR, 0.5, 2)), found((*B, 0.4, 0), (0.0, 0.0, 0.1, 0.1, 0.5, 1))],
        weights=[0.6, 0.2],
    )
    assert same.scores == pytest.approx(fused.scores) and same.boxes == pytest.approx(fused.boxes)


def test_boxes_of_different_classes_or_too_little_overlap_stay_apart():
    other_class = fuse([found((*A, 0.8, 0)), found((*B, 0.4, 1))])
    assert sorted(other_class.scores) == pytest.approx([0.2, 0.4])
    apart = fuse([found((*A, 0.8, 0)), found((0.2, 0.1, 0.4, 0.3, 0.4, 0))])  # IoU 1/3
    assert sorted(apart.scores) == pytest.approx([0.2, 0.4])
    # ... unless the threshold allows it.
    assert (
        len(fuse([found((*A, 0.8, 0)), found((0.2, 0.1, 0.4, 0.3, 0.4, 0))], iou_threshold=0.3))
        == 1
    )


def test_more_boxes_than_models_in_a_cluster_are_capped_at_the_models():
    """Two boxes of one model and one of the other fall together: the mean of three scores,
    times min(3, 2) / 2."""
    fused = fuse([found((*A, 0.9, 0), (*B, 0.6, 0)), found((*A, 0.3, 0))])
    assert len(fused) == 1
    assert fused.scores[0] == pytest.approx((0.9 + 0.6 + 0.3) / 3)


def test_a_box_matches_the_fused_box_as_it_stands():
    """The third box is compared with the fused box of the first two (x from 0.10 to 0.30 and
    0.15 to 0.35 at equal scores: 0.125 to 0.325), not with the first box alone."""
    first, second, third = (0.10, 0.0, 0.30, 1.0), (0.15, 0.0, 0.35, 1.0), (0.175, 0.0, 0.375, 1.0)
    assert iou(np.array(third), np.array([first]))[0] == pytest.approx(0.125 / 0.275)  # < 0.55
    assert iou(np.array(third), np.array([(0.125, 0.0, 0.325, 1.0)]))[0] == pytest.approx(0.6)
    fused = fuse([found((*first, 0.5, 0)), found((*second, 0.5, 0)), found((*third, 0.5, 0))])
    assert len(fused) == 1 and fused.scores[0] == pytest.approx(0.5)
    assert fused.boxes[0][0] == pytest.approx((0.10 + 0.15 + 0.175) / 3)


def test_one_model_alone_comes_back_unchanged_and_the_floor_and_limit_hold():
    single = found((*A, 0.9, 0), (*FAR, 0.4, 1), (0.0, 0.0, 0.05, 0.05, 0.01, 2))
    fused = fuse([single])
    assert fused.boxes == pytest.approx(single.boxes) and fused.scores == pytest.approx(
        single.scores
    )
    assert list(fuse([single], skip_threshold=0.05).scores) == pytest.approx([0.9, 0.4])
    assert len(fuse([single], max_detections=1)) == 1
    assert len(fuse([found(), found()])) == 0


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="2 positive weights"):
        fuse([found(), found()], weights=[1.0])
    with pytest.raises(ValueError, match="positive"):
        fuse([found(), found()], weights=[1.0, 0.0])
