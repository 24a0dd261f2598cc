"""The detector: CenterNet-style, anchor-free and fully convolutional.

For C classes the network maps an S x S image to three maps at stride 4: a C-channel heatmap
whose peaks are object centres, the box size (width, height as fractions of the image) and the
centre's offset within its cell. One forward pass finds any number of objects of any class.

Every op is one that full-int8 TFLite supports and XNNPACK runs: plain convolutions (with batch
norm folded in at conversion), ReLU6, additions, bilinear resizes and final sigmoids. Choices made
for this, measured on a 2-core CPU (docs/TRAINING.md):

- Plain 3x3 convolutions rather than depthwise-separable ones: per parameter they train 2-3x
  faster on CPUs, and a small model that sees more images in ten minutes wins.
- Bounded activations everywhere (ReLU6, and sigmoids on all three heads, since sizes and
  offsets are fractions in [0, 1]): int8 ranges stay tight, so full-int8 loses little.
- The model takes raw RGB pixels in [0, 255] and normalises inside, so the int8 input is simply
  pixel - 128 and no preprocessing differs between Keras, TFLite and serving.
- The heads compute in float32 even under a mixed-precision policy (GPU training).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from kubedetect.config import ModelConfig

STRIDE = 4
HEATMAP_PRIOR = 0.01  # initial heatmap probability: focal-loss training starts stable (RetinaNet)
_BN = {"momentum": 0.9, "epsilon": 1e-3}  # quick running statistics: early evaluations are sound


def conv_bn(x, filters: int, kernel: int = 3, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(**_BN)(x)
    return layers.ReLU(6.0)(x)


def residual(x, filters: int):
    """Two 3x3 convolutions with a shortcut: depth (receptive field) at little extra cost."""
    y = conv_bn(x, filters)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(**_BN)(y)
    return layers.ReLU(6.0)(layers.Add()([x, y]))


def _tiny_backbone(x, width: int):
    """Feature maps at strides 4, 8, 16 and 32; most compute where the maps are small."""
    x = conv_bn(x, width, strides=2)  # /2
    c2 = conv_bn(conv_bn(x, width * 2, strides=2), width * 2)  # /4
    c3 = residual(conv_bn(c2, width * 4, strides=2), width * 4)  # /8
    c4 = residual(conv_bn(c3, width * 6, strides=2), width * 6)  # /16
    c5 = residual(conv_bn(c4, width * 8, strides=2), width * 8)  # /32
    return c2, c3, c4, c5


def _mobilenet_backbone(x, weights: str | None, size: int):
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=weights, alpha=0.35
    )
    names = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
    features = keras.Model(base.input, [base.get_layer(n).output for n in names])
    return features(x)


def _upsample(x, size: int):
    # One RESIZE_BILINEAR op in TFLite (UpSampling2D would become TILE/RESHAPE chains).
    return layers.Resizing(size, size, interpolation="bilinear")(x)


def build_detector(
    num_classes: int, input_size: int, config: ModelConfig | None = None
) -> keras.Model:
    config = config or ModelConfig()
    if input_size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {input_size}")
    if num_classes < 1:
        raise ValueError(f"a detector needs at least one class, got {num_classes}")
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
    p = conv_bn(c5, neck, 1)
    for lateral in (c4, c3, c2):
        p = layers.Add()([_upsample(p, lateral.shape[1]), conv_bn(lateral, neck, 1)])
        p = conv_bn(p, neck)

    prior = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)
    heatmap = layers.Conv2D(
        num_classes,
        1,
        activation="sigmoid",
        name="heatmap",
        dtype="float32",
        bias_initializer=keras.initializers.Constant(prior),
    )(conv_bn(p, neck))
    size = layers.Conv2D(2, 1, activation="sigmoid", name="size", dtype="float32")(conv_bn(p, neck))
    offset = layers.Conv2D(2, 1, activation="sigmoid", name="offset", dtype="float32")(p)
    return keras.Model(
        image, {"heatmap": heatmap, "size": size, "offset": offset}, name="kubedetect"
    )


def output_size(input_size: int) -> int:
    return input_size // STRIDE
