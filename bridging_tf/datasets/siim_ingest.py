"""SIIM-FISABIO-RSNA ingestion: the competition's DICOMs -> de-identified TFRecord shards.

:func:`prepare_siim` (the ``ingest`` step, registered in ``_PREPARE`` as
``bridging_tf.datasets.siim:prepare_siim``) reads the Kaggle competition layout ::

    <data_dir>/train_study_level.csv   id=<StudyInstanceUID>_study, one-hot classes
    <data_dir>/train_image_level.csv   id=<image>_image, ..., StudyInstanceUID
    <data_dir>/train/<StudyInstanceUID>/<SeriesInstanceUID>/<image>.dcm

keeps the studies labelled "Negative for Pneumonia" (label 0) or "Typical Appearance"
(label 1) — the paper's two classes; the others are counted and excluded — takes the
private label from PatientSex (0010,0040) (``M`` -> 0, ``F`` -> 1; anything else is a
counted skip), converts the pixels (:mod:`bridging_tf.datasets.dicom`) and writes sharded
TFRecords of de-identified ``tf.train.Example``s (``image`` PNG, ``label``, ``private``,
``study_hash`` = HMAC-SHA256(salt, StudyInstanceUID)[:32]), plus ``labels.json`` and
``manifest.json`` (counts: written, skipped by reason, per split). The split is 85/5/10
**by patient** (PatientID, else the study), seeded. Every file is written to a temporary
name and renamed when complete (:mod:`bridging_tf.fileio`); a bad file is a counted skip,
never fatal.

The salt comes from ``salt=`` (``--salt`` of ``python -m components.ingest_siim``) or
``$BRIDGING_TF_SIIM_SALT``; without either a random one is drawn and not stored, so hashes
cannot be linked back. The salt is never written to any output.

The loader of the prepared folder is :func:`bridging_tf.datasets.siim.load_siim`, which
also re-exports :func:`prepare_siim` and :func:`split_patients`.

Example::

    manifest = prepare_siim("/data/siim", "/tmp/siim_prepared", image_size=448, workers=2)
    manifest["counts"]["written"], manifest["counts"]["skipped"]["sex_other"]
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import multiprocessing
import os
import secrets
import time
from collections import Counter, deque
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from bridging_tf import fileio
from bridging_tf.datasets import dicom
from bridging_tf.datasets.checks import check_seed
from bridging_tf.errors import DataError, UserError
from bridging_tf.options import SiimPrepareOptions as _OPTS

STUDY_CSV = "train_study_level.csv"
IMAGE_CSV = "train_image_level.csv"
CLASS_COLUMNS = ("Negative for Pneumonia", "Typical Appearance", "Indeterminate Appearance",
                 "Atypical Appearance")
#: study class -> label; the other two classes are excluded (and counted).
TARGET_CLASSES = {"Negative for Pneumonia": 0, "Typical Appearance": 1}
CLASS_NAMES = ("negative", "typical")
PRIVATE_NAMES = dicom.PRIVATE_NAMES
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.85, 0.05, 0.10)
MANIFEST = "manifest.json"
LABELS = "labels.json"
FORMAT = "bridging_tf.siim.tfrecord/1"
SALT_ENV = "BRIDGING_TF_SIIM_SALT"

#: every skip reason the manifest can report (all are always present, 0 when unused), in the
#: order they are checked; an image is counted once, under the first reason that applies.
#: Counts are of images (CSV rows or files), not studies.
SKIP_REASONS = (
    "duplicate_csv_row",         # a second train_image_level.csv row with the same image id
    "study_without_label",       # image row whose study is not in train_study_level.csv
    "excluded_class",            # study labelled Indeterminate / Atypical (or no class set)
    "csv_image_without_file",    # image row with no .dcm under train/
    "file_without_csv_row",      # .dcm under train/ that no image row names
    "duplicate_file",            # a second .dcm with an already seen image id
    "unreadable_dicom",          # not DICOM / truncated or corrupt header
    "no_pixel_data",
    "unsupported_transfer_syntax",
    "sex_missing",               # PatientSex absent or empty
    "sex_other",                 # PatientSex not M/F (e.g. 'O')
    "pixel_decode_error",        # pixel data truncated / corrupt / undecodable
    "constant_image",
)


# --------------------------------------------------------------------------- CSVs and files

def _read_csv(path: Path, required: Sequence[str]) -> list:
    if not path.is_file():
        raise DataError(f"--data_dir: {path} is missing (expected the SIIM competition layout)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _study_classes(rows) -> dict:
    """study UID -> class name (the one-hot column set to 1), or None when none/several."""
    out = {}
    for row in rows:
        sid = row["id"].strip()
        uid = sid[:-len("_study")] if sid.endswith("_study") else sid
        hot = [c for c in CLASS_COLUMNS if str(row.get(c, "0")).strip() in ("1", "1.0")]
        out[uid] = hot[0] if len(hot) == 1 else None
    return out


def _scan_files(train_dir: Path):
    """image id -> (study UID from the folder, path); plus duplicate count."""
    files, dup = {}, 0
    for root, dirs, names in os.walk(train_dir):
        dirs.sort()  # deterministic order: the first of two same-named files is kept
        for name in sorted(names):
            if not name.lower().endswith(".dcm"):
                continue
            path = Path(root) / name
            rel = path.relative_to(train_dir).parts
            stem = name[:-4]
            if stem in files:
                dup += 1
                continue
            files[stem] = (rel[0] if len(rel) >= 2 else "", str(path))
    return files, dup


def _join(image_rows, classes: dict, files: dict, skipped: Counter, excluded_by_class: Counter):
    """The image rows with a labelled target-class study and a file, in CSV order:
    ``[(image_id, study_uid, label, path)]``; every other row or file is counted."""
    candidates, seen_ids = [], set()
    for row in image_rows:
        iid = row["id"].strip()
        iid = iid[:-len("_image")] if iid.endswith("_image") else iid
        if iid in seen_ids:
            skipped["duplicate_csv_row"] += 1
            continue
        seen_ids.add(iid)
        study_uid = row["StudyInstanceUID"].strip()
        if study_uid not in classes:
            skipped["study_without_label"] += 1
            continue
        cls = classes[study_uid]
        if cls not in TARGET_CLASSES:
            skipped["excluded_class"] += 1
            excluded_by_class[cls or "none"] += 1
            continue
        if iid not in files:
            skipped["csv_image_without_file"] += 1
            continue
        candidates.append((iid, study_uid, TARGET_CLASSES[cls], files[iid][1]))
    skipped["file_without_csv_row"] = sum(1 for iid in files if iid not in seen_ids)
    return candidates


# --------------------------------------------------------------------------- parallel map

def _mp_context(start_method: Optional[str] = None):
    # fork by default: the workers need no TensorFlow and inherit the imported pydicom
    # plugins (spawn would re-import TensorFlow through the package in every worker).
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    if start_method not in methods:
        raise UserError(f"start_method={start_method!r}: choose one of {', '.join(methods)}")
    return multiprocessing.get_context(start_method)


#: Seconds between two looks of a pool worker's watchdog at its parent process.
WATCHDOG_INTERVAL_S = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(parent_pid: int) -> None:
    """Pool worker start-up: die with the parent, never linger as an orphan.

    A killed ingestion (``kill -9``, an OOM kill) used to leave its workers blocked
    on the task queue forever, parented to PID 1. On Linux the kernel is asked to
    SIGKILL the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)`` through
    ctypes); everywhere a daemon thread also checks the parent PID every
    :data:`WATCHDOG_INTERVAL_S` and exits the worker once it changed (the parent
    is gone and the worker was re-parented). The workers only convert files and
    return results, so nothing is lost by ending them abruptly. (The kernel signal
    follows the *thread* that started the worker: :func:`prepare_siim`'s own, which
    shuts its pool down before it returns.)
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc prctl: the watchdog below still works
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="siim-parent-watchdog").start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL_S)
        if os.getppid() != parent_pid:
            os._exit(1)


@contextlib.contextmanager
def _pool(workers: int, start_method: Optional[str]):
    """A process pool of ``workers`` (None for 1: work inline), shut down on the way out."""
    ctx = _mp_context(start_method)
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                  initargs=(os.getpid(),)) if workers > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _cpu_seconds() -> float:
    """User+system CPU of this process and its reaped children (the pool's workers)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _ordered_map(pool, fn, items: Iterable, window: int):
    """``map(fn, items)`` in order with at most ``window`` tasks in flight (bounded memory)."""
    if pool is None:
        for item in items:
            yield fn(*item)
        return
    pending = deque()
    for item in items:
        pending.append(pool.submit(fn, *item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --------------------------------------------------------------------------- split

def _check_fractions(fractions) -> None:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(np.isfinite(values)) or any(f < 0 for f in values) \
            or not np.isclose(sum(values), 1.0):
        raise UserError(f"split_fractions={fractions}: need three non-negative fractions "
                        "summing to 1")


def split_patients(patient_keys: Sequence[str], seed: int = 0,
                   fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict:
    """patient key -> split name, 85/5/10 of the *patients*, seeded.

    Patients are sorted, then shuffled with ``seed``; val and test take
    ``round(f * n)`` patients each (at least one each once there are three or
    more patients), train the rest. A patient is in exactly one split.
    """
    keys = sorted(set(patient_keys))
    n = len(keys)
    _check_fractions(fractions)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    out = {}
    for rank, idx in enumerate(order):
        out[keys[idx]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


# --------------------------------------------------------------------------- shard writing

class _ShardWriter:
    """TFRecord shards of one split; each shard has a temporary name until closed, then is
    renamed (:func:`bridging_tf.fileio.atomic_path`); ``abort()`` removes an open one."""

    def __init__(self, out_dir: Path, split: str, per_shard: int):
        self.out_dir, self.split, self.per_shard = out_dir, split, int(per_shard)
        self.shards, self.counts = [], []
        self._writer, self._file = None, None

    def write(self, record: bytes):
        import tensorflow as tf

        if self._writer is None:
            name = f"{self.split}-{len(self.shards):05d}.tfrecord"
            self._file = fileio.atomic_path(self.out_dir / name)
            self._writer = tf.io.TFRecordWriter(str(self._file.__enter__()))
            self.shards.append(name)
            self.counts.append(0)
        self._writer.write(record)
        self.counts[-1] += 1
        if self.counts[-1] >= self.per_shard:
            self.close()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._file.__exit__(None, None, None)  # rename onto the shard's name
            self._writer, self._file = None, None

    def abort(self):
        if self._writer is not None:
            self._writer.close()
            aborted = RuntimeError("shard aborted")
            self._file.__exit__(RuntimeError, aborted, None)  # remove the temporary file
            self.shards.pop()
            self.counts.pop()
            self._writer, self._file = None, None


# --------------------------------------------------------------------------- prepare

def prepare_siim(data_dir, output_dir, /, *, image_size: int = _OPTS.image_size,
                 bit_depth: int = _OPTS.bit_depth, voi: bool = _OPTS.voi,
                 seed: int = _OPTS.seed, salt: Optional[str] = None,
                 workers: Optional[int] = None,
                 examples_per_shard: int = _OPTS.examples_per_shard,
                 split_fractions: Sequence[float] = SPLIT_FRACTIONS,
                 max_images: Optional[int] = None, start_method: Optional[str] = None,
                 **unused) -> dict:
    """Competition folder -> de-identified TFRecord shards + manifest (see module doc).

    Args:
      data_dir: folder with the two CSVs and ``train/``.
      output_dir: created if needed; receives ``<split>-NNNNN.tfrecord``,
        ``labels.json`` and ``manifest.json`` (written last).
      image_size: output side in pixels (448 in the paper); 0 keeps the size.
      bit_depth: 8 (uint8 PNG) or 16 (uint16 PNG).
      voi: apply the VOI LUT / window before min-max scaling.
      seed: patient split seed.  salt: key of the study hash (see module doc).
      workers: processes for header reading and pixel conversion (1 = inline;
        default: the CPU count, at most 8). They exit when this process dies
        (:func:`_worker_init`).
      examples_per_shard: records per TFRecord shard (at least 1).
      max_images: convert at most this many usable images (quick runs; at least 1).
      start_method: multiprocessing start method of the pool (default ``fork`` where
        available, else ``spawn``).
      **unused: other loader options (``data_dir`` again, ``train_size``...) are ignored.

    Returns the manifest dict.

    Example::

        m = prepare_siim("/data/siim", "/tmp/siim", image_size=64, workers=2)
        m["counts"]["written"], m["counts"]["skipped"]["sex_other"]
    """
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    data_dir, output_dir, image_size, seed, workers = _checked_arguments(
        data_dir, output_dir, image_size=image_size, bit_depth=bit_depth, seed=seed, salt=salt,
        workers=workers, examples_per_shard=examples_per_shard,
        split_fractions=split_fractions, max_images=max_images)
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise DataError(f"--data_dir: {train_dir} is missing "
                        "(expected the SIIM competition layout)")
    study_rows = _read_csv(data_dir / STUDY_CSV, ("id",) + CLASS_COLUMNS)
    image_rows = _read_csv(data_dir / IMAGE_CSV, ("id", "StudyInstanceUID"))
    salt, salt_source = _salt(salt)

    skipped = Counter({r: 0 for r in SKIP_REASONS})
    excluded_by_class, unsupported_ts = Counter(), Counter()
    files, skipped["duplicate_file"] = _scan_files(train_dir)
    candidates = _join(image_rows, _study_classes(study_rows), files, skipped, excluded_by_class)

    _clear_outputs(output_dir)
    writers = {s: _ShardWriter(output_dir, s, examples_per_shard) for s in SPLITS}
    try:
        with _pool(workers, start_method) as pool:
            usable = _read_headers(pool, candidates, 16 * workers, skipped, unsupported_ts)
            if max_images is not None:
                usable = usable[:int(max_images)]
            assign = split_patients([u[3] for u in usable], seed=seed, fractions=split_fractions)
            labels, stats = _write_examples(
                pool, usable, assign, writers, salt, skipped, window=4 * workers,
                image_size=image_size, bit_depth=bit_depth, voi=voi)
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise

    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    written = {s: len(labels[s]["label"]) for s in SPLITS}
    total = sum(written.values())
    mean, std = _mean_std(stats)
    n_patients = Counter(assign.values())
    manifest = {
        "format": FORMAT,
        "dataset": "siim-fisabio-rsna covid19 (train)",
        "image_size": image_size, "bit_depth": bit_depth, "channels": 1, "voi": bool(voi),
        "features": list(dicom.FEATURE_KEYS),
        "class_names": list(CLASS_NAMES), "target_classes": dict(TARGET_CLASSES),
        "private_names": list(PRIVATE_NAMES), "private_encoding": dict(dicom.SEX_TO_PRIVATE),
        "study_hash": "HMAC-SHA256(salt, StudyInstanceUID) first 32 hex digits; salt not stored",
        "salt_source": salt_source,
        "seed": int(seed), "split_unit": "patient (PatientID, else StudyInstanceUID)",
        "split_fractions": [float(f) for f in split_fractions],
        "train_mean": float(mean), "train_std": float(std),
        "splits": {s: {"shards": writers[s].shards, "shard_counts": writers[s].counts,
                       "count": written[s], "patients": int(n_patients.get(s, 0)),
                       "label_counts": _counts(labels[s]["label"], 2),
                       "private_counts": _counts(labels[s]["private"], 2)} for s in SPLITS},
        "counts": {
            "csv_study_rows": len(study_rows), "csv_image_rows": len(image_rows),
            "files_found": len(files) + skipped["duplicate_file"],
            "candidates": len(candidates), "usable_headers": len(usable),
            "written": total, "written_by_split": written,
            "skipped": dict(skipped), "skipped_total": int(sum(skipped.values())),
            "excluded_by_class": dict(excluded_by_class),
        },
        "unsupported_transfer_syntaxes": dict(unsupported_ts),
        "workers": workers, "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
        "images_per_s": round(total / elapsed, 3) if elapsed > 0 else None,
        "images_per_cpu_s": round(total / cpu, 3) if cpu > 0 else None,
    }
    fileio.write_json(output_dir / LABELS, labels, indent=1)
    fileio.write_json(output_dir / MANIFEST, manifest, indent=1)  # last: the folder is complete
    return manifest


def _checked_arguments(data_dir, output_dir, *, image_size, bit_depth, seed, salt, workers,
                       examples_per_shard, split_fractions, max_images):
    """The argument checks of :func:`prepare_siim` (one-line ``UserError``s); returns
    ``(data_dir, output_dir, image_size, seed, workers)`` normalised."""
    if data_dir in (None, ""):
        raise UserError("--data_dir is required for --dataset=siim (the competition folder)")
    if output_dir in (None, ""):
        raise UserError("--output_dir is required (where the shards go)")
    data_dir, output_dir = Path(data_dir).expanduser(), Path(output_dir).expanduser()
    if bit_depth not in (8, 16):
        raise UserError(f"bit_depth={bit_depth}: choose 8 or 16")
    image_size = int(image_size or 0)
    if image_size < 0:
        raise UserError(f"--image_size={image_size} must be positive")
    if int(examples_per_shard) < 1:
        raise UserError(f"--examples_per_shard={examples_per_shard} must be at least 1")
    if workers is not None and int(workers) < 0:
        raise UserError(f"--workers={workers} must be >= 0 (0 = one per CPU, at most 8)")
    if max_images is not None and int(max_images) < 1:
        raise UserError(f"max_images={max_images} must be at least 1")
    if salt is not None and not str(salt).strip():
        raise UserError("--salt is empty; pass a secret, or leave it out for a random one")
    seed = check_seed(seed)
    _check_fractions(split_fractions)
    workers = max(1, int(workers if workers else min(os.cpu_count() or 1, 8)))
    return data_dir, output_dir, image_size, seed, workers


def _salt(salt: Optional[str]):
    """(salt, how it was chosen): ``salt``, else ``$BRIDGING_TF_SIIM_SALT``, else random."""
    if salt is None:
        salt = os.environ.get(SALT_ENV)
    if salt:
        return salt, "given"
    return secrets.token_hex(32), "random (not stored)"


def _clear_outputs(output_dir: Path) -> None:
    """Create ``output_dir``; remove a previous run's files, the manifest before anything
    (no stale manifest can point at shards of another run)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in [output_dir / MANIFEST, output_dir / LABELS] + sorted(
            output_dir.glob("*.tfrecord")) + sorted(output_dir.glob("*.tmp")):
        stale.unlink(missing_ok=True)


def _read_headers(pool, candidates, window: int, skipped: Counter, unsupported_ts: Counter):
    """The candidates whose headers are usable (cheap: patient, sex, transfer syntax, pixel
    presence): ``[(study_uid, label, path, patient_key, private)]``; the others are counted."""
    usable = []
    infos = _ordered_map(pool, dicom.read_header, ((c[3],) for c in candidates), window)
    for (_iid, study_uid, label, path), info in zip(candidates, infos):
        status = info["status"]
        if status != "ok":
            skipped[status] += 1
            if status == "unsupported_transfer_syntax":
                unsupported_ts[info.get("transfer_syntax") or "missing"] += 1
            continue
        usable.append((study_uid, label, path, info["patient_key"] or f"study:{study_uid}",
                       dicom.SEX_TO_PRIVATE[info["sex"]]))
    return usable


def _write_examples(pool, usable, assign: dict, writers: dict, salt: str, skipped: Counter, *,
                    window: int, image_size: int, bit_depth: int, voi: bool):
    """Convert the pixels and stream the examples into each split's shards, in order.

    Returns ``labels`` (split -> ``{"label": [...], "private": [...]}``, the shard order)
    and the training pixels' ``{"sum", "sumsq", "pixels"}``.
    """
    labels = {s: {"label": [], "private": []} for s in SPLITS}
    stats = {"sum": 0.0, "sumsq": 0.0, "pixels": 0}
    jobs = [(u[2], image_size or None, bit_depth, voi) for u in usable]
    for (study_uid, label, _path, pkey, private), res in zip(
            usable, _ordered_map(pool, dicom.convert_file, jobs, window)):
        if res["status"] != "ok":
            skipped[res["status"]] += 1
            continue
        split = assign[pkey]
        ex = dicom.make_example(res["png"], label, private, dicom.study_hash(study_uid, salt))
        writers[split].write(ex.SerializeToString())
        labels[split]["label"].append(int(label))
        labels[split]["private"].append(int(private))
        if split == "train":
            for k in stats:
                stats[k] += res[k]
    return labels, stats


def _mean_std(stats: dict):
    """Mean and std of the training pixels (0.5, 0.5 when there are none)."""
    if not stats["pixels"]:
        return 0.5, 0.5
    mean = stats["sum"] / stats["pixels"]
    return mean, float(np.sqrt(max(stats["sumsq"] / stats["pixels"] - mean ** 2, 1e-12)))


def _counts(values, k):
    return [int(c) for c in np.bincount(np.asarray(values, np.int64), minlength=k)[:k]] \
        if len(values) else [0] * k


__all__ = ["CLASS_COLUMNS", "CLASS_NAMES", "PRIVATE_NAMES", "SKIP_REASONS", "SPLITS",
           "prepare_siim", "split_patients"]
