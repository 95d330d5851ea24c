"""SimpleConvNet: the Biased-MNIST network of ReBias / EnD (METHODS.md §2).

Four ``k×k`` convs (stride 1, "same" padding, no pooling) with widths
16-32-64-128, each followed by BatchNorm and ReLU; global average pooling
gives the 128-d bottleneck; a Linear layer gives the logits.

- ``kernel_size=7`` is the target network f; ``kernel_size=1`` is the
  "biased" network g (it can only see per-pixel colour).
- ``variant="end"`` swaps the last ReLU for tanh and L2-normalises the
  pooled vector, as EnD's ``simple_convnet()`` does.
- ``width`` multiplies the channel counts (1.0 = the paper; smaller for
  quick CPU runs); the bottleneck is ``round(128 * width)``-d.

Example::

    net = simple_convnet(kernel_size=7, variant="end", width=0.25)
    logits, z = net(images)          # (B, 10), (B, 32)
"""

from __future__ import annotations

import keras

from bridging_tf.models.layers import (
    L2Normalize,
    torch_batchnorm,
    torch_conv_kernel_init,
    torch_dense,
    torch_uniform_init,
)

BASE_WIDTHS = (16, 32, 64, 128)
VARIANTS = ("vanilla", "end")


def scaled_widths(width: float):
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return tuple(max(1, int(round(w * width))) for w in BASE_WIDTHS)


def simple_convnet(num_classes: int = 10, kernel_size: int = 7, variant: str = "vanilla",
                   width: float = 1.0, input_shape=(28, 28, 3), name: str = "simple_convnet"):
    """Build the functional SimpleConvNet returning ``(logits, bottleneck)``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    widths = scaled_widths(width)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    in_ch = int(input_shape[-1])
    for i, ch in enumerate(widths):
        x = keras.layers.Conv2D(
            ch, kernel_size, padding="same", kernel_initializer=torch_conv_kernel_init(),
            bias_initializer=torch_uniform_init(in_ch * kernel_size * kernel_size),
            name=f"conv{i + 1}")(x)
        x = torch_batchnorm(name=f"bn{i + 1}")(x)
        last = i == len(widths) - 1
        act = "tanh" if (last and variant == "end") else "relu"
        x = keras.layers.Activation(act, name=f"{act}{i + 1}")(x)
        in_ch = ch
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if variant == "end":
        z = L2Normalize(name="bottleneck")(x)
    else:
        z = keras.layers.Identity(name="bottleneck")(x)
    logits = torch_dense(num_classes, widths[-1], name="logits")(z)
    return keras.Model(inputs, [logits, z], name=name)
