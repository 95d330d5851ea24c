"""Shared code of the face datasets (CelebA, IMDB faces, UTKFace).

- :class:`FileSplit`: a split backed by JPEG files. ``tf.io.decode_jpeg`` →
  optional face crop (a per-image ``[x1, y1, x2, y2]`` box in pixels, clipped
  to the image) → bilinear, antialiased resize to ``image_size`` (the
  reference's ``Resize((224, 224))``: aspect ratio not kept) → uint8. The
  uint8 resized images are cached in memory when they fit
  (:data:`CACHE_BYTES`), so decoding happens once per pipeline; batches are
  then flipped (``augment=True``), normalised with the ImageNet mean/std and
  prefetched.
- File checks done once, at index time: a referenced file that is absent is a
  :class:`~bridging_tf.errors.DataError`; a file that is present but not a
  complete JPEG (no SOI/EOI marker, empty) is skipped and counted
  (:func:`check_images`), so labels always line up with the images streamed.
- The IMDB/UTKFace age protocol (METHODS.md §8.3): 12 age bins with upper
  bounds :data:`AGE_BIN_UPPER` (ages above 100 excluded), the extreme-bias
  training sets EB1 (women 0–29 + men 40+) and EB2 (men 0–29 + women 40+),
  and the two tasks (target age bin / private gender, or the reverse).

Gender is coded the same way in every face bundle: 0 = male, 1 = female
(CelebA's ``Male`` attribute inverted, as the reference does).

Example::

    split = FileSplit("train", paths, labels, private, image_size=64)
    images, y = next(iter(split.dataset(32, shuffle=True, augment=True)))
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from bridging_tf.datasets.base import (
    AUTOTUNE,
    ArraySplit,
    DataBundle,
    Split,
    aligned_empty,
    flip_left_right,
    normalize_images,
)
from bridging_tf.datasets.checks import check_attack_size, check_attack_split, check_seed
from bridging_tf.errors import DataError, UserError
from bridging_tf.options import EbFacesData
from bridging_tf.sampling import stratified_holdout

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
# In-memory cache budget for one pipeline's resized uint8 images.
CACHE_BYTES = 2 * 1024 ** 3
# Shuffle buffer (decoded images) when nothing is cached and elements are not file names.
SHUFFLE_BUFFER = 4096

AGE_BIN_UPPER = (19, 24, 29, 34, 39, 44, 49, 54, 59, 64, 69, 100)
AGE_BIN_NAMES = ("0-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54",
                 "55-59", "60-64", "65-69", "70-100")
GENDER_NAMES = ("male", "female")
EB_SPLITS = ("EB1", "EB2")
FACE_TARGETS = ("age", "gender")
YOUNG_MAX = 29
OLD_MIN = 40
MAX_AGE = AGE_BIN_UPPER[-1]


# --------------------------------------------------------------------------- labels

def age_bin(age) -> np.ndarray:
    """Age (years) -> bin index 0..11 (first bin whose upper bound is >= age).

    Ages below 0 or above 100 (and NaN) give -1: the reference returns None
    there; callers drop those rows.

    >>> age_bin([19, 20, 29, 30, 100, 101]).tolist()
    [0, 1, 2, 3, 11, -1]
    """
    a = np.asarray(age, dtype=np.float64)
    bins = np.searchsorted(np.asarray(AGE_BIN_UPPER, np.float64), a, side="left")
    bad = ~np.isfinite(a) | (a < 0) | (a > MAX_AGE)
    return np.where(bad, -1, bins).astype(np.int64)


def age_groups(age) -> Tuple[np.ndarray, np.ndarray]:
    """``(young, old)`` masks: 0–29 and 40–100 (ages 30–39 are in neither)."""
    a = np.asarray(age, dtype=np.float64)
    young = (a >= 0) & (a <= YOUNG_MAX)
    old = (a >= OLD_MIN) & (a <= MAX_AGE)
    return young, old


def eb_masks(age, female) -> Dict[str, np.ndarray]:
    """EB membership: ``{"EB1": women 0–29 | men 40+, "EB2": men 0–29 | women 40+}``."""
    young, old = age_groups(age)
    f = np.asarray(female).astype(bool)
    return {"EB1": (f & young) | (~f & old), "EB2": (~f & young) | (f & old)}


def check_eb_split(split: str) -> str:
    s = str(split).upper()
    if s not in EB_SPLITS:
        raise UserError(f"--split={split!r}: choose EB1 (women 0-29 + men 40+) or "
                        f"EB2 (men 0-29 + women 40+)")
    return s


def face_task(target: Optional[str], private: Optional[str]) -> str:
    """Validate ``--target``/``--private`` for IMDB/UTKFace; returns the target.

    ``target="age"`` → private gender; ``target="gender"`` → private age bin.
    """
    t = (target or "age").lower()
    if t not in FACE_TARGETS:
        raise UserError(f"--target={target!r}: choose 'age' (private gender) or "
                        f"'gender' (private age bin)")
    other = "gender" if t == "age" else "age"
    if private not in (None, "") and str(private).lower() != other:
        raise UserError(f"--private={private!r} does not fit --target={t}: the private "
                        f"attribute is {other!r}")
    return t


def task_labels(target: str, bins: np.ndarray, female: np.ndarray):
    """``(label, private, num_classes, num_private, class_names, private_names)``."""
    bins = np.asarray(bins, np.int32)
    female = np.asarray(female, np.int32)
    if target == "age":
        return bins, female, 12, 2, AGE_BIN_NAMES, GENDER_NAMES
    return female, bins, 2, 12, GENDER_NAMES, AGE_BIN_NAMES


# --------------------------------------------------------------------------- files

def _complete_jpeg(path: str) -> bool:
    """Cheap check: JPEG SOI marker at the start and EOI marker near the end."""
    try:
        with open(path, "rb") as f:
            head = f.read(3)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError:
        return False
    return size > 4 and head == b"\xff\xd8\xff" and b"\xff\xd9" in tail


def check_images(paths: Sequence[str], source: str, verify: bool = True) -> np.ndarray:
    """Mask of usable images; raises :class:`DataError` when any file is absent.

    ``source`` names the file that references the images (used in the error).
    With ``verify`` every file is opened and checked for complete JPEG
    markers; the others are logged and left out by the caller.
    """
    paths = list(paths)
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise DataError(f"{len(absent)} image(s) listed in {source} are absent, e.g. "
                        f"{absent[0]}")
    if not verify:
        return np.ones(len(paths), bool)
    ok = np.array([_complete_jpeg(p) for p in paths], bool)
    if not ok.all():
        bad = [p for p, o in zip(paths, ok) if not o]
        log.warning("skipping %d unreadable image(s), e.g. %s", len(bad), bad[0])
    return ok


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path}")
    return path


def require_dir(data_dir, flag: str = "--data_dir") -> str:
    if data_dir in (None, ""):
        raise UserError(f"{flag} is required for this dataset (the folder holding it)")
    data_dir = os.path.expanduser(str(data_dir))
    if not os.path.isdir(data_dir):
        raise DataError(f"{flag}={data_dir} is not a folder")
    return data_dir


# --------------------------------------------------------------------------- sampling

def subsample(n: int, size: Optional[int], rng: np.random.Generator, flag: str) -> np.ndarray:
    """Sorted seeded choice of ``size`` of ``range(n)`` (all when ``size`` is None or >= n)."""
    if size is None:
        return np.arange(n)
    if int(size) <= 0:
        raise UserError(f"--{flag}={size} must be a positive number of images")
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(size), replace=False))


def check_eb_options(data_dir, image_size, split, target, private, test_fraction, seed,
                     attack_size):
    """Validate the options shared by the EB1/EB2 loaders (IMDB, UTKFace).

    Returns ``(data_dir, image_size, split, target, seed)``; bad values are one-line errors.
    """
    data_dir = require_dir(data_dir)
    size = check_image_size(image_size)
    split = check_eb_split(split or EbFacesData.split)
    target = face_task(target, private)
    if not 0.0 < float(test_fraction) < 1.0:
        raise UserError(f"test_fraction={test_fraction} must be in (0, 1)")
    seed = check_seed(seed)
    check_attack_size(attack_size)
    return data_dir, size, split, target, seed


def check_image_size(image_size) -> int:
    s = DEFAULT_IMAGE_SIZE if image_size in (None, 0) else int(image_size)
    if s < 8:
        raise UserError(f"--image_size={image_size} is too small (need >= 8 pixels)")
    return s


# --------------------------------------------------------------------------- split

class FileSplit(Split):
    """A split of JPEG files with integer labels, decoded in tf.data.

    Args:
      name: split name.
      paths: image files (absolute or relative to the working directory).
      labels, private: int arrays, one per file.
      image_size: square side the images are resized to.
      boxes: optional float ``[N, 4]`` face boxes ``[x1, y1, x2, y2]`` in
        pixels of the decoded image; rows with NaN (or an empty box after
        clipping) use the whole image.
      mean, std: normalisation in [0, 1] units (ImageNet by default).
      cache: ``"auto"`` (in memory when the resized uint8 images take at most
        :data:`CACHE_BYTES`), ``"memory"``, ``None``/``"none"``, or a file
        prefix for ``tf.data``'s on-disk cache.

    Example::

        split = FileSplit("val", ["a.jpg", "b.jpg"], [0, 1], [1, 0], image_size=64)
        x, y = next(iter(split.dataset(2)))   # x: float32 [2, 64, 64, 3]
    """

    def __init__(self, name: str, paths: Sequence[str], labels, private,
                 image_size: int = DEFAULT_IMAGE_SIZE, boxes=None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, cache="auto"):
        self.name = name
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self._labels = np.asarray(labels, np.int32).reshape(-1)
        self._private = np.asarray(private, np.int32).reshape(-1)
        if not (len(self.paths) == len(self._labels) == len(self._private)):
            raise ValueError(f"split {name!r}: paths/labels/private lengths differ")
        self.boxes = None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        if self.boxes is not None and len(self.boxes) != len(self.paths):
            raise ValueError(f"split {name!r}: boxes/paths lengths differ")
        self.size = int(len(self.paths))
        self.image_size = int(image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.cache = cache
        self._memory = None
        self._elements = None

    def labels(self) -> np.ndarray:
        return self._labels

    def private(self) -> np.ndarray:
        return self._private

    def in_memory(self):
        return materialize(self)

    def subset(self, indices, name: Optional[str] = None) -> "FileSplit":
        idx = np.asarray(indices, np.int64)
        return FileSplit(name or self.name, self.paths[idx], self._labels[idx],
                         self._private[idx], self.image_size,
                         None if self.boxes is None else self.boxes[idx],
                         self.mean, self.std, self.cache)

    def _cache_mode(self):
        return cache_mode(self.cache, self.size, self.image_size)

    def load_image(self, path, box):
        """One file -> uint8 ``[S, S, 3]`` (decode, optional crop, resize)."""
        return decode_resize(tf.io.read_file(path), box, self.image_size,
                             crop=self.boxes is not None)

    def dataset(self, batch_size, *, shuffle=False, seed=0, augment=False,
                drop_remainder=False, repeat=False, normalize=True):
        if self._elements is None:  # one set of tensors shared by every pipeline of the split
            boxes = (self.boxes if self.boxes is not None
                     else np.zeros((self.size, 4), np.float32))
            self._elements = ((tf.constant(self.paths.astype(str)), tf.constant(boxes)),
                              {"label": tf.constant(self._labels),
                               "private": tf.constant(self._private)})
        ds = tf.data.Dataset.from_tensor_slices(self._elements)
        return batch_pipeline(
            ds, lambda xb, y: (self.load_image(xb[0], xb[1]), y), self.size,
            cache=self._cache_mode(), cheap_elements=True, batch_size=batch_size,
            shuffle=shuffle, seed=seed, augment=augment, drop_remainder=drop_remainder,
            repeat=repeat, normalize=normalize, mean=self.mean, std=self.std)


def materialize(split) -> Optional[ArraySplit]:
    """A face split whose images fit the in-memory cache, decoded once into one uint8 array.

    Returns ``None`` when the split streams (no cache, or an on-disk cache prefix).
    The decoded split is kept on ``split`` (``split._memory``) and reused by every
    training epoch: one copy of the images however many epochs run, flipped with
    seeded stateless flips (:func:`~bridging_tf.datasets.base.flip_left_right`).
    """
    if split._memory is not None:
        return split._memory
    if cache_mode(split.cache, split.size, split.image_size) != "":
        return None
    import copy

    streaming = copy.copy(split)
    streaming.cache = None  # decode straight into the array, no second copy in a cache
    streaming._memory = None
    s = split.image_size
    images = aligned_empty((split.size, s, s, 3), np.uint8)
    i = 0
    for x, _y in streaming.dataset(256, normalize=False):
        x = x.numpy()
        images[i:i + len(x)] = x
        i += len(x)
    if i != split.size:
        raise DataError(f"split {split.name!r}: decoded {i} images, expected {split.size}")
    split._memory = ArraySplit(split.name, images, split.labels(), split.private(),
                               split.mean, split.std, augment_fn=flip_left_right)
    return split._memory


def cache_mode(cache, size: int, image_size: int):
    """``tf.data`` cache argument for ``cache`` (see :class:`FileSplit`), or None."""
    if cache in (None, "none", False):
        return None
    if cache == "auto":
        return "" if size * image_size * image_size * 3 <= CACHE_BYTES else None
    if cache == "memory":
        return ""
    return str(cache)


def decode_resize(data, box, size: int, crop: bool = False):
    """Encoded JPEG bytes -> uint8 ``[size, size, 3]``; ``crop`` cuts ``box`` first.

    ``box`` is ``[x1, y1, x2, y2]`` in pixels, clipped to the image; a box with
    NaN or under 2 pixels wide/high after clipping means the whole image.
    """
    img = tf.io.decode_jpeg(data, channels=3)
    if crop:
        shape = tf.shape(img)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        x1 = tf.clip_by_value(tf.floor(box[0]), 0.0, w)
        y1 = tf.clip_by_value(tf.floor(box[1]), 0.0, h)
        x2 = tf.clip_by_value(tf.math.ceil(box[2]), 0.0, w)
        y2 = tf.clip_by_value(tf.math.ceil(box[3]), 0.0, h)
        valid = tf.logical_and(tf.reduce_all(tf.math.is_finite(box)),
                               tf.logical_and(x2 - x1 >= 2.0, y2 - y1 >= 2.0))
        x1, y1, x2, y2 = (tf.cast(tf.where(valid, v, d), tf.int32) for v, d in
                          ((x1, 0.0), (y1, 0.0), (x2, w), (y2, h)))
        img = img[y1:y2, x1:x2, :]
    img = tf.image.resize(img, [size, size], method="bilinear", antialias=True)
    img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
    img.set_shape([size, size, 3])
    return img


def batch_pipeline(ds, load, n: int, *, cache, cheap_elements: bool, batch_size: int,
                   shuffle: bool, seed: int, augment: bool, drop_remainder: bool, repeat: bool,
                   normalize: bool, mean, std) -> tf.data.Dataset:
    """Elements -> batched ``(image, y)``: load, cache, shuffle, flip, normalise, prefetch.

    ``load`` maps one element to ``(uint8 image, y)``. With ``cache`` (a
    ``tf.data`` cache argument) images are decoded once and the decoded
    images are shuffled each epoch; without it, ``cheap_elements`` (file
    names) are shuffled before decoding, other elements after it with a
    bounded buffer (:data:`SHUFFLE_BUFFER`).
    """
    if cache is None:
        if shuffle and cheap_elements:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        if shuffle and not cheap_elements:
            ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    else:
        # Decode once, keep uint8 resized images, shuffle those every epoch.
        ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).cache(cache)
        if shuffle:
            ds = ds.shuffle(max(1, min(n, 20000)), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def convert(x, y):
        if augment:
            x = tf.image.random_flip_left_right(x, seed=seed)
        if normalize:
            x = normalize_images(x, mean, std)
        return x, y

    ds = ds.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def counts(splits: Dict[str, Split]) -> Dict[str, int]:
    return {k: int(v.size) for k, v in splits.items()}


def require_nonempty(splits: Dict[str, Split], what: str) -> None:
    for k, v in splits.items():
        if v.size == 0:
            raise DataError(f"split {k!r} of {what} is empty after filtering; the folder holds "
                            f"too few matching images")


# --------------------------------------------------------------------------- EB protocol

def eb_protocol(paths, age, female, *, split, target, image_size, seed, test_fraction,
                train_size, test_size, attack_size, cache, boxes=None, what=""):
    """Shared by UTKFace and IMDB (``.mat`` layout): EB splits + test pool from one pool.

    Returns ``(splits, metadata)``.
    """
    bins = age_bin(age)
    young, old = age_groups(age)
    usable = (young | old) & (bins >= 0)
    idx = np.flatnonzero(usable)
    ss = np.random.SeedSequence(int(seed))
    r_test, r_val, r_sub = [np.random.default_rng(s) for s in ss.spawn(3)]
    strata = 2 * young[idx].astype(np.int64) + np.asarray(female)[idx].astype(np.int64)
    kept, held = stratified_holdout(strata, float(test_fraction), r_test)
    pool_idx, test_pool = idx[kept], idx[held]
    label, private, *_ = task_labels(target, bins, female)
    t_kept, t_held = stratified_holdout(
        100 * label[test_pool].astype(np.int64) + private[test_pool], 0.25, r_val)
    test_idx, val_idx = test_pool[t_kept], test_pool[t_held]
    eb = eb_masks(np.asarray(age)[pool_idx], np.asarray(female)[pool_idx])
    other = "EB2" if split == "EB1" else "EB1"
    train_idx, other_idx = pool_idx[eb[split]], pool_idx[eb[other]]
    train_idx = train_idx[subsample(len(train_idx), train_size, r_sub, "train_size")]
    attack_idx = train_idx[subsample(len(train_idx), attack_size, r_sub, "attack_size")]
    test_idx = test_idx[subsample(len(test_idx), test_size, r_sub, "test_size")]
    other_idx = other_idx[subsample(len(other_idx), test_size, r_sub, "test_size")]
    splits = build_splits(paths, label, private, boxes, image_size, cache,
                          train=train_idx, val=val_idx, attack=attack_idx, test=test_idx,
                          other=other_idx)
    require_nonempty(splits, what)
    check_attack_split(splits["attack_train"].private(), what)
    meta = {"ages_usable": int(len(idx)), "ages_30_39_or_out_of_range": int((~usable).sum()),
            "test_fraction": float(test_fraction), "eb_pool": int(len(pool_idx)),
            "eb_pool_sizes": {"EB1": int(eb["EB1"].sum()), "EB2": int(eb["EB2"].sum())}}
    return splits, meta


def build_splits(paths, label, private, boxes, image_size, cache, *, train, val, attack, test,
                 other):
    """The IMDB/UTKFace splits: train, val, attack_train, test, other_eb."""
    def split(name, idx):
        return FileSplit(name, paths[idx], label[idx], private[idx], image_size,
                         None if boxes is None else boxes[idx], cache=cache)

    splits = {"train": split("train", train), "val": split("val", val)}
    splits["attack_train"] = (splits["train"] if len(attack) == len(train)
                              else split("attack_train", attack))
    splits["test"] = split("test", test)
    splits["other_eb"] = split("other_eb", other)
    return splits


def face_bundle(name, splits, target, size, metadata):
    """An IMDB/UTKFace :class:`DataBundle` (eval: ``test`` primary, ``other_eb``)."""
    _, _, num_classes, num_private, class_names, private_names = task_labels(
        target, np.zeros(0), np.zeros(0))
    metadata = {**metadata, "split_sizes": counts(splits),
                "age_bin_upper": list(AGE_BIN_UPPER), "gender_coding": "0 = male, 1 = female"}
    return DataBundle(
        name=name, splits=splits, eval_splits=("test", "other_eb"), primary_eval="test",
        num_classes=num_classes, num_private=num_private, image_shape=(size, size, 3),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=class_names,
        private_names=private_names, metadata=metadata)
