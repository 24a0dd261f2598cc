"""How long to train: a budget of images seen, turned into epochs of the data at hand.

A fixed number of epochs fits one dataset size only: 24 epochs are 6,000 images seen on 250
photos (far too few: the detector is trained from scratch) and 480,000 on 20,000 (hours on a
CPU). The default is therefore a number of images seen (`--images-seen`), divided by the size of
the training split and kept within `--min-epochs` and `--max-epochs`: a small set is seen many
times, a large one at least a few. `--epochs` overrides the budget.

The plan also spreads the validations (`--evaluations` over the run unless `--eval-every` says
otherwise: the best of them is the exported model) and the learning-rate warm-up over the
steps. One line says what was chosen and why. Pure arithmetic: no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubedetect.config import TrainConfig
from kubedetect.errors import KubedetectError

WARMUP_SHARE = 0.1  # the warm-up never takes more than this share of the steps


@dataclass(frozen=True)
class TrainingPlan:
    epochs: int
    steps_per_epoch: int
    warmup_steps: int
    eval_every: int  # epochs between validations (and after the last)
    reason: str  # one line for the log: what was chosen, and why

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_training(train_images: int, config: TrainConfig) -> TrainingPlan:
    """The run's length for `train_images` training images under `config`."""
    batch = config.batch_size
    if config.min_epochs < 1 or config.max_epochs < config.min_epochs:
        raise KubedetectError(
            f"--min-epochs {config.min_epochs} and --max-epochs {config.max_epochs}: expected "
            "1 <= min <= max"
        )
    if train_images < batch and not config.steps_per_epoch:
        raise KubedetectError(
            f"{train_images} training images, fewer than one batch of {batch}: lower "
            "--batch-size, or add images"
        )
    steps_per_epoch = config.steps_per_epoch or train_images // batch
    per_epoch = steps_per_epoch * batch  # images one epoch shows the model
    if config.epochs:
        epochs, why = config.epochs, f"--epochs {config.epochs}"
    else:
        wanted = config.images_seen / per_epoch
        epochs = min(config.max_epochs, max(config.min_epochs, round(wanted)))
        why = f"--images-seen {config.images_seen:,} / {per_epoch:,} images an epoch"
        if epochs != round(wanted):
            bound = "--min-epochs" if epochs == config.min_epochs else "--max-epochs"
            why += f" = {wanted:.1f} epochs, kept to {bound} {epochs}"
    total = epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), int(WARMUP_SHARE * total))
    eval_every = config.eval_every or max(1, math.ceil(epochs / max(1, config.evaluations)))
    reason = (
        f"training for {epochs} epochs of {steps_per_epoch} steps ({total:,} steps, "
        f"{total * batch:,} images seen; {train_images:,} training images, batch {batch}): "
        f"{why}"
    )
    return TrainingPlan(epochs, steps_per_epoch, warmup, eval_every, reason)
