"""Reconstruction attack on real Biased-MNIST (small) and the colour read-back."""

import numpy as np
import pytest

from bridging_tf.attacks import AttackInputData, AttackType, run_attacks
from bridging_tf.attacks.decoder import (
    background_mask,
    build_decoder,
    colour_from_reconstruction,
    nearest_palette,
    psnr,
)
from bridging_tf.datasets.biased_mnist import COLOUR_MAP, load_biased_mnist


@pytest.fixture(scope="module")
def small_biased_mnist(mnist_dir):
    bundle = load_biased_mnist(mnist_dir, rho=0.1, seed=0, train_size=800, test_size=200,
                               val_size=0, allow_download=False)
    return bundle["train"], bundle["unbiased"]


def _random_projection(images, dim=64, seed=0):
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    w = np.random.default_rng(seed).normal(size=(x.shape[1], dim)).astype(np.float32)
    return x @ w / np.sqrt(x.shape[1])


def test_colour_read_back_from_true_images_is_exact(small_biased_mnist):
    _, test = small_biased_mnist
    out = colour_from_reconstruction(test.images.astype(np.float32) / 255.0, test.images,
                                     COLOUR_MAP, test.private())
    assert out["colour_accuracy"] == 1.0


def test_background_mask_falls_back_to_border_when_colour_absent():
    images = np.full((1, 8, 8, 3), 255, np.uint8)  # all foreground (white)
    mask = background_mask(images, COLOUR_MAP, np.array([0]), border=2)
    assert mask[0, 0, 0] and mask[0, 7, 7] and not mask[0, 4, 4]


def test_nearest_palette_and_psnr():
    assert list(nearest_palette(np.array([[250, 5, 5], [120, 130, 125]]), COLOUR_MAP)) == [0, 9]
    assert psnr(np.array([0.01]))[0] == pytest.approx(20.0)


def test_decoder_output_shape_handles_sizes_not_divisible_by_four():
    model = build_decoder(16, (30, 26, 1), base_channels=8)
    assert model.output_shape == (None, 30, 26, 1)


def test_decoder_beats_mean_image_and_recovers_colour_on_real_mnist(small_biased_mnist):
    train, test = small_biased_mnist
    data = AttackInputData(
        train_embeddings=_random_projection(train.images), train_private=train.private(),
        eval_embeddings={"unbiased": _random_projection(test.images)},
        eval_private={"unbiased": test.private()}, num_private=10,
        train_images=train.images, eval_images={"unbiased": test.images})
    res = run_attacks(data, [AttackType.DECODER], seed=0, verbose=0, decoder_epochs=15,
                      decoder_channels=32, decoder_batch_size=64, palette=COLOUR_MAP,
                      decoder_samples=8)
    r = res.get(AttackType.DECODER)
    m = r.per_split["unbiased"]
    assert m["mse"] < 0.7 * m["baseline_mse"]
    assert m["psnr"] > m["baseline_psnr"]
    assert m["colour_accuracy"] > 0.5  # colour is linear in the projection: recovered
    assert r.arrays["recon:unbiased"].shape == (8, 28, 28, 3)
    assert r.arrays["recon:unbiased"].dtype == np.uint8
    assert r.config["verified"] is False
