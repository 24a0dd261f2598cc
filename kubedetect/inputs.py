"""The training input pipeline: TFRecord shards to batches of images and targets, per worker.

Each worker reads its own part of the data (whole shard files when there are at least as many
files as workers, every n-th example otherwise), shuffles it with a seeded buffer, repeats it
forever and batches it with its share of the global batch. The training loop takes exactly
`steps_per_epoch` batches per epoch from every worker, so workers with a few more or fewer
examples still run the same number of steps (a collective op waits for all of them).

The stream is a pure function of (files, seed, worker): a job resumed at step k skips the k
batches it already trained on, before any decoding, and continues with the same examples and
the same augmentation (stateless, seeded by each example's position) as if it had never stopped.
"""

from __future__ import annotations

import tensorflow as tf

from kubedetect.augment import IDENTITY_COLOUR, IDENTITY_WINDOW, apply, sample, transform_boxes
from kubedetect.config import TrainConfig
from kubedetect.model import output_size
from kubedetect.records import parse_example
from kubedetect.targets import encode


def worker_records(files: list[str], num_workers: int, worker: int) -> tf.data.Dataset:
    """This worker's serialized examples, in a fixed order."""
    if num_workers > 1 and len(files) >= num_workers:
        return tf.data.TFRecordDataset(files[worker::num_workers])
    return tf.data.TFRecordDataset(files).shard(num_workers, worker)


def training_dataset(
    files: list[str],
    *,
    num_classes: int,
    image_size: int,
    batch_size: int,
    config: TrainConfig,
    start_step: int = 0,
    num_workers: int = 1,
    worker: int = 0,
) -> tf.data.Dataset:
    """Endless batches of (image float32 [B, S, S, 3], targets) for one worker.

    batch_size is this worker's share of the global batch.
    """
    seed = config.seed * 1_000_003 + worker  # each worker its own, reproducible, stream

    def decode(serialized):
        example = parse_example(serialized)
        return {"image": example["image"], "boxes": example["boxes"], "classes": example["classes"]}

    examples = worker_records(files, num_workers, worker).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    )
    if config.cache:
        examples = examples.cache()
    examples = (
        examples.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .enumerate()  # the position in the stream seeds the augmentation of each example
        .skip(start_step * batch_size)
    )

    cells = output_size(image_size)

    def prepare(position, example):
        """Per example: augmentation parameters, moved boxes, targets (pixels move per batch)."""
        boxes, classes = example["boxes"], example["classes"]
        window, colour = tf.constant(IDENTITY_WINDOW), tf.constant(IDENTITY_COLOUR)
        if config.augment:
            window, colour = sample(
                tf.stack([tf.cast(seed, tf.int64), position]),
                scale_jitter=config.scale_jitter,
                colour_jitter=config.colour_jitter,
            )
            boxes, classes = transform_boxes(boxes, classes, window, image_size)
        image = tf.ensure_shape(example["image"], [image_size, image_size, 3])
        return image, window, colour, encode(boxes, classes, num_classes, cells)

    def move_pixels(images, windows, colours, targets):
        if config.augment:
            return apply(images, windows, colours), targets
        return tf.cast(images, tf.float32), targets

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return (
        examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .map(move_pixels, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )
