"""Adversarial removal: gradient reversal, the objective by hand, warm-up, k steps, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.errors import UserError
from bridging_tf.methods import AdversarialModel, GradientReversal, build_method
from bridging_tf.methods.base import cross_entropy
from tests._methods_util import batch, changed, nets, save_load_predict, snapshot, tiny_bundle


def _model(**kw):
    f, _ = nets()
    return AdversarialModel(f, num_private=10, adv_hidden=16, **kw)


def test_gradient_reversal_layer_flips_and_scales_the_gradient():
    x = tf.constant([[1.0, -2.0, 3.0]])
    w = tf.constant([[0.5, 2.0, -1.0]])
    layer = GradientReversal(2.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
        y_t = layer(x, scale=tf.constant(0.25))
        plain, rev, rev_t = (tf.reduce_sum(w * v) for v in (x, y, y_t))
    np.testing.assert_array_equal(y.numpy(), x.numpy())           # identity forward
    np.testing.assert_allclose(tape.gradient(plain, x), w)
    np.testing.assert_allclose(tape.gradient(rev, x), -2.0 * w.numpy())
    np.testing.assert_allclose(tape.gradient(rev_t, x), -0.25 * w.numpy())
    again = GradientReversal.from_config(layer.get_config())
    assert again.scale == 2.0


def test_encoder_gradient_from_the_adversary_term_is_reversed():
    model = _model(adv_lambda=0.7)
    x, y = batch()
    enc = model.trainable_for_step()
    adv = model.adversary_variables
    with tf.GradientTape(persistent=True) as tape:
        logits, z = model.backbone(x, training=True)
        _, parts = model.compute_total_loss(x, y, logits, z, training=True)
        # the adversary's own loss through the same path, without the reversal layer
        own = cross_entropy(y["private"], model.adversary(z, training=True))
    g_rev = tape.gradient(parts["adv_ce"], enc)
    g_own = tape.gradient(own, enc)
    assert float(parts["adv_ce"]) == pytest.approx(float(own), rel=1e-6)
    norm = 0.0
    for a, b in zip(g_rev, g_own):
        if b is None:
            continue
        np.testing.assert_allclose(a.numpy(), -0.7 * b.numpy(), rtol=1e-4, atol=1e-7)
        norm += float(tf.reduce_sum(tf.abs(b)))
    assert norm > 0   # the check is not vacuous
    dot = sum(float(tf.reduce_sum(a * b)) for a, b in zip(g_rev, g_own) if b is not None)
    assert dot < 0    # opposite directions
    # the adversary itself gets its own loss's gradient, not reversed
    for a, b in zip(tape.gradient(parts["adv_ce"], adv), tape.gradient(own, adv)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_total_loss_value_and_gradient_by_hand():
    model = _model(adv_lambda=2.0)
    x, y = batch()
    enc = model.trainable_for_step()
    with tf.GradientTape(persistent=True) as tape:
        logits, z = model.backbone(x, training=True)
        total, parts = model.compute_total_loss(x, y, logits, z, training=True)
        ce = cross_entropy(y["label"], logits)
        adv_ce = cross_entropy(y["private"], model.adversary(z, training=True))
        by_hand = ce - 2.0 * adv_ce
    assert float(total) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(parts["ce_loss"]) == pytest.approx(float(ce), rel=1e-6)
    assert float(parts["adv_weight"]) == 2.0
    for a, b in zip(tape.gradient(total, enc), tape.gradient(by_hand, enc)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)
    # the adversary's gradient of the total is that of CE_adv (it minimises its own loss)
    for a, b in zip(tape.gradient(total, model.adversary_variables),
                    tape.gradient(adv_ce, model.adversary_variables)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_train_step_updates_both_players_with_their_own_optimizers_k_times():
    model = _model(adv_steps=3, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  adversary_optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    before_f = snapshot(model.backbone.trainable_variables)
    before_a = snapshot(model.adversary_variables)
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert set(logs) == {"loss", "ce_loss", "adv_ce", "adv_accuracy", "adv_weight", "accuracy"}
    assert changed(before_f, model.backbone.trainable_variables)
    assert changed(before_a, model.adversary_variables)
    assert isinstance(model.adversary_optimizer, keras.optimizers.SGD)
    assert int(model.optimizer.iterations) == 1 and int(model.adversary_optimizer.iterations) == 3
    # the main optimizer holds the encoder's variables only
    assert len(model.trainable_for_step()) == len(model.backbone.trainable_variables)


def test_warmup_ramps_lambda_linearly_in_steps():
    model = _model(adv_lambda=1.0, adv_warmup_epochs=2.0, steps_per_epoch=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    weights = [model.train_on_batch(x, y, return_dict=True)["adv_weight"] for _ in range(6)]
    np.testing.assert_allclose(weights, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)


def test_fit_reads_steps_per_epoch_from_the_dataset():
    model = _model(adv_warmup_epochs=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = batch(n=16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    hist = model.fit(ds, epochs=1, verbose=0)
    assert model.steps_per_epoch == 4
    # mean of λ_t over steps 0..3 with a one-epoch ramp of 4 steps: (0 + .25 + .5 + .75) / 4
    assert hist.history["adv_weight"][0] == pytest.approx(0.375, abs=1e-6)
    unknown = _model(adv_warmup_epochs=1.0)   # no fit, no steps_per_epoch: no schedule
    with pytest.raises(ValueError, match="steps per epoch"):
        unknown.compute_total_loss(x, y, *unknown.backbone(x))


def test_plain_compile_clones_the_optimizer_for_the_adversary():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(3e-4))
    assert model.adversary_optimizer is not model.optimizer
    assert type(model.adversary_optimizer) is keras.optimizers.Adam
    assert model.adversary_optimizer.get_config()["learning_rate"] == pytest.approx(3e-4)
    opt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="different optimizer"):
        _model().compile(optimizer=opt, adversary_optimizer=opt)


def test_save_load_round_trip(tmp_path):
    model = _model(adv_lambda=0.3, adv_steps=2, adv_warmup_epochs=1.5, steps_per_epoch=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    model.train_on_batch(x, y)
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "adversarial.keras", x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)
    assert isinstance(loaded, AdversarialModel)
    assert (loaded.adv_lambda, loaded.adv_steps, loaded.adv_warmup_epochs, loaded.adv_hidden,
            loaded.steps_per_epoch) == (0.3, 2, 1.5, 16, 3)
    np.testing.assert_allclose(loaded.adversary(za).numpy(), model.adversary(za).numpy(),
                               atol=1e-6)
    assert int(loaded.adversary_optimizer.iterations) == 2
    for u, v in zip(loaded.adversary_optimizer.variables, model.adversary_optimizer.variables):
        np.testing.assert_allclose(u.numpy(), v.numpy())


def test_mixed_precision_wraps_both_optimizers():
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(adv_steps=2, weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        assert isinstance(model.adversary_optimizer, keras.optimizers.LossScaleOptimizer)
        before = snapshot(model.adversary_variables)
        logs = model.train_on_batch(*batch(), return_dict=True)
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert changed(before, model.adversary_variables)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_bad_hyperparameters_are_one_line_user_errors():
    f, _ = nets()
    with pytest.raises(UserError, match="--method=adversarial: adv_steps must be an integer"):
        build_method("adversarial", backbone=f, num_classes=10, num_private=10,
                     hparams={"adv_steps": 0})
    with pytest.raises(ValueError, match="adv_lambda must be >= 0"):
        AdversarialModel(f, adv_lambda=-1.0)


@pytest.mark.realdata
def test_fit_on_biased_mnist(mnist_dir):
    from bridging_tf.models import build_backbone
    bundle = tiny_bundle(mnist_dir)
    model = build_method("adversarial", backbone=build_backbone("simple_conv", width=0.125),
                         num_classes=10, num_private=10, weight_decay=1e-4,
                         hparams={"adv_warmup_epochs": 0.5})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(bundle["train"].dataset(64, shuffle=True), epochs=1, verbose=0,
                     validation_data=bundle["val"].dataset(100))
    for key in ("loss", "ce_loss", "adv_ce", "adv_accuracy", "adv_weight", "val_adv_ce"):
        assert np.isfinite(hist.history[key][0]), key
    assert 0.0 < hist.history["adv_weight"][0] < 1.0   # still ramping in the first epoch
