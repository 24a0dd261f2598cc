"""The training input: targets that the shared decode reads back as the boxes they came from,
augmentation that moves boxes with the pixels, a seeded stream a resumed job continues, and the
decision to cache decoded images by the memory the pod may use."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kubedetect.config import TrainConfig  # noqa: E402
from kubedetect.data.shards import shard_paths  # noqa: E402
from kubedetect.inference.decode import decode  # noqa: E402
from kubedetect.training.augment import apply, sample, transform_boxes  # noqa: E402
from kubedetect.training.inputs import (  # noqa: E402
    cache_plan,
    cached_bytes,
    training_dataset,
    worker_records,
    worker_share,
)
from kubedetect.training.targets import encode  # noqa: E402

BOXES = np.array(
    [[0.10, 0.20, 0.30, 0.50], [0.55, 0.05, 0.95, 0.40], [0.40, 0.60, 0.60, 0.90]], np.float32
)
CLASSES = np.array([0, 2, 1], np.int32)


def test_targets_decode_back_to_their_boxes():
    """Targets and decode agree on what the three maps mean: the decode of perfect outputs
    returns every box, with its class, to float precision."""
    t = {k: v.numpy() for k, v in encode(BOXES, CLASSES, 3, 32).items()}
    # A perfect model: the heatmap of the targets, and size/offset maps true at the centres.
    found = decode(t["heatmap"], t["size"], t["offset"], score_threshold=0.99)
    assert len(found) == 3
    order = np.argsort(found.boxes[:, 0])
    np.testing.assert_allclose(found.boxes[order], BOXES[np.argsort(BOXES[:, 0])], atol=1e-6)
    np.testing.assert_array_equal(found.class_ids[order], CLASSES[np.argsort(BOXES[:, 0])])
    assert t["positives"].sum() == 3 and t["centre"].sum() == 3
    assert t["heatmap"].max() == 1.0 and t["heatmap"].min() >= 0.0
    # Size weights: each object's region sums to one, and its centre weighs the most.
    assert t["size_weight"].sum() == pytest.approx(3.0, abs=1e-5)


def test_targets_of_an_image_without_objects_are_empty():
    t = encode(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), 3, 16)
    assert float(tf.reduce_max(t["heatmap"])) == 0.0
    assert float(tf.reduce_sum(t["size_weight"])) == 0.0


def _rectangle_image(box, size=64):
    """A black image with a white filled rectangle exactly covering `box`."""
    image = np.zeros((size, size, 3), np.uint8)
    x0, y0, x1, y1 = (np.asarray(box) * size).round().astype(int)
    image[y0:y1, x0:x1] = 255
    return image


def test_augmentation_moves_boxes_with_the_pixels():
    """Whatever the window (zoom in or out, shifted, flipped), the transformed box is where the
    object's pixels went, to within a pixel or two."""
    size, box = 64, np.array([[0.25, 0.375, 0.5, 0.75]], np.float32)
    image = _rectangle_image(box[0], size)
    checked, flipped = 0, 0
    for seed in range(16):
        window, colour = sample(
            tf.constant([seed, 7], tf.int64), scale_jitter=0.3, colour_jitter=0.0
        )
        moved, classes = transform_boxes(tf.constant(box), tf.constant([1]), window, size)
        if len(moved) == 0:  # the window left too little of the object: dropped
            continue
        pixels = apply(tf.constant(image[None]), window[None], colour[None])[0].numpy()
        ys, xs = np.nonzero(pixels[..., 0] > 127)
        seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size
        np.testing.assert_allclose(moved.numpy()[0], seen, atol=2.5 / size, err_msg=f"seed {seed}")
        assert classes.numpy().tolist() == [1]
        checked += 1
        flipped += int(window[1] > window[3])
    assert checked >= 12 and 0 < flipped < checked  # most windows keep it; some flip, some not


def test_colour_jitter_changes_pixels_not_boxes():
    image = _rectangle_image([0.2, 0.2, 0.6, 0.6])
    window, colour = sample(tf.constant([3, 3], tf.int64), scale_jitter=0.0, colour_jitter=0.4)
    window = tf.constant([0.0, 0.0, 1.0, 1.0])  # no crop, no flip
    out = apply(tf.constant(image[None]), window[None], colour[None])[0].numpy()
    assert not np.allclose(out, image)
    assert out.min() >= 0 and out.max() <= 255


def _batches(shards, config, steps, **kw):
    files = shard_paths(str(shards), "train")
    ds = training_dataset(files, num_classes=3, image_size=128, batch_size=4, config=config, **kw)
    return [b for b, _ in zip(ds.as_numpy_iterator(), range(steps), strict=False)]


def test_the_stream_is_seeded_and_a_resumed_job_continues_it(synth_shards):
    """Same seed, same images and augmentation; a job resumed at step k sees the batches the
    uninterrupted job saw from step k on; another seed, another order."""
    config = TrainConfig(shuffle_buffer=64)
    first = _batches(synth_shards, config, 6)
    again = _batches(synth_shards, config, 6)
    resumed = _batches(synth_shards, config, 3, start_step=3)
    other = _batches(synth_shards, dataclasses.replace(config, seed=1), 6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(first[3:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1]["heatmap"], b[1]["heatmap"])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    assert first[0][0].shape == (4, 128, 128, 3) and first[0][1]["heatmap"].shape == (4, 32, 32, 3)


def test_workers_read_disjoint_parts_of_the_data(synth_shards):
    files = shard_paths(str(synth_shards), "train")
    everything = list(worker_records(files, 1, 0).as_numpy_iterator())
    for workers in (2, 3):  # whole files (2 files, 2 workers) or every n-th example (3 workers)
        parts = [
            list(worker_records(files, workers, i).as_numpy_iterator()) for i in range(workers)
        ]
        assert sorted(x for p in parts for x in p) == sorted(everything)


def test_worker_share_counts_what_worker_records_reads(synth_shards):
    """The cache decision is made from the manifest's counts, before reading anything: they must
    be the examples each worker will actually read."""
    import json

    manifest = json.loads((synth_shards / "dataset.json").read_text())
    counts = [f["records"] for f in manifest["shards"] if f["split"] == "train"]
    files = shard_paths(str(synth_shards), "train")
    for workers in (1, 2, 3):
        for i in range(workers):
            read = sum(1 for _ in worker_records(files, workers, i))
            assert worker_share(counts, workers, i) == read


def test_the_cache_is_used_only_when_the_decoded_share_fits_the_budget():
    """At 256 px a decoded image takes 196 kB: 18,000 of them (a 20,000-image set's training
    split on one worker) are 3.5 GB, over half of a 4 GiB pod, and stream; a tenth of them fit."""
    limit = 4 * 2**30
    auto = TrainConfig()
    assert auto.cache == "auto" and auto.cache_budget == 0.5
    assert cached_bytes(18_000, 256) > 3.5e9
    fits, reason = cache_plan(18_000, 256, auto, limit)
    assert not fits and "over the budget of 2.00 GiB" in reason and "streamed" in reason
    fits, reason = cache_plan(1_800, 256, auto, limit)
    assert fits and "within the budget" in reason
    assert cache_plan(18_000, 256, dataclasses.replace(auto, cache="memory"), limit)[0]
    assert not cache_plan(10, 256, dataclasses.replace(auto, cache="none"), limit)[0]
    assert cache_plan(18_000, 256, dataclasses.replace(auto, cache_budget=0.9), limit)[0]


def test_an_unknown_cache_mode_is_a_clear_error(synth_shards, tmp_path, capsys):
    from kubedetect.training.train import main

    assert main([str(synth_shards), str(tmp_path / "model"), "--cache", "sometimes"]) == 1
    assert "--cache 'sometimes': expected one of auto, memory, none" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
