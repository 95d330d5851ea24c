"""UTKFace as an IMDB-style age/gender benchmark (METHODS.md §8.3 protocol).

Reads a folder of ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` faces
(``data_dir`` itself, or its ``UTKFace/`` or ``crop_part1/`` subfolder).
UTKFace codes gender 0 = male, 1 = female — the package's coding, kept as is.
Files whose names do not parse are skipped, counted in
``metadata["skipped_malformed_names"]`` and logged, never fatal.

Protocol (the IMDB construction, :mod:`bridging_tf.datasets.faces`):

- only ages 0–29 and 40–100 are used (ages 30–39 belong to neither EB set);
- a seeded ``test_fraction`` of those, stratified by (age group, gender),
  is the test pool, split 75/25 (stratified by label and private) into
  ``test`` (primary eval) and ``val`` (model selection), like the
  reference's 4-fold split of ``test.csv``;
- the rest is split into EB1 (women 0–29 + men 40+) and EB2 (men 0–29 +
  women 40+); ``--split`` picks the training set, the other one is the eval
  split ``other_eb``; ``attack_train`` = ``train``.
- ``--target age`` (12 bins, private gender) or ``--target gender`` (private
  age bin). Images are already cropped faces: resized only.

Example::

    bundle = load_utkface("~/data/utkface", split="EB1", target="age", image_size=64)
"""

from __future__ import annotations

import logging
import os
import re
from typing import Optional

import numpy as np

from bridging_tf.datasets import faces
from bridging_tf.datasets.base import DataBundle
from bridging_tf.errors import DataError
from bridging_tf.options import DataOptions, EbFacesData

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
SUBFOLDERS = ("UTKFace", "crop_part1")
RACE_NAMES = ("white", "black", "asian", "indian", "others")


def parse_name(name: str):
    """``"25_1_2_2017....jpg.chip.jpg"`` -> ``(age, gender, race)``; None if malformed."""
    m = NAME_RE.match(os.path.basename(name))
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def image_folder(data_dir: str) -> str:
    def has_jpg(d):
        return any(f.lower().endswith(".jpg") for f in os.listdir(d))

    if has_jpg(data_dir):
        return data_dir
    for sub in SUBFOLDERS:
        d = os.path.join(data_dir, sub)
        if os.path.isdir(d) and has_jpg(d):
            return d
    raise DataError(f"no .jpg faces in {data_dir} (nor in its {' or '.join(SUBFOLDERS)} "
                    f"subfolder); expected UTKFace's age_gender_race_date.jpg.chip.jpg files")


def index_folder(folder: str):
    """``(paths, age, gender, race, malformed_names)`` for every JPEG in ``folder``."""
    paths, rows, malformed = [], [], []
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(".jpg"):
            continue
        parsed = parse_name(name)
        if parsed is None:
            malformed.append(name)
            continue
        paths.append(os.path.join(folder, name))
        rows.append(parsed)
    if malformed:
        log.warning("skipping %d UTKFace file(s) with a malformed name, e.g. %s",
                    len(malformed), malformed[0])
    arr = np.asarray(rows, np.int64).reshape(-1, 3)
    return np.asarray(paths, dtype=object), arr[:, 0], arr[:, 1], arr[:, 2], malformed


def load_utkface(data_dir=None, split: str = EbFacesData.split,
                 target: Optional[str] = EbFacesData.target, private: Optional[str] = None,
                 image_size: int = faces.DEFAULT_IMAGE_SIZE, seed: int = DataOptions.seed,
                 train_size: Optional[int] = None,
                 test_size: Optional[int] = None, attack_size: Optional[int] = None,
                 test_fraction: float = 0.2, verify_images: bool = True, cache="auto",
                 **unused) -> DataBundle:
    """Build the UTKFace bundle (see module doc).

    Args:
      data_dir: folder of UTKFace JPEGs (or its parent).
      split: ``"EB1"`` or ``"EB2"``: the training set.
      target: ``"age"`` (private gender) or ``"gender"`` (private age bin).
      private: optional; must agree with ``target``.
      image_size: square input side.
      seed: every sampling choice derives from it.
      train_size / test_size / attack_size: seeded caps (``test_size`` caps
        ``test`` and ``other_eb``).
      test_fraction: share of the usable faces held out as the test pool.
      verify_images: open each file once to skip incomplete JPEGs (counted).
      cache: see :class:`~bridging_tf.datasets.faces.FileSplit`.
    """
    data_dir, size, split, target, seed = faces.check_eb_options(
        data_dir, image_size, split, target, private, test_fraction, seed, attack_size)
    folder = image_folder(data_dir)
    paths, age, gender, _race, malformed = index_folder(folder)
    if len(paths) == 0:
        raise DataError(f"no UTKFace file in {folder} has a parsable "
                        f"age_gender_race_date.jpg.chip.jpg name")
    ok = faces.check_images(paths, folder, verify=verify_images)
    paths, age, gender = paths[ok], age[ok], gender[ok]
    splits, meta = faces.eb_protocol(paths, age, gender, split=split, target=target,
                               image_size=size, seed=seed, test_fraction=test_fraction,
                               train_size=train_size, test_size=test_size,
                               attack_size=attack_size, cache=cache,
                               what=f"UTKFace {split} in {folder}")
    metadata = {
        "data_dir": os.path.abspath(folder), "seed": int(seed), "split": split,
        "target": target, "private": "gender" if target == "age" else "age",
        "image_size": size, "files_parsed": int(len(ok)),
        "skipped_malformed_names": len(malformed), "malformed_examples": malformed[:5],
        "skipped_unreadable": int((~ok).sum()),
        "protocol": (f"seeded stratified {test_fraction:g} test pool of ages 0-29/40-100 "
                     f"(75% test, 25% val); rest split into EB1/EB2; train = {split}"),
        **meta,
    }
    return faces.face_bundle("utkface", splits, target, size, metadata)
