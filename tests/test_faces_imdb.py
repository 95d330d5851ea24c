"""IMDB faces on generated fixtures: imdb.mat in the IMDB-WIKI layout, the EB CSV layout."""

from __future__ import annotations

import csv
import datetime

import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from bridging_tf.datasets import imdb, load
from bridging_tf.errors import DataError, UserError

AGES = (15, 25, 45, 65)       # bins 0, 2, 5, 10


def datenum(d: datetime.date) -> float:
    """MATLAB serial date number of ``d``."""
    return float(d.toordinal() + 366)


def face_jpeg(path, box=(8, 10, 24, 30), size=(40, 32)):
    img = np.zeros(size + (3,), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_jpeg(tf.constant(img), quality=100).numpy())


def write_mat_fixture(root):
    """imdb_crop/NN/*.jpg + imdb_crop/imdb.mat with 32 usable rows and 7 filtered ones."""
    rows = {k: [] for k in ("dob", "photo_taken", "full_path", "gender", "face_location",
                            "face_score", "second_face_score")}

    def add(age, gender, score=3.0, second=np.nan, born_month=3):
        i = len(rows["dob"])
        birth = datetime.date(1990 - age, born_month, 5)
        rel = f"{i % 3:02d}/nm{i:07d}_rm1_{birth.isoformat()}_1990.jpg"
        rows["dob"].append(datenum(birth))
        rows["photo_taken"].append(1990 + (1 if born_month >= 7 else 0))
        rows["full_path"].append(rel)
        rows["gender"].append(gender)
        rows["face_location"].append([8, 10, 24, 30])
        rows["face_score"].append(score)
        rows["second_face_score"].append(second)
        face_jpeg(root / "imdb_crop" / rel)

    for gender in (0.0, 1.0):                 # IMDB-WIKI: 0 female, 1 male
        for age in AGES:
            for k in range(4):
                add(age, gender, born_month=(8 if k == 0 else 3))
        add(35, gender)                        # 30-39: in neither EB set nor the test set
    add(25, 0.0, score=0.5)
    add(25, 0.0, score=-np.inf)
    add(25, 1.0, second=2.0)
    add(25, np.nan)
    add(105, 1.0)
    imdb.write_mat(str(root / "imdb_crop" / "imdb.mat"), rows)
    return rows


@pytest.fixture()
def mat_dir(tmp_path):
    write_mat_fixture(tmp_path)
    return tmp_path


def write_csvs(root, male_code=1):
    """imdb_crop/{EB1,EB2,test}.csv with images relative to imdb_crop/."""
    crop = root / "imdb_crop"
    female = 1 - male_code
    young, old = (12, 22, 28), (41, 60, 80)
    tables = {
        "EB1.csv": [(a, female) for a in young] * 3 + [(a, male_code) for a in old] * 3
        + [(20, male_code)],                  # a young man: not EB1, dropped
        "EB2.csv": [(a, male_code) for a in young] * 3 + [(a, female) for a in old] * 3,
        "test.csv": [(a, g) for a in (18, 27, 50, 66) for g in (0, 1)] * 3 + [(120, 0)],
    }
    for name, rows in tables.items():
        with open(crop / name if crop.exists() else _mk(crop) / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "image", "age", "gender"])   # pandas-style index column
            for i, (age, g) in enumerate(rows):
                rel = f"{i % 2:02d}/{name[:-4]}_{i}.jpg"
                face_jpeg(crop / rel)
                w.writerow([i, rel, age, g])
    return tables


def _mk(path):
    path.mkdir(parents=True)
    return path


def test_matlab_age_matches_yu4u_rule():
    dob = [datenum(datetime.date(1981, 5, 5)), datenum(datetime.date(1981, 7, 1)), np.nan]
    np.testing.assert_array_equal(imdb.matlab_age(dob, [2009, 2009, 2009]), [28, 27, np.nan])


def test_read_mat_roundtrips_the_official_layout(mat_dir):
    raw = scipy.io.loadmat(str(mat_dir / "imdb_crop" / "imdb.mat"))["imdb"][0, 0]
    assert raw.dtype.names[:8] == ("dob", "photo_taken", "full_path", "gender", "name",
                                   "face_location", "face_score", "second_face_score")
    assert raw["full_path"][0][0][0].startswith("00/nm0000000_")
    m = imdb.read_mat(str(mat_dir / "imdb_crop" / "imdb.mat"))
    assert len(m["full_path"]) == 39 and m["face_location"].shape == (39, 4)
    assert m["age"][0] == 15 and m["age"][:16].tolist() == [15] * 4 + [25] * 4 + [45] * 4 + [65] * 4


def test_mat_layout_filters_and_eb_splits(mat_dir):
    b = load("imdb", data_dir=str(mat_dir), split="EB1", target="age", image_size=16, seed=0)
    m = b.metadata
    assert m["filtered"] == {"face_score_too_low": 2, "second_face": 1, "gender_unknown": 1,
                             "age_out_of_range": 1}
    assert m["ages_usable"] == 32 and m["eb_pool_sizes"] == {"EB1": 12, "EB2": 12}
    assert b["train"].size == 12 and b["other_eb"].size == 12
    assert b["test"].size + b["val"].size == 8
    t = b["train"]                            # EB1: young women (private 1), old men (0)
    young = t.labels() <= 2
    assert np.all(t.private()[young] == 1) and np.all(t.private()[~young] == 0)
    assert (b.num_classes, b.num_private) == (12, 2) and b.primary_eval == "test"


def test_mat_layout_crops_to_face_location(mat_dir):
    b = load("imdb", data_dir=str(mat_dir), image_size=16)
    x = next(iter(b["train"].dataset(4, normalize=False)))[0].numpy()
    assert x.min() > 200                      # the white face box only
    nocrop = load("imdb", data_dir=str(mat_dir), image_size=16, face_crop=False)
    x = next(iter(nocrop["train"].dataset(4, normalize=False)))[0].numpy()
    assert x.mean() < 200


def test_gender_target_and_eb2(mat_dir):
    b = load("imdb", data_dir=str(mat_dir), split="EB2", target="gender", image_size=16)
    assert (b.num_classes, b.num_private) == (2, 12)
    t = b["train"]                            # EB2: young men (label 0), old women (1)
    assert np.all(t.labels()[t.private() <= 2] == 0) and np.all(t.labels()[t.private() >= 5] == 1)


def test_mat_without_expected_fields(tmp_path):
    (tmp_path / "imdb_crop").mkdir()
    struct = np.empty((1, 1), dtype=[("dob", "O"), ("full_path", "O")])
    struct[0, 0]["dob"] = np.zeros((1, 2))
    struct[0, 0]["full_path"] = np.array([["a.jpg", "b.jpg"]], dtype=object)
    scipy.io.savemat(str(tmp_path / "imdb_crop" / "imdb.mat"), {"imdb": struct})
    with pytest.raises(DataError, match=r"imdb\.mat.*lacks field\(s\) photo_taken, gender"):
        load("imdb", data_dir=str(tmp_path))
    scipy.io.savemat(str(tmp_path / "imdb_crop" / "imdb.mat"), {"other": np.zeros(3)})
    with pytest.raises(DataError, match="no 'imdb'.*other"):
        load("imdb", data_dir=str(tmp_path))
    (tmp_path / "imdb_crop" / "imdb.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="imdb.mat"):
        load("imdb", data_dir=str(tmp_path))


def test_mat_referencing_an_absent_image(mat_dir):
    rows = imdb.read_mat(str(mat_dir / "imdb_crop" / "imdb.mat"))
    (mat_dir / "imdb_crop" / rows["full_path"][3]).unlink()
    with pytest.raises(DataError, match=rf"imdb\.mat.*{rows['full_path'][3]}"):
        load("imdb", data_dir=str(mat_dir))


@pytest.mark.parametrize("male_code", [1, 0])
def test_csv_layout_reads_coding_from_eb1(tmp_path, male_code):
    write_csvs(tmp_path, male_code)
    b = load("imdb", data_dir=str(tmp_path), split="EB1", image_size=16, seed=0)
    m = b.metadata
    assert m["layout"].startswith("csv") and m["csv_female_code"] == 1 - male_code
    assert m["dropped_rows"] == {"EB1.csv": 1, "EB2.csv": 0, "test.csv": 1}
    assert b["train"].size == 18 and b["other_eb"].size == 18
    assert b["test"].size + b["val"].size == 24 and b["val"].size == 8
    t = b["train"]
    assert np.all(t.private()[t.labels() <= 2] == 1) and np.all(t.private()[t.labels() >= 5] == 0)
    x, y = next(iter(b["test"].dataset(5)))
    assert x.shape == (5, 16, 16, 3)


def test_csv_layout_bad_input(tmp_path):
    write_csvs(tmp_path)
    crop = tmp_path / "imdb_crop"
    (crop / "01" / "EB2_1.jpg").unlink()
    with pytest.raises(DataError, match=r"EB2\.csv.*EB2_1\.jpg"):
        load("imdb", data_dir=str(tmp_path), split="EB1")
    (crop / "test.csv").write_text("image,age\na.jpg,3\n")
    with pytest.raises(DataError, match=r"test\.csv: missing column\(s\) gender"):
        load("imdb", data_dir=str(tmp_path))
    (crop / "test.csv").unlink()
    with pytest.raises(DataError, match="test.csv"):
        load("imdb", data_dir=str(tmp_path))


def test_empty_folder_and_bad_flags(tmp_path):
    with pytest.raises(DataError, match="no IMDB data"):
        load("imdb", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="--target"):
        load("imdb", data_dir=str(tmp_path), target="race")
