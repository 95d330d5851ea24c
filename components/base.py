"""The artifact framework every component uses (TFX-style, without TFX).

An artifact is a directory with an ``artifact.json``::

    {"type": "Model", "producer": "train", "parameters": {...},
     "fingerprint": "<sha256 of producer + parameters + input fingerprints>",
     "inputs": {"data": "<fingerprint>"}, "versions": {...}, "seed": 0,
     "created": "...", "finished": "...", "metrics": {...}}

A component writes into ``<output>.tmp-<pid>`` and renames it onto the output
path when done, so an output directory either is complete or does not exist.
When the output already exists with the same fingerprint the step is skipped
(and its recorded metrics returned): rerunning a finished pipeline does
nothing, rerunning a killed one continues where it stopped. Long steps keep
resumable state (checkpoints) in ``<output>.work/``, deleted on success.

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

ARTIFACT_FILE = "artifact.json"
PACKAGES = ("tensorflow", "keras", "numpy", "bridging_tf", "kfp", "absl-py")


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


def input_fingerprints(inputs: Mapping[str, Path]) -> dict:
    out = {}
    for name, path in sorted((inputs or {}).items()):
        meta = read_artifact(path)
        if meta is None:
            from bridging_tf.errors import UserError
            raise UserError(f"input artifact {name!r} at {path} is missing or incomplete "
                            f"(no {ARTIFACT_FILE}); run the step that produces it first")
        out[name] = meta["fingerprint"]
    return out


def fingerprint(producer: str, params: dict, inputs: dict) -> str:
    blob = json.dumps({"producer": producer, "parameters": to_jsonable(params),
                       "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_json(path, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(output: Path) -> None:
    """Delete ``<output>.tmp-<pid>`` left by this or a killed process (never a live one's)."""
    for tmp in output.parent.glob(f"{output.name}.tmp-*"):
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
                 inputs: Optional[Mapping[str, Path]] = None, seed: Optional[int] = None):
        self.producer = producer
        self.type_name = type_name
        self.output = Path(output)
        self.params = to_jsonable(dict(params))
        self.inputs = input_fingerprints(inputs or {})
        self.seed = seed if seed is not None else self.params.get("seed")
        self.fingerprint = fingerprint(producer, self.params, self.inputs)
        self.metrics: dict = {}
        self.extra: dict = {}
        existing = read_artifact(self.output)
        self.skipped = bool(existing and existing.get("fingerprint") == self.fingerprint)
        if self.skipped:
            self.metrics = existing.get("metrics", {})
        self.path = self.output.with_name(f"{self.output.name}.tmp-{os.getpid()}")
        self.work_dir = self.output.with_name(f"{self.output.name}.work")
        self._created = _now()

    def __enter__(self):
        if self.skipped:
            print(f"[{self.producer}] up to date, skipped: {self.output}")
            return self
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.output)
        self.path.mkdir(parents=True)
        # A work dir from a run with other parameters must not be resumed.
        stamp = self.work_dir / "fingerprint"
        if self.work_dir.exists() and (not stamp.exists() or stamp.read_text() != self.fingerprint):
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(self.fingerprint)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.skipped:
            return False
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)  # the work dir stays: resumable
            return False
        meta = {
            "type": self.type_name, "producer": self.producer, "parameters": self.params,
            "fingerprint": self.fingerprint, "inputs": self.inputs,
            "versions": package_versions(), "seed": self.seed, "created": self._created,
            "finished": _now(), "metrics": to_jsonable(self.metrics), **to_jsonable(self.extra),
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
    return json.loads(path.read_text())


def load_bundle(data_artifact):
    """Rebuild the :class:`DataBundle` described by an ingest artifact."""
    from bridging_tf import datasets
    spec = dataset_spec(data_artifact)
    return datasets.load(spec["name"], **spec["options"])


__all__ = ["ARTIFACT_FILE", "ArtifactWriter", "dataset_spec", "fingerprint", "load_bundle",
           "package_versions", "read_artifact", "to_jsonable", "write_json"]
