"""UTKFace: file-name parser (real names from ../shared/data), EB1/EB2 splits, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.datasets import faces, load, utkface
from bridging_tf.errors import DataError, UserError
from tests.conftest import shared_path

YOUNG_BINS, OLD_BINS = {0, 1, 2}, set(range(5, 12))


@pytest.fixture(scope="module")
def real_dir():
    return shared_path("utkface", "crop_part1")


@pytest.fixture(scope="module")
def eb1(real_dir):
    return load("utkface", data_dir=str(real_dir.parent), split="EB1", image_size=32, seed=0)


def test_parse_name_reads_age_gender_race():
    assert utkface.parse_name("100_1_2_20170105174847679.jpg.chip.jpg") == (100, 1, 2)
    assert utkface.parse_name("/x/26_0_4_20170117.jpg") == (26, 0, 4)
    for bad in ("61_1_20170109142408075.jpg.chip.jpg", "a_1_2_3.jpg.chip.jpg",
                "26_2_0_20170117.jpg.chip.jpg", "26_0_0_20170117.png"):
        assert utkface.parse_name(bad) is None


def test_real_folder_parses_and_counts_malformed(real_dir):
    paths, age, gender, race, malformed = utkface.index_folder(str(real_dir))
    assert len(paths) + len(malformed) == 3000
    assert sorted(malformed) == ["61_1_20170109142408075.jpg.chip.jpg",
                                 "61_3_20170109150557335.jpg.chip.jpg"]
    assert set(np.unique(gender)) == {0, 1} and age.min() >= 1 and race.max() <= 4
    img = tf.io.decode_jpeg(tf.io.read_file(paths[0]))
    assert img.shape == (200, 200, 3)


def test_eb1_holds_young_women_and_old_men(eb1):
    t = eb1["train"]
    young, old = np.isin(t.labels(), list(YOUNG_BINS)), np.isin(t.labels(), list(OLD_BINS))
    assert np.all(young | old)
    assert np.all(t.private()[young] == 1) and np.all(t.private()[old] == 0)
    o = eb1["other_eb"]                      # EB2: young men, old women
    young = np.isin(o.labels(), list(YOUNG_BINS))
    assert np.all(o.private()[young] == 0) and np.all(o.private()[~young] == 1)


def test_test_set_has_both_age_groups_of_both_genders_and_no_30s(eb1):
    for name in ("test", "val"):
        s = eb1[name]
        assert not np.isin(s.labels(), [3, 4]).any()
        groups = {(lab in YOUNG_BINS, int(p)) for lab, p in zip(s.labels(), s.private())}
        assert groups == {(True, 0), (True, 1), (False, 0), (False, 1)}


def test_splits_are_disjoint_and_metadata_counts(eb1):
    names = ("train", "val", "test", "other_eb")
    sets = {n: set(eb1[n].paths) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not (sets[a] & sets[b]), (a, b)
    m = eb1.metadata
    assert m["skipped_malformed_names"] == 2 and m["files_parsed"] == 2998
    assert m["split_sizes"]["train"] == m["eb_pool_sizes"]["EB1"]
    assert eb1["attack_train"] is eb1["train"]
    assert (eb1.num_classes, eb1.num_private, eb1.primary_eval) == (12, 2, "test")
    assert eb1.mean == faces.IMAGENET_MEAN and eb1.std == faces.IMAGENET_STD


def test_eb2_swaps_train_and_other(real_dir, eb1):
    eb2 = load("utkface", data_dir=str(real_dir), split="EB2", image_size=32, seed=0,
               verify_images=False)
    assert set(eb2["train"].paths) == set(eb1["other_eb"].paths)
    assert np.array_equal(eb2["test"].paths, eb1["test"].paths)


def test_target_gender_makes_age_bin_private(real_dir):
    b = load("utkface", data_dir=str(real_dir), target="gender", private="age", image_size=32,
             train_size=50, test_size=20, verify_images=False)
    assert (b.num_classes, b.num_private) == (2, 12)
    assert set(np.unique(b["train"].labels())) <= {0, 1}
    assert b["train"].size == 50 and b["test"].size == 20 and b["other_eb"].size == 20
    x, y = next(iter(b["train"].dataset(4, augment=True)))
    assert x.shape == (4, 32, 32, 3) and int(tf.reduce_max(y["private"])) <= 11


def test_malformed_name_in_a_copy_is_skipped_not_fatal(real_dir, tmp_path):
    names = sorted(n for n in os.listdir(real_dir) if utkface.parse_name(n))
    names = names[::max(1, len(names) // 400)][:400]  # all ages: both genders in EB1
    for n in names:
        os.symlink(real_dir / n, tmp_path / n)
    os.symlink(real_dir / names[0], tmp_path / "30_1_.jpg.chip.jpg")
    b = load("utkface", data_dir=str(tmp_path), image_size=16, verify_images=False)
    assert b.metadata["skipped_malformed_names"] == 1
    assert b.metadata["malformed_examples"] == ["30_1_.jpg.chip.jpg"]


def test_only_one_eb_group_present_is_an_empty_split_error(tmp_path):
    jpeg = tf.io.encode_jpeg(tf.zeros((8, 8, 3), tf.uint8)).numpy()
    for i in range(10):                      # young women only: EB2 is empty
        (tmp_path / f"{20 + i % 5}_1_0_2017010{i}.jpg.chip.jpg").write_bytes(jpeg)
    with pytest.raises(DataError, match="'other_eb'.*empty"):
        load("utkface", data_dir=str(tmp_path), image_size=16)


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="no .jpg faces"):
        load("utkface", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="--split"):
        load("utkface", data_dir=str(tmp_path), split="EB3")
    (tmp_path / "nope.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="parsable"):
        load("utkface", data_dir=str(tmp_path))
