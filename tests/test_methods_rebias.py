"""ReBias: both players' objectives, both players updated, the two-optimizer compile, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.methods import ReBiasModel, VanillaModel, build_method, hsic_unbiased
from bridging_tf.methods.base import cross_entropy
from tests._methods_util import batch, changed, nets, save_load_predict, snapshot, tiny_bundle


def test_player_objectives():
    f, g = nets()
    model = ReBiasModel(f, g, rebias_lambda_f=0.5, rebias_lambda_g=2.0,
                        rebias_kernel_sigma_mode="median")
    x, y = batch()
    f_logits, h_f = f(x)
    g_logits, h_g = g(x)
    h = float(hsic_unbiased(h_f, h_g, None, None))
    assert h > 0
    f_total, f_ce, hsic_f = model.f_loss(y["label"], f_logits, h_f, h_g)
    g_total, g_ce, hsic_g = model.g_loss(y["label"], g_logits, h_g, h_f)
    assert float(hsic_f) == pytest.approx(h, rel=1e-5)
    assert float(hsic_g) == pytest.approx(h, rel=1e-5)
    assert float(f_total) == pytest.approx(float(cross_entropy(y["label"], f_logits)) + 0.5 * h,
                                           rel=1e-5)
    assert float(g_total) == pytest.approx(float(cross_entropy(y["label"], g_logits)) - 2.0 * h,
                                           rel=1e-5)


def test_train_step_updates_both_players_with_their_own_optimizers():
    f, g = nets()
    model = ReBiasModel(f, g, weight_decay=1e-4)
    model.compile(f_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.SGD(0.1),
                  run_eagerly=True)
    before_f, before_g = snapshot(f.trainable_variables), snapshot(g.trainable_variables)
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert set(logs) >= {"loss", "ce_loss", "hsic_f", "hsic_g", "g_ce", "accuracy"}
    assert changed(before_f, f.trainable_variables) and changed(before_g, g.trainable_variables)
    assert isinstance(model.g_optimizer, keras.optimizers.SGD)
    assert int(model.optimizer.iterations) == 1 and int(model.g_optimizer.iterations) == 1
    # f's optimizer holds f's variables only
    assert len(model.optimizer.variables) < len(model.g_optimizer.variables) + 3 * len(
        model.trainable_variables)


def test_plain_compile_clones_optimizer_for_g():
    f, g = nets()
    model = ReBiasModel(f, g)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([20], [1e-3, 1e-4])
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    assert model.g_optimizer is not model.optimizer
    assert type(model.g_optimizer) is keras.optimizers.Adam
    assert model.g_optimizer.get_config()["learning_rate"] == model.optimizer.get_config()[
        "learning_rate"]


def test_zero_lambdas_train_f_exactly_like_vanilla():
    x, y = batch()
    keras.utils.set_random_seed(3)
    f1, g = nets()
    keras.utils.set_random_seed(3)
    f2, _ = nets()
    rebias = ReBiasModel(f1, g, rebias_lambda_f=0.0, rebias_lambda_g=0.0, weight_decay=1e-4)
    vanilla = VanillaModel(f2, weight_decay=1e-4)
    for m in (rebias, vanilla):
        m.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        m.train_on_batch(x, y)
    for a, b in zip(f1.weights, f2.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_save_load_round_trip(tmp_path):
    f, g = nets()
    model = ReBiasModel(f, g, rebias_lambda_f=0.3, rebias_kernel_sigma_mode="median")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x, y = batch()
    model.train_on_batch(x, y)
    a, b, za, zb, loaded = save_load_predict(model, tmp_path / "rebias.keras", x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(za, zb, atol=1e-6)
    assert (loaded.rebias_lambda_f, loaded.rebias_kernel_sigma_mode) == (0.3, "median")
    assert int(loaded.g_optimizer.iterations) == 1
    for u, v in zip(loaded.g_optimizer.variables, model.g_optimizer.variables):
        np.testing.assert_allclose(u.numpy(), v.numpy())


@pytest.mark.realdata
def test_fit_on_biased_mnist(mnist_dir):
    from bridging_tf.models import build_backbone, build_biased_backbone
    bundle = tiny_bundle(mnist_dir)
    model = build_method("rebias", backbone=build_backbone("simple_conv", width=0.125),
                         biased_backbone=build_biased_backbone("simple_conv", width=0.125),
                         num_classes=10, num_private=10, weight_decay=1e-4, hparams={})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(bundle["train"].dataset(64, shuffle=True), epochs=1, verbose=0,
                     validation_data=bundle["val"].dataset(100))
    for key in ("loss", "ce_loss", "hsic_f", "hsic_g", "g_ce", "val_hsic_f"):
        assert np.isfinite(hist.history[key][0]), key


def test_compile_rejects_two_f_optimizers():
    f, g = nets()
    with pytest.raises(ValueError, match="not both"):
        ReBiasModel(f, g).compile(optimizer="adam", f_optimizer="adam")
    opt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="different optimizer"):
        ReBiasModel(f, g).compile(f_optimizer=opt, g_optimizer=opt)


def test_mixed_precision_wraps_both_optimizers():
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        f, g = nets()
        model = ReBiasModel(f, g, weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
        before = snapshot(g.trainable_variables)
        logs = model.train_on_batch(*batch(), return_dict=True)
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert changed(before, g.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_f_step_uses_the_updated_g():
    # per-sample "colours" so both bottlenecks vary across the batch
    rng = np.random.default_rng(7)
    x = (3.0 * rng.normal(size=(16, 1, 1, 3)) + 0.1 * rng.normal(size=(16, 12, 12, 3)))
    x = x.astype("float32")
    y = {"label": rng.integers(0, 10, 16).astype("int32"),
         "private": rng.integers(0, 10, 16).astype("int32")}
    f, g = nets()
    model = ReBiasModel(f, g, rebias_kernel_sigma_mode="median")
    model.compile(f_optimizer=keras.optimizers.Adam(1e-2), g_optimizer=keras.optimizers.SGD(0.1),
                  run_eagerly=True)
    h_f = f(x, training=True)[1]            # f's features for this step (training-mode BN)
    h_g_before = g(x, training=True)[1]
    logs = model.train_on_batch(x, y, return_dict=True)
    h_g_after = g(x, training=True)[1]
    after = float(hsic_unbiased(h_f, h_g_after, None, None))
    before = float(hsic_unbiased(h_f, h_g_before, None, None))
    assert abs(after - before) > 0.01 * abs(after)     # g's step moved HSIC (> 10x the rel tol)
    assert logs["hsic_f"] == pytest.approx(after, rel=1e-3, abs=1e-6)
    assert logs["hsic_g"] == pytest.approx(before, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("two_player", [False, True])
def test_compile_metrics_are_tracked_and_reported_beside_the_trackers(two_player):
    f, g = nets()
    model = ReBiasModel(f, g) if two_player else VanillaModel(f)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
    x, y = batch(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    hist = model.fit(ds, epochs=1, verbose=0, validation_data=ds).history
    assert {"loss", "ce_loss", "accuracy", "top3", "val_top3"} <= set(hist)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    top3 = np.argsort(-keras.ops.convert_to_numpy(model(x)), axis=1)[:, :3]
    assert logs["top3"] == pytest.approx(np.mean([y["label"][i] in top3[i] for i in range(32)]))
    assert model.evaluate(ds, verbose=0, return_dict=True) == pytest.approx(logs)  # reset
