"""SIIM ingestion bad input: damaged compressed pixel data, bad options, orphaned workers.

Every damaged file is generated here (``write_dicom``; the real CR file is only read
and re-encoded into ``tmp_path``). A file the decoder can tell is damaged must be a
counted ``pixel_decode_error``, never a training record; see data/siim.md for what
cannot be told.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from bridging_tf.datasets import dicom, siim, siim_ingest
from bridging_tf.datasets.siim import prepare_siim
from bridging_tf.errors import DataError, UserError
from tests._synthetic_dicom import synthetic_pixels, write_dicom, write_synthetic_competition
from tests.conftest import REPO, shared_path

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
TARGETS = ("Negative for Pneumonia", "Typical Appearance")


def _image(shape=(256, 256), seed=0):
    rng = np.random.default_rng(seed)
    return synthetic_pixels(rng, shape, 1, "F")


def _frame(path) -> bytes:
    ds = pydicom.dcmread(path)
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def garble(path, n_bytes: int, seed: int) -> None:
    """Overwrite ``n_bytes`` random bytes in the middle of the file's compressed stream."""
    blob = bytearray(Path(path).read_bytes())
    frame = _frame(path)
    start = blob.find(frame) + (len(frame) - n_bytes) // 2
    assert len(frame) > n_bytes + 200
    blob[start:start + n_bytes] = np.random.default_rng(seed).bytes(n_bytes)
    Path(path).write_bytes(bytes(blob))


def replace_stream(path, stream: bytes) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([stream])
    ds.save_as(path, enforce_file_format=True)


def _decodes_without_error(path) -> bool:
    try:
        pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001
        return False
    return True


def _status(path):
    return dicom.convert_file(str(path), 32)["status"]


# ---------------------------------------------------------------- damaged compressed streams

def test_jpeg_with_4000_random_bytes_that_decodes_anyway_is_a_decode_error(tmp_path):
    """The issue's case: random bytes over a JPEG stream; pydicom (Pillow / pylibjpeg)
    still returns an image for some of them. Those must be caught by the marker check."""
    src = write_dicom(tmp_path / "src.dcm", _image((512, 512)), transfer_syntax="jpeg_baseline")
    assert _status(src) == "ok"
    silent = 0
    for seed in range(8):
        path = tmp_path / f"bad{seed}.dcm"
        path.write_bytes(src.read_bytes())
        garble(path, 4000, seed)
        silent += _decodes_without_error(path)
        out = dicom.convert_file(str(path), 32)
        assert out["status"] == "pixel_decode_error", (seed, out)
    assert silent >= 1  # the decoders alone let at least one through: the check is needed


def test_real_cr_jpeg_compressed_then_garbled_is_a_decode_error(tmp_path):
    ds = pydicom.dcmread(shared_path("cxr_dicom", "RG1_UNCI.dcm"))
    pixels = np.minimum(ds.pixel_array[::4, ::4], 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", pixels, transfer_syntax="jpeg_baseline")
    assert _status(path) == "ok"
    garble(path, 4000, seed=1)
    assert _status(path) == "pixel_decode_error"


def test_jpeg_frame_size_disagreeing_with_rows_columns_is_a_decode_error(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", _image((64, 48)), transfer_syntax="jpeg_baseline")
    ds = pydicom.dcmread(path)
    ds.Rows = 80  # the JPEG frame says 64 rows
    ds.save_as(path, enforce_file_format=True)
    out = dicom.convert_file(str(path), 32)
    assert out["status"] == "pixel_decode_error" and "Rows=80" in out["detail"]


def test_jpeg_stream_cut_before_its_end_marker_is_a_decode_error(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", _image((128, 128)), transfer_syntax="jpeg_baseline")
    stream = _frame(path)
    replace_stream(path, stream[:len(stream) * 2 // 3])  # a well-formed DICOM, a cut JPEG
    out = dicom.convert_file(str(path), 32)
    assert out["status"] == "pixel_decode_error" and "cut" in out["detail"]


def test_jpeg_restart_markers_out_of_order_are_detected():
    h = (8, 8, 1)
    sof = bytes([0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0])
    dri = bytes([0xFF, 0xDD, 0, 4, 0, 1])
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0])
    good = b"\xff\xd8" + sof + dri + sos + b"\x12\xff\xd0\x34\xff\xd1\x56\xff\xd9"
    assert dicom.jpeg_problem(good, h) is None
    bad = good.replace(b"\xff\xd1", b"\xff\xd5")
    assert "out of sequence" in dicom.jpeg_problem(bad, h)
    assert "misplaced marker" in dicom.jpeg_problem(good.replace(b"\x34", b"\xff\x12"), h)
    assert "after the end" in dicom.jpeg_problem(good + b"\x01\x02", h)
    assert dicom.jpeg_problem(good + b"\x00", h) is None  # even-length padding


def test_jpeg2000_with_random_bytes_is_a_decode_error(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", _image((256, 256)), transfer_syntax="jpeg2000")
    assert _status(path) == "ok"
    garble(path, 4000, seed=3)
    out = dicom.convert_file(str(path), 32)
    assert out["status"] == "pixel_decode_error", out


def test_jpeg2000_cut_inside_the_pixel_data_is_a_decode_error_not_unreadable(tmp_path):
    """The doc always said ``pixel_decode_error``; the code said ``unreadable_dicom``
    because pydicom drops the whole data set when encapsulated pixel data is cut."""
    path = write_dicom(tmp_path / "a.dcm", _image((64, 64)), transfer_syntax="jpeg2000")
    blob = path.read_bytes()
    path.write_bytes(blob[:len(blob) - 8 - len(_frame(path)) // 2])
    info = dicom.read_header(str(path))
    assert info["status"] == "ok" and info["sex"] == "F"  # the tags are fine
    out = dicom.convert_file(str(path), 32)
    assert out["status"] == "pixel_decode_error", out


def test_rle_with_random_bytes_is_a_decode_error(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", _image((128, 128)), transfer_syntax="rle")
    assert _status(path) == "ok"
    garble(path, 4000, seed=0)
    out = dicom.convert_file(str(path), 32)
    assert out["status"] == "pixel_decode_error", out


def test_jpeg_ls_with_random_bytes_is_a_decode_error(tmp_path):
    src = os.path.join(PYDICOM_FILES, "MR_small_jpeg_ls_lossless.dcm")
    path = tmp_path / "jls.dcm"
    path.write_bytes(Path(src).read_bytes())
    garble(path, 1000, seed=2)
    assert dicom.convert_file(str(path), None)["status"] == "pixel_decode_error"


@pytest.mark.parametrize("name", [
    "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "693_J2KI.dcm",
    "MR_small_jp2klossless.dcm", "GDCMJ2K_TextGBR.dcm", "examples_jpeg2k.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
])
def test_valid_reference_streams_pass_the_codestream_check(name):
    """No false alarms on pydicom's own reference files (several encoders, trailing pads)."""
    ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, name))
    assert dicom.codestream_problem(ds) is None


def test_damaged_streams_are_counted_by_the_ingestion_not_written(tmp_path):
    raw = tmp_path / "raw"
    info = write_synthetic_competition(raw, n_studies=8, image_shape=(256, 256),
                                       classes=[TARGETS[i % 2] for i in range(8)],
                                       transfer_syntaxes=("jpeg_baseline", "jpeg2000"))
    garble(info["paths"][0], 4000, seed=0)            # JPEG, random bytes
    cut = Path(info["paths"][1])                       # JPEG 2000, cut in the pixel data
    cut.write_bytes(cut.read_bytes()[:-(8 + len(_frame(cut)) // 2)])
    m = prepare_siim(raw, tmp_path / "out", image_size=16, workers=1, salt="s")
    assert m["counts"]["skipped"]["pixel_decode_error"] == 2
    assert m["counts"]["skipped"]["unreadable_dicom"] == 0
    assert m["counts"]["written"] == 6


# ---------------------------------------------------------------- bad ingestion options

@pytest.mark.parametrize("kw, needle", [
    ({"examples_per_shard": 0}, "--examples_per_shard=0"),
    ({"workers": -2}, "--workers=-2"),
    ({"seed": -1}, "--seed=-1"),
    ({"salt": "  "}, "--salt is empty"),
    ({"max_images": 0}, "max_images=0"),
    ({"split_fractions": (0.9, 0.05, float("nan"))}, "split_fractions"),
])
def test_bad_ingestion_options_are_one_line_user_errors_before_any_work(tmp_path, kw, needle):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=3, image_shape=(16, 16))
    with pytest.raises(UserError, match="^" + needle.replace("(", r"\(")) as err:
        prepare_siim(raw, tmp_path / "out", image_size=8, **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_missing_data_dir_is_a_user_error_not_a_type_error(tmp_path):
    with pytest.raises(UserError, match="--data_dir is required"):
        prepare_siim(None, tmp_path / "out")


def test_standalone_command_refuses_zero_examples_per_shard(tmp_path, capsys):
    from components import ingest_siim

    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=3, image_shape=(16, 16))
    rc = ingest_siim.main(["ingest_siim", f"--data_dir={raw}", f"--output_dir={tmp_path / 'o'}",
                           "--examples_per_shard=0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --examples_per_shard=0 must be at least 1"


def test_loader_refuses_a_prepared_folder_without_a_manifest(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        siim.load_siim(tmp_path)


# ---------------------------------------------------------------- orphaned pool workers

DRIVER = """
import sys, time
from bridging_tf.datasets import dicom, siim
real = dicom.read_header
def slow_header(path):  # slow enough that the run is still going when it is killed
    time.sleep(0.3)
    return real(path)
dicom.read_header = slow_header
siim.prepare_siim(sys.argv[1], sys.argv[2], image_size=16, workers=2, salt="s")
"""


def _children(pid: int):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_killing_the_ingestion_ends_its_pool_workers(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=40, image_shape=(24, 24))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(raw), str(tmp_path / "out")],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and len(workers) < 2:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(0.3)  # the workers are busy converting
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "pool workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_worker_whose_parent_is_gone_exits_at_start_and_from_its_watchdog(monkeypatch):
    """Both fall-backs of the worker initialiser (the parent died before prctl; no prctl):
    a worker started for a parent PID that is not its parent's exits with status 1."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    at_start = ctx.Process(target=siim_ingest._worker_init, args=(2 ** 22 + 12345,))
    at_start.start()
    at_start.join(10)
    assert at_start.exitcode == 1
    monkeypatch.setattr(siim_ingest, "WATCHDOG_INTERVAL_S", 0.05)
    watchdog = ctx.Process(target=siim_ingest._watch_parent, args=(2 ** 22 + 12345,))
    watchdog.start()
    watchdog.join(10)
    assert watchdog.exitcode == 1


def test_manifest_of_a_clean_run_still_counts_every_reason(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=6, image_shape=(24, 24),
                                classes=[TARGETS[i % 2] for i in range(6)])
    m = prepare_siim(raw, tmp_path / "out", image_size=16, workers=2, salt="s")
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(on_disk["counts"]["skipped"]) == set(siim.SKIP_REASONS)
    assert m["counts"]["written"] == 6
