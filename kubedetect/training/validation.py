"""Validation mAP during training, measured by every worker at once.

Each worker predicts its slice of the val split (every W-th image, streamed from the shards and
spread over its replicas) with the model being trained, in inference mode. Every worker runs the
same number of steps (slices are padded with blank images to whole batches, which are then
ignored), so none waits for another. The detections of every replica are then gathered to every
worker (one all-gather, a few kB per image) and the chief scores them against the split's true
boxes with pycocotools, as `kubedetect evaluate` does with the same decode.

Why not the chief alone, as before: it pushed the whole split through one replica while every
other worker waited for it in the next step's all-reduce (on N workers, N - 1 idle for the whole
validation) and held the split's pixels in memory twice. Why not in the background: it would
take the chief's compute from training, so that all workers wait for the chief at every step
instead, and it would score weights that are no longer the ones being trained. Split over all
replicas, validation takes 1/N of the time on N workers and holds no pixels beyond a batch.
What remains on the chief alone is pycocotools' scoring, which is small beside the prediction.
"""

from __future__ import annotations

import math
import time

import numpy as np

from kubedetect.data.shards import load_manifest, shard_paths
from kubedetect.evaluation.evaluate import MAP_SCORE_FLOOR, evaluate_detections, read_truths
from kubedetect.inference.decode import Detections, decode_batch
from kubedetect.training.inputs import local_replica_count, pipeline_options

MAX_DETECTIONS = 100  # per image, COCO's maxDets
SCORE_THRESHOLD = 0.3  # the operating point of precision and recall (the model card's default)
_COLUMNS = 7  # a gathered detection: image index, class, score, xmin, ymin, xmax, ymax


class Validation:
    """The val split of `shards_dir`, predicted by `model` on every replica of `strategy`.

    Call it on every worker at the same point of training (it holds collectives); the chief gets
    the metrics, the other workers None.
    """

    def __init__(
        self,
        strategy,
        model,
        shards_dir: str,
        *,
        batch_size: int,
        max_images: int,
        is_chief: bool,
        threads: int = 0,
        log=print,
    ):
        import tensorflow as tf  # noqa: PLC0415

        from kubedetect.data.example import parse_example  # noqa: PLC0415

        manifest = load_manifest(shards_dir)
        files = shard_paths(shards_dir, "val")
        size = int(manifest["image_size"])
        total = int(manifest["splits"]["val"]["images"])
        self.images = min(total, max_images) if max_images else total
        self.strategy, self.shards_dir, self.is_chief = strategy, shards_dir, is_chief
        self.log = log
        self.max_images = max_images
        self.local_replicas = local_replica_count(strategy)
        pipelines = strategy.num_replicas_in_sync // self.local_replicas
        per_replica = max(1, batch_size // strategy.num_replicas_in_sync)
        per_step = per_replica * self.local_replicas  # images one worker predicts per step
        self.steps = math.ceil(math.ceil(self.images / pipelines) / per_step)
        self._truths = None

        def slice_of_worker(context):
            def parse(index, serialized):
                image = tf.ensure_shape(parse_example(serialized)["image"], [size, size, 3])
                return image, index

            blank = tf.data.Dataset.from_tensors(
                (tf.zeros([size, size, 3], tf.uint8), tf.constant(-1, tf.int64))
            ).repeat()
            return (
                tf.data.TFRecordDataset(files)
                .take(self.images)
                .enumerate()  # the image's index in the split: where its detections belong
                .shard(context.num_input_pipelines, context.input_pipeline_id)
                .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
                .concatenate(blank)
                .take(self.steps * per_step)
                .batch(per_replica, drop_remainder=True)
                .prefetch(2)
                .with_options(pipeline_options(threads))
            )

        self.dataset = strategy.distribute_datasets_from_function(slice_of_worker)

        def forward(images):
            return model(tf.cast(images, tf.float32), training=False)

        @tf.function
        def predict_step(iterator):
            images, index = next(iterator)
            return strategy.run(forward, args=(images,)), index

        self._predict_step = predict_step

    def __call__(self) -> dict | None:
        started = time.perf_counter()
        rows, predicted = self._predict()
        self.log(
            f"validation: predicted {predicted} of {self.images} val images "
            f"in {time.perf_counter() - started:.1f} s"
        )
        everything = self._gather(rows)
        if not self.is_chief:
            return None
        if self._truths is None:  # read once: the boxes of the split, no pixels
            self._truths = read_truths(self.shards_dir, "val", self.max_images)
        found = _detections_per_image(everything, self.images)
        return evaluate_detections(self._truths, found, score_threshold=SCORE_THRESHOLD)

    def _predict(self) -> tuple[list[np.ndarray], int]:
        """This worker's detections, one array of rows per local replica, and how many images
        it predicted."""
        local = self.strategy.experimental_local_results
        rows: list[list[np.ndarray]] = [[] for _ in range(self.local_replicas)]
        predicted = 0
        iterator = iter(self.dataset)
        for _ in range(self.steps):
            outputs, index = self._predict_step(iterator)
            maps = {name: local(value) for name, value in outputs.items()}
            for replica, indices in enumerate(local(index)):
                found = decode_batch(
                    {name: values[replica].numpy() for name, values in maps.items()},
                    score_threshold=MAP_SCORE_FLOOR,
                    max_detections=MAX_DETECTIONS,
                )
                real = [(i, d) for i, d in zip(indices.numpy(), found, strict=True) if i >= 0]
                rows[replica] += [_rows(i, d) for i, d in real]
                predicted += len(real)
        return [np.concatenate(r) if r else np.zeros((0, _COLUMNS)) for r in rows], predicted

    def _gather(self, rows: list[np.ndarray]) -> np.ndarray:
        """Every replica's rows, on every worker (an all-gather; sizes may differ)."""
        import tensorflow as tf  # noqa: PLC0415

        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(rows[context.replica_id_in_sync_group % len(rows)])
        )
        return self.strategy.gather(values, axis=0).numpy()


def _rows(index: int, found: Detections) -> np.ndarray:
    return np.column_stack(
        [
            np.full(len(found), index, np.float64),
            found.class_ids.astype(np.float64),
            found.scores.astype(np.float64),
            found.boxes.astype(np.float64),
        ]
    ).reshape(-1, _COLUMNS)


def _detections_per_image(rows: np.ndarray, images: int) -> list[Detections]:
    """The gathered rows back to one Detections per image, in the decode's order."""
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    bounds = np.searchsorted(rows[:, 0], np.arange(images + 1))
    return [
        Detections(
            boxes=rows[a:b, 3:7].astype(np.float32),
            scores=rows[a:b, 2].astype(np.float32),
            class_ids=rows[a:b, 1].astype(np.int32),
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
