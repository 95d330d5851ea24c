"""RUBi: the loss on a hand-computed case, stop-gradient into g, training of each part, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.methods import RUBiModel, build_method
from bridging_tf.methods.rubi import rubi_loss
from tests._methods_util import batch, changed, nets, save_load_predict, snapshot, tiny_bundle


def np_ce(logits, y):
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def test_loss_by_hand():
    f = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], "float32")
    q = np.array([[0.0, 2.0, -2.0], [1.0, -1.0, 0.0]], "float32")
    y = np.array([0, 2])
    masked = f / (1.0 + np.exp(-q))                  # ℓ_f ⊙ sigmoid(q)
    # row 0: [2*0.5, -1*0.8808, 0.5*0.1192]; row 1: [0, 1*0.2689, 3*0.5]
    np.testing.assert_allclose(masked[0], [1.0, -0.880797, 0.059601], rtol=1e-5)
    expected_masked = np_ce(masked, y)
    expected_bias = np_ce(q, y)
    total, m_ce, b_ce = rubi_loss(y, f, q, weight=0.5)
    assert float(m_ce) == pytest.approx(expected_masked, rel=1e-5)
    assert float(b_ce) == pytest.approx(expected_bias, rel=1e-5)
    assert float(total) == pytest.approx(expected_masked + 0.5 * expected_bias, rel=1e-5)


def test_rubi_loss_does_not_reach_g():
    f, g = nets()
    model = RUBiModel(f, g)
    x, y = batch()
    with tf.GradientTape(persistent=True) as tape:
        logits, z = f(x, training=True)
        total, parts = model.compute_total_loss(x, y, logits, z, training=True)
    g_grads = tape.gradient(total, g.trainable_variables)
    assert all(gr is None or not np.any(gr.numpy()) for gr in g_grads)
    head_grads = tape.gradient(total, model.bias_head.trainable_variables)
    assert all(np.any(gr.numpy()) for gr in head_grads)
    # test time: f's own logits
    np.testing.assert_allclose(model(x).numpy(), f(x).__getitem__(0).numpy(), atol=1e-6)


def test_train_step_updates_f_head_and_g():
    f, g = nets()
    model = RUBiModel(f, g, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    before = [snapshot(v) for v in (f.trainable_variables, model.bias_head.trainable_variables,
                                    g.trainable_variables)]
    x, y = batch()
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) >= {"loss", "ce_loss", "rubi_loss", "bias_ce", "g_ce", "accuracy"}
    for b, v in zip(before, (f.trainable_variables, model.bias_head.trainable_variables,
                             g.trainable_variables)):
        assert changed(b, v)
    assert int(model.g_optimizer.iterations) == 1 and model.g_optimizer is not model.optimizer


def test_reference_untrained_head_keeps_head_fixed():
    f, g = nets()
    model = RUBiModel(f, g, reference_untrained_head=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    before = snapshot(model.bias_head.trainable_variables)
    model.train_on_batch(*batch())
    assert not changed(before, model.bias_head.trainable_variables)


def test_save_load_round_trip(tmp_path):
    f, g = nets()
    model = RUBiModel(f, g, rubi_weight=0.7, reference_untrained_head=True, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    model.train_on_batch(x, y)
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "rubi.keras", x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)
    assert (loaded.rubi_weight, loaded.reference_untrained_head) == (0.7, True)
    assert int(loaded.g_optimizer.iterations) == 1
    np.testing.assert_allclose(loaded.bias_head.kernel.numpy(), model.bias_head.kernel.numpy())
    again = RUBiModel.from_config(model.get_config())
    assert again.biased_backbone.count_params() == g.count_params()


@pytest.mark.realdata
def test_fit_on_biased_mnist(mnist_dir):
    from bridging_tf.models import build_backbone, build_biased_backbone
    bundle = tiny_bundle(mnist_dir)
    model = build_method("rubi", backbone=build_backbone("simple_conv", width=0.125),
                         biased_backbone=build_biased_backbone("simple_conv", width=0.125),
                         num_classes=10, num_private=10, weight_decay=1e-4, hparams={})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(bundle["train"].dataset(64, shuffle=True), epochs=1, verbose=0,
                     validation_data=bundle["val"].dataset(100))
    for key in ("loss", "ce_loss", "rubi_loss", "bias_ce", "g_ce", "accuracy", "val_rubi_loss"):
        assert np.isfinite(hist.history[key][0]), key
    assert model.encoder().output.shape[-1] == 16      # f's bottleneck (128 * 0.125)
