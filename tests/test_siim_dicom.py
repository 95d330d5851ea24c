"""The DICOM pixel pipeline (bridging_tf.datasets.dicom) on real and generated files.

Transfer syntaxes covered by *generated* files, each decoded through the
converter and compared with the same pixels stored uncompressed:

- Explicit VR Little Endian and Implicit VR Little Endian (native);
- RLE Lossless (1.2.840.10008.1.2.5): encoded by pydicom's own RLE encoder;
- JPEG 2000 Lossless (1.2.840.10008.1.2.4.90): encoded by pydicom through
  pylibjpeg-openjpeg;
- JPEG Baseline 8-bit (1.2.840.10008.1.2.4.50): Pillow-encoded JPEG bytes put
  in encapsulated pixel data (no pydicom encoder exists); lossy, so compared
  within a tolerance;
- JPEG Lossless SV1 (1.2.840.10008.1.2.4.70): pydicom has no encoder and
  pylibjpeg-libjpeg only decodes, so :func:`jpeg_lossless_sv1` below writes the
  codestream by hand (SOF3, one Huffman table, predictor 1) and it is
  encapsulated; decoded by pylibjpeg-libjpeg, compared exactly;
- JPEG-LS Lossless (1.2.840.10008.1.2.4.80): no encoder is installed
  (pyjpegls/CharLS absent), so the encapsulated codestream of pydicom's own
  test file ``MR_small_jpeg_ls_lossless.dcm`` is put into a file with our
  tags; decoded by pylibjpeg-libjpeg and compared with ``MR_small.dcm``.

Read in place from pydicom's own test files (decode only, no reference
pixels): JPEG Extended 12-bit (.4.51), JPEG 2000 lossy (.4.91), JPEG-LS
near-lossless (.4.81), Explicit VR Big Endian and Deflated Explicit VR Little
Endian. ``JPEG-lossy.dcm`` (a stream no decoder accepts) must come back as a
``pixel_decode_error``, and an MPEG-2 transfer syntax (no decoder at all) as
unsupported.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEGLosslessSV1

from bridging_tf.datasets import dicom
from tests._synthetic_dicom import write_dicom
from tests.conftest import shared_path

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


def _png(out):
    assert out["status"] == "ok", out
    return np.asarray(Image.open(io.BytesIO(out["png"])))


def _pattern(shape=(40, 36), bits=12, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = (xx * 50 + yy * 30 + rng.integers(0, 200, size=shape)) % (1 << bits)
    return img.astype(np.uint16)


def jpeg_lossless_sv1(img: np.ndarray, precision: int) -> bytes:
    """Minimal JPEG lossless (process 14, selection value 1) encoder for one grey plane."""
    x = img.astype(np.int64)
    h, w = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = ((x - pred + 32768) % 65536) - 32768
    bits = []
    for d in diff.ravel().tolist():
        ssss = abs(d).bit_length()
        bits.append(format(ssss, "05b"))  # 17 symbols (0..16), all 5-bit canonical codes
        if 0 < ssss < 16:
            v = d if d > 0 else d - 1
            bits.append(format(v & ((1 << ssss) - 1), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i:i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)
    sof = bytes([0xFF, 0xC3, 0, 11, precision, h >> 8, h & 255, w >> 8, w & 255, 1, 1, 0x11, 0])
    counts = [0] * 16
    counts[4] = 17
    dht = bytes([0xFF, 0xC4, 0, 2 + 1 + 16 + 17, 0x00] + counts + list(range(17)))
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def _region(x, y0, y1, x0, x1):
    h, w = x.shape
    return float(x[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].mean())


def test_real_chest_cr_monochrome1_is_inverted_lungs_darker_than_mediastinum():
    """RG1 is a PA chest in MONOCHROME1. Robust orientation statistic: the two
    lung fields (air, x 20-35 % and 65-80 %, y 25-55 %) must be darker than the
    central mediastinum/spine strip (x 45-55 %, y 20-80 %) — true for any PA
    chest film whatever the exposure; un-inverted pixels give the opposite."""
    path = shared_path("cxr_dicom", "RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    x = dicom.pixels_to_unit(ds)
    lungs = (_region(x, .25, .55, .20, .35) + _region(x, .25, .55, .65, .80)) / 2
    mediastinum = _region(x, .20, .80, .45, .55)
    assert lungs + 0.15 < mediastinum, (lungs, mediastinum)
    assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG3_UNCI.dcm"])
def test_real_cr_inversion_is_exactly_one_minus_the_monochrome2_reading(name):
    ds = pydicom.dcmread(shared_path("cxr_dicom", name))
    inverted = dicom.pixels_to_unit(ds)
    ds.PhotometricInterpretation = "MONOCHROME2"
    plain = dicom.pixels_to_unit(ds)
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


def test_real_cr_converts_to_448_png_with_header_fields():
    path = str(shared_path("cxr_dicom", "RG1_UNCI.dcm"))
    info = dicom.read_header(path)
    assert info["status"] == "ok" and info["sex"] == "F"
    img = _png(dicom.convert_file(path, image_size=448))
    assert img.shape == (448, 448) and img.dtype == np.uint8
    assert img.min() < 20 and img.max() > 235  # min-max scaled (resizing smooths the extremes)


@pytest.mark.parametrize("syntax", ["implicit", "rle", "jpeg2000"])
def test_lossless_transfer_syntax_matches_uncompressed(tmp_path, syntax):
    img = _pattern()
    ref = write_dicom(tmp_path / "ref.dcm", img)
    enc = write_dicom(tmp_path / f"{syntax}.dcm", img, transfer_syntax=syntax)
    ts = pydicom.dcmread(enc).file_meta.TransferSyntaxUID
    assert ts != pydicom.dcmread(ref).file_meta.TransferSyntaxUID
    assert dicom.read_header(str(enc))["status"] == "ok"
    np.testing.assert_array_equal(pydicom.dcmread(enc).pixel_array, img)
    np.testing.assert_array_equal(_png(dicom.convert_file(str(enc), None)),
                                  _png(dicom.convert_file(str(ref), None)))


def test_jpeg_baseline_decodes_close_to_the_source(tmp_path):
    img = _pattern()
    enc = write_dicom(tmp_path / "jpeg.dcm", img, transfer_syntax="jpeg_baseline")
    assert pydicom.dcmread(enc).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    ref = write_dicom(tmp_path / "ref.dcm", img)
    a = _png(dicom.convert_file(str(enc), None)).astype(float)
    b = _png(dicom.convert_file(str(ref), None)).astype(float)
    assert np.mean(np.abs(a - b)) < 6.0


def test_jpeg_lossless_sv1_hand_encoded_decodes_exactly(tmp_path):
    img = _pattern(bits=12)
    path = write_dicom(tmp_path / "jll.dcm", img)
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([jpeg_lossless_sv1(img, 12)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path, enforce_file_format=True)
    assert dicom.read_header(str(path))["status"] == "ok"
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, img)
    assert _png(dicom.convert_file(str(path), 16)).shape == (16, 16)


def test_jpeg_ls_lossless_transplanted_codestream_decodes_exactly(tmp_path):
    src = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small_jpeg_ls_lossless.dcm"))
    reference = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small.dcm"))
    ds = pydicom.dcmread(write_dicom(tmp_path / "jls.dcm", np.zeros((4, 4), np.uint16)))
    for key in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                "PixelRepresentation", "PixelData"):
        ds[key] = src[key]
    ds.file_meta.TransferSyntaxUID = src.file_meta.TransferSyntaxUID
    ds.save_as(tmp_path / "jls.dcm", enforce_file_format=True)
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"
    assert dicom.read_header(str(tmp_path / "jls.dcm"))["status"] == "ok"
    np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "jls.dcm").pixel_array,
                                  reference.pixel_array)
    ours = _png(dicom.convert_file(str(tmp_path / "jls.dcm"), None, voi=False))
    ref = _png(dicom.convert_file(os.path.join(PYDICOM_FILES, "MR_small.dcm"), None, voi=False))
    np.testing.assert_array_equal(ours, ref)


def test_unsupported_transfer_syntax_is_reported_with_status(tmp_path):
    path = write_dicom(tmp_path / "mpeg.dcm", _pattern())
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 MP@ML
    ds.save_as(path, enforce_file_format=True)
    info = dicom.read_header(str(path))
    assert info["status"] == "unsupported_transfer_syntax"
    assert info["transfer_syntax"] == "1.2.840.10008.1.2.4.100"


def test_window_and_rescale_are_applied_before_min_max(tmp_path):
    img = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (8, 1))  # 0..3900 ramp
    path = write_dicom(tmp_path / "win.dcm", img)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.WindowCenter, ds.WindowWidth = 1000, 1000  # real values 500..1500 map to the full range
    x = dicom.pixels_to_unit(ds)
    real = img[0].astype(float) * 2 - 1000
    assert np.all(x[0][real <= 500] == 0.0) and np.all(x[0][real >= 1500] == 1.0)
    inside = (real > 600) & (real < 1400)
    assert np.all(np.diff(x[0][inside]) > 0)
    assert np.allclose(dicom.pixels_to_unit(ds, voi=False)[0], (real - real.min()) / np.ptp(real))


def test_sixteen_bit_png_option_keeps_more_levels(tmp_path):
    img = _pattern(shape=(64, 64), bits=12)
    path = str(write_dicom(tmp_path / "a.dcm", img))
    p16 = _png(dicom.convert_file(path, None, bit_depth=16))
    p8 = _png(dicom.convert_file(path, None, bit_depth=8))
    assert p16.dtype == np.uint16 and p8.dtype == np.uint8
    assert len(np.unique(p16)) > len(np.unique(p8))
    np.testing.assert_allclose(p16 / 65535.0, p8 / 255.0, atol=1 / 255)


def test_example_holds_exactly_the_four_features():
    import tensorflow as tf

    ex = dicom.make_example(b"\x89PNG", 1, 0, dicom.study_hash("1.2.3", "salt"))
    parsed = tf.train.Example.FromString(ex.SerializeToString())
    assert sorted(parsed.features.feature) == sorted(dicom.FEATURE_KEYS)
    assert dicom.study_hash("1.2.3", "salt") != dicom.study_hash("1.2.3", "other")
    assert len(dicom.study_hash("1.2.3", "salt")) == 32


@pytest.mark.parametrize("name,uid", [
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),           # JPEG extended 12-bit
    ("693_J2KI.dcm", "1.2.840.10008.1.2.4.91"),              # JPEG 2000 (lossy)
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near-lossless
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),       # explicit VR big endian
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),             # deflated explicit VR LE
])
def test_further_syntaxes_from_pydicom_reference_files_convert(name, uid):
    """Files shipped with pydicom (read in place), for syntaxes not generated above."""
    path = os.path.join(PYDICOM_FILES, name)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == uid and dicom.transfer_syntax_supported(uid)
    img = _png(dicom.convert_file(path, 32))
    assert img.shape == (32, 32) and img.max() > img.min()


def test_corrupt_compressed_stream_is_a_decode_error_not_an_exception():
    """pydicom's JPEG-lossy.dcm has a JPEG stream no installed decoder accepts."""
    out = dicom.convert_file(os.path.join(PYDICOM_FILES, "JPEG-lossy.dcm"), 32)
    assert out["status"] == "pixel_decode_error" and "png" not in out
    assert out["detail"] and "\n" not in out["detail"]  # one line, for a log or a test
