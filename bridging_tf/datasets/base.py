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

ALIGN_BYTES = 64  # what TensorFlow requires of a buffer it shares without copying


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch``: the same whatever epoch a (resumed) stream starts at."""
    return int(seed) * 100003 + int(epoch)


def aligned_empty(shape, dtype=np.uint8) -> np.ndarray:
    """``np.empty`` whose buffer starts on a :data:`ALIGN_BYTES` boundary.

    TensorFlow can then use the array's memory in place (see :func:`shared_tensor`);
    numpy's own large allocations start 16 bytes past a page and would be copied.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN_BYTES, np.uint8)
    offset = (-buf.ctypes.data) % ALIGN_BYTES
    return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when it is C-contiguous and aligned, else an aligned copy."""
    if arr.flags.c_contiguous and arr.ctypes.data % ALIGN_BYTES == 0:
        return arr
    out = aligned_empty(arr.shape, arr.dtype)
    np.copyto(out, arr)
    return out


def shared_tensor(arr: np.ndarray) -> tf.Tensor:
    """A CPU tensor over ``arr``'s own memory (DLPack, no copy); a copy where TF refuses.

    ``arr`` must be aligned (:func:`aligned`) and is treated as read-only from then on.
    """
    try:
        return tf.experimental.dlpack.from_dlpack(arr.__dlpack__())
    except (AttributeError, BufferError, TypeError, ValueError, tf.errors.OpError):
        return tf.constant(arr)


def in_place_options() -> tf.data.Options:
    """Options for pipelines over an in-memory tensor: no static graph rewrites.

    tf.data's default optimisations serialise the pipeline graph, which turns
    every tensor it references into a constant: a full copy of the images per
    pipeline (per epoch when epochs are concatenated). Without them the
    pipeline reads the one shared tensor in place. The pipelines stay explicitly
    parallel (``num_parallel_calls=AUTOTUNE``) and prefetched.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.inject_prefetch = False
    options.experimental_warm_start = False
    return options


def index_batches(n: int, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Shuffled index batches ``(idx[int64 B], step_seed[int64 2])``, epochs ``first_epoch..``.

    Epoch ``e`` is ``range(n).shuffle(n, seed=epoch_seed(seed, e))`` batched on its own
    (no batch spans two epochs) — the same order ``from_tensor_slices(data).shuffle(n,
    seed)`` gives the data itself, without a shuffle buffer holding a copy of it.
    ``step_seed`` = ``[epoch_seed, batch number]`` seeds stateless augmentation.
    """
    parts = []
    for e in range(int(first_epoch), max(int(epochs), int(first_epoch) + 1)):
        s = epoch_seed(seed, e)
        # reshuffle_each_iteration=True: the seeding the old per-epoch pipelines used
        part = (tf.data.Dataset.range(n).shuffle(n, seed=s, reshuffle_each_iteration=True)
                .batch(batch_size, drop_remainder=drop_remainder).enumerate()
                .map(_with_step_seed(s)))
        parts.append(part)
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def _with_step_seed(seed: int):
    """``(batch number, idx) -> (idx, [seed, batch number])`` (a plain graph function)."""
    @tf.autograph.experimental.do_not_convert
    def fn(j, idx):
        return idx, tf.stack([tf.constant(int(seed), tf.int64), j])
    return fn


def stream_epochs(split, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
                  augment: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Epochs of a split streamed from files: one ``split.dataset`` per epoch, concatenated.

    For splits that read from disk (TFRecords, JPEGs without an in-memory cache):
    nothing is held per epoch but the file names, which the split keeps as one tensor.
    """
    parts = [split.dataset(batch_size, shuffle=True, seed=epoch_seed(seed, e), augment=augment,
                           drop_remainder=drop_remainder)
             for e in range(int(first_epoch), max(int(epochs), int(first_epoch) + 1))]
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds.with_options(in_place_options())


def flip_left_right(images, step_seed):
    """Seeded (stateless) random horizontal flips of a batch: the same for the same seed."""
    return tf.image.stateless_random_flip_left_right(images, step_seed)


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

    def epochs(self, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
               augment: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
        """Epochs ``first_epoch..epochs-1`` as ONE stream, holding the data at most once.

        Epoch ``e`` is shuffled with :func:`epoch_seed` ``(seed, e)`` whatever epoch the
        stream starts at, so a resumed run sees the batches an uninterrupted one
        would. Splits held in memory (:meth:`in_memory`) gather batches from one
        shared tensor; the others stream from their files (:func:`stream_epochs`).
        """
        memory = self.in_memory()
        if memory is not None:
            return memory.epochs(batch_size, seed=seed, first_epoch=first_epoch, epochs=epochs,
                                 augment=augment, drop_remainder=drop_remainder)
        return stream_epochs(self, batch_size, seed=seed, first_epoch=first_epoch,
                             epochs=epochs, augment=augment, drop_remainder=drop_remainder)

    def in_memory(self) -> Optional["ArraySplit"]:
        """The split as uint8 arrays in memory, or ``None`` when it streams from disk."""
        return None

    def labels(self) -> np.ndarray:
        raise NotImplementedError

    def private(self) -> np.ndarray:
        raise NotImplementedError


class ArraySplit(Split):
    """A split held in memory as uint8 images with integer labels.

    Batches first, then converts a whole batch at once (vectorised), then
    prefetches: the conversion never runs per example. The images are shared
    with TensorFlow without a copy (:func:`shared_tensor`) and every pipeline
    reads that one tensor in place, however many are built (one per epoch,
    validation, extraction...). ``augment_fn(images, step_seed)`` is a stateless
    augmentation of a uint8 batch (e.g. :func:`flip_left_right`).
    """

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray,
                 private: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 augment_fn: Optional[Callable] = None):
        if images.dtype != np.uint8:
            raise TypeError(f"split {name!r}: images must be uint8, got {images.dtype}")
        if not (len(images) == len(labels) == len(private)):
            raise ValueError(f"split {name!r}: images/labels/private lengths differ")
        self.name = name
        self.images = aligned(images)
        self._tensors = None
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

    def in_memory(self) -> "ArraySplit":
        return self

    def tensors(self):
        """``(images, labels, private)`` as tensors sharing this split's arrays (made once)."""
        if self._tensors is None:
            self._tensors = (shared_tensor(self.images), tf.constant(self._labels),
                             tf.constant(self._private))
        return self._tensors

    def _gather(self, batches, *, augment: bool, normalize: bool) -> tf.data.Dataset:
        """``(idx, step_seed)`` batches -> ``(image, {"label", "private"})`` batches."""
        images, labels, private = self.tensors()
        mean, std, aug = self.mean, self.std, (self.augment_fn if augment else None)

        @tf.autograph.experimental.do_not_convert
        def fetch(idx, step_seed):
            x = tf.gather(images, idx)
            if aug is not None:
                x = aug(x, step_seed)
            if normalize:
                x = normalize_images(x, mean, std)
            return x, {"label": tf.gather(labels, idx), "private": tf.gather(private, idx)}

        ds = batches.map(fetch, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.prefetch(AUTOTUNE).with_options(in_place_options())

    def epochs(self, batch_size, *, seed, first_epoch, epochs, augment=False,
               drop_remainder=False):
        return self._gather(index_batches(self.size, batch_size, seed=seed,
                                          first_epoch=first_epoch, epochs=epochs,
                                          drop_remainder=drop_remainder),
                            augment=augment, normalize=True)

    def dataset(self, batch_size, *, shuffle=False, seed=0, augment=False,
                drop_remainder=False, repeat=False, normalize=True):
        idx = tf.data.Dataset.range(self.size)
        if shuffle:
            # Same order as shuffling the examples themselves with this seed.
            idx = idx.shuffle(self.size, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            idx = idx.repeat()
        batches = idx.batch(batch_size, drop_remainder=drop_remainder).enumerate().map(
            _with_step_seed(seed))
        return self._gather(batches, augment=augment, normalize=normalize)

    def subset(self, indices, name: Optional[str] = None) -> "ArraySplit":
        idx = np.asarray(indices)
        return ArraySplit(name or self.name, self.images[idx], self._labels[idx],
                          self._private[idx], self.mean, self.std, self.augment_fn)


class DeferredSplit(Split):
    """A split whose arrays are built on first use (``build() -> Split``); its size is known now.

    Lets a bundle describe every split while holding only those a step uses:
    training touches ``train`` and ``val``, not the attacker and test sets.
    ``build`` must be deterministic (draw any randomness before deferring).
    """

    def __init__(self, name: str, size: int, build: Callable[[], Split], labels=None,
                 private=None):
        self.name, self.size = name, int(size)
        self._build, self._split = build, None
        self._labels = None if labels is None else np.asarray(labels, np.int32)
        self._private = None if private is None else np.asarray(private, np.int32)

    def built(self) -> Split:
        if self._split is None:
            self._split = self._build()
            self._build = None
        return self._split

    def __getattr__(self, attr):  # everything else is the built split's
        if attr.startswith("__") or attr in ("_build", "_split", "_labels", "_private"):
            raise AttributeError(attr)
        return getattr(self.built(), attr)

    def dataset(self, *args, **kw):
        return self.built().dataset(*args, **kw)

    def epochs(self, *args, **kw):
        return self.built().epochs(*args, **kw)

    def in_memory(self):
        return self.built().in_memory()

    def labels(self):
        return self._labels if self._labels is not None else self.built().labels()

    def private(self):
        return self._private if self._private is not None else self.built().private()


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
