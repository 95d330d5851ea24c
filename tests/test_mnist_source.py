"""MNIST lookup: npz, IDX (gz or raw), and one-line errors naming the file."""

import gzip
import shutil

import numpy as np
import pytest

from bridging_tf.datasets.mnist_source import load_mnist, read_idx
from bridging_tf.errors import DataError


def test_npz_and_idx_agree(mnist_dir):
    (a, ya), (b, yb) = load_mnist(mnist_dir)
    assert a.shape == (60000, 28, 28) and b.shape == (10000, 28, 28)
    raw = mnist_dir / "raw"
    assert np.array_equal(read_idx(raw / "t10k-images-idx3-ubyte.gz"), b)
    assert np.array_equal(read_idx(raw / "t10k-labels-idx1-ubyte.gz"), yb)


def test_idx_folder_plain_and_gz(tmp_path, mnist_dir):
    for f in (mnist_dir / "raw").iterdir():
        if f.name.startswith("t10k-images"):
            with gzip.open(f) as src, open(tmp_path / f.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)  # one file uncompressed
        else:
            shutil.copy(f, tmp_path / f.name)
    (x, y), (xt, yt) = load_mnist(tmp_path)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_mnist(tmp_path / "nope")


def test_empty_folder_names_expected_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_missing_one_idx_file(tmp_path, mnist_dir):
    for f in (mnist_dir / "raw").iterdir():
        if "t10k-labels" not in f.name:
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_corrupt_npz_names_the_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="mnist.npz") as err:
        load_mnist(tmp_path)
    assert "\n" not in str(err.value)


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "mnist.npz", images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing arrays"):
        load_mnist(tmp_path)


def test_truncated_idx(tmp_path, mnist_dir):
    for f in (mnist_dir / "raw").iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = gzip.open(tmp_path / "train-labels-idx1-ubyte.gz").read()
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as g:
        g.write(data[:1000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path)


def test_no_download_without_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match="--data_dir"):
        load_mnist(None, allow_download=False)
