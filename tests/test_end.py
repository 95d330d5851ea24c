"""EnD terms against a hand-computed 5-sample batch, and the model wrapper."""

import itertools

import keras
import numpy as np
import pytest

from bridging_tf.methods import EnDModel, VanillaModel, end_orthogonal, end_parallel
from bridging_tf.models.simple_conv import simple_convnet

ANGLES = np.array([0.0, 0.5, 1.2, 2.0, 3.0])
Z = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype("float32")
Y = np.array([0, 0, 1, 1, 0])
B = np.array([0, 1, 0, 1, 0])


def cos(i, j):
    return float(np.cos(ANGLES[i] - ANGLES[j]))


def test_orthogonal_by_hand():
    # same-bias pairs (i > j): bias 0 -> samples {0, 2, 4}: (2,0), (4,0), (4,2);
    # bias 1 -> {1, 3}: (3,1)
    s0 = cos(2, 0) + cos(4, 0) + cos(4, 2)
    s1 = cos(3, 1)
    expected = (abs(s0) + abs(s1)) / 4
    got = float(end_orthogonal(Z, B, num_private=2))
    assert got == pytest.approx(expected, abs=1e-6)


def test_orthogonal_abs_is_per_class_sum_not_per_pair():
    # two same-bias pairs with opposite cosines cancel inside the class sum
    z = np.array([[1, 0], [0, 1], [-1, 0], [0, 1]], "float32")
    b = np.array([0, 0, 0, 1])
    # pairs in class 0: (1,0)=0, (2,0)=-1, (2,1)=0 -> |sum| = 1, 3 pairs
    assert float(end_orthogonal(z, b, 2)) == pytest.approx(1 / 3)


def test_parallel_all_pairs_by_hand():
    pairs = [(i, j) for i, j in itertools.combinations(range(5), 2)
             if Y[i] == Y[j] and B[i] != B[j]]
    # target 0: {0(b0), 1(b1), 4(b0)} -> (0,1), (1,4); target 1: {2(b0), 3(b1)} -> (2,3)
    assert sorted(pairs) == [(0, 1), (1, 4), (2, 3)]
    expected = 1 - np.mean([(1 + cos(i, j)) / 2 for i, j in pairs])
    assert float(end_parallel(Z, Y, B, "all")) == pytest.approx(expected, abs=1e-6)


def test_parallel_reference_half_pairs():
    # reference keeps i > j with b_i < b_j only: (4,1) qualifies (b4=0 < b1=1);
    # (1,0) and (3,2) do not
    expected = 1 - (1 + cos(4, 1)) / 2
    assert float(end_parallel(Z, Y, B, "reference")) == pytest.approx(expected, abs=1e-6)


def test_no_pairs_gives_zero():
    z = Z[:2]
    assert float(end_orthogonal(z, np.array([0, 1]), 2)) == 0.0
    assert float(end_parallel(z, np.array([0, 1]), np.array([0, 1]))) == 0.0


def test_parallel_is_zero_when_aligned():
    z = np.tile(np.array([[0.6, 0.8]], "float32"), (4, 1))
    r_par = end_parallel(z, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert float(r_par) == pytest.approx(0)


def _tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28, 28, 3)).astype("float32")
    y = {"label": rng.integers(0, 10, n).astype("int32"),
         "private": rng.integers(0, 10, n).astype("int32")}
    return x, y


def test_end_model_total_is_ce_plus_weighted_terms():
    x, y = _tiny_data()
    model = EnDModel(simple_convnet(variant="end", width=0.125), num_private=10, alpha=2.0,
                     beta=3.0)
    logits, z = model.backbone(x)
    total, parts = model.compute_total_loss(x, y, logits, z)
    manual = (float(parts["ce_loss"]) + 2.0 * float(end_orthogonal(z, y["private"], 10))
              + 3.0 * float(end_parallel(z, y["label"], y["private"])))
    assert float(total) == pytest.approx(manual, rel=1e-5)


@pytest.mark.parametrize("cls,variant", [(VanillaModel, "vanilla"), (EnDModel, "end")])
def test_fit_history_keys_and_keras_round_trip(tmp_path, cls, variant):
    import tensorflow as tf

    x, y = _tiny_data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    kwargs = {"num_private": 10, "alpha": 0.5, "beta": 0.25} if cls is EnDModel else {}
    model = cls(simple_convnet(variant=variant, width=0.125), weight_decay=1e-4, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(ds, epochs=1, verbose=0)
    expected = {"loss", "ce_loss", "accuracy"} | (
        {"end_orth", "end_par"} if cls is EnDModel else set())
    assert set(history.history) == expected
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is cls
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0),
                               atol=1e-6)
    clone = cls.from_config(model.get_config())
    assert clone.get_config()["weight_decay"] == 1e-4
    if cls is EnDModel:
        assert (loaded.alpha, loaded.beta) == (0.5, 0.25)


def test_weight_decay_is_coupled_l2():
    from bridging_tf.methods import add_coupled_weight_decay

    w = keras.Variable(np.array([2.0, -1.0], "float32"))
    g = np.array([0.5, 0.5], "float32")
    (out,) = add_coupled_weight_decay([g], [w], 0.1)
    np.testing.assert_allclose(np.asarray(out), [0.7, 0.4])


def test_end_needs_private_label():
    x, y = _tiny_data(8)
    model = EnDModel(simple_convnet(variant="end", width=0.125), num_private=10)
    logits, z = model.backbone(x)
    with pytest.raises(ValueError, match="private"):
        model.compute_total_loss(x, y["label"], logits, z)
