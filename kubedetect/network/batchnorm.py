"""Batch normalization in one op for training: the same layer, trained 1.4x faster on CPUs.

Keras 3 normalizes with separate TensorFlow ops (moments, then scale and shift), each a pass over
the activations forward and several backward: in the detector's training step on two CPU cores
they took 29 % of the op time, as much as half the convolutions (TensorFlow's profiler;
bench/train_speed.py). TensorFlow's fused kernel (`FusedBatchNormV3`, oneDNN's on x86) does the
same arithmetic in one pass forward and one backward.

`with_fused_batch_norm(model)` clones the detector with `FusedBatchNormalization` in place of
every `BatchNormalization` (keras.models.clone_model: the same graph, layer names and weights,
in the same order). Only training uses the clone; the export is the plain Keras model with the
trained weights, so model files, TFLite conversion and serving are unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel (channels last,
    no mask, no renormalization; anything else falls back to the parent)."""

    def call(self, inputs, training=None, mask=None):
        channels_last = self.axis in (-1, len(inputs.shape) - 1)
        if mask is not None or self.renorm or not (channels_last and self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the unbiased (n - 1) variance; Keras' moving statistics, which
            # the export and the tests compare against, take the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
            return outputs
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            self.gamma,
            self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            is_training=False,
        )
        return outputs


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A clone of `model` whose batch norms run fused, holding copies of its weights."""

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    fused = keras.models.clone_model(model, clone_function=clone)
    fused.set_weights(model.get_weights())
    return fused
