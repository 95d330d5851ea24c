"""Biased-MNIST (Bahng et al. 2020) exactly as the reference code builds it.

A white, binarised digit on a coloured background (28×28×3). Colour ``b``
is the private/bias attribute; with probability-free, *deterministic*
proportions ``rho`` of each digit's images carry the digit's own colour
(METHODS.md §1):

1. per digit ``d``: shuffle its indices; the first ``floor(n * rho)`` get
   colour ``d``;
2. the rest are cut into consecutive chunks of ``ceil(rest / 9)`` and
   chunk ``k`` gets the ``k``-th of the other nine colours
   ``(d+1..d+9) % 10`` in shuffled order (so at ``rho = 0.999`` only a few
   other colours appear).

Entries 3 and 4 of the colour map use 225, not 255 (as in the reference).
Everything is seeded: the same ``seed`` gives byte-identical splits.

Splits (a :class:`~bridging_tf.datasets.base.DataBundle`):

- ``train``: the training digits minus the validation digits, at ``rho``;
- ``val``: ``val_size`` *other* training digits recoloured at ``rho = 0.1``
  — model selection happens here (**beyond the reference**, which picks the
  best epoch on the unbiased *test* set; EnD's own validation reuses the
  training images);
- ``attack_train``: what the colour attacker fits on. ``attack_protocol=
  "sound"`` (default): the training digits recoloured at ``rho = 0.1``, so
  colour is independent of the digit; ``"paper"``: a fresh ``rho = 0.999``
  colouring of the training digits, as the reference does (attack
  accuracies can then fall below chance); ``attack_val`` is always ``val``
  recoloured with another draw;
- ``attack_train_sound`` / ``attack_train_paper``: both attacker sets, so
  a run can report the two protocols side by side;
- ``biased`` (``rho = 1``), ``rho0`` (``rho = 0``) and ``unbiased``
  (``rho = 0.1``) on the 10,000 test digits; ``unbiased`` is primary.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from bridging_tf.datasets.base import ArraySplit, DataBundle, DeferredSplit, aligned_empty
from bridging_tf.datasets.checks import check_attack_split
from bridging_tf.datasets.mnist_source import load_mnist
from bridging_tf.errors import UserError
from bridging_tf.options import BiasedMnistData, DataOptions, check_value, choices_of

COLOUR_MAP = np.array([
    [255, 0, 0], [0, 255, 0], [0, 0, 255], [225, 225, 0], [225, 0, 225],
    [0, 255, 255], [255, 128, 0], [255, 0, 128], [128, 0, 255], [128, 128, 128],
], dtype=np.uint8)
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "pink",
                "purple", "grey")
TRAIN_RHOS = (0.99, 0.995, 0.997, 0.999)
TEST_RHOS = {"biased": 1.0, "rho0": 0.0, "unbiased": 0.1}
ATTACK_PROTOCOLS = choices_of(BiasedMnistData.__dataclass_fields__["attack_protocol"])
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
#: The images are always 28x28x3 (there is no ``image_size`` option).
IMAGE_SIZE = 28


def n_aligned(n: int, rho: float) -> int:
    """How many of ``n`` digits keep their own colour: ``floor(n * rho)``.

    A tiny epsilon guards against binary floating point (``6000 * 0.997``
    must give 5982, not 5981).
    """
    return int(math.floor(n * rho + 1e-9))


def assign_colours(labels: np.ndarray, rho: float, rng: np.random.Generator,
                   n_confusing: int = 9, num_classes: int = 10) -> np.ndarray:
    """Bias (colour) label per sample with the reference's deterministic proportions."""
    rho = check_value("rho", rho)
    labels = np.asarray(labels)
    bias = np.empty(len(labels), dtype=np.int32)
    for d in range(num_classes):
        idx = np.flatnonzero(labels == d)
        rng.shuffle(idx)
        n = len(idx)
        k = n_aligned(n, rho)
        bias[idx[:k]] = d
        rest = idx[k:]
        if len(rest):
            others = (d + 1 + np.arange(n_confusing)) % num_classes
            rng.shuffle(others)
            chunk = int(math.ceil(len(rest) / n_confusing))
            for j, other in enumerate(others):
                bias[rest[j * chunk:(j + 1) * chunk]] = other
    return bias


def colourise(digits: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` digits + colour labels -> uint8 ``(N, 28, 28, 3)``.

    Any non-zero pixel becomes pure white (binarised); zeros take the colour.
    """
    digits = np.asarray(digits)
    # Fill with the background colour, then paint the digit white in place: no
    # broadcast temporaries and no extra astype copy (same bytes as np.where).
    out = aligned_empty(digits.shape + (3,), np.uint8)  # shared with TF without a copy
    out[...] = COLOUR_MAP[np.asarray(bias)][:, None, None, :]
    np.copyto(out, np.uint8(255), where=(digits != 0)[..., None])
    return out


def _split(name, digits, labels, rho, rng):
    """The colours are drawn now (in the seeded order); the images are painted on first use."""
    bias = assign_colours(labels, rho, rng)
    return DeferredSplit(name, len(labels), lambda: ArraySplit(
        name, colourise(digits, bias), labels, bias, MEAN, STD), labels=labels, private=bias)


def _subsample(n_total: int, size: Optional[int], rng) -> np.ndarray:
    if size is None or size >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=size, replace=False))


def load_biased_mnist(data_dir=None, rho: float = BiasedMnistData.rho,
                      seed: int = DataOptions.seed, train_size: Optional[int] = None,
                      val_size: int = BiasedMnistData.val_size, test_size: Optional[int] = None,
                      attack_protocol: str = BiasedMnistData.attack_protocol,
                      attack_size: Optional[int] = None, allow_download: bool = True,
                      **unused) -> DataBundle:
    """Build Biased-MNIST (see module doc).

    Args:
      data_dir: folder with ``mnist.npz`` or the IDX files (else keras cache/download).
      rho: colour/digit correlation of the training set, in [0, 1].
      seed: every random choice derives from it.
      train_size: subsample the training digits (after carving ``val``).
      val_size: digits held out from training for model selection.
      test_size: subsample the 10k test digits (quick runs only).
      attack_protocol: ``"sound"`` or ``"paper"`` (see module doc).
      attack_size: attacker training examples (default: as many as ``train``).
    """
    seed = DataOptions(seed=seed, rho=rho, train_size=train_size, test_size=test_size,
                       attack_size=attack_size, attack_protocol=attack_protocol).seed
    (x_tr, y_tr), (x_te, y_te) = load_mnist(data_dir, allow_download=allow_download)
    if not 0 <= val_size < len(x_tr):
        raise UserError(f"--val_size={val_size} must be in [0, {len(x_tr)})")

    ss = np.random.SeedSequence(int(seed))
    (r_split, r_train, r_val, _unused, r_attv, r_test, r_sub) = [
        np.random.default_rng(s) for s in ss.spawn(7)]
    perm = r_split.permutation(len(x_tr))
    val_idx = np.sort(perm[:val_size])
    pool_idx = np.sort(perm[val_size:])
    pool_idx = pool_idx[_subsample(len(pool_idx), train_size, r_sub)]
    x_pool, y_pool = x_tr[pool_idx], y_tr[pool_idx]

    splits = {"train": _split("train", x_pool, y_pool, float(rho), r_train)}
    if val_size:
        splits["val"] = _split("val", x_tr[val_idx], y_tr[val_idx], 0.1, r_val)
    att_idx = _subsample(len(x_pool), attack_size, r_sub)
    att_rho = 0.1 if attack_protocol == "sound" else 0.999
    # Both protocols are always built (so a run can report them side by side);
    # ``attack_train`` is the one chosen by ``attack_protocol``.
    r_att_sound, r_att_paper = [np.random.default_rng(s) for s in
                                np.random.SeedSequence([int(seed), 1]).spawn(2)]
    splits["attack_train_sound"] = _split("attack_train_sound", x_pool[att_idx],
                                          y_pool[att_idx], 0.1, r_att_sound)
    splits["attack_train_paper"] = _split("attack_train_paper", x_pool[att_idx],
                                          y_pool[att_idx], 0.999, r_att_paper)
    splits["attack_train"] = splits[f"attack_train_{attack_protocol}"]
    check_attack_split(splits["attack_train"].private(), f"Biased-MNIST (seed {seed})")
    if val_size:
        splits["attack_val"] = _split("attack_val", x_tr[val_idx], y_tr[val_idx], 0.1, r_attv)
    test_idx = _subsample(len(x_te), test_size, r_sub)
    for name, test_rho in TEST_RHOS.items():
        splits[name] = _split(name, x_te[test_idx], y_te[test_idx], test_rho, r_test)

    metadata = {
        "rho": float(rho), "seed": int(seed), "attack_protocol": attack_protocol,
        "attack_train_rho": att_rho, "attack_protocols": list(ATTACK_PROTOCOLS),
        "val_rho": 0.1, "test_rhos": dict(TEST_RHOS),
        "train_digits": int(len(pool_idx)), "val_digits": int(val_size),
        "test_digits": int(len(test_idx)),
        "model_selection": "val split (training digits held out, rho=0.1); the reference "
                           "selects on the unbiased test set",
        "colour_map": COLOUR_MAP.tolist(),
    }
    return DataBundle(
        name="biased_mnist", splits=splits, eval_splits=("unbiased", "biased", "rho0"),
        primary_eval="unbiased", num_classes=10, num_private=10,
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        mean=MEAN, std=STD, private_names=COLOUR_NAMES,
        class_names=tuple(str(d) for d in range(10)), metadata=metadata)
