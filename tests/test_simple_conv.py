"""SimpleConvNet layout (METHODS.md §2)."""

import numpy as np
import pytest

from bridging_tf.models import build_backbone
from bridging_tf.models.simple_conv import simple_convnet


def test_paper_shapes_and_parameter_count():
    net = simple_convnet(kernel_size=7)
    logits, z = net(np.zeros((2, 28, 28, 3), "float32"))
    assert logits.shape == (2, 10) and z.shape == (2, 128)
    # convs (k*k*in*out + out) + BN (4 per channel) + fc
    convs = sum(7 * 7 * i * o + o for i, o in [(3, 16), (16, 32), (32, 64), (64, 128)])
    bn = 4 * (16 + 32 + 64 + 128)
    assert net.count_params() == convs + bn + 128 * 10 + 10
    assert [layer.kernel_size for layer in net.layers if "conv" in layer.name] == [(7, 7)] * 4


def test_biased_network_is_1x1():
    net = simple_convnet(kernel_size=1)
    assert all(layer.kernel_size == (1, 1) for layer in net.layers if "conv" in layer.name)


def test_end_variant_tanh_and_unit_norm():
    net = simple_convnet(variant="end", width=0.25)
    assert net.get_layer("tanh4") is not None
    _, z = net(np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype("float32"))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=1), 1.0, rtol=1e-5)


def test_vanilla_bottleneck_nonnegative_and_named():
    net = build_backbone("simple_conv", width=0.25)
    _, z = net(np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype("float32"))
    assert np.all(np.asarray(z) >= 0)
    assert net.get_layer("bottleneck").output.shape[-1] == 32
    assert net.input.name == "image" or net.inputs[0].name == "image"


def test_pytorch_matching_batchnorm():
    net = simple_convnet(width=0.25)
    bn = net.get_layer("bn1")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)


def test_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        simple_convnet(variant="nope")
