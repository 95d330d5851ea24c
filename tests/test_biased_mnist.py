"""Biased-MNIST construction (METHODS.md §1) on real MNIST."""

import numpy as np
import pytest

from bridging_tf.datasets import biased_mnist as bm
from bridging_tf.errors import UserError


@pytest.fixture(scope="module")
def bundle(mnist_dir):
    return bm.load_biased_mnist(data_dir=mnist_dir, rho=0.997, seed=3, val_size=2000,
                                test_size=3000)


def test_colour_map_matches_reference():
    assert bm.COLOUR_MAP.shape == (10, 3)
    assert bm.COLOUR_MAP[3].tolist() == [225, 225, 0]
    assert bm.COLOUR_MAP[4].tolist() == [225, 0, 225]
    assert bm.COLOUR_MAP[9].tolist() == [128, 128, 128]


@pytest.mark.parametrize("rho", [0.99, 0.995, 0.997, 0.999, 0.1, 0.0, 1.0])
def test_exactly_floor_n_rho_aligned_per_digit(bundle, rho):
    labels = bundle["train"].labels()
    bias = bm.assign_colours(labels, rho, np.random.default_rng(0))
    for d in range(10):
        n = int(np.sum(labels == d))
        aligned = int(np.sum((labels == d) & (bias == d)))
        assert aligned == int(np.floor(n * rho + 1e-9))
        others = bias[(labels == d) & (bias != d)]
        # the rest is spread in near-equal chunks of ceil(rest/9) over the other colours
        if len(others):
            counts = np.bincount(others, minlength=10)
            chunk = int(np.ceil(len(others) / 9))
            assert counts.max() <= chunk
            assert counts[d] == 0


def test_floor_guard_for_binary_floats():
    assert bm.n_aligned(6000, 0.997) == 5982
    assert bm.n_aligned(5923, 0.99) == 5863


def test_rho0999_uses_only_a_few_other_colours():
    labels = np.repeat(np.arange(10), 6000)
    bias = bm.assign_colours(labels, 0.999, np.random.default_rng(1))
    for d in range(10):
        others = set(bias[(labels == d) & (bias != d)].tolist())
        assert len(others) == 6  # 6 leftovers -> 6 chunks of one


def test_rendering_is_binarised_white_digit_on_colour(bundle):
    split = bundle["biased"]
    img = split.images[0]
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    colour = bm.COLOUR_MAP[split.private()[0]]
    pixels = img.reshape(-1, 3)
    is_white = np.all(pixels == 255, axis=1)
    is_bg = np.all(pixels == colour, axis=1)
    assert np.all(is_white | is_bg)
    assert is_white.any() and is_bg.any()


def test_test_sets_have_their_rho(bundle):
    for name, rho in bm.TEST_RHOS.items():
        split = bundle[name]
        frac = np.mean(split.labels() == split.private())
        assert abs(frac - rho) < 0.01, (name, frac)


def test_splits_are_disjoint_and_val_is_unbiased(bundle, mnist_dir):
    assert bundle["val"].size == 2000
    assert abs(np.mean(bundle["val"].labels() == bundle["val"].private()) - 0.1) < 0.02
    assert bundle["train"].size == 58000
    from bridging_tf.datasets.mnist_source import load_mnist

    (x, _), _ = load_mnist(mnist_dir)
    # digits are white where MNIST is non-zero; recover the masks and compare
    train_masks = {m.tobytes() for m in np.all(bundle["train"].images == 255, axis=-1)}
    val_masks = [m.tobytes() for m in np.all(bundle["val"].images == 255, axis=-1)]
    overlap = sum(m in train_masks for m in val_masks)
    assert overlap <= 5  # (MNIST itself has a few duplicate binarised digits)
    assert x.shape[0] == 60000


def test_both_attack_protocols(bundle):
    sound, paper = bundle["attack_train_sound"], bundle["attack_train_paper"]
    assert abs(np.mean(sound.labels() == sound.private()) - 0.1) < 0.01
    assert np.mean(paper.labels() == paper.private()) > 0.99
    assert bundle["attack_train"] is sound


def test_same_seed_gives_identical_bytes(mnist_dir):
    a = bm.load_biased_mnist(data_dir=mnist_dir, rho=0.995, seed=7, train_size=1000,
                             test_size=500, val_size=500)
    b = bm.load_biased_mnist(data_dir=mnist_dir, rho=0.995, seed=7, train_size=1000,
                             test_size=500, val_size=500)
    c = bm.load_biased_mnist(data_dir=mnist_dir, rho=0.995, seed=8, train_size=1000,
                             test_size=500, val_size=500)
    for name in a.splits:
        assert a[name].images.tobytes() == b[name].images.tobytes(), name
        assert np.array_equal(a[name].private(), b[name].private())
    assert a["train"].images.tobytes() != c["train"].images.tobytes()


def test_pipeline_scales_to_minus_one_one(bundle):
    x, y = next(iter(bundle["unbiased"].dataset(32)))
    assert x.dtype.name == "float32" and tuple(x.shape) == (32, 28, 28, 3)
    assert float(np.min(x)) >= -1.0 and float(np.max(x)) == 1.0
    assert set(y) == {"label", "private"}
    raw, _ = next(iter(bundle["unbiased"].dataset(8, normalize=False)))
    assert raw.dtype.name == "uint8"


@pytest.mark.parametrize("kwargs, match", [
    ({"rho": 1.5}, "--rho"), ({"rho": -0.1}, "--rho"),
    ({"attack_protocol": "oracle"}, "--attack_protocol"), ({"train_size": 0}, "--train_size"),
])
def test_bad_options_are_one_line_errors(mnist_dir, kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        bm.load_biased_mnist(data_dir=mnist_dir, **kwargs)
    assert "\n" not in str(err.value)
