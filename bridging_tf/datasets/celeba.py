"""CelebA with the reference's debiasing protocol (METHODS.md §8.2).

Reads the official layout from ``data_dir``::

    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt      # row count, 40 attribute names, "NNNNNN.jpg v1 .. v40" (-1/1)
    list_eval_partition.txt   # "NNNNNN.jpg P" (0 train, 1 valid, 2 test)

(the Kaggle ``.csv`` versions of the two lists are read too), or, when that
folder has no attribute list (or ``source="tfds"``), a **prepared** tfds
``celeb_a`` under ``data_dir`` (a tfds data dir; tfds's default when None) —
its ``train`` / ``validation`` splits are partitions 0 / 1; nothing is ever
downloaded.

- Target: any of the 40 attributes (default ``Blond_Hair``); private
  (bias) attribute ``Male`` **inverted** as in the reference (private 1 =
  female), so "bias-aligned" means target == private (blond ↔ female).
  Another private attribute can be named; only ``Male`` is inverted.
- ``train``: the official train partition minus ``val``; ``val``: a
  balanced model-selection set, for each of the 4 (target, private) groups
  ``floor(val_fraction × smallest group)`` images (seeded; at least one
  when the smallest group has two);
  ``attack_train`` = ``train`` (the reference's attacker set).
- Eval sets come from the official **valid** partition (as the reference):
  ``unbiased`` (primary) — every (target, private) group subsampled to the
  smallest group's size; ``bias_conflicting`` — its two groups with
  target != private.
- When the folder holds no valid-partition rows (e.g. a 2,000-image subset,
  all partition 0) the eval pool is a seeded, stratified ``holdout_fraction``
  of every (target, private) group of what is there; this is recorded in
  ``bundle.metadata["protocol"]``.
- Images: resized to ``image_size`` squared (no crop, aspect ratio not
  kept, as the reference), ImageNet mean/std, horizontal flip for training.

Example::

    bundle = load_celeba("~/data/celeba", target="Blond_Hair", image_size=64)
    bundle["unbiased"].dataset(64)
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from bridging_tf.datasets import faces
from bridging_tf.datasets.base import DataBundle, Split
from bridging_tf.datasets.checks import check_attack_size, check_attack_split, check_seed
from bridging_tf.errors import DataError, UserError
from bridging_tf.options import CelebaData, DataOptions

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
INVERTED_PRIVATE = "Male"
PARTITIONS = {"train": 0, "valid": 1, "test": 2}
TFDS_SPLITS = {0: "train", 1: "validation"}   # the test partition (2) is never used
SOURCES = ("auto", "folder", "tfds")


def _find_list(data_dir: str, stem: str) -> str:
    for ext in (".txt", ".csv"):
        path = os.path.join(data_dir, stem + ext)
        if os.path.isfile(path):
            return path
    raise DataError(f"{os.path.join(data_dir, stem + '.txt')} not found (CelebA's "
                    f"{stem} file; see data/celeba.md)")


def read_attributes(path: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Parse ``list_attr_celeba.txt`` (or ``.csv``).

    Returns ``(names, files, values)``: attribute names, image file names and
    a ``uint8 [N, len(names)]`` array of 0/1 (``-1`` → 0, as the reference).
    """
    with open(path, newline="") as f:
        text = f.read()
    if path.endswith(".csv"):
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            raise DataError(f"{path} is empty")
        names, body, first = [c.strip() for c in rows[0][1:]], rows[1:], 2
    else:
        lines = text.splitlines()
        if len(lines) < 2:
            raise DataError(f"{path} is too short: expected a count line and an "
                            f"attribute-name line")
        names, body, first = lines[1].split(), [ln.split() for ln in lines[2:]], 3
        count = lines[0].strip()
        if not count.isdigit():
            raise DataError(f"{path} line 1: expected the number of image rows, got "
                            f"{count[:40]!r}")
    files, values = [], []
    for i, row in enumerate(body):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(names) + 1:
            raise DataError(f"{path} line {i + first}: expected a file name and {len(names)} "
                            f"values, got {len(row)} fields")
        try:
            vals = [int(v) for v in row[1:]]
        except ValueError:
            raise DataError(f"{path} line {i + first}: values must be -1/1") from None
        files.append(row[0].strip())
        values.append(vals)
    if not files:
        raise DataError(f"{path} holds no attribute rows")
    if not path.endswith(".csv") and len(files) != int(count):
        raise DataError(f"{path}: its first line says {int(count)} image rows, found "
                        f"{len(files)} (file cut short or edited?)")
    if len(set(files)) != len(files):
        dup = next(f for f, n in Counter(files).items() if n > 1)
        raise DataError(f"{path}: image {dup} is listed more than once")
    return names, np.asarray(files, dtype=object), (np.asarray(values) == 1).astype(np.uint8)


def read_partitions(path: str) -> Dict[str, int]:
    """Parse ``list_eval_partition.txt`` (or ``.csv``) into ``{file: 0|1|2}``."""
    out: Dict[str, int] = {}
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    csv_mode = path.endswith(".csv")
    for i, line in enumerate(lines):
        parts = [p.strip() for p in (line.split(",") if csv_mode else line.split())]
        if not parts or parts == [""]:
            continue
        if csv_mode and i == 0 and not parts[-1].isdigit():
            continue  # header
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path} line {i + 1}: expected 'NNNNNN.jpg P' with P in 0/1/2")
        out[parts[0]] = int(parts[1])
    if not out:
        raise DataError(f"{path} holds no partition rows")
    return out


def _image_dir(data_dir: str, first_file: str) -> str:
    img_dir = os.path.join(data_dir, "img_align_celeba")
    nested = os.path.join(img_dir, "img_align_celeba")  # the Kaggle archive nests it
    if not os.path.isfile(os.path.join(img_dir, first_file)) and os.path.isdir(nested):
        img_dir = nested
    if not os.path.isdir(img_dir):
        raise DataError(f"{img_dir} not found (CelebA's aligned images; see data/celeba.md)")
    return img_dir


def _balanced(groups: np.ndarray, idx: np.ndarray, per_group: int, rng) -> np.ndarray:
    """``per_group`` seeded picks from each of the 4 groups among ``idx``."""
    out = []
    for g in range(4):
        members = idx[groups[idx] == g]
        out.append(rng.choice(members, size=min(per_group, len(members)), replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


class TFDSSplit(Split):
    """Rows of the tfds ``celeb_a`` splits, streamed from its records (JPEG bytes kept encoded).

    ``rows`` is a list of ``(tfds_split, local_indices, split_length)``;
    examples come out in that order, indices ascending within each.
    """

    def __init__(self, name: str, builder, rows, labels, private, image_size: int,
                 cache="auto"):
        self.name = name
        self.builder = builder
        self.rows = [(s, np.sort(np.asarray(i, np.int64)), int(n)) for s, i, n in rows]
        self._labels = np.asarray(labels, np.int32)
        self._private = np.asarray(private, np.int32)
        self.size = int(len(self._labels))
        if self.size != sum(len(i) for _, i, _ in self.rows):
            raise ValueError(f"split {name!r}: rows/labels lengths differ")
        self.image_size = int(image_size)
        self.mean, self.std = faces.IMAGENET_MEAN, faces.IMAGENET_STD
        self.cache = cache
        self._memory = None

    def in_memory(self):
        return faces.materialize(self)

    def labels(self) -> np.ndarray:
        return self._labels

    def private(self) -> np.ndarray:
        return self._private

    def _images(self):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        streams = []
        for split, idx, n in self.rows:
            if not len(idx):
                continue
            mask = np.zeros(n, bool)
            mask[idx] = True
            keep = tf.constant(mask)
            ds = self.builder.as_dataset(split=split, shuffle_files=False,
                                         decoders={"image": tfds.decode.SkipDecoding()})
            ds = (ds.map(lambda ex: ex["image"]).enumerate()
                  .filter(lambda i, _img, keep=keep: keep[i]).map(lambda _i, img: img))
            streams.append(ds)
        out = streams[0]
        for ds in streams[1:]:
            out = out.concatenate(ds)
        return out

    def dataset(self, batch_size, *, shuffle=False, seed=0, augment=False,
                drop_remainder=False, repeat=False, normalize=True):
        import tensorflow as tf

        ys = tf.data.Dataset.from_tensor_slices({"label": self._labels,
                                                 "private": self._private})
        ds = tf.data.Dataset.zip((self._images(), ys))
        size = self.image_size
        return faces.batch_pipeline(
            ds, lambda img, y: (faces.decode_resize(img, None, size), y), self.size,
            cache=faces.cache_mode(self.cache, self.size, size), cheap_elements=False,
            batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment,
            drop_remainder=drop_remainder, repeat=repeat, normalize=normalize,
            mean=self.mean, std=self.std)


def _tfds_builder(data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("reading CelebA through tfds needs tensorflow-datasets "
                        "(pip install 'bridging_tf[tfds]')") from None
    return tfds.builder("celeb_a", data_dir=data_dir)


def tfds_prepared(data_dir=None) -> bool:
    """Whether tfds ``celeb_a`` is prepared under ``data_dir`` (tfds's default dir when None)."""
    try:
        import tensorflow as tf

        builder = _tfds_builder(data_dir)
        return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))
    except Exception:  # tfds missing or not prepared
        return False


def _index_tfds(data_dir, target, private, size, cache):
    """Rows of tfds ``celeb_a`` train (partition 0) and validation (1)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = _tfds_builder(data_dir)
    names = list(builder.info.features["attributes"].keys())
    _check_attributes(names, target, private, "tfds celeb_a")
    cols, parts, lengths = [], [], {}
    for part, split in TFDS_SPLITS.items():
        try:
            ds = builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={"image": tfds.decode.SkipDecoding()})
        except Exception as err:  # not prepared, missing files
            raise DataError(f"tfds celeb_a ({builder.data_dir}) could not be read: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                            ) from None
        ds = ds.map(lambda ex: tf.stack([tf.cast(ex["attributes"][target], tf.int32),
                                         tf.cast(ex["attributes"][private], tf.int32)]))
        vals = [b.numpy() for b in ds.batch(8192)]
        vals = np.concatenate(vals) if vals else np.zeros((0, 2), np.int32)
        lengths[split] = len(vals)
        cols.append(vals)
        parts.append(np.full(len(vals), part, np.int64))
    values = np.concatenate(cols)
    part = np.concatenate(parts)
    offsets = {0: 0, 1: lengths[TFDS_SPLITS[0]]}

    def make_split(name, idx, y, p):
        idx = np.sort(idx)
        rows = [(TFDS_SPLITS[k], idx[part[idx] == k] - offsets[k], lengths[TFDS_SPLITS[k]])
                for k in (0, 1)]
        return TFDSSplit(name, builder, rows, y[idx], p[idx], size, cache)

    info = {"source": "tfds celeb_a", "tfds_dir": str(builder.data_dir),
            "images_listed": int(len(values)), "images_skipped_unreadable": 0}
    return values[:, 0], values[:, 1], part, make_split, info


def _check_attributes(names, target, private, where):
    for flag, attr in (("target", target), ("private", private)):
        if attr not in names:
            raise UserError(f"--{flag}={attr!r} is not a CelebA attribute in {where}; "
                            f"choose one of {', '.join(names)}")
    if target == private:
        raise UserError(f"--target and --private are both {target!r}; choose two attributes")


def _index_folder(data_dir, target, private, size, cache, verify_images):
    """Rows of the official-layout folder (all partitions but the unused test one)."""
    attr_path = _find_list(data_dir, "list_attr_celeba")
    part_path = _find_list(data_dir, "list_eval_partition")
    names, files, values = read_attributes(attr_path)
    _check_attributes(names, target, private, attr_path)
    partitions = read_partitions(part_path)
    missing = [f for f in files if f not in partitions]
    if missing:
        raise DataError(f"{len(missing)} image(s) of {attr_path} have no row in {part_path}, "
                        f"e.g. {missing[0]}")
    part = np.asarray([partitions[f] for f in files], np.int64)
    img_dir = _image_dir(data_dir, files[0])
    paths = np.asarray([os.path.join(img_dir, f) for f in files], dtype=object)
    ok = faces.check_images(paths, attr_path, verify=verify_images)
    paths, values, part = paths[ok], values[ok], part[ok]
    if not np.any(part == PARTITIONS["train"]):
        raise DataError(f"{part_path}: none of the images in {img_dir} is in the train "
                        f"partition (0)")

    def make_split(name, idx, y, p):
        return faces.FileSplit(name, paths[idx], y[idx], p[idx], size, cache=cache)

    info = {"source": "folder", "images_listed": int(len(files)),
            "images_skipped_unreadable": int((~ok).sum())}
    return (values[:, names.index(target)], values[:, names.index(private)], part, make_split,
            info)


def load_celeba(data_dir=None, target: Optional[str] = CelebaData.target,
                private: Optional[str] = CelebaData.private,
                image_size: int = faces.DEFAULT_IMAGE_SIZE, seed: int = DataOptions.seed,
                train_size: Optional[int] = None,
                test_size: Optional[int] = None, attack_size: Optional[int] = None,
                val_fraction: float = 0.2, holdout_fraction: float = 0.5,
                source: str = "auto", verify_images: bool = True, cache="auto",
                **unused) -> DataBundle:
    """Build the CelebA bundle (see module doc).

    Args:
      data_dir: folder in the official layout, or a tfds data dir holding a
        prepared ``celeb_a``.
      target: attribute to predict (any of the 40).
      private: private/bias attribute (``Male``, inverted: 1 = female).
      image_size: square input side (224 as the paper; smaller for CPU).
      seed: every sampling choice derives from it.
      train_size / attack_size: seeded caps on ``train`` / ``attack_train``.
      test_size: cap on the ``unbiased`` set (``test_size // 4`` per group).
      val_fraction: ``val`` per group = this × the smallest train group.
      holdout_fraction: eval pool share of each group when the folder has no
        valid-partition rows.
      source: ``"auto"`` (the folder layout when its attribute list is there,
        else a prepared tfds ``celeb_a``), ``"folder"`` or ``"tfds"``.
      verify_images: open each file once to skip incomplete JPEGs (counted).
      cache: see :class:`~bridging_tf.datasets.faces.FileSplit`.
    """
    size = faces.check_image_size(image_size)
    seed = check_seed(seed)
    check_attack_size(attack_size)
    target = target or "Blond_Hair"
    private = private or "Male"
    if not 0.0 < float(holdout_fraction) < 1.0:
        raise UserError(f"holdout_fraction={holdout_fraction} must be in (0, 1)")
    if not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction={val_fraction} must be in (0, 1)")
    if source not in SOURCES:
        raise UserError(f"source={source!r}: choose one of {', '.join(SOURCES)}")
    if source == "auto":
        has_lists = data_dir not in (None, "") and any(
            os.path.isfile(os.path.join(os.path.expanduser(str(data_dir)), "list_attr_celeba" + e))
            for e in (".txt", ".csv"))
        source = "tfds" if not has_lists and tfds_prepared(data_dir or None) else "folder"
    if source == "tfds":
        y, p, part, make_split, info = _index_tfds(data_dir or None, target, private, size, cache)
        where = info["tfds_dir"]
    else:
        data_dir = faces.require_dir(data_dir)
        y, p, part, make_split, info = _index_folder(data_dir, target, private, size, cache,
                                                     verify_images)
        where = data_dir
    y = np.asarray(y, np.int32)
    p = np.asarray(p, np.int32)
    if private == INVERTED_PRIVATE:
        p = 1 - p
    groups = 2 * y + p  # (target, private) group id 0..3

    ss = np.random.SeedSequence(int(seed))
    r_hold, r_val, r_test, r_sub = [np.random.default_rng(s) for s in ss.spawn(4)]
    train_pool = np.flatnonzero(part == PARTITIONS["train"])
    eval_pool = np.flatnonzero(part == PARTITIONS["valid"])
    if len(train_pool) == 0:
        raise DataError(f"{where}: no image in the train partition (0)")
    if len(eval_pool) == 0:
        kept, held = faces.stratified_holdout(groups[train_pool], float(holdout_fraction), r_hold)
        train_pool, eval_pool = train_pool[kept], train_pool[held]
        protocol = (f"partial folder (no valid-partition rows): eval pool = seeded stratified "
                    f"{holdout_fraction:g} of each (target, private) group of partition 0; "
                    f"train = the rest")
    else:
        protocol = "official partitions: train = partition 0, eval pool = partition 1 (valid)"

    def group_sizes(idx):
        return [int((groups[idx] == g).sum()) for g in range(4)]

    smallest = min(group_sizes(train_pool))
    # the reference's floor(0.2 x smallest group); at least one per group when possible
    n_val = max(int(float(val_fraction) * smallest), 1 if smallest >= 2 else 0)
    val_idx = _balanced(groups, train_pool, n_val, r_val)
    train_idx = np.setdiff1d(train_pool, val_idx)
    per_group = min(group_sizes(eval_pool))
    if test_size is not None:
        if int(test_size) <= 0:
            raise UserError(f"--test_size={test_size} must be a positive number of images")
        per_group = min(per_group, int(test_size) // 4)
    unbiased_idx = _balanced(groups, eval_pool, per_group, r_test)
    conflicting_idx = unbiased_idx[y[unbiased_idx] != p[unbiased_idx]]
    train_idx = train_idx[faces.subsample(len(train_idx), train_size, r_sub, "train_size")]
    attack_idx = train_idx[faces.subsample(len(train_idx), attack_size, r_sub, "attack_size")]

    def split(name, idx):
        return make_split(name, idx, y, p)

    splits = {"train": split("train", train_idx), "val": split("val", val_idx)}
    splits["attack_train"] = (splits["train"] if len(attack_idx) == len(train_idx)
                              else split("attack_train", attack_idx))
    splits["unbiased"] = split("unbiased", unbiased_idx)
    splits["bias_conflicting"] = split("bias_conflicting", conflicting_idx)
    faces.require_nonempty(splits, f"CelebA ({target} / {private}) in {where}")
    check_attack_split(p[attack_idx], f"CelebA ({target} / {private}) in {where}")

    inv = "(inverted)" if private == INVERTED_PRIVATE else ""
    group_names = [f"{target}={g // 2},{private}{inv}={g % 2}" for g in range(4)]
    metadata = {
        "data_dir": os.path.abspath(where), **info, "seed": int(seed),
        "target": target, "private": private,
        "private_inverted": private == INVERTED_PRIVATE,
        "private_coding": ("1 = female (Male inverted, as the reference)"
                           if private == INVERTED_PRIVATE else f"1 = {private}"),
        "protocol": protocol, "image_size": size,
        "split_sizes": faces.counts(splits),
        "group_names": group_names,
        "group_sizes": {"train": group_sizes(train_idx), "val": group_sizes(val_idx),
                        "eval_pool": group_sizes(eval_pool),
                        "unbiased": group_sizes(unbiased_idx)},
        "model_selection": "val (balanced subset of the train partition, as the reference)",
    }
    return DataBundle(
        name="celeba", splits=splits, eval_splits=("unbiased", "bias_conflicting"),
        primary_eval="unbiased", num_classes=2, num_private=2, image_shape=(size, size, 3),
        mean=faces.IMAGENET_MEAN, std=faces.IMAGENET_STD,
        private_names=(("male", "female") if private == INVERTED_PRIVATE
                       else (f"not {private}", private)),
        class_names=(f"not {target}", target), metadata=metadata)
