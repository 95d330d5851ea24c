"""SIIM-FISABIO-RSNA COVID-19 chest X-rays (paper Sec. 4.3, Table 4): the TFRecord loader.

Two steps, because the raw data are hospital DICOMs:

1. :func:`prepare_siim` (the ``ingest`` step; :mod:`bridging_tf.datasets.siim_ingest`,
   re-exported here) converts the Kaggle competition folder into sharded TFRecords of
   de-identified examples plus ``labels.json`` and ``manifest.json``, split 85/5/10 by
   patient (see that module for the layout, the labels, the salt and the skip counts).
2. :func:`load_siim` (``datasets.load("siim", data_dir=<prepared dir>)``)
   streams those shards through tf.data: PNG decode, resize to
   ``image_size`` if it differs, grayscale -> ``channels`` (1 or 3),
   normalisation with the training-set mean/std measured at ingestion
   (or ImageNet's with ``normalization="imagenet"``), optional horizontal
   flip augmentation. Splits: ``train``, ``val``, ``attack_train`` (= the
   training images), ``attack_val`` (= ``val``), ``test`` (primary eval).

Example::

    manifest = prepare_siim("/data/siim", "/tmp/siim_prepared", image_size=448, workers=2)
    bundle = load_siim("/tmp/siim_prepared", channels=3)
    for x, y in bundle["train"].dataset(16, shuffle=True).take(1):
        print(x.shape, y["label"], y["private"])    # (16, 448, 448, 3) ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bridging_tf.datasets.siim_ingest import (
    CLASS_NAMES,
    FORMAT,
    LABELS,
    MANIFEST,
    PRIVATE_NAMES,
    SKIP_REASONS,
    SPLITS,
    STUDY_CSV,
    prepare_siim,
    split_patients,
)
from bridging_tf.errors import DataError, UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- loader

class TFRecordSplit:
    """A split backed by the ingested TFRecord shards (PNG decoded in tf.data).

    ``dataset()`` yields ``(image float32 [B,S,S,C], {"label", "private"})``;
    with ``normalize=False`` uint8 images (what a serving client sends).
    Unshuffled order is the shard order = the order of ``labels()``.
    """

    def __init__(self, name: str, files: Sequence[str], labels: Sequence[int],
                 private: Sequence[int], image_size: int, stored_size: int, channels: int,
                 bit_depth: int, mean, std, flip: bool = True):
        self.name = name
        self.files = [str(f) for f in files]
        self._labels = np.asarray(labels, np.int32)
        self._private = np.asarray(private, np.int32)
        self.size = int(len(self._labels))
        self.image_size, self.stored_size = int(image_size), int(stored_size)
        self.channels, self.bit_depth = int(channels), int(bit_depth)
        self.mean, self.std, self.flip = tuple(mean), tuple(std), bool(flip)

    def labels(self) -> np.ndarray:
        return self._labels

    def private(self) -> np.ndarray:
        return self._private

    def _decode(self, record):
        import tensorflow as tf

        feats = tf.io.parse_single_example(record, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "private": tf.io.FixedLenFeature([], tf.int64)})
        dtype = tf.uint16 if self.bit_depth == 16 else tf.uint8
        img = tf.io.decode_png(feats["image"], channels=1, dtype=dtype)
        scale = 255.0 / 65535.0 if self.bit_depth == 16 else 1.0
        s = self.image_size
        if self.stored_size and self.stored_size != s:
            img = tf.image.resize(tf.cast(img, tf.float32) * scale, (s, s), antialias=True)
            img = tf.cast(tf.round(tf.clip_by_value(img, 0.0, 255.0)), tf.uint8)
        elif self.bit_depth == 16:
            img = tf.cast(tf.round(tf.cast(img, tf.float32) * scale), tf.uint8)
        img = tf.ensure_shape(img, (s, s, 1))
        if self.channels == 3:
            img = tf.image.grayscale_to_rgb(img)
        return img, {"label": tf.cast(feats["label"], tf.int32),
                     "private": tf.cast(feats["private"], tf.int32)}

    def dataset(self, batch_size, *, shuffle=False, seed=0, augment=False,
                drop_remainder=False, repeat=False, normalize=True):
        import tensorflow as tf

        from bridging_tf.datasets.base import normalize_images

        AUTOTUNE = tf.data.AUTOTUNE
        files = tf.data.Dataset.from_tensor_slices(self.files)
        if shuffle:
            files = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)
            ds = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(self.files)),
                                  num_parallel_calls=AUTOTUNE, deterministic=True)
            ds = ds.shuffle(min(self.size, 2048), seed=seed, reshuffle_each_iteration=True)
        else:
            ds = tf.data.TFRecordDataset(files)
        if repeat:
            ds = ds.repeat()
        # plain graph functions (Python-level branches only): no autograph conversion
        decode = tf.autograph.experimental.do_not_convert(self._decode)
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        mean, std, flip = self.mean, self.std, self.flip and augment

        def convert(x, y):
            if flip:
                x = tf.image.random_flip_left_right(x, seed=seed)
            if normalize:
                x = normalize_images(x, mean, std)
            return x, y

        return ds.map(tf.autograph.experimental.do_not_convert(convert),
                      num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def read_manifest(data_dir) -> dict:
    """The ``manifest.json`` of a prepared folder (``DataError`` when it is not one)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        if (Path(data_dir) / STUDY_CSV).is_file():
            raise DataError(f"--data_dir={data_dir} is the raw competition folder; convert it "
                            "first "
                            f"(python -m components.ingest_siim --data_dir={data_dir} "
                            f"--output_dir=<dir>) and pass that folder")
        raise DataError(f"--data_dir={data_dir}: no {MANIFEST}; not a prepared SIIM folder")
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def load_siim(data_dir=None, image_size: Optional[int] = None, channels: int = 3,
              normalization: str = "dataset", flip: bool = True, **unused):
    """Prepared SIIM folder -> :class:`~bridging_tf.datasets.base.DataBundle`.

    Args:
      data_dir: output of :func:`prepare_siim` (has ``manifest.json``).
      image_size: model input side (default: the stored size); resized in tf.data.
      channels: 1 or 3 (grayscale repeated, e.g. for ImageNet weights).
      normalization: ``"dataset"`` (train mean/std from the manifest) or ``"imagenet"``.
      flip: random horizontal flips when a split is asked for ``augment=True``.
    """
    from bridging_tf.datasets.base import DataBundle

    if data_dir is None:
        raise UserError("--data_dir is required for --dataset=siim")
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    with open(data_dir / LABELS, encoding="utf-8") as fh:
        labels = json.load(fh)
    if int(channels) not in (1, 3):
        raise UserError(f"--channels={channels}: choose 1 or 3")
    stored = int(manifest["image_size"])
    size = int(image_size or stored)
    if not size:
        raise UserError("--image_size is required: the prepared images kept their native sizes")
    if normalization == "dataset":
        mean, std = (manifest["train_mean"],) * channels, (manifest["train_std"],) * channels
    elif normalization == "imagenet":
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    else:
        raise UserError(f"--normalization={normalization!r}: choose 'dataset' or 'imagenet'")
    splits = {}
    for name in SPLITS:
        info = manifest["splits"][name]
        if not info["count"]:
            raise DataError(f"{data_dir / MANIFEST}: split {name!r} is empty "
                            f"(need at least 3 patients; got "
                            f"{manifest['counts']['written']} images)")
        splits[name] = TFRecordSplit(
            name, [data_dir / f for f in info["shards"]], labels[name]["label"],
            labels[name]["private"], size, stored, channels, manifest["bit_depth"], mean, std, flip)
    splits["attack_train"] = splits["train"]
    splits["attack_val"] = splits["val"]
    metadata = {
        "manifest_counts": manifest["counts"],
        "split_counts": {s: manifest["splits"][s]["count"] for s in SPLITS},
        "label_counts": {s: manifest["splits"][s]["label_counts"] for s in SPLITS},
        "private_counts": {s: manifest["splits"][s]["private_counts"] for s in SPLITS},
        "unsupported_transfer_syntaxes": manifest["unsupported_transfer_syntaxes"],
        "stored_image_size": stored, "image_size": size, "channels": int(channels),
        "normalization": normalization, "private_encoding": manifest["private_encoding"],
        "split_unit": manifest["split_unit"], "seed": manifest["seed"],
        "attack_train": "the training images (attack_train = train, attack_val = val)",
    }
    return DataBundle(
        name="siim", splits=splits, eval_splits=("test",), primary_eval="test",
        num_classes=2, num_private=2, image_shape=(size, size, int(channels)),
        mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
        private_names=PRIVATE_NAMES, class_names=CLASS_NAMES, metadata=metadata)


__all__ = ["CLASS_NAMES", "PRIVATE_NAMES", "SKIP_REASONS", "SPLITS", "TFRecordSplit",
           "load_siim", "prepare_siim", "read_manifest", "split_patients"]
