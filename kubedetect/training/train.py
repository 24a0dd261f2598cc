"""Training: `python -m kubedetect.training.train SHARDS_DIR MODEL_DIR [flags]`, the TFJob
container command.

One script for one process, for N local processes (`kubedetect train --workers N` starts N of
these with TF_CONFIG) and for N pods of a TFJob. `train` reads as the five steps below, one
function each, in this order in the file:

1. the cluster, from TF_CONFIG, and its distribution strategy (MultiWorkerMirroredStrategy for
   two or more workers), joined within --cluster-timeout;
2. the data: this worker's part of the training shards, seeded, augmented, endless, cached
   in memory only if it fits the pod's memory budget; how long to train follows from its size
   (a budget of images seen, `kubedetect.training.budget`);
3. the model (its batch norms fused for training speed) and optimizer, created in the
   strategy's scope, with an exponential moving average of the weights and the best weights
   so far, restored from the latest checkpoint if a previous run of this job left one;
4. the loop: a custom training step run by `strategy.run` on every replica, its per-example
   losses averaged over the global batch (Keras 3 `fit` fails under MultiWorkerMirroredStrategy
   with two or more workers: keras-team/keras#20585) and summed on the device (read once per
   epoch, not every step), checkpoints every N steps, and validations spread over the run: the
   averaged weights, measured by all workers together, kept when they score best;
5. the export of the best weights: the chief writes MODEL_DIR, the other workers a temporary
   folder they remove.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubedetect.config import ModelConfig, TrainConfig
from kubedetect.errors import KubedetectError
from kubedetect.flags import add_arguments, from_args, to_argv, to_dict
from kubedetect.training.checkpoints import Checkpoints

CACHE_MODES = ("auto", "memory", "none")
LOSS_TERMS = ("total", "heatmap", "size", "offset")
LOG_EVERY_EPOCH = 30  # longer runs log the epochs they validate in (and the last), not each

# TensorFlow's CPU allocator frees large tensors back to the system, so every step maps its
# activations and gradients afresh. In one process that goes unnoticed; in a worker of
# MultiWorkerMirroredStrategy it took 110k page faults a second and a third of the CPU in the
# kernel (2 workers on 2 cores: 21 images/s against 38 with the caching BFC allocator; see
# docs/TRAINING.md). Set before TensorFlow is imported, which happens inside train(); a value
# given in the environment wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

# What `make demo` trains on synthetic shapes: the data it makes and the flags it passes (with
# DATA=path, the demo trains on the user's photos with the defaults instead). About two to four
# minutes of training on two CPU cores, to a validation mAP@0.5 near 0.9 (the default quality
# gate asks for 0.5); validation twice (half-way and at the end: the better one is exported),
# since the chief's pycocotools scoring keeps the other worker waiting.
# bench/train.py measures this training (mAP against time), bench/demo.py the whole demo (both
# in docs/BENCHMARKS.md).
DEMO = {"images": 2000, "image_size": 256, "epochs": 8, "batch_size": 32, "evaluations": 2}


def demo_flags() -> list[str]:
    """The training flags of the demo on synthetic shapes (the rest are TrainConfig's
    defaults)."""
    return [
        *("--epochs", str(DEMO["epochs"]), "--batch-size", str(DEMO["batch_size"])),
        *("--evaluations", str(DEMO["evaluations"])),
    ]


def log(message: str) -> None:
    print(message, flush=True)


def train(
    shards_dir: str,
    model_dir: str,
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    *,
    strategy=None,
) -> dict:
    """Train and export; returns a summary (steps, final metrics, weights digest, is_chief).

    `strategy`: a distribution strategy the caller made (say, MirroredStrategy over chosen
    devices); by default the one TF_CONFIG and the visible GPUs call for.
    """
    config, model_config = config or TrainConfig(), model_config or ModelConfig()
    if config.cache not in CACHE_MODES:
        raise KubedetectError(f"--cache {config.cache!r}: expected one of {', '.join(CACHE_MODES)}")
    started = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: PLC0415 - TensorFlow only once training starts

    _require_gpus(config.require_gpus, tf.config.list_physical_devices("GPU"))

    workers = join_cluster(config, strategy)  # 1. the cluster
    data = read_data(shards_dir, config, workers)  # 2. the data
    state = build_state(data, config, model_config, workers)  # 3. the model
    checkpoints = Checkpoints(state.trackables(), model_dir, config, workers.cluster.is_chief)
    resumed, history = checkpoints.restore()
    if resumed:
        workers.log(f"resumed from {resumed} at step {state.step}")
    progress = fit(state, data, checkpoints, history, workers, config, started)  # 4. the loop
    # 5. the export
    summary = export_best(model_dir, state, data, progress, workers, config, model_config)
    progress.steps.barrier()  # nobody exits while another worker still works
    checkpoints.clean_up()
    return summary


# -- 1. the cluster -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workers:
    """Who trains: this process's place in the cluster and the strategy all workers share."""

    cluster: Any  # kubedetect.training.cluster.Cluster
    strategy: Any  # a tf.distribute strategy
    threads: int  # CPU op threads: the pod's cores, not the node's
    local_replicas: int  # several GPUs in one pod
    mixed_precision: bool

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def log(self, message: str) -> None:
        log(f"{self.cluster.name}: {message}")


def join_cluster(config: TrainConfig, strategy=None) -> Workers:
    """This worker from TF_CONFIG, joined to its peers within --cluster-timeout (their strategy:
    MultiWorkerMirroredStrategy for two or more), seeded, with its precision policy set."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.resources import available_cores, configure_threads  # noqa: PLC0415
    from kubedetect.training import cluster as clusters  # noqa: PLC0415
    from kubedetect.training.inputs import local_replica_count  # noqa: PLC0415

    cluster = clusters.Cluster.from_env()
    threads = config.threads or available_cores()
    if strategy is None:
        if not configure_threads(threads):
            log("TensorFlow already runs in this process: its thread pools stay as they were")
        strategy = clusters.make_strategy(cluster, config.cluster_timeout, log=log)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise KubedetectError(
            f"--batch-size {config.batch_size} does not split evenly over {replicas} replicas"
        )
    mixed = config.mixed_precision and bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(config.seed)
    return Workers(cluster, strategy, threads, local_replica_count(strategy), mixed)


# -- 2. the data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """The shards as their manifest describes them, and how long to train on them."""

    shards_dir: str
    manifest: dict
    classes: Any  # kubedetect.io.labels.ClassMap
    image_size: int
    train_files: list[str]
    train_images: int
    plan: Any  # kubedetect.training.budget.TrainingPlan

    @property
    def has_validation(self) -> bool:
        return bool(self.manifest["splits"].get("val", {}).get("images"))

    def stream(self, workers: Workers, config: TrainConfig, start_step: int):
        """This worker's part of the training shards: seeded, augmented, endless, cached in
        memory only if it fits the pod's memory budget; from `start_step` on when resuming."""
        from kubedetect.training.inputs import distributed_training_data  # noqa: PLC0415

        records_per_file = [
            int(f["records"]) for f in self.manifest["shards"] if f["split"] == "train"
        ]
        return distributed_training_data(
            workers.strategy,
            self.train_files,
            records_per_file,
            num_classes=len(self.classes),
            image_size=self.image_size,
            config=config,
            start_step=start_step,
            log=workers.log,
        )


def read_data(shards_dir: str, config: TrainConfig, workers: Workers) -> TrainingData:
    """The manifest read, and the length of the run planned from the training split's size (a
    budget of images seen, kubedetect.training.budget)."""
    from kubedetect.data.shards import load_manifest, shard_paths  # noqa: PLC0415
    from kubedetect.io.labels import ClassMap  # noqa: PLC0415
    from kubedetect.training.budget import plan_training  # noqa: PLC0415

    manifest = load_manifest(shards_dir)
    train_images = int(manifest["splits"]["train"]["images"])
    try:
        plan = plan_training(train_images, config)
    except KubedetectError as exc:
        raise KubedetectError(f"{shards_dir}: {exc}") from None
    workers.log(plan.reason)
    return TrainingData(
        shards_dir=shards_dir,
        manifest=manifest,
        classes=ClassMap(tuple(manifest["classes"])),
        image_size=int(manifest["image_size"]),
        train_files=shard_paths(shards_dir, "train"),
        train_images=train_images,
        plan=plan,
    )


# -- 3. the model, its optimizer, its averaged and best weights, checkpoints -----------------


@dataclass(frozen=True)
class TrainingState:
    """What the steps change and the checkpoints hold."""

    model: Any  # keras.Model, its batch norms fused
    schedule: Any  # the learning rate by step
    optimizer: Any
    weights: Any  # kubedetect.training.ema.Weights: the running average and the best so far

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def trackables(self) -> dict:
        """What a checkpoint saves and restores."""
        return {"model": self.model, "optimizer": self.optimizer, **self.weights.trackables()}


def build_state(
    data: TrainingData, config: TrainConfig, model_config: ModelConfig, workers: Workers
) -> TrainingState:
    """The model and optimizer, created in the strategy's scope: trained with fused batch norms
    (the same weights, 1.4x faster on CPUs), exported as the plain Keras model (step 5); AdamW
    with a warm-up and a cosine decay; an exponential moving average of the weights."""
    import keras  # noqa: PLC0415

    from kubedetect.network.architecture import build_detector  # noqa: PLC0415
    from kubedetect.network.batchnorm import with_fused_batch_norm  # noqa: PLC0415
    from kubedetect.training.ema import Weights  # noqa: PLC0415

    plan = data.plan
    with workers.strategy.scope():
        model = with_fused_batch_norm(
            build_detector(len(data.classes), data.image_size, model_config)
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate / 10,
            warmup_target=config.learning_rate,
            warmup_steps=plan.warmup_steps,
            decay_steps=max(1, plan.total_steps - plan.warmup_steps),
            alpha=0.02,
        )
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        if workers.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        weights = Weights(workers.strategy, model, config.ema_decay)
    keras.mixed_precision.set_global_policy("float32")  # models built from here on: float32
    return TrainingState(model, schedule, optimizer, weights)


# -- 4. the loop ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    """The loop's compiled parts, run alike by every worker."""

    train_step: Callable  # one step on every replica, from the data iterator
    epoch_losses: Callable  # (steps) -> the epoch's mean loss terms over all replicas; resets
    running_loss: Callable  # (steps) -> this worker's mean total loss so far in the epoch
    average_statistics: Callable  # BatchNorm's running statistics averaged across workers
    barrier: Callable  # a collective every worker must reach


def compile_steps(state: TrainingState, workers: Workers, batch_size: int) -> Steps:
    """A custom training step run by `strategy.run` on every replica, its per-example losses
    averaged over the global batch (Keras 3 `fit` fails under MultiWorkerMirroredStrategy with
    two or more workers: keras-team/keras#20585).

    The loss terms are summed where they are computed, one sum per replica: nothing leaves the
    device at a step. The epoch's mean is read once at its end (one all-reduce, made by every
    worker at the same step); the progress bar reads this worker's running sums every
    --log-every steps, and only when it is shown.
    """
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.training.losses import detection_losses  # noqa: PLC0415

    strategy, model, optimizer = workers.strategy, state.model, state.optimizer
    replicas = workers.replicas
    with strategy.scope():
        loss_sums = {
            name: tf.Variable(
                0.0,
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            for name in LOSS_TERMS
        }

    @tf.function
    def train_step(iterator):
        def step_fn(images, targets):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                terms = detection_losses(outputs, targets)
                loss = tf.nn.compute_average_loss(terms["total"], global_batch_size=batch_size)
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            state.weights.update_average(optimizer.iterations)
            for name, value in terms.items():
                loss_sums[name].assign_add(
                    tf.nn.compute_average_loss(value, global_batch_size=batch_size)
                )

        images, targets, _ = next(iterator)
        strategy.run(step_fn, args=(images, targets))

    def epoch_losses(steps: int) -> dict[str, float]:
        means = {name: float(total.read_value()) / steps for name, total in loss_sums.items()}
        for total in loss_sums.values():
            total.assign(0.0)
        return means

    def running_loss(steps: int) -> float:
        local = strategy.experimental_local_results(loss_sums["total"])  # no collective
        return sum(float(v) for v in local) * replicas / workers.local_replicas / max(1, steps)

    @tf.function
    def average_statistics():
        """Each worker updates BatchNorm's running statistics from its own batches (the trainable
        weights, updated from all-reduced gradients, stay equal): average them across workers at
        every checkpoint, epoch end and export, so that all workers, the checkpoints and the
        export hold the same statistics, drawn from all the data."""
        if replicas == 1:
            return

        def average():
            context = tf.distribute.get_replica_context()
            variables = model.non_trainable_variables
            means = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables]
            )
            for variable, mean in zip(variables, means, strict=True):
                variable.assign(mean)

        strategy.run(average)

    def one():
        return tf.constant(1.0)

    @tf.function
    def barrier():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(one), axis=None)

    return Steps(train_step, epoch_losses, running_loss, average_statistics, barrier)


@dataclass
class Progress:
    """What the loop leaves for the export."""

    steps: Steps
    validation: Any  # kubedetect.training.validation.Validation, or None without a val split
    step: int
    history: list[dict]
    train_seconds: float
    metrics: dict = field(default_factory=dict)  # the latest validation's (on the chief)
    validated_at: int = -1  # the step of the latest validation
    best_metrics: dict | None = None  # the best weights' metrics, once this process measured

    def validate(self, state: TrainingState, workers: Workers, epochs_done: int) -> dict:
        """The averaged weights' validation metrics (on the chief; {} elsewhere), kept as the
        best weights when they score best: a decision every worker makes alike, from the
        chief's score."""
        with state.weights.averaged():
            metrics = self.validation() or {}
            score = _from_chief(
                workers.strategy, metrics.get("map50", 0.0), workers.cluster.is_chief
            )
            if state.weights.offer(score, epochs_done):
                self.best_metrics = metrics
        self.metrics, self.validated_at = metrics, self.step
        return metrics


def fit(
    state: TrainingState,
    data: TrainingData,
    checkpoints: Checkpoints,
    history: list[dict],
    workers: Workers,
    config: TrainConfig,
    started: float,
) -> Progress:
    """The epochs the plan asks for (from the restored step on), each one logged; checkpoints
    every N steps; validations spread over the run: the averaged weights, measured by all
    workers together, kept when they score best."""
    import tensorflow as tf  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from kubedetect.training.validation import Validation  # noqa: PLC0415

    plan, step = data.plan, state.step
    iterator = iter(data.stream(workers, config, start_step=step))
    validation = None
    if plan.epochs and data.has_validation:
        # Every worker predicts its slice of the val split; the chief scores it.
        validation = Validation(
            workers.strategy,
            state.model,
            data.shards_dir,
            batch_size=config.batch_size,
            max_images=config.eval_images,
            is_chief=workers.cluster.is_chief,
            threads=workers.threads,
            log=workers.log,
        )
    elif plan.epochs:
        workers.log(
            f"no validation: {data.shards_dir} has no 'val' images (preprocessed with "
            "--val-fraction 0?), so the weights of the last step are exported"
        )
    steps = compile_steps(state, workers, config.batch_size)
    train_seconds = history[-1]["train_seconds"] if history else 0.0
    progress = Progress(steps, validation, step, history, train_seconds)

    def save_checkpoint():
        steps.average_statistics()
        checkpoints.save(progress.step, history)

    mixed = ", mixed precision" if workers.mixed_precision else ""
    workers.log(
        f"training {state.model.count_params():,} parameters on {data.train_images} images "
        f"({len(data.classes)} classes, {data.image_size} px), global batch {config.batch_size} "
        f"over {workers.replicas} replica(s){mixed}, "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} CPU op thread(s)"
        + (f", validating every {plan.eval_every} epoch(s)" if validation else "")
    )
    bar = tqdm(
        total=plan.total_steps,
        initial=step,
        desc="training",
        unit="step",
        disable=None if config.progress else True,
        leave=False,
    )
    for epoch in range(step // plan.steps_per_epoch, plan.epochs):
        epoch_start, first_step = time.perf_counter(), progress.step
        while progress.step < (epoch + 1) * plan.steps_per_epoch:
            steps.train_step(iterator)
            progress.step += 1
            bar.update()
            if not bar.disable and config.log_every and progress.step % config.log_every == 0:
                loss = steps.running_loss(progress.step - first_step)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", refresh=False)
            if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                save_checkpoint()
        losses = steps.epoch_losses(progress.step - first_step)  # waits for the epoch's last step
        seconds = time.perf_counter() - epoch_start
        progress.train_seconds += seconds
        row = {
            "epoch": epoch + 1,
            "step": progress.step,
            "loss": losses["total"],
            **{f"{k}_loss": losses[k] for k in ("heatmap", "size", "offset")},
            "learning_rate": float(state.schedule(progress.step)),
            "images_per_second": (progress.step - first_step) * config.batch_size / seconds,
            "epoch_seconds": seconds,
            "train_seconds": progress.train_seconds,
            "wall_seconds": time.perf_counter() - started,
            "val_map50": None,
            "val_map50_95": None,
        }
        last = epoch + 1 == plan.epochs
        steps.average_statistics()
        if validation is not None and (last or (epoch + 1) % plan.eval_every == 0):
            metrics = progress.validate(state, workers, epoch + 1)
            if metrics:
                row.update(val_map50=metrics["map50"], val_map50_95=metrics["map50_95"])
        history.append(row)
        if plan.epochs <= LOG_EVERY_EPOCH or progress.validated_at == progress.step or last:
            bar.clear()
            log(_epoch_line(workers.cluster.name, plan.epochs, row))
        # Epoch ends are checkpoints only without step checkpoints (short epochs of small data
        # would otherwise save every few steps); the last step always is.
        if last or not config.checkpoint_every:
            save_checkpoint()
    bar.close()
    return progress


# -- 5. the export --------------------------------------------------------------------------


def export_best(
    model_dir: str,
    state: TrainingState,
    data: TrainingData,
    progress: Progress,
    workers: Workers,
    config: TrainConfig,
    model_config: ModelConfig,
) -> dict:
    """The best weights in validation (else the average) exported as the plain Keras model with
    its provenance: the chief writes MODEL_DIR, the other workers a temporary folder they remove.
    Returns the training's summary."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.data.shards import resize_mode  # noqa: PLC0415
    from kubedetect.network.architecture import build_detector  # noqa: PLC0415
    from kubedetect.network.export import export, weights_digest  # noqa: PLC0415

    weights, plan, name = state.weights, data.plan, workers.cluster.name
    progress.steps.average_statistics()
    if progress.validation is not None and progress.validated_at != progress.step:
        progress.validate(state, workers, plan.epochs)  # resumed after the last epoch
    metrics = progress.metrics
    if weights.has_best():
        weights.restore_best()
        # Measured before a restart, the best's metrics are measured again.
        metrics = progress.best_metrics
        if metrics is None:
            metrics = progress.validation() or {}
        score, best_epoch = weights.best_score()
        if workers.cluster.is_chief:
            log(
                f"{name}: exporting the weights of epoch {best_epoch}, the best in validation "
                f"(val mAP@0.5 {score:.3f})"
            )
    else:
        weights.use_average()
    resize = resize_mode(data.manifest)  # how its images were fitted, which serving repeats
    digest = weights_digest(state.model.get_weights())
    log(f"{name}: final step {progress.step}, weights sha256 {digest}")
    final = build_detector(len(data.classes), data.image_size, model_config)
    final.set_weights(state.model.get_weights())
    provenance = {
        "trained_on": {
            "shards": data.shards_dir,
            "classes": list(data.classes.names),
            "image_size": data.image_size,
            "resize": resize,
            "train_images": data.train_images,
            "dataset_sha256": _manifest_digest(data.shards_dir),
        },
        "training": to_dict(config),
        "plan": {
            "epochs": plan.epochs,
            "steps_per_epoch": plan.steps_per_epoch,
            "why": plan.reason,
        },
        "model": to_dict(model_config),
        "workers": workers.cluster.size,
        "replicas": workers.replicas,
        "steps": progress.step,
        "exported_epoch": weights.best_score()[1] if weights.has_best() else plan.epochs,
        "weights_sha256": digest,
        "train_seconds": round(progress.train_seconds, 1),
        "metrics": {
            k: metrics[k]
            for k in ("map50", "map50_95", "per_class", "precision", "recall", "score_threshold")
            if k in metrics
        },
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    card = export(
        model_dir,
        workers.cluster.is_chief,
        final,
        data.classes,
        progress.history,
        provenance,
        log=log,
        resize=resize,
    )
    return {
        "is_chief": workers.cluster.is_chief,
        "worker": name,
        "steps": progress.step,
        "weights_sha256": digest,
        "metrics": metrics,
        "history": progress.history,
        "sha256": card.sha256,
    }


def _from_chief(strategy, value: float, is_chief: bool) -> float:
    """The chief's `value` on every worker (a sum over all replicas in which only the chief's
    count): the metrics are scored on the chief alone."""
    import tensorflow as tf  # noqa: PLC0415

    local = len(strategy.experimental_local_results(strategy.run(lambda: tf.constant(0.0))))
    share = value / local if is_chief else 0.0
    values = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant(share, tf.float32)
    )
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None))


def _require_gpus(wanted: int, visible: list) -> None:
    """A worker given GPUs that sees none would train on the CPU for hours while holding them:
    stop within seconds instead, saying why."""
    if len(visible) < wanted:
        raise KubedetectError(
            f"--require-gpus {wanted}: TensorFlow sees {len(visible)} GPU(s) in this worker, "
            "so it would train on the CPU while holding the GPUs it was given. Is the image the "
            "GPU build (k8s/build-images.sh --gpu, tag -gpu; see --tfjob-image), and do the "
            "node's NVIDIA driver and device plugin work (`nvidia-smi` in the pod)?"
        )


def _epoch_line(name: str, epochs: int, row: dict) -> str:
    line = (
        f"{name}: epoch {row['epoch']}/{epochs} step {row['step']} loss {row['loss']:.4f} "
        f"(heatmap {row['heatmap_loss']:.4f} size {row['size_loss']:.4f} "
        f"offset {row['offset_loss']:.4f}) "
        f"lr {row['learning_rate']:.2e} {row['images_per_second']:.1f} images/s "
        f"[{row['train_seconds']:.0f} s]"
    )
    if row["val_map50"] is not None:
        line += f" val mAP@0.5 {row['val_map50']:.3f} mAP@0.5:0.95 {row['val_map50_95']:.3f}"
    return line


def _manifest_digest(shards_dir: str) -> str:
    from kubedetect.io import fs  # noqa: PLC0415

    return fs.sha256_file(fs.join(shards_dir, "dataset.json"))


# ----------------------------------------------------------------------------------------------
# The command line: the same flags for `python -m kubedetect.training.train` and `kubedetect train`.
# ----------------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "shards_dir", metavar="SHARDS_DIR", help="preprocessed shards (dataset.json)"
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="where the chief exports the model")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (the launcher sets TF_CONFIG for each). Inside a TFJob "
        "TF_CONFIG decides; a --workers that disagrees with it is an error.",
    )
    add_arguments(parser, TrainConfig)
    add_arguments(parser, ModelConfig)


def run(args: argparse.Namespace) -> int:
    """Train in this process, or launch local workers with the same settings."""
    from kubedetect.training.cluster import Cluster  # noqa: PLC0415

    config, model_config = from_args(TrainConfig, args), from_args(ModelConfig, args)
    cluster = Cluster.from_env()
    if os.environ.get("TF_CONFIG", "").strip():
        if args.workers not in (None, cluster.size):
            raise KubedetectError(
                f"--workers {args.workers}, but TF_CONFIG describes a cluster of {cluster.size}"
            )
    elif (args.workers or 1) > 1:
        from kubedetect.training.launch import launch  # noqa: PLC0415

        argv = [args.shards_dir, args.model_dir, *to_argv(config), *to_argv(model_config)]
        return launch(argv, args.workers, threads=config.threads)
    train(args.shards_dir, args.model_dir, config, model_config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubedetect.training.train", description=__doc__.splitlines()[0]
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KubedetectError as exc:
        print(f"kubedetect: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kubedetect: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
