"""The artifact framework every component uses (TFX-style, without TFX).

An artifact is a directory with an ``artifact.json``::

    {"type": "Model", "producer": "train", "parameters": {...},
     "fingerprint": "<sha256 of producer + parameters + input fingerprints>",
     "inputs": {"data": "<sha256 of the input's fingerprint + content>"},
     "files": {"model.keras": {"size": 123, "mtime_ns": ..., "sha256": "..."}, ...},
     "content": "<sha256 of every file's name, size and sha256>",
     "versions": {...}, "seed": 0, "created": "...", "finished": "...", "metrics": {...}}

A component writes into ``<output>.tmp-<pid>`` and renames it onto the output
path when done, so an output directory either is complete or does not exist.
When the output already exists with the same fingerprint *and its files
verify* (:func:`verify_artifact`: every recorded file present with its size;
files up to :data:`HASH_ALWAYS_BYTES`, and any whose mtime moved, re-hashed;
``BRIDGING_TF_VERIFY=full`` re-hashes everything) the step is skipped (and its
recorded metrics returned): rerunning a finished pipeline does nothing,
rerunning a killed one continues where it stopped. A missing or changed file
makes the step run again, and since a consumer's input fingerprint includes
the producer's ``content``, everything downstream of a re-produced artifact
runs again too. Long steps keep resumable state (checkpoints) in
``<output>.work/``, deleted on success.

Example::

    def run(inputs, outputs, *, seed=0):
        with ArtifactWriter("train", "Model", outputs["model"], params={"seed": seed},
                            inputs=inputs) as art:
            if art.skipped:
                return art.metrics
            ...  # write files into art.path (a temp dir)
            art.metrics = {"accuracy": 0.9}
        return art.metrics
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Mapping, Optional

from bridging_tf import fileio
from bridging_tf.fileio import write_text

ARTIFACT_FILE = "artifact.json"
PACKAGES = ("tensorflow", "keras", "numpy", "bridging_tf", "kfp", "absl-py")
# Files up to this size are re-hashed every time a step is skipped; bigger ones only when their
# size or mtime moved (or always, with BRIDGING_TF_VERIFY=full).
HASH_ALWAYS_BYTES = 16 << 20
VERIFY_ENV = "BRIDGING_TF_VERIFY"
VERIFY_MODES = ("auto", "full", "size")


def package_versions() -> dict:
    """Installed versions of the packages that decide a result."""
    import platform
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def to_jsonable(value):
    """Parameters as plain JSON (paths -> str, tuples -> lists, numpy -> python)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def read_artifact(path) -> Optional[dict]:
    """The ``artifact.json`` of ``path``, or ``None`` when it is absent or unreadable."""
    f = Path(path) / ARTIFACT_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def list_files(root) -> dict:
    """``{relative path: {"size", "mtime_ns", "sha256"}}`` of every file under ``root``.

    ``artifact.json`` (at the top) is left out: it is the record, not a product.
    """
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == ARTIFACT_FILE:
            continue
        st = path.stat()
        out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
    return out


def content_digest(files: Mapping[str, dict]) -> str:
    """sha256 of the files' names, sizes and hashes (not their mtimes): what the artifact holds."""
    blob = json.dumps([[rel, rec["size"], rec["sha256"]] for rel, rec in sorted(files.items())])
    return hashlib.sha256(blob.encode()).hexdigest()


def _verify_mode(mode: Optional[str]) -> str:
    mode = mode or os.environ.get(VERIFY_ENV) or "auto"
    if mode not in VERIFY_MODES:
        from bridging_tf.errors import UserError
        raise UserError(f"{VERIFY_ENV}={mode!r}: choose one of {', '.join(VERIFY_MODES)}")
    return mode


def verify_artifact(path, meta: Optional[dict] = None, mode: Optional[str] = None) -> Optional[str]:
    """``None`` when the files recorded in ``artifact.json`` are all there, else what is wrong.

    ``mode``: ``"size"`` (present with the recorded size), ``"auto"`` (also re-hash files up
    to :data:`HASH_ALWAYS_BYTES` and any whose mtime changed), ``"full"`` (re-hash all);
    default ``$BRIDGING_TF_VERIFY`` else ``"auto"``.
    """
    path = Path(path)
    mode = _verify_mode(mode)
    meta = read_artifact(path) if meta is None else meta
    if meta is None:
        return f"{ARTIFACT_FILE} is missing or unreadable"
    files = meta.get("files")
    if not isinstance(files, dict):
        return "it records no list of its files (written by an older version)"
    for rel, rec in sorted(files.items()):
        try:
            st = (path / rel).stat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != rec.get("size"):
            return f"{rel} changed size ({rec.get('size')} -> {st.st_size} bytes)"
        check = (mode == "full" or (mode == "auto" and (
            st.st_size <= HASH_ALWAYS_BYTES or st.st_mtime_ns != rec.get("mtime_ns"))))
        if check and file_sha256(path / rel) != rec.get("sha256"):
            return f"{rel} changed (its sha256 differs from the recorded one)"
    return None


def input_fingerprints(inputs: Mapping[str, Path]) -> dict:
    """``{name: sha256(fingerprint + content)}`` of each input artifact, checked to be complete.

    The content is part of it so that a consumer runs again whenever its input was re-produced
    with other bytes, even from the same parameters.
    """
    from bridging_tf.errors import UserError
    out = {}
    for name, path in sorted((inputs or {}).items()):
        meta = read_artifact(path)
        if meta is None:
            raise UserError(f"input artifact {name!r} at {path} is missing or incomplete "
                            f"(no {ARTIFACT_FILE}); run the step that produces it first")
        problem = verify_artifact(path, meta, mode="size")
        if problem:
            raise UserError(f"input artifact {name!r} at {path} is incomplete ({problem}); "
                            "run the step that produces it again")
        blob = f"{meta['fingerprint']}:{meta.get('content') or content_digest(meta['files'])}"
        out[name] = hashlib.sha256(blob.encode()).hexdigest()
    return out


def fingerprint(producer: str, params: dict, inputs: dict) -> str:
    blob = json.dumps({"producer": producer, "parameters": to_jsonable(params),
                       "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_json(path, obj) -> None:
    """Write ``obj`` (made JSON-safe by ``to_jsonable``) atomically."""
    fileio.write_json(path, to_jsonable(obj))


def _signature_entries(root: Path, hash_contents: bool, exclude=()):
    """``(relative path, size, mtime_ns or sha256)`` of each file under ``root``, links followed."""
    seen, stack = set(), [root]
    top = root.stat()
    for folder in exclude:  # marked as seen: never listed (unless it is the root itself)
        try:
            st = Path(folder).stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (top.st_dev, top.st_ino):
            seen.add((st.st_dev, st.st_ino))
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            from bridging_tf.errors import DataError
            raise DataError(f"cannot list {folder} ({err.strerror or err})") from None
        if (st.st_dev, st.st_ino) in seen:  # a link cycle
            continue
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            try:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                    continue
                est = entry.stat()
            except OSError:
                continue  # a dangling link: nothing a loader could read
            rel = Path(entry.path).relative_to(root).as_posix()
            yield rel, est.st_size, (_hash_data_file(entry.path) if hash_contents
                                     else est.st_mtime_ns)


def _hash_data_file(path) -> str:
    try:
        return file_sha256(path)
    except OSError as err:
        from bridging_tf.errors import DataError
        raise DataError(f"cannot read {path} ({err.strerror or err})") from None


def data_signature(path, *, hash_contents: bool = False, exclude=()) -> Optional[dict]:
    """What a data folder (or file) holds, cheaply: a digest of every file's name, size, mtime.

    With ``hash_contents`` the digest covers each file's sha256 instead of its mtime (slower;
    a touched but unchanged file then keeps the signature). Folders in ``exclude`` (a run
    folder inside the data folder) are left out. ``None`` for ``path=None``.

    Example::

        data_signature("../shared/data/mnist")
        # {"path": ".../mnist", "kind": "folder", "files": 5, "bytes": 11490519 + ...,
        #  "hashed": False, "digest": "..."}
    """
    if path in (None, ""):
        return None
    path = Path(path).expanduser()
    h = hashlib.sha256()
    count = total = 0
    if path.is_dir():
        kind = "folder"
        for rel, size, stamp in _signature_entries(path, hash_contents, exclude):
            h.update(json.dumps([rel, size, stamp]).encode() + b"\n")
            count, total = count + 1, total + size
    elif path.is_file():
        kind, st = "file", path.stat()
        stamp = _hash_data_file(path) if hash_contents else st.st_mtime_ns
        h.update(json.dumps([path.name, st.st_size, stamp]).encode())
        count, total = 1, st.st_size
    else:
        kind = "missing"
    return {"path": str(path), "kind": kind, "files": count, "bytes": total,
            "hashed": bool(hash_contents), "digest": h.hexdigest()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(output: Path) -> None:
    """Delete ``<output>.tmp-<pid>`` / ``.old-<pid>`` left by this or a killed process.

    Never a live process's.
    """
    leftovers = [*output.parent.glob(f"{output.name}.tmp-*"),
                 *output.parent.glob(f"{output.name}.old-*")]
    for tmp in leftovers:
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


class ArtifactWriter:
    """Context manager producing one output artifact atomically (see module doc).

    ``art.path`` is the temporary directory to write into; ``art.work_dir`` a
    persistent scratch directory for resumable state; ``art.skipped`` says the
    output was already complete with the same fingerprint.
    """

    def __init__(self, producer: str, type_name: str, output, *, params: dict,
                 inputs: Optional[Mapping[str, Path]] = None, seed: Optional[int] = None,
                 verify: Optional[str] = None):
        self.producer = producer
        self.type_name = type_name
        self.output = Path(output)
        self.params = to_jsonable(dict(params))
        self.inputs = input_fingerprints(inputs or {})
        self.seed = seed if seed is not None else self.params.get("seed")
        self.fingerprint = fingerprint(producer, self.params, self.inputs)
        self.metrics: dict = {}
        self.extra: dict = {}
        self.rerun_reason: Optional[str] = None  # why a finished output is produced again
        existing = read_artifact(self.output)
        self.skipped = False
        if existing and existing.get("fingerprint") == self.fingerprint:
            self.rerun_reason = verify_artifact(self.output, existing, mode=verify)
            self.skipped = self.rerun_reason is None
        if self.skipped:
            self.metrics = existing.get("metrics", {})
        self.path = self.output.with_name(f"{self.output.name}.tmp-{os.getpid()}")
        self.work_dir = self.output.with_name(f"{self.output.name}.work")
        self._created = _now()

    def __enter__(self):
        if self.skipped:
            print(f"[{self.producer}] up to date, skipped: {self.output}")
            return self
        if self.rerun_reason:
            print(f"[{self.producer}] {self.output} is not intact ({self.rerun_reason}); "
                  "running the step again", flush=True)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.output)
        self.path.mkdir(parents=True)
        # A work dir from a run with other parameters must not be resumed.
        stamp = self.work_dir / "fingerprint"
        if self.work_dir.exists() and (not stamp.exists() or stamp.read_text() != self.fingerprint):
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        write_text(stamp, self.fingerprint)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.skipped:
            return False
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)  # the work dir stays: resumable
            return False
        files = list_files(self.path)
        meta = {
            "type": self.type_name, "producer": self.producer, "parameters": self.params,
            "fingerprint": self.fingerprint, "inputs": self.inputs,
            "versions": package_versions(), "seed": self.seed, "created": self._created,
            "finished": _now(), "metrics": to_jsonable(self.metrics), **to_jsonable(self.extra),
            "files": files, "content": content_digest(files),
        }
        write_json(self.path / ARTIFACT_FILE, meta)
        old = None
        if self.output.exists():  # stale output with another fingerprint
            old = self.output.with_name(f"{self.output.name}.old-{os.getpid()}")
            os.replace(self.output, old)
        os.replace(self.path, self.output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        print(f"[{self.producer}] wrote {self.output}")
        return False


def dataset_spec(data_artifact) -> dict:
    """The ``dataset.json`` ({"name", "options"}) recorded by the ingest step."""
    path = Path(data_artifact) / "dataset.json"
    if not path.exists():
        from bridging_tf.errors import UserError
        raise UserError(f"{path} is missing; run the ingest step first")
    spec = json.loads(path.read_text())
    if spec.get("data_dir_in_artifact"):  # data copied into the artifact: wherever it is now
        spec["options"]["data_dir"] = str(Path(data_artifact).resolve()
                                          / spec["data_dir_in_artifact"])
    return spec


def load_bundle(data_artifact):
    """Rebuild the :class:`DataBundle` described by an ingest artifact."""
    from bridging_tf import datasets
    spec = dataset_spec(data_artifact)
    return datasets.load(spec["name"], **spec["options"])


__all__ = ["ARTIFACT_FILE", "ArtifactWriter", "HASH_ALWAYS_BYTES", "content_digest",
           "data_signature", "dataset_spec", "file_sha256", "fingerprint", "input_fingerprints",
           "list_files", "load_bundle", "package_versions", "read_artifact", "to_jsonable",
           "verify_artifact", "write_json", "write_text"]
