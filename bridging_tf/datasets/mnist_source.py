"""Where MNIST comes from: a user folder, the keras cache, or a download.

:func:`load_mnist` returns ``(x_train, y_train), (x_test, y_test)`` as uint8
arrays of shapes ``(60000, 28, 28)``, ``(60000,)``, ``(10000, 28, 28)``,
``(10000,)``. Lookup order:

1. ``data_dir`` (when given): ``mnist.npz`` in the keras key layout
   (``x_train``, ``y_train``, ``x_test``, ``y_test``), or the four official IDX
   files (``train-images-idx3-ubyte`` ... , gzipped or not), in the folder or
   its ``raw/`` sub-folder;
2. the keras cache, ``~/.keras/datasets/mnist.npz``;
3. ``keras.datasets.mnist.load_data()`` (downloads; needs the network).

Anything missing or malformed raises :class:`DataError` naming the file and
what was expected.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from bridging_tf.errors import DataError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
EXPECTED = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28),
            "y_test": (10000,)}

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def _check(arrays: dict, source: str, strict_sizes: bool = True) -> Arrays:
    for key, shape in EXPECTED.items():
        a = arrays[key]
        if a.dtype != np.uint8:
            raise DataError(f"{source}: {key} has dtype {a.dtype}, expected uint8")
        ok = a.shape == shape if strict_sizes else a.shape[1:] == shape[1:]
        if not ok:
            raise DataError(f"{source}: {key} has shape {a.shape}, expected {shape}")
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"{source}: x_{split} and y_{split} have different lengths")
        if arrays[f"y_{split}"].size and arrays[f"y_{split}"].max() > 9:
            raise DataError(f"{source}: y_{split} has labels > 9, expected digits 0-9")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def read_npz(path: os.PathLike, strict_sizes: bool = True) -> Arrays:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in EXPECTED if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; expected keras mnist.npz keys "
                                "x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in EXPECTED}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable mnist.npz ({type(err).__name__}: {err})") from None
    return _check(arrays, str(path), strict_sizes)


def read_idx(path: os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw): magic 2049 = labels, 2051 = images."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from None
    if len(data) < 8:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes)")
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2049:
        shape, offset = (count,), 8
    elif magic == 2051:
        if len(data) < 16:
            raise DataError(f"{path}: truncated IDX image header")
        rows, cols = struct.unpack(">II", data[8:16])
        shape, offset = (count, rows, cols), 16
    else:
        raise DataError(f"{path}: bad IDX magic number {magic}, expected 2049 (labels) "
                        "or 2051 (images)")
    need = int(np.prod(shape))
    if len(data) - offset != need:
        raise DataError(f"{path}: IDX payload has {len(data) - offset} bytes, header says {need}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for base in (folder, folder / "raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if (base / name).is_file():
                return base / name
    return None


def load_mnist(data_dir: Optional[os.PathLike] = None, allow_download: bool = True) -> Arrays:
    """Load MNIST as uint8 arrays (see module doc for the lookup order)."""
    if data_dir:
        folder = Path(data_dir).expanduser()
        if folder.is_file() and folder.suffix == ".npz":
            return read_npz(folder)
        if not folder.is_dir():
            raise DataError(f"--data_dir={folder}: no such folder (expected mnist.npz or the "
                            "four MNIST IDX files)")
        if (folder / "mnist.npz").is_file():
            return read_npz(folder / "mnist.npz")
        found = {k: _find_idx(folder, stem) for k, stem in IDX_FILES.items()}
        missing = [IDX_FILES[k] for k, p in found.items() if p is None]
        if len(missing) == len(IDX_FILES):
            raise DataError(f"--data_dir={folder}: no mnist.npz and no MNIST IDX files "
                            f"({', '.join(IDX_FILES.values())}[.gz]) found")
        if missing:
            raise DataError(f"--data_dir={folder}: missing IDX file(s) {', '.join(missing)}[.gz]")
        arrays = {k: read_idx(p) for k, p in found.items()}
        return _check(arrays, str(folder))
    cached = Path(os.path.expanduser("~/.keras/datasets/mnist.npz"))
    if cached.is_file():
        return read_npz(cached)
    if not allow_download:
        raise DataError("MNIST not found: pass --data_dir=FOLDER with mnist.npz or the IDX files")
    import keras  # deferred: only the download path needs it

    try:
        (xt, yt), (xs, ys) = keras.datasets.mnist.load_data()
    except Exception as err:  # network errors come in many types
        raise DataError(f"MNIST download failed ({type(err).__name__}); pass --data_dir=FOLDER "
                        "with mnist.npz or the four IDX files") from None
    return _check({"x_train": xt, "y_train": yt, "x_test": xs, "y_test": ys}, "keras download")
