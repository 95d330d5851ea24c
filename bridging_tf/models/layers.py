"""Small layers and initialisers shared by the backbones.

PyTorch-matching initialisers (METHODS.md §2, §13) so that a Keras run starts
from the same distribution as the reference code:

- convs: Kaiming-normal, fan_out, ReLU gain -> ``VarianceScaling(2, fan_out, untruncated_normal)``;
- conv/linear biases and linear weights: ``U(±1/sqrt(fan_in))``.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def torch_conv_kernel_init():
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def torch_uniform_init(fan_in: int):
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default for biases and Linear weights."""
    bound = 1.0 / math.sqrt(max(int(fan_in), 1))
    return keras.initializers.RandomUniform(-bound, bound)


def torch_dense(units: int, fan_in: int, name: str, **kw) -> keras.layers.Dense:
    """A Dense layer initialised like ``torch.nn.Linear``."""
    return keras.layers.Dense(units, kernel_initializer=torch_uniform_init(fan_in),
                              bias_initializer=torch_uniform_init(fan_in), name=name, **kw)


def torch_batchnorm(name: str, **kw) -> keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's defaults (momentum 0.1 -> Keras 0.9, eps 1e-5)."""
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, **kw)


@keras.saving.register_keras_serializable(package="bridging_tf")
class L2Normalize(keras.layers.Layer):
    """``x / max(||x||_2, eps)`` over the last axis, like ``torch.nn.functional.normalize``.

    Gradients flow through the normalisation (EnD reads the unit-norm bottleneck).
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
        return x / ops.maximum(norm, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
