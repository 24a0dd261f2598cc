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

Two sizes of the same network (`--model-size`): `tiny` for CPUs, and `large`, wider and deeper
in backbone and neck, for GPU pods; the same ops, the same heads, the same decode. Every layer
has a name that does not depend on what else the process built, so that the weights of an
earlier model can be matched to this one by name (`--weights PATH`, kubedetect/network/weights.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from kubedetect.config import ModelConfig
from kubedetect.errors import KubedetectError

STRIDE = 4
HEATMAP_PRIOR = 0.01  # initial heatmap probability: focal-loss training starts stable (RetinaNet)
_BN = {"momentum": 0.9, "epsilon": 1e-3}  # quick running statistics: early evaluations are sound


@dataclass(frozen=True)
class Size:
    """A preset of the network: base width (channels at stride 2; the neck has twice as many)
    and depth (residual blocks per stage at strides 8-32, convolutions per pyramid level)."""

    width: int
    depth: int


# tiny: ~200k parameters, 0.19 GFLOP per 256 px image; from scratch on a 2-core CPU it sees the
# most images in ten minutes, and wins. large: ~3M parameters, ~2.5 GFLOP, for GPU pods (the size
# of the popular 3M-parameter detectors); channel counts stay multiples of 8 (XNNPACK's int8
# kernels take 8 or 16 output channels at a time).
SIZES = {"tiny": Size(width=8, depth=1), "large": Size(width=24, depth=2)}
DEFAULT_SIZE = "tiny"


def size_of(config: ModelConfig) -> Size:
    """The preset of `config` (--model-size, default tiny), with --width applied if given."""
    name = config.model_size or DEFAULT_SIZE
    if name not in SIZES:
        raise KubedetectError(f"--model-size {name}: unknown; choose from {', '.join(SIZES)}")
    preset = SIZES[name]
    return Size(width=config.width or preset.width, depth=preset.depth)


def conv_bn(x, filters: int, name: str, kernel: int = 3, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def residual(x, filters: int, name: str):
    """Two 3x3 convolutions with a shortcut: depth (receptive field) at little extra cost."""
    y = conv_bn(x, filters, f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b")(y)
    y = layers.BatchNormalization(**_BN, name=f"{name}_b_bn")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(6.0, name=f"{name}_relu")(y)


def _plain_backbone(x, size: Size):
    """Feature maps at strides 4, 8, 16 and 32; most compute where the maps are small."""
    width = size.width
    x = conv_bn(x, width, "stem", strides=2)  # /2
    c2 = conv_bn(conv_bn(x, width * 2, "c2_down", strides=2), width * 2, "c2_conv")  # /4
    features = [c2]
    for stage, multiple in ((3, 4), (4, 6), (5, 8)):  # /8, /16, /32
        x = conv_bn(features[-1], width * multiple, f"c{stage}_down", strides=2)
        for block in range(1, size.depth + 1):
            x = residual(x, width * multiple, f"c{stage}_block{block}")
        features.append(x)
    return features


def _mobilenet_backbone(x, weights: str | None, input_size: int):
    base = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3),
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        alpha=0.35,
    )
    names = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
    features = keras.Model(
        base.input, [base.get_layer(n).output for n in names], name="mobilenetv2"
    )
    return features(x)


def _upsample(x, size: int, name: str):
    # One RESIZE_BILINEAR op in TFLite (UpSampling2D would become TILE/RESHAPE chains).
    return layers.Resizing(size, size, interpolation="bilinear", name=name)(x)


def build_detector(
    num_classes: int, input_size: int, config: ModelConfig | None = None
) -> keras.Model:
    """The detector, with its initial weights: random, ImageNet's (mobilenetv2, downloaded) or
    those of `config.weights`, a file read by layer name (kubedetect/network/weights.py)."""
    config = config or ModelConfig()
    if input_size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {input_size}")
    if num_classes < 1:
        raise ValueError(f"a detector needs at least one class, got {num_classes}")
    if config.weights == "imagenet" and config.backbone != "mobilenetv2":
        raise KubedetectError(
            f"--weights imagenet: only --backbone mobilenetv2 has ImageNet weights, not "
            f"{config.backbone!r}; give a weights file (--weights PATH) or none"
        )
    size = size_of(config)
    image = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(image)
    if config.backbone == "tiny":
        c2, c3, c4, c5 = _plain_backbone(x, size)
    elif config.backbone == "mobilenetv2":
        c2, c3, c4, c5 = _mobilenet_backbone(x, config.weights, input_size)
    else:
        raise ValueError(f"unknown backbone {config.backbone!r} (tiny, mobilenetv2)")
    backbone = keras.Model(image, [c2, c3, c4, c5], name="backbone")

    # A feature pyramid, top-down to stride 4: deep context, fine localisation.
    neck = size.width * 2
    p = conv_bn(c5, neck, "p5_lateral", 1)
    for level, lateral in ((4, c4), (3, c3), (2, c2)):
        up = _upsample(p, lateral.shape[1], f"p{level}_up")
        p = layers.Add(name=f"p{level}_add")([up, conv_bn(lateral, neck, f"p{level}_lateral", 1)])
        for repeat in range(1, size.depth + 1):
            p = conv_bn(p, neck, f"p{level}_conv{repeat}")

    prior = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)
    heatmap = layers.Conv2D(
        num_classes,
        1,
        activation="sigmoid",
        name="heatmap",
        dtype="float32",
        bias_initializer=keras.initializers.Constant(prior),
    )(conv_bn(p, neck, "heatmap_head"))
    size_map = layers.Conv2D(2, 1, activation="sigmoid", name="size", dtype="float32")(
        conv_bn(p, neck, "size_head")
    )
    offset = layers.Conv2D(2, 1, activation="sigmoid", name="offset", dtype="float32")(p)
    model = keras.Model(
        image, {"heatmap": heatmap, "size": size_map, "offset": offset}, name="kubedetect"
    )
    if config.weights and config.weights != "imagenet":
        from kubedetect.network.weights import load_weights  # noqa: PLC0415

        load_weights(model, config.weights, backbone=backbone, class_head="heatmap")
    return model


def output_size(input_size: int) -> int:
    return input_size // STRIDE


def count_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass (2 per multiply-add) of the convolutions,
    which are nearly all of the detector's work; batch norm is folded into them for inference."""
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D):
            height, width, channels_out = layer.output.shape[1:]
            kernel = layer.kernel.shape  # (kh, kw, in, out) or (kh, kw, in, multiplier)
            total += (
                2
                * height
                * width
                * channels_out
                * kernel[0]
                * kernel[1]
                * (1 if isinstance(layer, layers.DepthwiseConv2D) else kernel[2])
            )
    return int(total)


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer
