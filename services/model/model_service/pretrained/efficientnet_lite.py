"""EfficientNet-Lite0 (ImageNet) rebuilt in Keras 3 and filled from its PyTorch state dict.

Lite0 is EfficientNet-B0 made friendly to integer accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and a stem and head that are not rescaled, so `keras.applications`'
EfficientNetB0 cannot hold its weights. The layers here are named after the state dict of the
`efficientnet_pytorch`-style checkpoint (`_conv_stem`, `_blocks.N._expand_conv`, ...), whose
convolutions pad like TensorFlow's "same" (the weights come from Google's TF checkpoints).

Preprocessing is part of the model: RGB pixels 0..255 at 224x224 in, `(x - 127) / 128` inside.
Two models share the layers: `classifier` (softmax over the 1000 ImageNet classes) and
`features` (the 1280 globally pooled features, the base of transfer learning).
"""
from __future__ import annotations

import numpy as np

INPUT_SIZE = 224
FEATURES = 1280
CLASSES = 1000
BN_EPSILON = 1e-3
# Stages: (repeats, kernel, first stride, expansion, output channels).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM = 32


_PREFIX = "lite0"


def _name(torch_name: str) -> str:
    """The Keras layer name of a state dict prefix: `_blocks.3._bn0` -> `lite0_blocks-3-_bn0`
    (no dots in layer names; a SavedModel scope cannot start with `_`)."""
    return _PREFIX + torch_name.replace(".", "-")


def _torch_name(layer_name: str) -> str:
    return layer_name.removeprefix(_PREFIX).replace("-", ".")


def _conv_bn(keras, x, filters: int, kernel: int, stride: int, conv: str, bn: str, activate: bool, depthwise: bool = False):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=_name(conv))(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=_name(conv))(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_name(bn))(x)
    return keras.layers.ReLU(6.0)(x) if activate else x


def build():
    """(classifier, features): two Keras models over the same layers, weights not loaded."""
    import keras

    pixels = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocessing")(pixels)
    x = _conv_bn(keras, x, STEM, 3, 2, "_conv_stem", "_bn0", activate=True)
    channels, block = STEM, 0
    for repeats, kernel, first_stride, expansion, out in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix = f"_blocks.{block}."
            inputs = x
            if expansion != 1:
                x = _conv_bn(keras, x, channels * expansion, 1, 1, prefix + "_expand_conv", prefix + "_bn0", activate=True)
            x = _conv_bn(keras, x, 0, kernel, stride, prefix + "_depthwise_conv", prefix + "_bn1", activate=True, depthwise=True)
            x = _conv_bn(keras, x, out, 1, 1, prefix + "_project_conv", prefix + "_bn2", activate=False)
            if stride == 1 and channels == out:
                x = keras.layers.Add()([inputs, x])
            channels, block = out, block + 1
    x = _conv_bn(keras, x, FEATURES, 1, 1, "_conv_head", "_bn1", activate=True)
    pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    probabilities = keras.layers.Dense(CLASSES, activation="softmax", name=_name("_fc"))(pooled)
    classifier = keras.Model(pixels, probabilities, name="efficientnet_lite0_imagenet")
    features = keras.Model(pixels, pooled, name="efficientnet_lite0_features")
    return classifier, features


def _keras_weights(layer, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """The state dict's tensors for one Keras layer, in Keras's order and layout."""
    kind = type(layer).__name__
    if kind == "Conv2D":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return [state[prefix + "weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":  # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
        return [state[prefix + "weight"].transpose(2, 3, 0, 1)]
    if kind == "BatchNormalization":
        return [state[prefix + "weight"], state[prefix + "bias"], state[prefix + "running_mean"], state[prefix + "running_var"]]
    if kind == "Dense":
        return [state[prefix + "weight"].T, state[prefix + "bias"]]
    raise ValueError(f"no weights are mapped for layer {layer.name} ({kind})")


def load_weights(model, state: dict[str, np.ndarray]) -> None:
    """Fills every weighted layer of `model` from `state`; every float tensor of `state` must be used.

    Raises ValueError naming the tensor when a name or a shape does not match."""
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_name(layer.name) + "."
        try:
            values = _keras_weights(layer, state, prefix)
        except KeyError as exc:
            raise ValueError(f"the checkpoint has no tensor {exc.args[0]!r} for layer {layer.name}") from None
        expected = [tuple(weight.shape) for weight in layer.get_weights()]
        if [value.shape for value in values] != expected:
            raise ValueError(f"layer {layer.name} expects shapes {expected}, the checkpoint has {[v.shape for v in values]}")
        layer.set_weights(values)
        used.update(name for name in state if name.startswith(prefix))
    unused = [name for name, value in state.items() if name not in used and value.dtype.kind == "f"]
    if unused:
        raise ValueError(f"the checkpoint has tensors the model does not use: {unused[:5]}")


def serving_module(tf, classifier):
    """A tf.Module whose `serve` takes uint8 RGB batches of any size and answers `probabilities`."""
    module = tf.Module()
    module.model = classifier

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(images):
        pixels = tf.image.resize(tf.cast(images, tf.float32), (INPUT_SIZE, INPUT_SIZE))
        return {"probabilities": module.model(pixels, training=False)}

    module.serve = serve
    return module
