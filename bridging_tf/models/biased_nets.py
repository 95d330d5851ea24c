"""Biased networks g for the face/X-ray backbones (ResNet-18, DenseNet-121).

ReBias/RUBi/LearnedMixin need a network that can *only* pick up the bias.
On Biased-MNIST that is the SimpleConvNet with 1×1 kernels (per-pixel
colour). For the ImageNet-size backbones the ReBias paper uses BagNet (small
receptive field, order-free aggregation of local patch evidence); the
bridging paper does not run these methods on faces or X-rays, so this is a
design choice, not a reproduction:

``local_convnet``: two 3×3 stride-2 convs then two 1×1 convs (BN + ReLU
each), global average pooling, a linear head. Receptive field **7×7 input
pixels** — enough for colour and fine texture (skin tone, hair colour,
make-up, film grain), too small for shape or global layout — and cheap
(the first conv already works at 1/2 resolution), so adding g costs a few
percent of a ResNet-18 step. Widths 32-64-128-256 × ``width``; the
bottleneck (named ``bottleneck``) is the 256·width-d pooled vector.

Example::

    g = local_convnet(num_classes=2, input_shape=(224, 224, 3))
    logits, h = g(images)            # (B, 2), (B, 256)
"""

from __future__ import annotations

import keras

from bridging_tf.models.layers import (
    torch_batchnorm,
    torch_conv_kernel_init,
    torch_dense,
    torch_uniform_init,
)

LOCAL_WIDTHS = (32, 64, 128, 256)
#: (kernel, stride) per conv: receptive field 3 -> 7 pixels, then 1×1 mixing.
LOCAL_LAYOUT = ((3, 2), (3, 2), (1, 1), (1, 1))


def local_receptive_field(layout=LOCAL_LAYOUT) -> int:
    """Receptive field (input pixels per side) of a stack of (kernel, stride) convs."""
    rf, jump = 1, 1
    for k, s in layout:
        rf += (k - 1) * jump
        jump *= s
    return rf


def local_convnet(num_classes: int = 2, width: float = 1.0, input_shape=(224, 224, 3),
                  name: str = "local_convnet", **unused):
    """Small-receptive-field biased network returning ``(logits, bottleneck)``.

    Extra keyword arguments of the target backbone (``variant``,
    ``pretrained``, ...) are accepted and ignored.
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    in_ch = int(input_shape[-1])
    for i, ((k, s), ch) in enumerate(zip(LOCAL_LAYOUT, LOCAL_WIDTHS)):
        ch = max(1, int(round(ch * width)))
        x = keras.layers.Conv2D(ch, k, strides=s, padding="same",
                                kernel_initializer=torch_conv_kernel_init(),
                                bias_initializer=torch_uniform_init(in_ch * k * k),
                                name=f"conv{i + 1}")(x)
        x = torch_batchnorm(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i + 1}")(x)
        in_ch = ch
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    z = keras.layers.Identity(name="bottleneck")(x)
    logits = torch_dense(num_classes, in_ch, name="logits")(z)
    return keras.Model(inputs, [logits, z], name=name)
