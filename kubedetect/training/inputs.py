"""The training input pipeline: TFRecord shards to batches of images and targets, per worker.

Each worker reads its own part of the data (whole shard files when there are at least as many
files as workers, every n-th example otherwise), shuffles it with a seeded buffer, repeats it
forever and batches it for its replicas. The training loop takes exactly `steps_per_epoch` steps
per epoch on every worker, so workers with a few more or fewer examples still run the same
number of steps (a collective op waits for all of them).

A worker with several replicas (several GPUs in one pod) feeds them from one pipeline: the
distributed dataset hands its consecutive batches to the replicas in turn, so one step takes
`local_replicas` batches of the per-replica size from it.

The stream is a pure function of (files, seed, worker): a job resumed at step k skips the
k x local_replicas batches this worker already trained on, and continues with the same examples
and the same augmentation (stateless, seeded by each example's position) as if it had never
stopped, whatever the number of replicas per worker.

Decoded images are kept in memory (`cache`) only when the caller decides they fit
(`cache_plan`); otherwise every epoch streams them from the shards, and the shuffle buffer
holds the compressed records, decoded after shuffling (and after a resumed job's skip, which
then decodes nothing). Both give the same stream: a shuffle's order depends only on its seed
and the number of elements, not on what they are.
"""

from __future__ import annotations

import tensorflow as tf

from kubedetect.config import TrainConfig
from kubedetect.data.example import parse_example
from kubedetect.network.architecture import output_size
from kubedetect.resources import available_cores, memory_limit
from kubedetect.training.augment import (
    IDENTITY_COLOUR,
    IDENTITY_WINDOW,
    apply,
    mosaic,
    sample,
    transform_boxes,
)
from kubedetect.training.targets import encode

# What one cached example takes beyond its pixels (boxes, classes, id, the cache's bookkeeping):
# a generous allowance, so that the estimate errs on the side of streaming.
CACHED_EXAMPLE_OVERHEAD = 4096


def worker_records(files: list[str], num_workers: int, worker: int) -> tf.data.Dataset:
    """This worker's serialized examples, in a fixed order."""
    if num_workers > 1 and len(files) >= num_workers:
        return tf.data.TFRecordDataset(files[worker::num_workers])
    return tf.data.TFRecordDataset(files).shard(num_workers, worker)


def local_replica_count(strategy) -> int:
    """Replicas of `strategy` in this process (GPUs of this pod): 1 for the default strategy."""
    values = strategy.experimental_distribute_values_from_function(
        lambda context: context.replica_id_in_sync_group
    )
    return len(strategy.experimental_local_results(values))


def worker_share(records_per_file: list[int], num_workers: int, worker: int) -> int:
    """How many examples `worker_records` gives this worker (from the manifest's counts)."""
    if num_workers > 1 and len(records_per_file) >= num_workers:
        return sum(records_per_file[worker::num_workers])
    return len(range(worker, sum(records_per_file), num_workers))


def cached_bytes(examples: int, image_size: int) -> int:
    """Memory that `examples` decoded images of `image_size` px take in the cache."""
    return examples * (image_size * image_size * 3 + CACHED_EXAMPLE_OVERHEAD)


def cache_plan(
    examples: int, image_size: int, config: TrainConfig, memory_limit: int
) -> tuple[bool, str]:
    """Whether this worker keeps its decoded training images in memory, and why (for the log).

    'auto' caches only when they fit `cache_budget` of the process's memory limit: a pod's
    limit (cgroup memory.max, or KUBEDETECT_MEMORY_LIMIT), not the node's RAM.
    """
    size = cached_bytes(examples, image_size)
    what = f"{examples:,} decoded training images take {_gib(size)}"
    if config.cache == "memory":
        return True, f"cache: {what}: kept in memory (--cache memory)"
    if config.cache == "none":
        return False, f"cache: {what}: streamed from the shards every epoch (--cache none)"
    budget = int(config.cache_budget * memory_limit)
    fits = size <= budget
    return fits, (
        f"cache: {what}, {'within' if fits else 'over'} the budget of {_gib(budget)} "
        f"(--cache-budget {config.cache_budget:g} of the memory limit, {_gib(memory_limit)}): "
        + ("kept in memory from the first epoch on" if fits else "streamed every epoch")
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


def example_id(source_id: tf.Tensor) -> tf.Tensor:
    """A number naming an example (its source id hashed): which examples a step trained on."""
    return tf.strings.to_hash_bucket_fast(source_id, 2**62)


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
    local_replicas: int = 1,
    cache: bool = False,
) -> tf.data.Dataset:
    """Endless batches of (image float32 [B, S, S, 3], targets, example ids int64 [B]) for one
    worker. batch_size is one replica's share of the global batch; each step takes
    `local_replicas` such batches."""
    seed = config.seed * 1_000_003 + worker  # each worker its own, reproducible, stream

    def parse(serialized):
        example = parse_example(serialized)
        return {
            "image": example["image"],
            "boxes": example["boxes"],
            "classes": example["classes"],
            "id": example_id(example["source_id"]),
        }

    examples = worker_records(files, num_workers, worker)
    if cache:
        examples = examples.map(parse, num_parallel_calls=tf.data.AUTOTUNE).cache()
    examples = (
        examples.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .enumerate()  # the position in the stream seeds the augmentation of each example
        .skip(start_step * local_replicas * batch_size)
    )

    cells = output_size(image_size)
    if config.augment and config.mosaic:
        return _mosaic_batches(
            examples, seed, parse if not cache else None, num_classes, image_size, batch_size,
            config,
        )  # fmt: skip

    def prepare(position, example):
        """Per example: augmentation parameters, moved boxes, targets (pixels move per batch)."""
        if not cache:
            example = parse(example)
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
        targets = encode(boxes, classes, num_classes, cells)
        return image, window, colour, targets, example["id"]

    def move_pixels(images, windows, colours, targets, ids):
        if config.augment:
            return apply(images, windows, colours), targets, ids
        return tf.cast(images, tf.float32), targets, ids

    return (
        examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .map(move_pixels, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(pipeline_options(config.threads))
    )


def _mosaic_batches(examples, seed, parse, num_classes, image_size, batch_size, config):
    """The stream's batches, each image a mosaic of four (kubedetect.training.augment.mosaic):
    windows drawn per example (zoomed in, side 0.5 to 1, since each shows at half size), boxes
    padded per batch and moved with the pixels, targets made per image after the mosaic."""
    cells = output_size(image_size)

    def prepare(position, example):
        if parse is not None:
            example = parse(example)
        window, colour = sample(
            tf.stack([tf.cast(seed, tf.int64), position]),
            scale_jitter=0.25,
            colour_jitter=config.colour_jitter,
            scale=0.75,
        )
        image = tf.ensure_shape(example["image"], [image_size, image_size, 3])
        return image, window, colour, example["boxes"], example["classes"], example["id"]

    def compose(images, windows, colours, boxes, classes, ids):
        pixels, boxes, classes, keep = mosaic(images, windows, colours, boxes, classes, image_size)

        def targets_of(args):
            boxes, classes, keep = args
            return encode(
                tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep), num_classes, cells
            )

        spec = {
            name: tf.TensorSpec([cells, cells, channels], tf.float32)
            for name, channels in (("heatmap", num_classes), ("positives", num_classes),
                                   ("size", 2), ("offset", 2))
        }  # fmt: skip
        spec |= {
            name: tf.TensorSpec([cells, cells], tf.float32) for name in ("size_weight", "centre")
        }
        targets = tf.map_fn(targets_of, (boxes, classes, keep), fn_output_signature=spec)
        return pixels, targets, ids

    padded = ([None, None, 3], [4], [3], [None, 4], [None], [])
    return (
        examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .padded_batch(
            batch_size,
            padded_shapes=padded,
            padding_values=(tf.constant(0, tf.uint8), 0.0, 0.0, 0.0, -1, tf.constant(0, tf.int64)),
            drop_remainder=True,
        )
        .map(compose, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(pipeline_options(config.threads))
    )


def pipeline_options(threads: int = 0) -> tf.data.Options:
    """Deterministic order, no automatic sharding (each worker picks its own part), and a CPU
    budget for tf.data's autotuning of the pod's cores, not the node's (it would assume every
    core the process may be scheduled on)."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.autotune.cpu_budget = threads or available_cores()
    return options


def distributed_training_data(
    strategy,
    files: list[str],
    records_per_file: list[int],
    *,
    num_classes: int,
    image_size: int,
    config: TrainConfig,
    start_step: int = 0,
    log=print,
):
    """The training stream of every worker of `strategy`, resumed at `start_step`, each worker's
    decoded images cached if they fit its memory budget (the decision logged); elements are
    per-replica (images, targets, example ids)."""

    def worker_data(context):
        workers, worker = context.num_input_pipelines, context.input_pipeline_id
        share = worker_share(records_per_file, workers, worker)
        cache, reason = cache_plan(share, image_size, config, memory_limit())
        log(reason)
        return training_dataset(
            files,
            num_classes=num_classes,
            image_size=image_size,
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            config=config,
            start_step=start_step,
            num_workers=workers,
            worker=worker,
            local_replicas=context.num_replicas_in_sync // workers,
            cache=cache,
        )

    return strategy.distribute_datasets_from_function(worker_data)
