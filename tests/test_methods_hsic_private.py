"""HSIC-private: the penalty against numpy (Gaussian kernel, median bandwidth, delta kernel)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.errors import UserError
from bridging_tf.methods import HSICPrivateModel, PrivateHSIC, build_method
from bridging_tf.methods.base import cross_entropy
from bridging_tf.methods.hsic import delta_kernel
from bridging_tf.methods.hsic_private import hsic_private_penalty
from tests._methods_util import batch, changed, nets, save_load_predict, snapshot, tiny_bundle


def np_hsic_private(z, p, sigma=None):
    """Song et al. 2012 written as the formula, RBF kernel on z (median width), delta on p."""
    m = len(z)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    if sigma is None:
        sigma = np.sqrt(np.median(d2[~np.eye(m, dtype=bool)]))
    k = np.exp(-d2 / (2 * sigma ** 2))
    l_ = (p[:, None] == p[None, :]).astype(float)
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(m)
    value = (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((m - 1) * (m - 2))
             - 2.0 / (m - 2) * (one @ k @ l_ @ one))
    return value / (m * (m - 3))


@pytest.mark.parametrize("sigma", [None, 2.5])
def test_penalty_matches_numpy(sigma):
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4, 24)
    z = rng.normal(size=(24, 6)) + 1.5 * np.eye(6)[p]
    got = float(hsic_private_penalty(z.astype("float32"), p.astype("int32"), 4, sigma))
    want = np_hsic_private(z, p, sigma)
    assert want > 1e-3   # dependent data: a clearly positive value to match
    assert got == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_delta_kernel_and_independence():
    np.testing.assert_array_equal(delta_kernel(np.array([0, 2, 0]), 3).numpy(),
                                  [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    rng = np.random.default_rng(1)
    p = rng.integers(0, 10, 256)
    dep = (np.eye(10)[p] * 3 + rng.normal(size=(256, 10))).astype("float32")
    indep = rng.normal(size=(256, 10)).astype("float32")
    high = float(hsic_private_penalty(dep, p, 10))
    assert high > 0.005 and abs(float(hsic_private_penalty(indep, p, 10))) < 0.05 * high


def test_total_loss_is_ce_plus_lambda_hsic():
    f, _ = nets()
    model = HSICPrivateModel(f, num_private=10, hsic_lambda=3.0)
    x, y = batch(n=32)
    logits, z = f(x)
    total, parts = model.compute_total_loss(x, y, logits, z)
    h = np_hsic_private(z.numpy().astype(np.float64), y["private"])
    assert float(parts["hsic_private"]) == pytest.approx(h, rel=1e-3, abs=1e-6)
    assert float(total) == pytest.approx(float(cross_entropy(y["label"], logits)) + 3.0 * h,
                                         rel=1e-4)


def test_penalty_gradient_reaches_the_encoder_and_lowers_hsic():
    rng = np.random.default_rng(2)
    p = rng.integers(0, 3, 32)
    z = tf.Variable((np.eye(3)[p] * 2 + rng.normal(size=(32, 3))).astype("float32"))
    with tf.GradientTape() as tape:
        before = hsic_private_penalty(z, p, 3)
    z.assign_sub(5.0 * tape.gradient(before, z))
    assert float(hsic_private_penalty(z, p, 3)) < float(before)


def test_train_step_and_history_keys():
    f, _ = nets()
    model = HSICPrivateModel(f, hsic_lambda=50.0, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    before = snapshot(f.trainable_variables)
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert set(logs) == {"loss", "ce_loss", "hsic_private", "accuracy"}
    assert logs["loss"] == pytest.approx(logs["ce_loss"] + 50.0 * logs["hsic_private"], rel=1e-4)
    assert changed(before, f.trainable_variables)


def test_save_load_round_trip(tmp_path):
    f, _ = nets()
    model = HSICPrivateModel(f, num_private=10, hsic_lambda=7.0, hsic_sigma=2.0,
                             hsic_sigma_mode="fixed")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    model.train_on_batch(x, y)
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "hsic_private.keras", x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)
    assert isinstance(loaded, HSICPrivateModel)
    assert (loaded.hsic_lambda, loaded.hsic.sigma, loaded.hsic.sigma_mode) == (7.0, 2.0, "fixed")
    layer = PrivateHSIC.from_config(model.hsic.get_config())
    assert (layer.num_private, layer.sigma_mode) == (10, "fixed")


def test_bad_hyperparameters_are_one_line_user_errors():
    f, _ = nets()
    with pytest.raises(UserError, match="--method=hsic_private: hsic_sigma_mode must be one of"):
        build_method("hsic_private", backbone=f, num_classes=10, num_private=10,
                     hparams={"hsic_sigma_mode": "mean"})


@pytest.mark.realdata
def test_fit_on_biased_mnist(mnist_dir):
    from bridging_tf.models import build_backbone
    bundle = tiny_bundle(mnist_dir)
    model = build_method("hsic_private", backbone=build_backbone("simple_conv", width=0.125),
                         num_classes=10, num_private=10, weight_decay=1e-4, hparams={})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(bundle["train"].dataset(64, shuffle=True), epochs=1, verbose=0,
                     validation_data=bundle["val"].dataset(100))
    for key in ("loss", "ce_loss", "hsic_private", "val_hsic_private"):
        assert np.isfinite(hist.history[key][0]), key
