"""The detector: CenterNet-style, anchor-free and fully convolutional.

For C classes the network maps an S x S image to three maps at stride 4: a C-channel heatmap
whose peaks are object centres, the box size (width, height as fractions of the image) and the
centre's offset within its cell. One forward pass finds any number of objects of any class.

Every op is one that full-int8 TFLite supports and XNNPACK runs: convolutions (with batch norm
folded in at conversion), depthwise convolutions, ReLU6, additions, bilinear resizes and a final
sigmoid. The model takes raw RGB pixels in [0, 255] and normalises inside, so the int8 input is
simply pixel - 128 and no preprocessing differs between Keras, TFLite and serving.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from kubedetect.config import ModelConfig

STRIDE = 4
HEATMAP_PRIOR = 0.01  # initial heatmap probability: focal-loss training starts stable (RetinaNet)
_BN = {"momentum": 0.9, "epsilon": 1e-3}  # quick running statistics: early evaluations are sound


def conv_bn(x, filters: int, kernel: int = 1, strides: int = 1, name: str | None = None):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(**_BN)(x)
    return layers.ReLU(6.0)(x)


def separable(x, filters: int, strides: int = 1):
    """Depthwise 3x3 then pointwise 1x1: most of the receptive field for little compute."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(**_BN)(x)
    x = layers.ReLU(6.0)(x)
    return conv_bn(x, filters, 1)


def _tiny_backbone(x, width: int):
    """Feature maps at strides 4, 8, 16 and 32."""
    x = conv_bn(x, width, 3, strides=2)  # /2
    c2 = separable(separable(x, width * 2, strides=2), width * 2)  # /4
    c3 = separable(separable(c2, width * 3, strides=2), width * 3)  # /8
    c4 = separable(separable(c3, width * 4, strides=2), width * 4)  # /16
    c5 = separable(separable(c4, width * 6, strides=2), width * 6)  # /32
    return c2, c3, c4, c5


def _mobilenet_backbone(x, weights: str | None, size: int):
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=weights, alpha=0.35
    )
    names = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
    features = keras.Model(base.input, [base.get_layer(n).output for n in names])
    return features(x)


def _upsample(x, size: int):
    return layers.Resizing(size, size, interpolation="bilinear")(x)


def build_detector(num_classes: int, input_size: int, config: ModelConfig = ModelConfig()) -> keras.Model:
    if input_size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {input_size}")
    image = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    if config.backbone == "tiny":
        c2, c3, c4, c5 = _tiny_backbone(x, config.width)
    elif config.backbone == "mobilenetv2":
        c2, c3, c4, c5 = _mobilenet_backbone(x, config.weights, input_size)
    else:
        raise ValueError(f"unknown backbone {config.backbone!r} (tiny, mobilenetv2)")

    # A small feature pyramid, top-down to stride 4: deep context, fine localisation.
    neck = config.width * 2
    p = conv_bn(c5, neck)
    for lateral in (c4, c3, c2):
        p = layers.Add()([_upsample(p, lateral.shape[1]), conv_bn(lateral, neck)])
        p = separable(p, neck)

    prior = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)
    heatmap = layers.Conv2D(
        num_classes, 1, activation="sigmoid", name="heatmap",
        bias_initializer=keras.initializers.Constant(prior),
    )(separable(p, neck))
    size = layers.Conv2D(2, 1, activation="relu", name="size")(separable(p, neck))
    offset = layers.Conv2D(2, 1, activation="sigmoid", name="offset")(p)
    return keras.Model(image, {"heatmap": heatmap, "size": size, "offset": offset}, name="kubedetect")
