"""``--data_dir`` as a URI: data read through ``tf.io.gfile`` (``gs://``, ``s3://``, ``ram://``).

A cluster pod cannot see the submitting machine's folders, so the ingest step
accepts any URI that TensorFlow's file system layer reads: ``gs://`` (built
into the TensorFlow wheel), ``s3://`` / ``hdfs://`` where a file-system plugin
is installed (plain TF 2.21 answers "File system scheme 's3' not
implemented", reported here as one :class:`DataError` line), ``ram://`` (an
in-memory file system, used by the tests). The URI names a folder (copied
whole, sub-folders included) or one file (e.g. ``gs://BUCKET/mnist.npz``).
:func:`stage` copies it into the data artifact, so every later step reads a
local copy that travels with the artifact; :func:`signature` fingerprints it
(each file's name, size and mtime, or its sha256) like
:func:`components.base.data_signature` does for a local folder.

Example::

    if is_uri(data_dir):
        local = stage(data_dir, art.path / "source")   # .../source/mnist.npz or .../source
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import List, Tuple

from bridging_tf.errors import DataError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path) -> bool:
    """``True`` for ``scheme://...`` (``gs://b/x``, ``s3://b/x``, ``ram://x``), not for paths."""
    return isinstance(path, str) and bool(_SCHEME.match(path))


def _gfile():
    import tensorflow as tf
    return tf.io.gfile, tf.errors.OpError


def _fail(uri: str, err) -> DataError:
    message = str(getattr(err, "message", err)).strip().splitlines()[0]
    hint = ""
    if "not implemented" in message:
        hint = "; this TensorFlow has no file system plugin for that scheme (s3:// needs one)"
    return DataError(f"--data_dir={uri}: cannot read it through tf.io.gfile ({message}){hint}")


def _entries(uri: str) -> Tuple[str, List[Tuple[str, int, int]]]:
    """``(kind, [(relative name, size, mtime_ns)])`` of the file or every file under ``uri``."""
    gfile, op_error = _gfile()
    top = uri.rstrip("/") if not uri.endswith("://") else uri
    try:
        if not gfile.exists(top):
            raise DataError(f"--data_dir={uri}: no such file or folder")
        if not gfile.isdir(top):
            st = gfile.stat(top)
            return "file", [(top.rsplit("/", 1)[-1], int(st.length), int(st.mtime_nsec))]
        found = []
        for root, _dirs, files in gfile.walk(top):
            for name in files:
                full = f"{root.rstrip('/')}/{name}"
                st = gfile.stat(full)
                found.append((full[len(top) + 1:], int(st.length), int(st.mtime_nsec)))
    except op_error as err:
        raise _fail(uri, err) from None
    if not found:
        raise DataError(f"--data_dir={uri}: the folder holds no files")
    return "folder", sorted(found)


def _sha256(uri: str) -> str:
    gfile, _ = _gfile()
    h = hashlib.sha256()
    with gfile.GFile(uri, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def signature(uri: str, *, hash_contents: bool = False) -> dict:
    """What ``uri`` holds: the same keys as :func:`components.base.data_signature`."""
    kind, entries = _entries(uri)
    top = uri.rstrip("/")
    h = hashlib.sha256()
    for rel, size, mtime in entries:
        if hash_contents:
            _, op_error = _gfile()
            try:
                stamp = _sha256(top if kind == "file" else f"{top}/{rel}")
            except op_error as err:
                raise _fail(uri, err) from None
        else:
            stamp = mtime
        h.update(json.dumps([rel, size, stamp]).encode() + b"\n")
    return {"path": uri, "kind": kind, "files": len(entries),
            "bytes": sum(size for _, size, _ in entries), "hashed": bool(hash_contents),
            "digest": h.hexdigest()}


def stage(uri: str, dest: Path) -> Path:
    """Copy ``uri`` (a file or a folder tree) into the local folder ``dest``.

    Returns the local path to read: ``dest/<file name>`` for a file, ``dest`` for a folder.
    Each copy is checked against the source's size.
    """
    gfile, op_error = _gfile()
    kind, entries = _entries(uri)
    top = uri.rstrip("/")
    dest = Path(dest)
    for rel, size, _mtime in entries:
        src = top if kind == "file" else f"{top}/{rel}"
        local = dest / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            gfile.copy(src, str(local), overwrite=True)
        except op_error as err:
            raise _fail(uri, err) from None
        if local.stat().st_size != size:
            raise DataError(f"--data_dir={uri}: {rel} copied as {local.stat().st_size} bytes, "
                            f"the source has {size}")
    return dest / entries[0][0] if kind == "file" else dest
