"""Probes and metrics: separable vs noise, MLP vs linear on XOR, hand-computed metrics."""

import time

import numpy as np
import pytest

from bridging_tf.attacks import (
    AttackInputData,
    AttackType,
    attacker_advantage,
    auc_score,
    balanced_accuracy,
    classification_metrics,
    mean_ci,
    run_attacks,
)
from bridging_tf.attacks.probes import train_linear_probe
from bridging_tf.errors import UserError
from bridging_tf.sampling import stratified_holdout


def _clusters(n, k, dim, rng, sep=4.0):
    centres = rng.normal(size=(k, dim)) * sep
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def test_linear_probe_recovers_linearly_separable_private_label():
    rng = np.random.default_rng(0)
    x, y = _clusters(3000, 10, 32, rng)
    data = AttackInputData(train_embeddings=x[:2000], train_private=y[:2000],
                           eval_embeddings={"test": x[2000:]}, eval_private={"test": y[2000:]},
                           num_private=10)
    m = run_attacks(data, [AttackType.LINEAR], verbose=0).get(AttackType.LINEAR).per_split["test"]
    assert m["accuracy"] > 0.98
    assert m["chance_uniform"] == pytest.approx(0.1)
    assert "auc" not in m  # only for binary private labels


def test_linear_probe_on_independent_noise_is_at_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 32)).astype(np.float32)
    y = rng.integers(0, 10, 4000)
    data = AttackInputData(train_embeddings=x[:2000], train_private=y[:2000],
                           eval_embeddings={"test": x[2000:]}, eval_private={"test": y[2000:]},
                           num_private=10)
    m = run_attacks(data, [AttackType.LINEAR], verbose=0).get(AttackType.LINEAR).per_split["test"]
    assert abs(m["accuracy"] - 0.1) < 0.04
    assert abs(m["balanced_accuracy"] - 0.1) < 0.04


def test_mlp_beats_linear_on_xor_private_label():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(3000, 4)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1]) > 0).astype(np.int32)
    data = AttackInputData(train_embeddings=x[:2000], train_private=y[:2000],
                           eval_embeddings={"test": x[2000:]}, eval_private={"test": y[2000:]},
                           num_private=2)
    res = run_attacks(data, ["linear", "mlp"], verbose=0, mlp_hidden=(64, 64), mlp_lr=3e-3,
                      mlp_max_epochs=60)
    lin = res.get(AttackType.LINEAR).per_split["test"]
    mlp = res.get(AttackType.MLP).per_split["test"]
    assert lin["accuracy"] < 0.65
    assert mlp["accuracy"] > 0.9
    assert mlp["auc"] > 0.95 and 0 <= mlp["advantage"] <= 1
    assert res.get(AttackType.MLP).config["best_epoch"] >= 1


def test_linear_probe_10k_by_128_for_50_epochs_is_fast():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10000, 128)).astype(np.float32)
    y = rng.integers(0, 10, 10000)
    start = time.time()
    probe = train_linear_probe(x, y, 10, epochs=50, seed=0)
    assert time.time() - start < 10.0
    assert len(probe.history["loss"]) == 50
    lr = probe.history["lr"]
    assert lr[19] == pytest.approx(0.01) and lr[20] == pytest.approx(0.001)
    assert probe.history["lr"][49] == pytest.approx(1e-4)


def test_linear_probe_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    x, y = _clusters(600, 3, 8, rng)
    a = train_linear_probe(x, y, 3, epochs=3, seed=7)
    b = train_linear_probe(x, y, 3, epochs=3, seed=7)
    np.testing.assert_allclose(a.kernel, b.kernel, rtol=1e-6, atol=1e-7)


def test_linear_probe_lr_matches_torch_steplr():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    lrs = train_linear_probe(x, np.arange(32) % 2, 2, epochs=41, lr=0.01).history["lr"]
    assert [lrs[e] for e in (0, 19, 20, 39, 40)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001])
    # float64 as PyTorch computes it: the same numbers as ``0.01 * 0.1 ** (epoch // 20)``
    assert lrs == [0.01 * 0.1 ** (e // 20) for e in range(41)]


def test_metrics_on_a_hand_computed_case():
    y = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    # Positive/negative pairs: (0.4>0.1), (0.4<0.6), (0.8>both), (0.9>both) -> 5/6.
    assert auc_score(y, scores) == pytest.approx(5 / 6)
    # Threshold 0.8: TPR 2/3, FPR 0 -> advantage 2/3.
    assert attacker_advantage(y, scores) == pytest.approx(2 / 3)
    assert balanced_accuracy(y, np.array([0, 1, 1, 1, 0])) == pytest.approx((0.5 + 2 / 3) / 2)
    probs = np.stack([1 - scores, scores], axis=1)
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(3 / 5)  # predictions 0,1,0,1,1
    assert m["chance_majority"] == pytest.approx(3 / 5)
    assert m["chance_uniform"] == 0.5


def test_mean_ci_uses_student_t():
    mean, half = mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302652729911275 * 0.1 / np.sqrt(3))
    assert np.isnan(mean_ci([0.4])[1])


def test_split_validation_is_stratified_and_disjoint():
    y = np.repeat(np.arange(4), 50)
    tr, va = stratified_holdout(y, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 200
    assert np.all(np.bincount(y[va]) == 10)


@pytest.mark.parametrize("kwargs, message", [
    ({"train_private": np.zeros(5, int)}, "one per embedding"),
    ({"eval_embeddings": {}, "eval_private": {}}, "eval_embeddings is empty"),
    ({"eval_private": {"other": np.zeros(4, int)}}, "differ from eval_private"),
    ({"num_private": 2, "train_private": np.full(10, 3)}, "outside [0, 2)"),
])
def test_bad_attack_data_gives_one_line_user_error(kwargs, message):
    base = dict(train_embeddings=np.zeros((10, 3)), train_private=np.zeros(10, int),
                eval_embeddings={"test": np.zeros((4, 3))}, eval_private={"test": np.zeros(4, int)},
                num_private=4)
    base.update(kwargs)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")) as err:
        AttackInputData(**base)
    assert "\n" not in str(err.value)


def test_unknown_attack_option_or_type_is_a_user_error():
    data = AttackInputData(train_embeddings=np.zeros((4, 2)), train_private=[0, 1, 0, 1],
                           eval_embeddings={"t": np.zeros((2, 2))}, eval_private={"t": [0, 1]})
    with pytest.raises(UserError, match="unknown attack option"):
        run_attacks(data, ["linear"], linear_epochz=3)
    with pytest.raises(UserError, match="unknown attack type"):
        run_attacks(data, ["svm"])
    with pytest.raises(UserError, match="needs train_images"):
        run_attacks(data, ["decoder"], verbose=0)
