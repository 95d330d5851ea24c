"""CelebA: official-layout parsers (real rows from ../shared/data), the §8.2 protocol, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.datasets import celeba, load
from bridging_tf.errors import DataError, UserError
from tests.conftest import shared_path

NAMES = celeba.ATTRIBUTES


@pytest.fixture(scope="module")
def real_dir():
    return shared_path("celeba")


@pytest.fixture(scope="module")
def real_bundle(real_dir):
    return load("celeba", data_dir=str(real_dir), image_size=32, seed=0)


def write_folder(root, values, partitions, images=True, names=NAMES):
    """A tiny CelebA folder: ``values`` [N, 40] of 0/1, one partition per row."""
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True)
    files = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    lines = [str(len(files)), " ".join(names)]
    lines += [f + " " + " ".join("1" if v else "-1" for v in row) for f, row in zip(files, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{f} {p}\n" for f, p in zip(files, partitions)))
    if images:
        jpeg = tf.io.encode_jpeg(tf.zeros((20, 16, 3), tf.uint8)).numpy()
        for f in files:
            (img_dir / f).write_bytes(jpeg)
    return files


def link_subset(real_dir, dst, n):
    """Symlink the first ``n`` real images and cut both lists to them."""
    (dst / "img_align_celeba").mkdir(parents=True)
    lines = (real_dir / "list_attr_celeba.txt").read_text().splitlines()
    (dst / "list_attr_celeba.txt").write_text("\n".join([str(n), lines[1]] + lines[2:2 + n]) + "\n")
    parts = (real_dir / "list_eval_partition.txt").read_text().splitlines()[:n]
    (dst / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    for line in parts:
        f = line.split()[0]
        os.symlink(real_dir / "img_align_celeba" / f, dst / "img_align_celeba" / f)


def test_reads_real_attribute_rows(real_dir):
    names, files, values = celeba.read_attributes(str(real_dir / "list_attr_celeba.txt"))
    assert tuple(names) == NAMES and len(files) == 2000 and values.shape == (2000, 40)
    assert files[0] == "000001.jpg" and set(np.unique(values)) == {0, 1}
    row = dict(zip(names, values[0]))  # 000001: an attractive, smiling, young woman
    assert (row["Male"], row["Attractive"], row["Smiling"], row["Young"], row["Blond_Hair"]) \
        == (0, 1, 1, 1, 0)
    assert 0.35 < values[:, names.index("Male")].mean() < 0.5


def test_reads_real_partition_rows(real_dir):
    parts = celeba.read_partitions(str(real_dir / "list_eval_partition.txt"))
    assert len(parts) == 2000 and set(parts.values()) == {0} and parts["002000.jpg"] == 0


def test_decodes_a_real_image(real_dir):
    img = tf.io.decode_jpeg(tf.io.read_file(str(real_dir / "img_align_celeba" / "000001.jpg")))
    assert img.shape == (109, 89, 3) and img.dtype == tf.uint8


def test_partial_folder_builds_seeded_stratified_splits(real_bundle):
    b = real_bundle
    assert "partial folder" in b.metadata["protocol"]
    assert (b.num_classes, b.num_private, b.image_shape) == (2, 2, (32, 32, 3))
    assert b.primary_eval == "unbiased" and tuple(b.eval_splits) == ("unbiased", "bias_conflicting")
    assert b["attack_train"] is b["train"]
    sizes = b.metadata["split_sizes"]
    assert sum(b.metadata["group_sizes"]["eval_pool"]) + sizes["train"] + sizes["val"] == 2000
    paths = {k: set(b[k].paths) for k in ("train", "val", "unbiased")}
    assert not (paths["train"] & paths["val"]) and not (paths["train"] & paths["unbiased"])
    assert not (paths["val"] & paths["unbiased"])


def test_unbiased_is_balanced_and_conflicting_is_its_off_diagonal(real_bundle):
    u, c = real_bundle["unbiased"], real_bundle["bias_conflicting"]
    groups = 2 * u.labels() + u.private()
    counts = np.bincount(groups, minlength=4)
    assert len(set(counts.tolist())) == 1 and counts[0] > 0
    assert c.size == u.size // 2 and np.all(c.labels() != c.private())
    assert set(c.paths) <= set(u.paths)


def test_private_is_male_inverted(real_dir, real_bundle):
    names, files, values = celeba.read_attributes(str(real_dir / "list_attr_celeba.txt"))
    male = dict(zip(files, values[:, names.index("Male")]))
    blond = dict(zip(files, values[:, names.index("Blond_Hair")]))
    t = real_bundle["train"]
    base = [os.path.basename(p) for p in t.paths]
    assert np.array_equal(t.private(), 1 - np.array([male[f] for f in base]))
    assert np.array_equal(t.labels(), np.array([blond[f] for f in base]))
    assert real_bundle.private_names == ("male", "female")


def test_same_seed_same_splits_other_seed_differs(real_dir, real_bundle):
    again = load("celeba", data_dir=str(real_dir), image_size=32, seed=0, verify_images=False)
    other = load("celeba", data_dir=str(real_dir), image_size=32, seed=1, verify_images=False)
    assert np.array_equal(again["unbiased"].paths, real_bundle["unbiased"].paths)
    assert not np.array_equal(other["unbiased"].paths, real_bundle["unbiased"].paths)


def test_real_batch_is_normalised_float(real_bundle):
    x, y = next(iter(real_bundle["unbiased"].dataset(8)))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32
    assert -2.2 < float(tf.reduce_min(x)) and float(tf.reduce_max(x)) < 2.7
    assert set(y) == {"label", "private"}


def test_heavy_makeup_target_and_caps(real_dir):
    b = load("celeba", data_dir=str(real_dir), target="Heavy_Makeup", image_size=32,
             train_size=100, test_size=8, verify_images=False)
    assert b["train"].size == 100 and b["unbiased"].size <= 8
    assert b.class_names == ("not Heavy_Makeup", "Heavy_Makeup")


def test_official_partitions_use_valid_for_eval(tmp_path):
    n = 96
    values = np.zeros((n, 40), np.uint8)
    values[:, NAMES.index("Blond_Hair")] = np.arange(n) % 2
    values[:, NAMES.index("Male")] = (np.arange(n) // 2) % 2
    parts = (np.arange(n) // 4) % 3          # every block of 4 rows holds the 4 groups
    files = write_folder(tmp_path, values, parts)
    b = load("celeba", data_dir=str(tmp_path), image_size=16, seed=0)
    assert b.metadata["protocol"].startswith("official")
    part_of = dict(zip(files, parts))
    for name, allowed in (("train", {0}), ("val", {0}), ("unbiased", {1})):
        assert {part_of[os.path.basename(p)] for p in b[name].paths} == allowed
    # 32 valid rows, 8 per group -> balanced set of 32; val = floor(0.2 * 8) per group
    assert b["unbiased"].size == 32 and b["bias_conflicting"].size == 16
    assert b["val"].size == 4 and b["train"].size == 28


def test_unknown_attribute_is_a_user_error(real_dir):
    with pytest.raises(UserError, match="--target='Blonde'.*Blond_Hair"):
        load("celeba", data_dir=str(real_dir), target="Blonde", image_size=32)
    with pytest.raises(UserError, match="--private"):
        load("celeba", data_dir=str(real_dir), private="Gender", image_size=32)


def test_missing_attribute_file_names_it(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match="list_attr_celeba.txt not found"):
        load("celeba", data_dir=str(tmp_path))


def test_missing_partition_file_names_it(tmp_path):
    write_folder(tmp_path, np.zeros((4, 40)), [0] * 4, images=False)
    os.remove(tmp_path / "list_eval_partition.txt")
    with pytest.raises(DataError, match="list_eval_partition.txt not found"):
        load("celeba", data_dir=str(tmp_path))


def test_absent_image_names_the_file(tmp_path):
    write_folder(tmp_path, np.zeros((4, 40)), [0] * 4)
    os.remove(tmp_path / "img_align_celeba" / "000003.jpg")
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .*list_attr_celeba.txt.*000003"):
        load("celeba", data_dir=str(tmp_path))


def test_malformed_attribute_row_names_the_line(tmp_path):
    write_folder(tmp_path, np.zeros((4, 40)), [0] * 4, images=False)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(path.read_text() + "000005.jpg 1 -1\n")
    with pytest.raises(DataError, match="line 7"):
        celeba.read_attributes(str(path))


def test_unreadable_images_skipped_and_counted(real_dir, tmp_path):
    link_subset(real_dir, tmp_path, 300)
    bad = tmp_path / "img_align_celeba" / "000007.jpg"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[:300])
    b = load("celeba", data_dir=str(tmp_path), target="Smiling", image_size=16)
    assert b.metadata["images_skipped_unreadable"] == 1
    assert str(bad) not in {p for s in b.splits.values() for p in s.paths}


def test_empty_split_after_filtering_is_a_data_error(tmp_path):
    values = np.zeros((12, 40), np.uint8)   # nobody blond: the blond groups are empty
    write_folder(tmp_path, values, [0] * 12)
    with pytest.raises(DataError, match="empty"):
        load("celeba", data_dir=str(tmp_path), image_size=16)


def test_tfds_celeb_a_source_with_mocked_records(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets",
        reason="needs tensorflow-datasets: the [test] and [tfds] extras install it")
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        b = load("celeba", data_dir=str(tmp_path), source="tfds", image_size=16, seed=0)
        assert b.metadata["source"] == "tfds celeb_a"
        assert b.metadata["protocol"].startswith("official")
        assert b.metadata["images_listed"] == 128          # train + validation, 64 each
        u = b["unbiased"]
        assert {s for s, i, _ in u.rows if len(i)} == {"validation"}
        assert {s for s, i, _ in b["train"].rows if len(i)} == {"train"}
        x, y = next(iter(u.dataset(u.size, normalize=False)))
        assert x.shape == (u.size, 16, 16, 3) and x.dtype == tf.uint8
        np.testing.assert_array_equal(y["label"].numpy(), u.labels())
        np.testing.assert_array_equal(y["private"].numpy(), u.private())
        # labels line up with the records: recompute from the mocked stream
        ds = b["train"].builder.as_dataset(split="validation", shuffle_files=False)
        attrs = [(int(ex["attributes"]["Blond_Hair"]), 1 - int(ex["attributes"]["Male"]))
                 for ex in ds]
        idx = u.rows[1][1]
        assert [attrs[i] for i in idx] == list(zip(u.labels(), u.private()))
        n = sum(int(xb.shape[0]) for xb, _ in b["train"].dataset(16, shuffle=True, augment=True))
        assert n == b["train"].size
