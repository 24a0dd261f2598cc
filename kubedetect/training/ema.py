"""The weights training exports: an exponential moving average of them, and the best so far.

From scratch, on a few hundred photos, the weights of the last step are a poor choice twice
over: they carry the noise of the last few batches, and the last epoch is not always the best
one. (What the average buys on real photos is small beside the noise between seeds: on cards,
seed 0, test mAP@0.5 0.884 with it and 0.873 without, where seeds 0-2 of the defaults span
0.857-0.884; measured 2026-12-05.) So training keeps, beside the model's own weights:

- `average`: an exponential moving average of the trainable weights, updated after every step
  (decay ramped up from 0.1 over the first steps, as TensorFlow's ExponentialMovingAverage with
  num_updates does, so that the average does not remember the random initialization);
- `best`: every weight of the model (batch norm statistics included) as it was at the
  validation that scored best, and that score.

Validation measures the averaged weights (`averaged()` swaps them into the model and back), and
the export takes the best. All of it is in the checkpoint, so a restarted job keeps its average
and its best. Every worker holds and updates the same values: the trainable weights are the
same on all of them, and the decision to keep a validation's weights is made from the chief's
score, which every worker receives.

Under a distribution strategy, the average is updated as the Keras optimizer updates weights
(a merge_call, then `extended.update` per variable on this worker's devices: no collective);
swaps and copies are assignments in cross-replica context.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

NO_SCORE = -1.0


class Weights:
    """The averaged and the best weights of `model`; create it in the strategy's scope."""

    def __init__(self, strategy, model, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {decay}")
        self.strategy, self.model, self.decay = strategy, model, decay
        self._trainable = [v.value for v in model.trainable_variables]
        self._all = [v.value for v in model.weights]

        def copies(variables):
            return [tf.Variable(v, trainable=False) for v in variables]

        self.average = copies(self._trainable) if decay else []
        self._raw = copies(self._trainable) if decay else []  # the model's own, while swapped
        self.best = copies(self._all)
        self.best_map = tf.Variable(NO_SCORE, trainable=False)
        self.best_epoch = tf.Variable(0, trainable=False, dtype=tf.int64)

    def trackables(self) -> dict:
        """What the checkpoint must hold besides the model and the optimizer."""
        return {
            "average": self.average,
            "best": self.best,
            "best_map": self.best_map,
            "best_epoch": self.best_epoch,
        }

    # -- inside the training step (replica context) -----------------------------------------------

    def update_average(self, iterations) -> None:
        """Fold the weights of the step just taken into the average."""
        if not self.average:
            return
        steps = tf.cast(iterations, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + steps) / (10.0 + steps))
        tf.distribute.get_replica_context().merge_call(self._update, args=(decay,))

    def _update(self, strategy, decay):
        def fold(average, variable, decay):
            # As tf.train.ExponentialMovingAverage writes it: a weight that did not move leaves
            # its average exactly where it was (decay * a + (1 - decay) * a is off by an ulp).
            return average.assign_sub((1.0 - decay) * (average - variable))

        for average, variable in zip(self.average, self._trainable, strict=True):
            strategy.extended.update(average, fold, args=(variable, decay), group=False)

    # -- between steps (cross-replica context) ----------------------------------------------------

    @contextlib.contextmanager
    def averaged(self):
        """The averaged weights in the model for the duration (the model's own restored after)."""
        if not self.average:
            yield
            return
        self._copy(self._raw, self._trainable)
        self._copy(self._trainable, self.average)
        try:
            yield
        finally:
            self._copy(self._trainable, self._raw)

    def offer(self, score: float, epoch: int) -> bool:
        """Keep the model's weights (validated after `epoch`) as the best if `score` beats the
        best so far (a later epoch wins a tie)."""
        if score < float(self.best_map.numpy()):
            return False
        self._copy(self.best, self._all)
        with self.strategy.scope():
            self.best_map.assign(score)
            self.best_epoch.assign(epoch)
        return True

    def has_best(self) -> bool:
        return float(self.best_map.numpy()) > NO_SCORE

    def best_score(self) -> tuple[float, int]:
        """The best validation mAP@0.5 and the epoch it was measured after."""
        return float(self.best_map.numpy()), int(self.best_epoch.numpy())

    def restore_best(self) -> None:
        """The best weights into the model (for the export)."""
        self._copy(self._all, self.best)

    def use_average(self) -> None:
        """The averaged weights into the model for good (an export without validation)."""
        if self.average:
            self._copy(self._trainable, self.average)

    def _copy(self, targets, sources) -> None:
        with self.strategy.scope():
            _assign_all(targets, sources)


@tf.function
def _assign_all(targets, sources):
    for target, source in zip(targets, sources, strict=True):
        target.assign(source)
