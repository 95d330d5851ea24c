"""SIIM-FISABIO-RSNA COVID-19 chest X-rays (paper Sec. 4.3, Table 4).

Two steps, because the raw data are hospital DICOMs:

1. :func:`prepare_siim` (the ``ingest`` step, registered in ``_PREPARE``)
   reads the Kaggle competition layout ::

       <data_dir>/train_study_level.csv   id=<StudyInstanceUID>_study, one-hot classes
       <data_dir>/train_image_level.csv   id=<image>_image, ..., StudyInstanceUID
       <data_dir>/train/<StudyInstanceUID>/<SeriesInstanceUID>/<image>.dcm

   keeps the studies labelled "Negative for Pneumonia" (label 0) or
   "Typical Appearance" (label 1) — the paper's two classes; the others are
   counted and excluded — takes the private label from PatientSex (0010,0040)
   (``M`` -> 0, ``F`` -> 1; anything else is a counted skip), converts the
   pixels (:mod:`bridging_tf.datasets.dicom`) and writes sharded TFRecords
   of de-identified ``tf.train.Example``s (``image`` PNG, ``label``,
   ``private``, ``study_hash`` = HMAC-SHA256(salt, StudyInstanceUID)[:32]),
   plus ``labels.json`` and ``manifest.json`` (counts: written, skipped by
   reason, per split). The split is 85/5/10 **by patient** (PatientID, else
   the study), seeded. Shards are written to a temporary name and renamed
   when complete; a bad file is a counted skip, never fatal.
2. :func:`load_siim` (``datasets.load("siim", data_dir=<prepared dir>)``)
   streams those shards through tf.data: PNG decode, resize to
   ``image_size`` if it differs, grayscale -> ``channels`` (1 or 3),
   normalisation with the training-set mean/std measured at ingestion
   (or ImageNet's with ``normalization="imagenet"``), optional horizontal
   flip augmentation. Splits: ``train``, ``val``, ``attack_train`` (= the
   training images), ``attack_val`` (= ``val``), ``test`` (primary eval).

The salt comes from ``salt=`` (``--salt`` of ``python -m components.ingest_siim``)
or ``$BRIDGING_TF_SIIM_SALT``; without either a random one is drawn and not
stored, so hashes cannot be linked back. The salt is never written to any output.

:func:`write_synthetic_competition` writes a tiny fake competition folder (tests,
demos, benchmarks); :func:`benchmark_ingest` times a whole ingestion.

Example::

    manifest = prepare_siim("/data/siim", "/tmp/siim_prepared", image_size=448, workers=2)
    bundle = load_siim("/tmp/siim_prepared", channels=3)
    for x, y in bundle["train"].dataset(16, shuffle=True).take(1):
        print(x.shape, y["label"], y["private"])    # (16, 448, 448, 3) ...
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import multiprocessing
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from bridging_tf.datasets import dicom
from bridging_tf.datasets.checks import check_seed
from bridging_tf.errors import DataError, UserError

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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
    """TFRecord shards of one split; each shard is ``.tmp`` until closed, then renamed."""

    def __init__(self, out_dir: Path, split: str, per_shard: int):
        self.out_dir, self.split, self.per_shard = out_dir, split, int(per_shard)
        self.shards, self.counts = [], []
        self._writer, self._n, self._tmp = None, 0, None

    def write(self, record: bytes):
        import tensorflow as tf

        if self._writer is None:
            name = f"{self.split}-{len(self.shards):05d}.tfrecord"
            self._tmp = self.out_dir / (name + ".tmp")
            self._writer = tf.io.TFRecordWriter(str(self._tmp))
            self.shards.append(name)
            self.counts.append(0)
        self._writer.write(record)
        self.counts[-1] += 1
        if self.counts[-1] >= self.per_shard:
            self.close()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            os.replace(self._tmp, self.out_dir / self.shards[-1])
            self._writer, self._tmp = None, None

    def abort(self):
        if self._writer is not None:
            self._writer.close()
            Path(self._tmp).unlink(missing_ok=True)
            self.shards.pop()
            self.counts.pop()
            self._writer = None


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- prepare

def prepare_siim(data_dir, output_dir, /, *, image_size: int = 448, bit_depth: int = 8,
                 voi: bool = True, seed: int = 0, salt: Optional[str] = None,
                 workers: Optional[int] = None, examples_per_shard: int = 256,
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
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise DataError(f"--data_dir: {train_dir} is missing "
                        "(expected the SIIM competition layout)")
    study_rows = _read_csv(data_dir / STUDY_CSV, ("id",) + CLASS_COLUMNS)
    image_rows = _read_csv(data_dir / IMAGE_CSV, ("id", "StudyInstanceUID"))
    if salt is None:
        salt = os.environ.get(SALT_ENV)
    salt_source = "given" if salt else "random (not stored)"
    if not salt:
        salt = secrets.token_hex(32)

    skipped = Counter({r: 0 for r in SKIP_REASONS})
    excluded_by_class = Counter()
    unsupported_ts = Counter()
    classes = _study_classes(study_rows)
    files, skipped["duplicate_file"] = _scan_files(train_dir)

    # 1. join the CSVs with the files
    candidates = []  # (image_id, study_uid, label, path)
    seen_ids = set()
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

    output_dir.mkdir(parents=True, exist_ok=True)
    # a previous run's files go first, the manifest before anything (no stale manifest
    # can point at shards of another run)
    for stale in [output_dir / MANIFEST, output_dir / LABELS] + sorted(
            output_dir.glob("*.tfrecord")) + sorted(output_dir.glob("*.tmp")):
        stale.unlink(missing_ok=True)
    writers = {s: _ShardWriter(output_dir, s, examples_per_shard) for s in SPLITS}
    ctx = _mp_context(start_method)
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                  initargs=(os.getpid(),)) if workers > 1 else None
    window = 4 * workers
    try:
        # 2. headers (cheap): patient, sex, transfer syntax, pixel presence
        usable = []  # (study_uid, label, path, patient_key, private)
        for cand, info in zip(candidates, _ordered_map(
                pool, dicom.read_header, ((c[3],) for c in candidates), 16 * workers)):
            status = info["status"]
            if status != "ok":
                skipped[status] += 1
                if status == "unsupported_transfer_syntax":
                    unsupported_ts[info.get("transfer_syntax") or "missing"] += 1
                continue
            _iid, study_uid, label, path = cand
            usable.append((study_uid, label, path, info["patient_key"] or f"study:{study_uid}",
                           dicom.SEX_TO_PRIVATE[info["sex"]]))
        if max_images is not None:
            usable = usable[:int(max_images)]

        # 3. split by patient
        assign = split_patients([u[3] for u in usable], seed=seed, fractions=split_fractions)
        n_patients = Counter(assign.values())

        # 4. pixels, streamed into the shards of each split
        labels = {s: {"label": [], "private": []} for s in SPLITS}
        stats = {"sum": 0.0, "sumsq": 0.0, "pixels": 0}
        jobs = [(u[2], image_size or None, bit_depth, voi) for u in usable]
        for u, res in zip(usable, _ordered_map(pool, dicom.convert_file, jobs, window)):
            if res["status"] != "ok":
                skipped[res["status"]] += 1
                continue
            study_uid, label, _path, pkey, private = u
            split = assign[pkey]
            ex = dicom.make_example(res["png"], label, private, dicom.study_hash(study_uid, salt))
            writers[split].write(ex.SerializeToString())
            labels[split]["label"].append(int(label))
            labels[split]["private"].append(int(private))
            if split == "train":
                for k in stats:
                    stats[k] += res[k]
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    if stats["pixels"]:
        mean = stats["sum"] / stats["pixels"]
        std = float(np.sqrt(max(stats["sumsq"] / stats["pixels"] - mean ** 2, 1e-12)))
    else:
        mean, std = 0.5, 0.5
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    written = {s: len(labels[s]["label"]) for s in SPLITS}
    total = sum(written.values())
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
    _write_json_atomic(output_dir / LABELS, labels)
    _write_json_atomic(output_dir / MANIFEST, manifest)
    return manifest


def _counts(values, k):
    return [int(c) for c in np.bincount(np.asarray(values, np.int64), minlength=k)[:k]] \
        if len(values) else [0] * k


def benchmark_ingest(data_dir, workers: int = 1, image_size: int = 448, **options) -> float:
    """Images/s of :func:`prepare_siim` (whole run, wall clock) into a temporary folder.

    Example::

        ips1 = benchmark_ingest("/data/siim", workers=1)
        ips2 = benchmark_ingest("/data/siim", workers=2)
    """
    tmp = tempfile.mkdtemp(prefix="siim_bench_")
    try:
        t0 = time.perf_counter()
        m = prepare_siim(data_dir, tmp, image_size=image_size, workers=workers, salt="benchmark",
                         **options)
        dt = time.perf_counter() - t0
        return m["counts"]["written"] / dt if dt > 0 else float("nan")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# --------------------------------------------------------------------------- synthetic data

def write_synthetic_competition(root, n_studies: int = 12, image_shape=(96, 80), seed: int = 0,
                                transfer_syntaxes: Sequence[str] = ("explicit",),
                                classes: Optional[Sequence[str]] = None,
                                patient_tags: Optional[dict] = None,
                                patient_id_prefix: str = "P") -> dict:
    """Write a tiny fake competition folder (for tests, demos and benchmarks).

    One study / series / image per ``i``; PatientID ``<prefix><i // 2>`` (two studies
    per patient), sex ``F`` for patients 0, 1, then ``M`` for 2, 3, and so on, classes
    cycling through the
    four study classes unless ``classes`` is given. Pixels are 12-bit
    MONOCHROME2 (MONOCHROME1 for every third study) with a label- and
    sex-dependent pattern. ``transfer_syntaxes`` cycles over ``explicit``,
    ``implicit``, ``rle``, ``jpeg2000`` (lossless), ``jpeg_baseline`` (8-bit,
    Pillow-encoded and encapsulated). ``patient_tags`` adds identifying tags
    (PatientName, PatientBirthDate, ...) to every file.

    Returns ``{"studies": [StudyInstanceUID...], "images": [image id...], "paths": [...]}``.

    Example::

        write_synthetic_competition("/tmp/siim_raw", n_studies=12,
                                    transfer_syntaxes=("explicit", "rle", "jpeg2000"))
    """
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = list(classes) if classes is not None else [
        CLASS_COLUMNS[i % 4] for i in range(n_studies)]
    study_lines = [",".join(("id",) + CLASS_COLUMNS)]
    image_lines = ["id,boxes,label,StudyInstanceUID"]
    out = {"studies": [], "images": [], "paths": []}
    for i in range(n_studies):
        study_uid = f"1.2.826.0.1.3680043.10.999.{seed}.{i + 1}.1"
        series_uid = f"1.2.826.0.1.3680043.10.999.{seed}.{i + 1}.2"
        image_id = f"{seed:02x}{i:04x}a{rng.integers(0, 16 ** 5):05x}"
        cls = classes[i]
        patient = i // 2
        sex = "F" if (patient // 2) % 2 == 0 else "M"
        label = 1 if cls == "Typical Appearance" else 0
        img = _synthetic_pixels(rng, image_shape, label, sex)
        mono1 = i % 3 == 2
        if mono1:
            img = 4095 - img
        ts = transfer_syntaxes[i % len(transfer_syntaxes)]
        path = root / "train" / study_uid / series_uid / f"{image_id}.dcm"
        write_dicom(path, img, transfer_syntax=ts, photometric="MONOCHROME1" if mono1 else
                    "MONOCHROME2", study_uid=study_uid, series_uid=series_uid,
                    patient_id=f"{patient_id_prefix}{patient:03d}", sex=sex,
                    extra_tags=patient_tags)
        study_lines.append(f"{study_uid}_study," + ",".join(
            "1" if c == cls else "0" for c in CLASS_COLUMNS))
        image_lines.append(f"{image_id}_image,,none 1 0 0 1 1,{study_uid}")
        out["studies"].append(study_uid)
        out["images"].append(image_id)
        out["paths"].append(str(path))
    (root / STUDY_CSV).write_text("\n".join(study_lines) + "\n")
    (root / IMAGE_CSV).write_text("\n".join(image_lines) + "\n")
    return out


def _synthetic_pixels(rng, shape, label: int, sex: str) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 1200 + 600 * (yy / h) + rng.normal(0, 60, size=shape)
    # "lungs": two darker ellipses; sex changes their width, label adds an opacity
    for cx in (0.3 * w, 0.7 * w):
        rx = (0.14 if sex == "F" else 0.18) * w
        inside = ((xx - cx) / rx) ** 2 + ((yy - 0.45 * h) / (0.3 * h)) ** 2 < 1
        img[inside] -= 700
    if label:
        img[((xx - 0.3 * w) ** 2 + (yy - 0.55 * h) ** 2) < (0.08 * w) ** 2] += 900
    img[:, int(0.45 * w):int(0.55 * w)] += 1500  # mediastinum
    return np.clip(np.round(img), 0, 4095).astype(np.uint16)


def write_dicom(path, pixels: np.ndarray, transfer_syntax: str = "explicit",
                photometric: str = "MONOCHROME2", study_uid: str = "1.2.3",
                series_uid: str = "1.2.3.4",
                patient_id: Optional[str] = "P000", sex: Optional[str] = "F",
                extra_tags: Optional[dict] = None, bits_stored: int = 12):
    """Write a single-frame grayscale CR DICOM (see :func:`write_synthetic_competition`).

    ``sex=None`` / ``patient_id=None`` leave the tag out. For ``jpeg_baseline``
    the pixels are scaled to 8 bits first.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, sop
    ds.Modality = "CR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    if patient_id is not None:
        ds.PatientID = patient_id
    if sex is not None:
        ds.PatientSex = sex
    for key, value in (extra_tags or {}).items():
        setattr(ds, key, value)
    pixels = np.asarray(pixels)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.PixelRepresentation = 0
    if transfer_syntax == "jpeg_baseline":
        from PIL import Image

        p8 = np.round(pixels.astype(np.float64) * 255.0 / max(1, (1 << bits_stored) - 1))
        buf = io.BytesIO()
        Image.fromarray(p8.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=95)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        if transfer_syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        elif transfer_syntax == "rle":
            ds.compress(RLELossless)
        elif transfer_syntax == "jpeg2000":
            ds.compress(JPEG2000Lossless)
        elif transfer_syntax != "explicit":
            raise ValueError(f"unknown transfer syntax {transfer_syntax!r}")
    ds.save_as(path, enforce_file_format=True)
    return path


__all__ = ["CLASS_NAMES", "PRIVATE_NAMES", "SKIP_REASONS", "TFRecordSplit", "benchmark_ingest",
           "load_siim", "prepare_siim", "read_manifest", "split_patients", "write_dicom",
           "write_synthetic_competition"]
