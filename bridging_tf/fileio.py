"""The one atomic writer: every file the package writes goes through a temp name and a rename.

A reader (or a resumed run) sees either the old file or the new one, never a torn one.
Renames protect against a killed process, not a power cut (no fsync).

Example::

    from bridging_tf.fileio import atomic_write, write_json, write_text
    write_json(out / "results.json", results)
    atomic_write(out / "table.npz", lambda f: np.savez(f, a=a), mode="wb")
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: What ``open(path, "w")`` would give (``mkstemp`` alone makes files owner-only, 0600).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path``; renamed onto ``path`` when the block ends, removed
    when it raises. For writers that want a path (``tf.io.TFRecordWriter``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path, writer: Callable[[Any], None], mode: str = "w") -> Path:
    """Call ``writer(file)`` on a temp file beside ``path``, then rename it onto ``path``."""
    kwargs = {} if "b" in mode else {"encoding": "utf-8"}
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        writer(f)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda f: f.write(text))


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` atomically."""
    return atomic_write(path, lambda f: f.write(data), mode="wb")


def write_json(path, obj, *, indent: int = 2, sort_keys: bool = True,
               default: Optional[Callable] = None, ensure_ascii: bool = True) -> Path:
    """Write ``obj`` as JSON atomically (a trailing newline)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default,
                      ensure_ascii=ensure_ascii)
    return write_text(path, text + "\n")
