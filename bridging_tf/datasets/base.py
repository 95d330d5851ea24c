"""The one shape every dataset has.

A dataset module builds a :class:`DataBundle`: named :class:`Split` objects
plus what a model needs to know (classes, private classes, image shape, the
normalisation). Every split yields ``(image, {"label": y, "private": p})``
where ``image`` is float32 ``[H, W, C]`` already normalised with
``(x / 255 - mean) / std``. Side labels travel in ``y``, never in ``x``, so
``call()`` and the exported serving graph see only the image.

Images are stored as uint8 (arrays or encoded files) and converted in the
tf.data pipeline. Datasets know nothing about methods.

Split names used by the components:

- ``train``: what the model is fitted on;
- ``val``: model selection (checkpoint choice); never a test set;
- ``attack_train`` / ``attack_val``: what the attacker fits on;
- everything in ``DataBundle.eval_splits``: reported, never used to choose.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def normalize_images(images, mean: Sequence[float], std: Sequence[float]):
    """uint8 (or float in [0, 255]) images -> float32 ``(x/255 - mean)/std``.

    Works on any rank ending in channels; used by the input pipeline and by
    the exported serving graph so both apply exactly the same arithmetic.
    """
    x = tf.cast(images, tf.float32) * (1.0 / 255.0)
    mean = tf.constant(mean, tf.float32)
    inv_std = tf.constant(1.0 / np.asarray(std, np.float64), tf.float32)
    return (x - mean) * inv_std


class Split:
    """A named split: ``size`` examples and a way to stream them in batches."""

    name: str
    size: int

    def dataset(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: bool = False,
        drop_remainder: bool = False,
        repeat: bool = False,
        normalize: bool = True,
    ) -> tf.data.Dataset:
        """Batched ``(image, {"label", "private"})`` pipeline.

        With ``normalize=False`` images come out as uint8 (what a client of
        the serving export sends).
        """
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        raise NotImplementedError

    def private(self) -> np.ndarray:
        raise NotImplementedError


class ArraySplit(Split):
    """A split held in memory as uint8 images with integer labels.

    Batches first, then converts a whole batch at once (vectorised), then
    prefetches: the conversion never runs per example.
    """

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray,
                 private: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 augment_fn: Optional[Callable] = None):
        if images.dtype != np.uint8:
            raise TypeError(f"split {name!r}: images must be uint8, got {images.dtype}")
        if not (len(images) == len(labels) == len(private)):
            raise ValueError(f"split {name!r}: images/labels/private lengths differ")
        self.name = name
        self.images = images
        self._labels = np.asarray(labels, np.int32)
        self._private = np.asarray(private, np.int32)
        self.size = int(len(images))
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.augment_fn = augment_fn

    def labels(self) -> np.ndarray:
        return self._labels

    def private(self) -> np.ndarray:
        return self._private

    def dataset(self, batch_size, *, shuffle=False, seed=0, augment=False,
                drop_remainder=False, repeat=False, normalize=True):
        ds = tf.data.Dataset.from_tensor_slices(
            (self.images, {"label": self._labels, "private": self._private}))
        if shuffle:
            ds = ds.shuffle(self.size, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        mean, std, aug = self.mean, self.std, (self.augment_fn if augment else None)

        def convert(x, y):
            if aug is not None:
                x = aug(x)
            if normalize:
                x = normalize_images(x, mean, std)
            return x, y

        ds = ds.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.prefetch(AUTOTUNE)

    def subset(self, indices, name: Optional[str] = None) -> "ArraySplit":
        idx = np.asarray(indices)
        return ArraySplit(name or self.name, self.images[idx], self._labels[idx],
                          self._private[idx], self.mean, self.std, self.augment_fn)


@dataclasses.dataclass
class DataBundle:
    """Everything a training/attack run needs from a dataset.

    Attributes:
      name: registry name (``biased_mnist``, ``celeba``, ...).
      splits: name -> Split. Must contain ``train``; ``val`` for model
        selection; ``attack_train`` (and optionally ``attack_val``) for the
        private-attribute attacker; plus every name in ``eval_splits``.
      eval_splits: the reported test splits, in display order.
      primary_eval: the eval split whose accuracy is ``target_accuracy`` and
        on which ``private_accuracy`` is measured.
      num_classes / num_private: sizes of the target and private label sets.
      image_shape: ``(H, W, C)`` of the model input.
      mean / std: per-channel normalisation in [0, 1] units, applied to
        uint8 images as ``(x/255 - mean)/std`` (also inside the export).
      metadata: JSON-serialisable facts about how the data was built (seed,
        rho, which splits were made here and how, counts, skipped files...).
    """

    name: str
    splits: Mapping[str, Split]
    eval_splits: Sequence[str]
    primary_eval: str
    num_classes: int
    num_private: int
    image_shape: tuple
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    private_names: Optional[Sequence[str]] = None
    class_names: Optional[Sequence[str]] = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Split:
        return self.splits[key]

    def summary(self) -> str:
        parts = [f"{k}={v.size}" for k, v in self.splits.items()]
        return f"{self.name}: " + ", ".join(parts)
