"""Small helpers shared by the tests/test_methods_*.py files (tiny nets, random batches)."""

from __future__ import annotations

import keras
import numpy as np

from bridging_tf.models import build_biased_backbone
from bridging_tf.models.simple_conv import simple_convnet

WIDTH = 0.125
SHAPE = (12, 12, 3)   # tiny images for the unit tests; real Biased-MNIST is 28×28


def nets(width=WIDTH, input_shape=SHAPE):
    """(f, g): a 3×3 SimpleConvNet and its 1×1 biased twin (small, for speed)."""
    f = simple_convnet(kernel_size=3, width=width, input_shape=input_shape)
    g = build_biased_backbone("simple_conv", width=width, input_shape=input_shape)
    return f, g


def batch(n=16, input_shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = {"label": rng.integers(0, 10, n).astype("int32"),
         "private": rng.integers(0, 10, n).astype("int32")}
    return x, y


def snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def changed(before, variables):
    """Whether any variable differs from its snapshot."""
    return any(not np.array_equal(b, keras.ops.convert_to_numpy(v))
               for b, v in zip(before, variables))


def unchanged_all(before, variables):
    return all(np.array_equal(b, keras.ops.convert_to_numpy(v))
               for b, v in zip(before, variables))


def save_load_predict(model, path, x):
    """Save to .keras, load back, return (original, reloaded) logits and embeddings."""
    model.save(path)
    loaded = keras.models.load_model(path)
    return (keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)),
            keras.ops.convert_to_numpy(model.embed(x)),
            keras.ops.convert_to_numpy(loaded.embed(x)), loaded)


def tiny_bundle(mnist_dir):
    from bridging_tf.datasets import load
    return load("biased_mnist", data_dir=str(mnist_dir), train_size=300, test_size=200,
                val_size=200)
