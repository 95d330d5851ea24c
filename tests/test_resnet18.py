"""ResNet-18 backbone: torchvision shapes and parameter count, the EnD variant, weight files."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bridging_tf.errors import UserError
from bridging_tf.models import build_backbone
from bridging_tf.models.resnet18 import resnet18

SMALL = dict(width=0.125, input_shape=(32, 32, 3))


def images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def test_parameter_count_matches_torchvision():
    net = resnet18(num_classes=1000, input_shape=(32, 32, 3))
    trainable = sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    assert trainable == 11_689_512          # torchvision.models.resnet18().parameters()
    assert net.get_layer("bottleneck").output.shape[-1] == 512


def test_shapes_and_names_follow_the_backbone_contract():
    net = build_backbone("resnet18", num_classes=2, variant="vanilla", **SMALL)
    assert net.input.name == "image" or net.inputs[0].name == "image"
    logits, z = net(images())
    assert logits.shape == (3, 2) and z.shape == (3, 64)
    assert net.get_layer("bottleneck") is not None and net.get_layer("logits") is not None


def test_feature_map_strides_match_pytorch_at_224():
    net = resnet18(num_classes=2, width=0.125, input_shape=(224, 224, 3))
    shapes = {n: tuple(net.get_layer(n).output.shape[1:]) for n in
              ("relu", "maxpool", "layer1_1_relu2", "layer2_1_relu2", "layer3_1_relu2",
               "layer4_1_relu2")}
    assert shapes == {"relu": (112, 112, 8), "maxpool": (56, 56, 8),
                      "layer1_1_relu2": (56, 56, 8), "layer2_1_relu2": (28, 28, 16),
                      "layer3_1_relu2": (14, 14, 32), "layer4_1_relu2": (7, 7, 64)}


def test_end_variant_uses_tanh_in_both_last_block_activations():
    net = resnet18(num_classes=2, variant="end", **SMALL)
    acts = {layer.name: layer.get_config()["activation"] for layer in net.layers
            if isinstance(layer, keras.layers.Activation)}
    tanh = sorted(n for n, a in acts.items() if a == "tanh")
    assert tanh == ["layer4_1_tanh1", "layer4_1_tanh2"]
    assert all(a == "relu" for n, a in acts.items() if n not in tanh)
    probe = keras.Model(net.input, [net.get_layer("layer4_1_tanh2").output,
                                    net.get_layer("avgpool").output])
    last, pooled = (t.numpy() for t in probe(images()))
    assert last.min() < 0 and np.abs(last).max() < 1       # tanh range, negative values kept
    z = net(images())[1].numpy()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(z, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)


def test_vanilla_bottleneck_is_the_raw_pooled_relu_features():
    net = resnet18(num_classes=2, variant="vanilla", **SMALL)
    z = net(images())[1].numpy()
    assert z.min() >= 0 and not np.allclose(np.linalg.norm(z, axis=1), 1.0)
    assert not any(layer.name.endswith(("tanh1", "tanh2")) for layer in net.layers)


def test_weights_file_roundtrip_and_head_mismatch(tmp_path):
    src = resnet18(num_classes=2, variant="end", **SMALL)
    path = str(tmp_path / "r18.weights.h5")
    src.save_weights(path)
    same = resnet18(num_classes=2, variant="end", weights=path, **SMALL)
    x = images()
    np.testing.assert_allclose(same(x)[0], src(x)[0], atol=1e-5)
    other_head = resnet18(num_classes=7, variant="end", weights=path, **SMALL)
    np.testing.assert_allclose(other_head(x)[1], src(x)[1], atol=1e-5)   # backbone loaded
    assert other_head(x)[0].shape == (3, 7)


def test_bad_weights_and_options():
    with pytest.raises(UserError, match="not found"):
        resnet18(weights="/nonexistent/r18.weights.h5", **SMALL)
    with pytest.raises(UserError, match="variant"):
        resnet18(variant="tanh", **SMALL)
    with pytest.raises(UserError, match="--width"):
        resnet18(width=0, input_shape=(32, 32, 3))


def test_keras_file_roundtrip(tmp_path):
    net = resnet18(num_classes=2, variant="end", **SMALL)
    path = str(tmp_path / "r18.keras")
    net.save(path)
    back = keras.saving.load_model(path)
    x = images()
    np.testing.assert_allclose(back(x)[1], net(x)[1], atol=1e-6)


def test_torchvision_npz_roundtrip_and_key_layout(tmp_path):
    from bridging_tf.models.resnet18 import torchvision_state_dict

    src = resnet18(num_classes=1000, variant="vanilla", **SMALL)
    sd = torchvision_state_dict(src)
    # torchvision's names and OIHW / [out, in] layouts
    assert sd["conv1.weight"].shape == (8, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1)
    assert sd["layer4.1.bn2.running_var"].shape == (64,) and sd["fc.weight"].shape == (1000, 64)
    assert len([k for k in sd if k.endswith(".weight")]) == 41   # 20 convs + 20 BNs + fc
    path = str(tmp_path / "r18.npz")
    np.savez(path, **sd)
    x = images()
    same = resnet18(num_classes=1000, variant="vanilla", weights=path, **SMALL)
    np.testing.assert_allclose(same(x)[0], src(x)[0], atol=1e-5)
    task = resnet18(num_classes=2, variant="end", weights=path, **SMALL)   # ImageNet head skipped
    np.testing.assert_allclose(task.get_layer("conv1").kernel.numpy(),
                               np.transpose(sd["conv1.weight"], (2, 3, 1, 0)))
    with pytest.raises(UserError, match="check --width"):
        resnet18(num_classes=2, width=0.25, input_shape=(32, 32, 3), weights=path)
    del sd["layer3.1.conv2.weight"]
    np.savez(path, **sd)
    with pytest.raises(UserError, match="layer3.1.conv2.weight"):
        resnet18(num_classes=2, weights=path, **SMALL)
