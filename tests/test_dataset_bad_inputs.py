"""Loader bad input: a cut CelebA attribute list, degenerate attacker sets, bad seeds.

Each is a one-line DataError / UserError naming the file or flag, never a silent
acceptance (the cut list used to drop half the faces without a word).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bridging_tf import datasets
from bridging_tf.datasets import celeba, checks, load, utkface
from bridging_tf.errors import DataError, UserError
from tests.conftest import shared_path


def _cut_attribute_list(tmp_path, keep_rows: int, first_line=None):
    lines = (shared_path("celeba") / "list_attr_celeba.txt").read_text().splitlines()
    path = tmp_path / "list_attr_celeba.txt"
    head = [lines[0] if first_line is None else first_line, lines[1]]
    path.write_text("\n".join(head + lines[2:2 + keep_rows]) + "\n")
    return path, int(lines[0])


def test_celeba_attribute_list_cut_cleanly_is_a_data_error(tmp_path):
    """The real 2,000-row list cut after 1,000 whole rows: the count line says 2000."""
    path, total = _cut_attribute_list(tmp_path, 1000)
    assert total == 2000
    with pytest.raises(DataError) as err:
        celeba.read_attributes(str(path))
    msg = str(err.value)
    assert str(path) in msg and "says 2000 image rows, found 1000" in msg
    assert "\n" not in msg


def test_celeba_attribute_list_without_a_count_line_is_a_data_error(tmp_path):
    path, _ = _cut_attribute_list(tmp_path, 10, first_line="5_o_Clock_Shadow Arched_Eyebrows")
    with pytest.raises(DataError, match=r"line 1: expected the number of image rows"):
        celeba.read_attributes(str(path))


def test_celeba_attribute_list_with_a_repeated_image_is_a_data_error(tmp_path):
    lines = (shared_path("celeba") / "list_attr_celeba.txt").read_text().splitlines()
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join(["11", lines[1]] + lines[2:12] + [lines[5]]) + "\n")
    with pytest.raises(DataError, match=r"image 000004.jpg is listed more than once"):
        celeba.read_attributes(str(path))


def test_celeba_whole_real_list_still_reads():
    names, files, values = celeba.read_attributes(
        str(shared_path("celeba") / "list_attr_celeba.txt"))
    assert len(files) == 2000 and values.shape == (2000, 40)


def test_attacker_set_with_one_private_class_is_a_data_error(tmp_path):
    """The first 400 UTKFace names (ages 1 and 10-19, 100+): EB1 then holds only young
    women, so the gender attacker would be fitted on one class."""
    real = shared_path("utkface", "crop_part1")
    names = sorted(n for n in os.listdir(real) if utkface.parse_name(n))[:400]
    for n in names:
        os.symlink(real / n, tmp_path / n)
    with pytest.raises(DataError, match=r"attack_train.*holds only private class 1.*at least "
                                        r"two private classes"):
        load("utkface", data_dir=str(tmp_path), image_size=16, verify_images=False)


@pytest.mark.parametrize("dataset", ["biased_mnist", "celeba", "utkface", "imdb"])
def test_loaders_refuse_a_tiny_attack_size(dataset, tmp_path):
    data_dir = str(tmp_path) if dataset != "biased_mnist" else None
    if dataset == "celeba":  # the folder layout must be found before the options matter
        data_dir = str(shared_path("celeba"))
    with pytest.raises(UserError, match=r"--attack_size=3 is too small: an attacker needs at "
                                        r"least 20"):
        load(dataset, data_dir=data_dir, attack_size=3, allow_download=False)


@pytest.mark.parametrize("seed, needle", [(-1, "must be an integer in"),
                                          (2 ** 32, "must be an integer in"),
                                          (1.5, "is not an integer"),
                                          ("x", "is not an integer")])
def test_bad_seeds_are_user_errors(seed, needle):
    with pytest.raises(UserError, match=needle):
        checks.check_seed(seed)
    with pytest.raises(UserError, match=needle):
        load("biased_mnist", seed=seed, allow_download=False)


def test_check_attack_split_counts_classes():
    checks.check_attack_split(np.array([0, 1, 1]), "x")
    with pytest.raises(DataError, match="holds no example"):
        checks.check_attack_split(np.array([], np.int32), "x")


def test_options_are_read_from_the_loader_signatures():
    assert "image_size" not in datasets.options("biased_mnist")
    assert {"rho", "attack_protocol", "val_size"} <= datasets.options("biased_mnist")
    assert {"image_size", "target", "private"} <= datasets.options("celeba")
    assert "split" not in datasets.options("celeba") and "split" in datasets.options("imdb")
    siim_opts = datasets.options("siim")  # loader + ingestion step
    assert {"image_size", "seed", "examples_per_shard"} <= siim_opts
    assert "train_size" not in siim_opts
