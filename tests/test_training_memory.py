"""The training input holds the data once however many epochs (issue 11), in the old order."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.datasets import ArraySplit
from bridging_tf.datasets.base import aligned_empty, shared_tensor
from bridging_tf.training import epoch_datasets


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def _split(n=12_000, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)  # ~27 MiB
    return ArraySplit("train", images, rng.integers(0, 10, n), rng.integers(0, 10, n))


def test_training_stream_holds_the_images_at_most_once_for_40_epochs():
    split = _split()
    data_mib = split.images.nbytes / 2 ** 20
    # Warm up TF's runtime and thread pools on a short stream first.
    for _ in epoch_datasets(split, 512, seed=0, first_epoch=0, epochs=1).take(2):
        pass
    before = _rss_mib()
    ds = epoch_datasets(split, 512, seed=0, first_epoch=0, epochs=40)
    it = iter(ds)
    for _ in range(3):
        next(it)
    grown = _rss_mib() - before
    # One pipeline per epoch, each with its own copy, would be 40 copies (~1 GiB here).
    print(f"rss grew {grown:.1f} MiB, data {data_mib:.1f} MiB")
    assert grown < data_mib, f"RSS grew by {grown:.0f} MiB for {data_mib:.0f} MiB of images"


def test_the_images_are_shared_with_tensorflow_not_copied():
    arr = aligned_empty((64, 4, 4, 3), np.uint8)
    arr[...] = 7
    t = shared_tensor(arr)
    arr[0, 0, 0, 0] = 200  # same memory: the tensor sees the write
    assert int(t[0, 0, 0, 0]) == 200


def test_unaligned_arrays_are_realigned_and_still_equal():
    raw = np.random.default_rng(1).integers(0, 255, (1000 * 48 + 1,), dtype=np.uint8)
    images = raw[1:].reshape(1000, 4, 4, 3)  # deliberately off the 64-byte boundary
    split = ArraySplit("t", images, np.zeros(1000), np.zeros(1000))
    assert split.images.ctypes.data % 64 == 0
    np.testing.assert_array_equal(split.images, images)


def test_epoch_order_is_what_shuffling_the_examples_gives():
    """The index stream reproduces ``from_tensor_slices(data).shuffle(n, seed)`` exactly."""
    split = _split(n=1000, seed=3)
    got = [y["label"].numpy() for _, y in
           epoch_datasets(split, 128, seed=5, first_epoch=0, epochs=3)]
    want = []
    for e in range(3):
        ref = tf.data.Dataset.from_tensor_slices(split.labels()).shuffle(
            split.size, seed=5 * 100003 + e, reshuffle_each_iteration=True).batch(128)
        want += [b.numpy() for b in ref]
    assert len(got) == len(want) == 3 * 8
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("drop", [False, True])
def test_no_batch_spans_two_epochs(drop):
    split = _split(n=100)
    sizes = [len(y["label"]) for _, y in
             epoch_datasets(split, 32, seed=0, first_epoch=0, epochs=2, drop_remainder=drop)]
    assert sizes == ([32, 32, 32] * 2 if drop else [32, 32, 32, 4] * 2)


def test_face_split_is_decoded_once_and_flipped_with_seeded_flips(tmp_path):
    from PIL import Image

    from bridging_tf.datasets.faces import FileSplit
    paths = []
    rng = np.random.default_rng(0)
    for i in range(12):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(str(p))
    split = FileSplit("train", paths, np.arange(12) % 2, np.arange(12) % 3, image_size=16)
    a = [x.numpy() for x, _ in epoch_datasets(split, 5, seed=1, first_epoch=0, epochs=3,
                                               augment=True)]
    b = [x.numpy() for x, _ in epoch_datasets(split, 5, seed=1, first_epoch=2, epochs=3,
                                               augment=True)]
    assert split._memory is not None and split._memory.images.shape == (12, 16, 16, 3)
    assert len(a) == 9 and len(b) == 3
    for x, y in zip(a[6:], b):  # a resumed stream flips exactly as an uninterrupted one
        np.testing.assert_array_equal(x, y)


def test_biased_mnist_paints_a_split_only_when_a_step_uses_it(mnist_dir):
    from bridging_tf.datasets import load
    bundle = load("biased_mnist", data_dir=mnist_dir, train_size=400, val_size=100,
                  test_size=100, attack_size=200)
    assert {k: v.size for k, v in bundle.splits.items()}["attack_train_sound"] == 200
    assert all(s._split is None for s in bundle.splits.values())  # sizes known, nothing painted
    assert len(bundle["attack_train"].private()) == 200  # labels need no painting
    assert all(s._split is None for s in bundle.splits.values())
    next(iter(bundle["train"].dataset(32)))
    painted = {k for k, s in bundle.splits.items() if s._split is not None}
    assert painted == {"train"}
    again = load("biased_mnist", data_dir=mnist_dir, train_size=400, val_size=100,
                 test_size=100, attack_size=200)
    # painting later, in another order, gives the same bytes (colours are drawn at load time)
    np.testing.assert_array_equal(again["unbiased"].images, bundle["unbiased"].images)
    np.testing.assert_array_equal(again["train"].images, bundle["train"].images)
