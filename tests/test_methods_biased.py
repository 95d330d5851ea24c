"""The biased network g (build_biased_backbone) and the "Biased" baseline (g alone, CE)."""

import keras
import numpy as np
import pytest

from bridging_tf.errors import UserError
from bridging_tf.methods import BiasedModel, build_method, get_method_class
from bridging_tf.methods.biased import clone_optimizer
from bridging_tf.models import build_backbone, build_biased_backbone
from bridging_tf.models.biased_nets import local_convnet, local_receptive_field
from tests._methods_util import save_load_predict, tiny_bundle


def test_simple_conv_g_has_only_1x1_kernels_and_no_end_variant():
    g = build_biased_backbone("simple_conv", width=0.125, variant="end", kernel_size=7)
    convs = [layer for layer in g.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 4 and all(c.kernel_size == (1, 1) for c in convs)
    assert g.get_layer("bottleneck").__class__.__name__ == "Identity"     # not L2-normalised
    assert g.name == "biased_simple_conv"


def test_1x1_g_sees_only_per_pixel_colour():
    # permuting pixel positions cannot change a 1×1 net's GAP bottleneck
    g = build_biased_backbone("simple_conv", width=0.125, input_shape=(8, 8, 3))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    perm = np.random.default_rng(1).permutation(64)
    xp = x.reshape(2, 64, 3)[:, perm].reshape(2, 8, 8, 3)
    np.testing.assert_allclose(g(x)[1].numpy(), g(xp)[1].numpy(), rtol=1e-5, atol=1e-6)


def test_local_convnet_for_large_backbones():
    assert local_receptive_field() == 7
    g = local_convnet(num_classes=2, width=0.125, input_shape=(32, 32, 3))
    logits, z = g(np.zeros((1, 32, 32, 3), "float32"))
    assert logits.shape == (1, 2) and z.shape == (1, 32)
    with pytest.raises(UserError, match="no biased network"):
        build_biased_backbone("vgg")


def test_biased_method_trains_g_not_f():
    cls = get_method_class("biased")
    assert cls is BiasedModel and cls.needs_biased_backbone and not cls.HPARAMS.names()
    f = build_backbone("simple_conv", width=0.125)
    g = build_biased_backbone("simple_conv", width=0.125)
    model = build_method("biased", backbone=f, biased_backbone=g, num_classes=10,
                         num_private=10, weight_decay=1e-4)
    assert model.backbone is g and model.encoder().output.shape[-1] == 16


def test_clone_optimizer_keeps_class_and_schedule():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([5], [1e-3, 1e-4])
    opt = keras.optimizers.Adam(schedule, beta_1=0.8)
    twin = clone_optimizer(opt)
    assert twin is not opt and type(twin) is keras.optimizers.Adam
    assert twin.get_config()["beta_1"] == 0.8
    assert twin.get_config()["learning_rate"] == opt.get_config()["learning_rate"]


@pytest.mark.realdata
def test_biased_baseline_learns_colour_on_biased_mnist_and_round_trips(mnist_dir, tmp_path):
    bundle = tiny_bundle(mnist_dir)
    model = build_method("biased", backbone=build_backbone("simple_conv", width=0.125),
                         biased_backbone=build_biased_backbone("simple_conv", width=0.25),
                         num_classes=10, num_private=10, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = model.fit(bundle["train"].dataset(32, shuffle=True), epochs=6, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    # g only sees colour: on the unbiased test set it predicts the background colour, not the digit
    pred = model.predict(bundle["unbiased"].dataset(200), verbose=0).argmax(1)
    assert (pred == bundle["unbiased"].private()).mean() > 0.5
    assert (pred == bundle["unbiased"].labels()).mean() < 0.3
    x, _ = next(iter(bundle["unbiased"].dataset(32)))
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "biased.keras", x)
    assert isinstance(loaded, BiasedModel)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)


def test_method_flags_do_not_clash_and_match_constructor_arguments():
    import inspect

    from bridging_tf.methods import available
    seen = {}
    for name in available():
        cls = get_method_class(name)
        params = inspect.signature(cls.__init__).parameters
        for flag in cls.HPARAMS.names():
            assert flag not in seen, f"--{flag} defined by both {seen.get(flag)} and {name}"
            assert flag in params, f"{name}: HPARAM {flag} is not a constructor argument"
            seen[flag] = name
    for name in ("rubi", "learned_mixin", "rebias", "biased"):
        assert get_method_class(name).needs_biased_backbone
