"""DenseNet-121 for the SIIM chest X-rays (paper Sec. 4: "We train a DenseNet-121 model").

``keras.applications.DenseNet121(include_top=False)`` up to its final
BatchNorm ``bn``, then the activation, global average pooling (the 1024-d
``bottleneck``) and a Linear layer to ``num_classes`` logits:

- ``variant="vanilla"``: ReLU -> average pool, i.e. exactly
  ``DenseNet121(include_top=False, pooling="avg")``; bottleneck = the pooled
  features (an ``Identity`` layer named ``bottleneck``);
- ``variant="end"``: the package's EnD convention (as in ``simple_conv``):
  the final ReLU becomes tanh and the pooled vector is L2-normalised
  (:class:`~bridging_tf.models.layers.L2Normalize` named ``bottleneck``), so
  EnD's cosine terms read unit vectors;
- ``weights``: ``None`` (random, Keras's initialisers) or a path to a weights
  file for the 3-channel ``DenseNet121(include_top=False)`` base (e.g. the
  Keras ImageNet "notop" ``.h5``); loaded before the head is attached;
- 1-channel input: with ``weights=None`` the first conv takes one channel;
  with a weights file the grey channel is repeated three times
  (``gray_to_rgb`` layer) so the pretrained first conv fits.

The logits layer is initialised like torchvision's DenseNet classifier
(weights ``U(±1/sqrt(1024))``, bias 0). ``width`` is accepted for the common
signature and must be 1.0 (DenseNet-121 has fixed widths). Inputs smaller than
32×32 are rejected by Keras.

Example::

    net = densenet121(num_classes=2, variant="end", input_shape=(448, 448, 1))
    logits, z = net(images)          # (B, 2), (B, 1024), ||z|| = 1
"""

from __future__ import annotations

from typing import Optional

import keras

from bridging_tf.models.layers import L2Normalize, torch_uniform_init

VARIANTS = ("vanilla", "end")
BOTTLENECK_DIM = 1024


def densenet121(num_classes: int = 2, variant: str = "vanilla", width: float = 1.0,
                input_shape=(448, 448, 3), weights: Optional[str] = None,
                name: str = "densenet121", **unused) -> keras.Model:
    """Build the functional DenseNet-121 returning ``(logits, bottleneck)``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if float(width) != 1.0:
        raise ValueError(f"densenet121 has fixed widths; width must be 1.0, got {width}")
    h, w, c = (int(d) for d in input_shape)
    if c not in (1, 3):
        raise ValueError(f"densenet121 takes 1 or 3 input channels, got {c}")
    if weights in ("", "none", "None"):
        weights = None
    if weights == "imagenet":
        raise ValueError("pass the path of a downloaded weights file; this package never downloads")
    inputs = keras.Input(shape=(h, w, c), name="image")
    x = inputs
    base_channels = c
    if weights is not None and c == 1:
        x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
        base_channels = 3
    base = keras.applications.DenseNet121(include_top=False, weights=None,
                                          input_shape=(h, w, base_channels), pooling=None)
    if weights is not None:
        base.load_weights(str(weights))
    features = keras.Model(base.input, base.get_layer("bn").output, name=f"{name}_features")
    x = features(x)
    x = keras.layers.Activation("tanh" if variant == "end" else "relu", name="final_act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if variant == "end":
        z = L2Normalize(name="bottleneck")(x)
    else:
        z = keras.layers.Identity(name="bottleneck")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=torch_uniform_init(BOTTLENECK_DIM),
                                bias_initializer="zeros", name="logits")(z)
    return keras.Model(inputs, [logits, z], name=name)


__all__ = ["BOTTLENECK_DIM", "VARIANTS", "densenet121"]
