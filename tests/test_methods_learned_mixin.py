"""LearnedMixin + H: the loss by hand, g pre-training, frozen g (weights and BN stats), saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.methods import LearnedMixinModel, build_method
from bridging_tf.methods.learned_mixin import learned_mixin_loss
from tests._methods_util import batch, changed, nets, save_load_predict, snapshot, tiny_bundle


def np_log_softmax(a):
    a = a - a.max(1, keepdims=True)
    return a - np.log(np.exp(a).sum(1, keepdims=True))


def test_loss_by_hand():
    f = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], "float32")
    g = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, -1.0]], "float32")
    s = np.array([[0.5], [2.0]], "float32")
    y = np.array([0, 1])
    mixed = f + s * g                      # row 0: [2.5, 0, -1]; row 1: [0.5, 2.5, 0]
    np.testing.assert_allclose(mixed, [[2.5, 0.0, -1.0], [0.5, 2.5, 0.0]])
    ce = -np_log_softmax(mixed)[np.arange(2), y].mean()
    lp = np_log_softmax(s * g)
    entropy = -(np.exp(lp) * lp).sum(1).mean()
    total, m_ce, ent = learned_mixin_loss(y, f, g, s, entropy_weight=0.36)
    assert float(m_ce) == pytest.approx(ce, rel=1e-5)
    assert float(ent) == pytest.approx(entropy, rel=1e-5)
    assert float(total) == pytest.approx(ce + 0.36 * entropy, rel=1e-5)


def test_entropy_of_uniform_prior_is_log_k():
    _, _, ent = learned_mixin_loss(np.array([0]), np.zeros((1, 4), "float32"),
                                   np.zeros((1, 4), "float32"), np.ones((1, 1), "float32"))
    assert float(ent) == pytest.approx(np.log(4), rel=1e-6)


def _dataset(n=32):
    x, y = batch(n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_fit_pretrains_g_then_freezes_it_including_batchnorm():
    f, g = nets()
    model = LearnedMixinModel(f, g, lm_pretrain_epochs=1, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    g_init = snapshot(g.weights)
    ds = _dataset()
    model.fit(ds, epochs=1, verbose=0)                  # runs prepare() first
    assert model.g_ready and int(model.g_pretrained_epochs) == 1
    assert changed(g_init, g.weights)                   # g was pre-trained
    g_after = snapshot(g.weights)         # kernels, biases, BN gamma/beta/moving stats
    f_before, gate_before = snapshot(f.trainable_variables), snapshot(model.gate.weights)
    model.fit(ds, epochs=1, verbose=0)                  # no second pre-training
    assert not changed(g_after, g.weights)
    assert changed(f_before, f.trainable_variables) and changed(gate_before, model.gate.weights)


def test_reference_options_untrained_gate_and_bn_drift():
    f, g = nets()
    model = LearnedMixinModel(f, g, lm_pretrain_epochs=0, reference_untrained_gate=True,
                              reference_g_bn_drift=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    gate, g_train = snapshot(model.gate.weights), snapshot(g.trainable_variables)
    moving = [w for w in g.non_trainable_weights if "moving" in w.path]
    moving_before = snapshot(moving)
    model.train_on_batch(*batch())
    assert not changed(gate, model.gate.weights)
    assert not changed(g_train, g.trainable_variables)   # weights frozen ...
    assert changed(moving_before, moving)                # ... but BN statistics drift


def test_save_load_round_trip_keeps_pretraining_state(tmp_path):
    f, g = nets()
    model = LearnedMixinModel(f, g, lm_pretrain_epochs=1, lm_entropy_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    model.prepare(_dataset(), verbose=0)
    model.train_on_batch(x, y)
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "lm.keras", x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)
    assert loaded.g_ready and loaded.lm_entropy_weight == 0.5
    np.testing.assert_allclose(loaded.biased_backbone(x)[0].numpy(), g(x)[0].numpy(), atol=1e-6)


@pytest.mark.realdata
def test_fit_on_biased_mnist(mnist_dir):
    from bridging_tf.models import build_backbone, build_biased_backbone
    bundle = tiny_bundle(mnist_dir)
    model = build_method("learned_mixin", backbone=build_backbone("simple_conv", width=0.125),
                         biased_backbone=build_biased_backbone("simple_conv", width=0.125),
                         num_classes=10, num_private=10, weight_decay=1e-4,
                         hparams={"lm_pretrain_epochs": 1})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    train = bundle["train"].dataset(64, shuffle=True)
    model.prepare(train, verbose=0)
    hist = model.fit(train, epochs=1, verbose=0, validation_data=bundle["val"].dataset(100))
    for key in ("loss", "ce_loss", "lm_mixed_ce", "lm_entropy", "lm_gate", "val_lm_entropy"):
        assert np.isfinite(hist.history[key][0]), key
