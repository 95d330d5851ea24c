"""The unbiased RBF-kernel HSIC estimator (ReBias) against a direct numpy implementation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.methods.hsic import RbfHSIC, hsic_unbiased, median_sigma, pairwise_sq_distances


def np_rbf(x, sigma):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma ** 2))


def np_hsic(x, y, sx, sy):
    """Song et al. 2012, written exactly as the formula (matmuls and traces)."""
    m = len(x)
    k = np_rbf(x, sx)
    l_ = np_rbf(y, sy)
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    one = np.ones(m)
    value = (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((m - 1) * (m - 2))
             - 2.0 / (m - 2) * (one @ k @ l_ @ one))
    return value / (m * (m - 3))


def np_median_sigma(x):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.sqrt(np.median(d2[~np.eye(len(x), dtype=bool)]))


@pytest.mark.parametrize("sx,sy", [(1.0, 1.0), (2.0, 0.5)])
def test_matches_numpy_formula_on_random_data(sx, sy):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 5))
    y = 0.5 * x[:, :3] + rng.normal(size=(32, 3))
    got = float(hsic_unbiased(x.astype("float32"), y.astype("float32"), sx, sy))
    assert got == pytest.approx(np_hsic(x, y, sx, sy), rel=1e-4, abs=1e-7)


def test_median_heuristic_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(17, 6))
    y = rng.normal(size=(17, 2)) + x[:, :2]
    d2 = pairwise_sq_distances(x.astype("float32"))
    assert float(median_sigma(d2)) == pytest.approx(np_median_sigma(x), rel=1e-4)
    got = float(hsic_unbiased(x.astype("float32"), y.astype("float32"), None, None))
    assert got == pytest.approx(np_hsic(x, y, np_median_sigma(x), np_median_sigma(y)), rel=1e-4)


def test_reference_diag_quirk_gives_the_same_value():
    # the reference subtracts diag(K) by broadcasting (K - K_jj per column); K_jj = 1 for RBF
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    k, l_ = np_rbf(x, 1.0), np_rbf(y, 1.0)
    tk, tl = k - np.diag(k), l_ - np.diag(l_)
    m = 20
    ref = (np.trace(tk @ tl) + tk.sum() * tl.sum() / (m - 1) / (m - 2)
           - 2 * tk.sum(0).dot(tl.sum(0)) / (m - 2)) / (m * (m - 3))
    assert float(hsic_unbiased(x.astype("float32"), y.astype("float32"))) == pytest.approx(
        ref, rel=1e-4, abs=1e-7)


def test_independent_near_zero_identical_positive():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = rng.normal(size=(256, 4)).astype("float32")
    same = float(hsic_unbiased(x, x))
    indep = float(hsic_unbiased(x, y))
    assert same > 0.01
    assert abs(indep) < 0.02 * same


def test_small_batches_give_zero_and_finite_gradients():
    x = tf.Variable(np.random.default_rng(5).normal(size=(3, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        value = hsic_unbiased(x, x * 2.0)
    grad = tape.gradient(value, x)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad.numpy()))


def test_gradient_is_finite_with_duplicate_rows():
    x = tf.Variable(np.ones((8, 4), "float32"))
    with tf.GradientTape() as tape:
        value = hsic_unbiased(x, x, None, None)
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_layer_config_round_trip_and_value():
    layer = RbfHSIC(sigma=2.0, sigma_mode="fixed", name="h")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (clone.sigma, clone.sigma_mode) == (2.0, "fixed")
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(10, 3)).astype("float32"), rng.normal(size=(10, 3)).astype("float32")
    assert float(clone(x, y)) == pytest.approx(np_hsic(x, y, 2.0, 2.0), rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="sigma_mode"):
        RbfHSIC(sigma_mode="mean")
