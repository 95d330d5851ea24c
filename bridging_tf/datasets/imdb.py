"""IMDB faces (IMDB-WIKI crops) with the extreme-bias protocol (METHODS.md §8.3).

Two layouts are read from ``data_dir`` (or its ``imdb_crop/`` subfolder):

1. **CSV** (the reference's repackaging of Kim et al. 2019): ``EB1.csv``,
   ``EB2.csv``, ``test.csv`` with columns ``image`` (path relative to the
   CSV's folder), ``age`` (years), ``gender``. ``--split`` picks the training
   CSV, the other one is the eval split ``other_eb``; ``test.csv`` is split
   75/25 (seeded, stratified by label and private) into ``test`` (primary)
   and ``val`` — the reference's fold, unpacked as it does. The CSVs' gender
   coding is read off ``EB1.csv`` (its 0–29 rows are women); rows that do
   not fit their EB definition are dropped and counted.
2. **IMDB-WIKI**: ``imdb_crop/NN/*.jpg`` + ``imdb.mat`` (the ``imdb`` struct:
   dob, photo_taken, full_path, gender, face_location, face_score,
   second_face_score). Age = photo_taken − birth year (− 1 when born in July
   or later); kept rows: face_score > ``min_face_score``, no second face,
   gender known, 0 ≤ age ≤ 100. Faces are cropped to ``face_location``
   (``face_crop=True``). The usable ages (0–29, 40–100) are then split as
   UTKFace: a seeded stratified ``test_fraction`` test pool (75% ``test``,
   25% ``val``), the rest into EB1/EB2.

Gender is recoded to the package's 0 = male, 1 = female (IMDB-WIKI: 1 = male).
Age is binned into the 12 bins of the paper; ``--target age`` (private
gender) or ``--target gender`` (private age bin).

Example::

    bundle = load_imdb("~/data/imdb", split="EB2", target="age", image_size=64)
"""

from __future__ import annotations

import csv
import datetime
import os
from typing import Optional

import numpy as np

from bridging_tf.datasets import faces
from bridging_tf.datasets.base import DataBundle
from bridging_tf.datasets.checks import check_attack_split
from bridging_tf.errors import DataError
from bridging_tf.options import DataOptions, EbFacesData

CSV_NAMES = ("EB1.csv", "EB2.csv", "test.csv")
MAT_FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_location", "face_score",
              "second_face_score")
CSV_COLUMNS = ("image", "age", "gender")


# --------------------------------------------------------------------------- .mat layout

def matlab_age(dob, photo_taken) -> np.ndarray:
    """Age at the photo from a MATLAB serial birth date and the photo year.

    ``birth = datetime.fromordinal(max(int(dob) - 366, 1))``; age =
    ``photo_taken - birth.year`` minus 1 when born in July or later
    (yu4u's ``calc_age``). Non-finite inputs give NaN.
    """
    dob = np.asarray(dob, np.float64).reshape(-1)
    taken = np.asarray(photo_taken, np.float64).reshape(-1)
    out = np.full(len(dob), np.nan)
    for i, (d, t) in enumerate(zip(dob, taken)):
        if not (np.isfinite(d) and np.isfinite(t)):
            continue
        try:
            birth = datetime.date.fromordinal(max(int(d) - 366, 1))
        except (ValueError, OverflowError):
            continue
        out[i] = t - birth.year - (1 if birth.month >= 7 else 0)
    return out


def _cell_str(x) -> str:
    a = np.asarray(x).reshape(-1)
    return str(a[0]) if a.size else ""


def read_mat(path: str):
    """Read ``imdb.mat`` (or ``wiki.mat``) into plain numpy arrays.

    Returns a dict with ``full_path`` (object), ``age``, ``gender``,
    ``face_location`` ``[N, 4]``, ``face_score``, ``second_face_score``.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for a bad file
        raise DataError(f"{path} is not a readable MATLAB file ({type(err).__name__}: {err})")
    key = next((k for k in ("imdb", "wiki") if k in mat), None)
    if key is None:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has no 'imdb' (or 'wiki') struct; variables: {keys}")
    try:
        meta = mat[key][0, 0]
        names = meta.dtype.names or ()
    except (IndexError, AttributeError, TypeError):
        raise DataError(f"{path}: '{key}' is not a MATLAB struct") from None
    absent = [f for f in MAT_FIELDS if f not in names]
    if absent:
        raise DataError(f"{path}: the '{key}' struct lacks field(s) {', '.join(absent)}")
    col = {f: np.asarray(meta[f]).reshape(-1) for f in MAT_FIELDS}
    n = len(col["full_path"])
    if any(len(v) != n for v in col.values()):
        raise DataError(f"{path}: the '{key}' fields have different lengths "
                        f"{ {f: len(v) for f, v in col.items()} }")
    loc = np.full((n, 4), np.nan, np.float32)
    for i, cell in enumerate(col["face_location"]):
        a = np.asarray(cell, np.float64).reshape(-1)
        if a.size >= 4:
            loc[i] = a[:4]
    return {
        "key": key,
        "full_path": np.asarray([_cell_str(p) for p in col["full_path"]], dtype=object),
        "age": matlab_age(col["dob"].astype(np.float64), col["photo_taken"].astype(np.float64)),
        "gender": col["gender"].astype(np.float64),
        "face_location": loc,
        "face_score": col["face_score"].astype(np.float64),
        "second_face_score": col["second_face_score"].astype(np.float64),
    }


def _load_mat_layout(root, mat_path, *, min_face_score, face_crop, verify_images, **kw):
    m = read_mat(mat_path)
    n = len(m["full_path"])
    with np.errstate(invalid="ignore"):
        keep_face = m["face_score"] > float(min_face_score)
        keep_single = np.isnan(m["second_face_score"])
        keep_gender = np.isfinite(m["gender"])
        keep_age = np.isfinite(m["age"]) & (m["age"] >= 0) & (m["age"] <= faces.MAX_AGE)
    keep = keep_face & keep_single & keep_gender & keep_age
    filtered = {"face_score_too_low": int((~keep_face).sum()),
                "second_face": int((keep_face & ~keep_single).sum()),
                "gender_unknown": int((keep_face & keep_single & ~keep_gender).sum()),
                "age_out_of_range": int((keep_face & keep_single & keep_gender
                                         & ~keep_age).sum())}
    idx = np.flatnonzero(keep)
    # only rows that can enter a split need their image on disk
    young, old = faces.age_groups(m["age"][idx])
    idx = idx[young | old]
    if len(idx) == 0:
        raise DataError(f"{mat_path}: no row passes the filters (face_score > {min_face_score}, "
                        f"one face, known gender, age 0-29 or 40-100)")
    paths = np.asarray([os.path.join(root, p) for p in m["full_path"][idx]], dtype=object)
    ok = faces.check_images(paths, mat_path, verify=verify_images)
    idx, paths = idx[ok], paths[ok]
    female = (m["gender"][idx] == 0).astype(np.int32)  # IMDB-WIKI: 0 = female, 1 = male
    boxes = m["face_location"][idx] if face_crop else None
    splits, meta = faces.eb_protocol(paths, m["age"][idx], female, boxes=boxes, **kw)
    meta.update({"layout": f"imdb-wiki .mat ({m['key']} struct)", "mat_file": mat_path,
                 "rows": n, "filtered": filtered, "min_face_score": float(min_face_score),
                 "face_crop": bool(face_crop), "skipped_unreadable": int((~ok).sum())})
    return splits, meta


def write_mat(path: str, rows: dict, key: str = "imdb") -> None:
    """Write an ``imdb.mat``-layout file (for fixtures and small demos).

    ``rows`` maps the IMDB-WIKI field names (dob, photo_taken, full_path,
    gender, face_location, face_score, second_face_score; optionally name,
    celeb_names, celeb_id) to per-image sequences; the struct is written in
    the official field order with 1×N fields, ``full_path``/``name`` and
    ``face_location`` as cell arrays.
    """
    import scipy.io

    order = MAT_FIELDS[:4] + ("name",) + MAT_FIELDS[4:] + ("celeb_names", "celeb_id")
    n = len(rows["full_path"])
    defaults = {"name": [f"person {i}" for i in range(n)],
                "celeb_names": [f"person {i}" for i in range(n)],
                "celeb_id": np.arange(1, n + 1)}
    fields = [f for f in order if f in rows or (key == "imdb" and f in defaults)
              or (f == "name")]
    struct = np.empty((1, 1), dtype=[(f, "O") for f in fields])
    for f in fields:
        values = rows.get(f, defaults.get(f))
        if f in ("full_path", "name", "celeb_names"):
            cell = np.empty((1, len(values)), dtype=object)
            for i, v in enumerate(values):
                cell[0, i] = str(v)
            struct[0, 0][f] = cell
        elif f == "face_location":
            cell = np.empty((1, len(values)), dtype=object)
            for i, v in enumerate(values):
                cell[0, i] = np.asarray(v, np.float64).reshape(1, 4)
            struct[0, 0][f] = cell
        else:
            struct[0, 0][f] = np.asarray(values, np.float64).reshape(1, -1)
    scipy.io.savemat(path, {key: struct})


# --------------------------------------------------------------------------- CSV layout

def read_csv(path: str):
    """``(image, age, gender)`` columns of an EB/test CSV as numpy arrays."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        absent = [c for c in CSV_COLUMNS if c not in cols]
        if absent:
            raise DataError(f"{path}: missing column(s) {', '.join(absent)} "
                            f"(expected image, age, gender)")
        images, ages, genders = [], [], []
        for i, row in enumerate(reader):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            try:
                ages.append(float(row["age"]))
                genders.append(int(float(row["gender"])))
            except (TypeError, ValueError):
                raise DataError(f"{path} row {i + 2}: age/gender must be numbers, got "
                                f"{row['age']!r}/{row['gender']!r}") from None
            images.append(row["image"].strip())
    return (np.asarray(images, dtype=object), np.asarray(ages, np.float64),
            np.asarray(genders, np.int64))


def female_code(eb1_age, eb1_gender, path: str) -> int:
    """The gender value meaning 'female' in the CSVs, read off EB1 (women 0–29, men 40+)."""
    young, old = faces.age_groups(eb1_age)
    votes = [v for v in eb1_gender[young]] + [1 - v for v in eb1_gender[old]]
    votes = [v for v in votes if v in (0, 1)]
    if not votes or set(np.unique(eb1_gender)) - {0, 1}:
        raise DataError(f"{path}: cannot tell the gender coding (need 0/1 genders and rows "
                        f"aged 0-29 or 40+)")
    return int(np.bincount(votes, minlength=2).argmax())


def _load_csv_layout(root, *, split, target, image_size, seed, train_size, test_size,
                     attack_size, cache, verify_images, **unused):
    data = {n: read_csv(os.path.join(root, n)) for n in CSV_NAMES}
    fcode = female_code(data["EB1.csv"][1], data["EB1.csv"][2],
                        os.path.join(root, "EB1.csv"))
    other = "EB2" if split == "EB1" else "EB1"
    ss = np.random.SeedSequence(int(seed))
    r_val, r_sub = [np.random.default_rng(s) for s in ss.spawn(2)]
    arrays, dropped, unreadable = {}, {}, 0
    for name in CSV_NAMES:
        images, age, gender = data[name]
        female = (gender == fcode).astype(np.int32)
        bins = faces.age_bin(age)
        keep = bins >= 0
        if name != "test.csv":
            keep &= faces.eb_masks(age, female)[name[:3]]
        dropped[name] = int((~keep).sum())
        paths = np.asarray([os.path.join(root, p) for p in images[keep]], dtype=object)
        ok = faces.check_images(paths, os.path.join(root, name), verify=verify_images)
        unreadable += int((~ok).sum())
        arrays[name] = (paths[ok], *faces.task_labels(target, bins[keep][ok], female[keep][ok])[:2])
    paths_t, y_t, p_t = arrays["test.csv"]
    t_kept, t_held = faces.stratified_holdout(100 * y_t.astype(np.int64) + p_t, 0.25, r_val)
    # one flat table: train CSV, other CSV, test.csv
    tables = [arrays[f"{split}.csv"], arrays[f"{other}.csv"], arrays["test.csv"]]
    paths = np.concatenate([t[0] for t in tables])
    label = np.concatenate([t[1] for t in tables]).astype(np.int32)
    private = np.concatenate([t[2] for t in tables]).astype(np.int32)
    n1, n2 = len(tables[0][0]), len(tables[1][0])
    train = np.arange(n1)
    train = train[faces.subsample(len(train), train_size, r_sub, "train_size")]
    attack = train[faces.subsample(len(train), attack_size, r_sub, "attack_size")]
    other_idx = n1 + np.arange(n2)
    other_idx = other_idx[faces.subsample(n2, test_size, r_sub, "test_size")]
    test = n1 + n2 + t_kept
    test = test[faces.subsample(len(test), test_size, r_sub, "test_size")]
    splits = faces.build_splits(paths, label, private, None, image_size, cache, train=train,
                                val=n1 + n2 + t_held, attack=attack, test=test, other=other_idx)
    faces.require_nonempty(splits, f"IMDB {split} CSVs in {root}")
    check_attack_split(splits["attack_train"].private(), f"IMDB {split} CSVs in {root}")
    meta = {"layout": "csv (EB1.csv/EB2.csv/test.csv)", "csv_folder": root,
            "csv_female_code": fcode, "rows": {n: int(len(d[0])) for n, d in data.items()},
            "dropped_rows": dropped, "skipped_unreadable": unreadable}
    return splits, meta


def _find_layout(data_dir: str):
    for root in (data_dir, os.path.join(data_dir, "imdb_crop")):
        if all(os.path.isfile(os.path.join(root, n)) for n in CSV_NAMES):
            return "csv", root, None
    present = [os.path.join(r, n) for r in (data_dir, os.path.join(data_dir, "imdb_crop"))
               for n in CSV_NAMES if os.path.isfile(os.path.join(r, n))]
    if present:
        missing = [n for n in CSV_NAMES if not any(p.endswith(os.sep + n) for p in present)]
        raise DataError(f"found {present[0]} but not {', '.join(missing)} beside it "
                        f"(the CSV layout needs EB1.csv, EB2.csv and test.csv)")
    for mat in (os.path.join(data_dir, "imdb.mat"),
                os.path.join(data_dir, "imdb_crop", "imdb.mat")):
        if os.path.isfile(mat):
            crop = os.path.join(data_dir, "imdb_crop")
            root = crop if os.path.isdir(crop) else os.path.dirname(mat)
            return "mat", root, mat
    raise DataError(f"no IMDB data in {data_dir}: expected imdb_crop/ with imdb.mat, or "
                    f"EB1.csv/EB2.csv/test.csv (see data/imdb.md)")


def load_imdb(data_dir=None, split: str = EbFacesData.split,
              target: Optional[str] = EbFacesData.target, private: Optional[str] = None,
              image_size: int = faces.DEFAULT_IMAGE_SIZE, seed: int = DataOptions.seed,
              train_size: Optional[int] = None,
              test_size: Optional[int] = None, attack_size: Optional[int] = None,
              test_fraction: float = 0.2, min_face_score: float = 1.0,
              face_crop: bool = True, verify_images: bool = True, cache="auto",
              **unused) -> DataBundle:
    """Build the IMDB-faces bundle (see module doc).

    Args:
      data_dir: folder with ``imdb_crop/`` + ``imdb.mat`` or the EB CSVs.
      split: ``"EB1"`` or ``"EB2"``: the training set.
      target: ``"age"`` (private gender) or ``"gender"`` (private age bin).
      private: optional; must agree with ``target``.
      image_size: square input side (224 as the paper).
      seed: every sampling choice derives from it.
      train_size / test_size / attack_size: seeded caps.
      test_fraction: ``.mat`` layout: share of usable faces in the test pool.
      min_face_score: ``.mat`` layout: keep rows with a higher face score.
      face_crop: ``.mat`` layout: crop to ``face_location`` before resizing.
      verify_images: open each file once to skip incomplete JPEGs (counted).
      cache: see :class:`~bridging_tf.datasets.faces.FileSplit`.
    """
    data_dir, size, split, target, seed = faces.check_eb_options(
        data_dir, image_size, split, target, private, test_fraction, seed, attack_size)
    layout, root, mat = _find_layout(data_dir)
    common = dict(split=split, target=target, image_size=size, seed=seed,
                  train_size=train_size, test_size=test_size, attack_size=attack_size,
                  cache=cache)
    if layout == "csv":
        splits, meta = _load_csv_layout(root, verify_images=verify_images, **common)
        protocol = (f"reference CSVs: train = {split}.csv, other_eb = the other EB CSV, "
                    f"test.csv split 75% test / 25% val")
    else:
        splits, meta = _load_mat_layout(root, mat, min_face_score=min_face_score,
                                        face_crop=face_crop, verify_images=verify_images,
                                        test_fraction=test_fraction,
                                        what=f"IMDB {split} from {mat}", **common)
        protocol = (f"seeded stratified {test_fraction:g} test pool of ages 0-29/40-100 "
                    f"(75% test, 25% val); rest split into EB1/EB2; train = {split}")
    metadata = {"data_dir": os.path.abspath(data_dir), "seed": int(seed), "split": split,
                "target": target, "private": "gender" if target == "age" else "age",
                "image_size": size, "protocol": protocol, **meta}
    return faces.face_bundle("imdb", splits, target, size, metadata)
