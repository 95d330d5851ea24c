"""Shared face-data code: age bins, EB membership, the file-backed split."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.datasets import faces
from bridging_tf.datasets.base import normalize_images
from bridging_tf.errors import DataError, UserError


def write_jpeg(path, image: np.ndarray) -> str:
    tf.io.write_file(str(path), tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100))
    return str(path)


def two_colour_image(h=40, w=30):
    """Left half red, right half blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 255
    img[:, w // 2:, 2] = 255
    return img


def test_age_bin_edges():
    ages = [0, 19, 20, 24, 25, 29, 30, 34, 35, 39, 40, 69, 70, 100, 101, 116, -1, np.nan]
    want = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 10, 11, 11, -1, -1, -1, -1]
    assert faces.age_bin(ages).tolist() == want


def test_eb1_is_young_women_and_old_men_eb2_the_reverse():
    age = np.array([5, 29, 30, 39, 40, 100, 101, 5, 29, 35, 40, 100])
    female = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    m = faces.eb_masks(age, female)
    assert m["EB1"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert m["EB2"].tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0]
    assert not np.any(m["EB1"] & m["EB2"])


def test_face_task_pairs_target_with_private():
    assert faces.face_task("age", None) == "age"
    assert faces.face_task("gender", "age") == "gender"
    assert faces.face_task(None, "") == "age"
    with pytest.raises(UserError, match="--target"):
        faces.face_task("race", None)
    with pytest.raises(UserError, match="--private"):
        faces.face_task("age", "age")
    with pytest.raises(UserError, match="--split"):
        faces.check_eb_split("EB3")


def test_task_labels_swap_for_gender_target():
    bins, female = np.array([0, 11]), np.array([1, 0])
    y, p, nc, npriv, *_ = faces.task_labels("gender", bins, female)
    assert (y.tolist(), p.tolist(), nc, npriv) == ([1, 0], [0, 11], 2, 12)
    y, p, nc, npriv, *_ = faces.task_labels("age", bins, female)
    assert (y.tolist(), p.tolist(), nc, npriv) == ([0, 11], [1, 0], 12, 2)


def test_stratified_holdout_is_seeded_and_proportional():
    groups = np.repeat([0, 1, 2], [100, 10, 2])
    kept, held = faces.stratified_holdout(groups, 0.3, np.random.default_rng(0))
    assert [int((groups[held] == g).sum()) for g in range(3)] == [30, 3, 1]
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == len(groups)
    kept2, held2 = faces.stratified_holdout(groups, 0.3, np.random.default_rng(0))
    assert np.array_equal(held, held2)


def test_file_split_decodes_resizes_and_normalises(tmp_path):
    paths = [write_jpeg(tmp_path / f"{i}.jpg", two_colour_image()) for i in range(3)]
    split = faces.FileSplit("s", paths, [0, 1, 0], [1, 1, 0], image_size=16)
    raw, y = next(iter(split.dataset(3, normalize=False)))
    assert raw.dtype == tf.uint8 and raw.shape == (3, 16, 16, 3)
    assert y["label"].numpy().tolist() == [0, 1, 0] and y["private"].numpy().tolist() == [1, 1, 0]
    # left columns red, right columns blue (JPEG is lossy: loose bounds)
    assert raw[0, :, 0, 0] .numpy().min() > 200 and raw[0, :, -1, 2].numpy().min() > 200
    x, _ = next(iter(split.dataset(3)))
    np.testing.assert_allclose(x.numpy(), normalize_images(raw, faces.IMAGENET_MEAN,
                                                           faces.IMAGENET_STD).numpy(), atol=1e-5)


def test_file_split_augment_flips_horizontally(tmp_path):
    paths = [write_jpeg(tmp_path / f"{i}.jpg", two_colour_image()) for i in range(8)]
    split = faces.FileSplit("s", paths, np.zeros(8), np.zeros(8), image_size=16)
    plain = next(iter(split.dataset(8, normalize=False)))[0].numpy()
    aug = next(iter(split.dataset(8, augment=True, normalize=False, seed=3)))[0].numpy()
    flipped = [np.array_equal(a, p[:, ::-1]) for a, p in zip(aug, plain)]
    same = [np.array_equal(a, p) for a, p in zip(aug, plain)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)


def test_file_split_crops_to_face_box(tmp_path):
    img = np.zeros((60, 40, 3), np.uint8)
    img[10:30, 5:25] = 255                     # the "face": x 5..25, y 10..30
    path = write_jpeg(tmp_path / "f.jpg", img)
    boxes = [[5, 10, 25, 30], [np.nan] * 4, [-50, -50, 500, 500]]
    split = faces.FileSplit("s", [path] * 3, [0] * 3, [0] * 3, image_size=8, boxes=boxes)
    x = next(iter(split.dataset(3, normalize=False)))[0].numpy().astype(int)
    assert x[0].min() > 200                    # cropped: all face
    assert x[1].mean() < 150 and x[2].mean() < 150   # whole image (NaN / clipped box)
    np.testing.assert_array_equal(x[1], x[2])


def test_file_split_shuffles_without_losing_rows(tmp_path):
    paths = [write_jpeg(tmp_path / f"{i}.jpg", np.full((8, 8, 3), 20 * i, np.uint8))
             for i in range(6)]
    split = faces.FileSplit("s", paths, np.arange(6), np.arange(6), image_size=8, cache=None)
    labels = np.concatenate([y["label"].numpy() for _, y in split.dataset(4, shuffle=True)])
    assert sorted(labels.tolist()) == list(range(6))
    sub = split.subset([4, 1])
    assert sub.labels().tolist() == [4, 1] and sub.size == 2


def test_check_images_skips_truncated_and_rejects_absent(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", two_colour_image())
    data = open(good, "rb").read()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    ok = faces.check_images([good, str(tmp_path / "trunc.jpg"), str(tmp_path / "empty.jpg")],
                            "list.txt")
    assert ok.tolist() == [True, False, False]
    with pytest.raises(DataError, match=r"list\.txt.*nope\.jpg"):
        faces.check_images([good, str(tmp_path / "nope.jpg")], "list.txt")


def test_image_size_and_data_dir_checked(tmp_path):
    assert faces.check_image_size(None) == 224
    with pytest.raises(UserError, match="--image_size"):
        faces.check_image_size(4)
    with pytest.raises(UserError, match="--data_dir"):
        faces.require_dir(None)
    with pytest.raises(DataError, match="not a folder"):
        faces.require_dir(tmp_path / "missing")
