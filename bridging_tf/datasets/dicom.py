"""DICOM -> de-identified PNG examples: the pixel pipeline behind SIIM ingestion.

Per file (pydicom, compressed syntaxes through its pixel handlers with
pylibjpeg / pylibjpeg-libjpeg / pylibjpeg-openjpeg; RLE natively):

1. decode the first frame (colour -> luminance);
2. modality LUT / ``RescaleSlope``+``RescaleIntercept``;
3. VOI LUT, else ``WindowCenter``/``WindowWidth`` (``voi=False`` skips it);
4. min-max to [0, 1]; ``MONOCHROME1`` is inverted (``1 - x``) so that high
   values are bright, as in the widely used Kaggle recipe (METHODS.md §8.6);
5. resize to ``image_size × image_size`` (Pillow, antialiased bilinear on
   float32; the aspect ratio is not kept, as in the paper);
6. quantise to uint8 (or uint16 with ``bit_depth=16``) and PNG-encode.

Nothing but the pixels leaves a file: :func:`make_example` builds a
``tf.train.Example`` with exactly four features — ``image`` (PNG bytes),
``label``, ``private`` and ``study_hash`` (:func:`study_hash`, an HMAC of
the StudyInstanceUID). The per-file functions (:func:`read_header`,
:func:`convert_file`) use only pydicom, NumPy and Pillow, never raise for bad
data, and are what the ingestion's process pool runs.

Example::

    info = read_header("train/<study>/<series>/img.dcm")   # {"status": "ok", "sex": "F", ...}
    out = convert_file("train/<study>/<series>/img.dcm", image_size=448)
    ex = make_example(out["png"], label=1, private=1, study_hash=study_hash(uid, salt))
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import warnings
from typing import Optional

import numpy as np

#: PatientSex (0010,0040) -> private label. 1 = female, as for CelebA in this package.
SEX_TO_PRIVATE = {"M": 0, "F": 1}
PRIVATE_NAMES = ("male", "female")
FEATURE_KEYS = ("image", "label", "private", "study_hash")


def study_hash(study_uid: str, salt: str) -> str:
    """``HMAC-SHA256(key=salt, msg=StudyInstanceUID)``, first 32 hex digits.

    Links examples of one study (and lets the data owner, who knows the salt,
    find a study again) without writing the UID itself.
    """
    return hmac.new(str(salt).encode(), str(study_uid).encode(), hashlib.sha256).hexdigest()[:32]


def transfer_syntax_supported(uid) -> bool:
    """Whether pydicom has an available pixel decoder for this transfer syntax."""
    from pydicom.pixels import get_decoder
    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError, TypeError):
        return False


def read_header(path: str) -> dict:
    """Read tags only (large values deferred) and classify the file.

    Returns ``{"status": "ok", "patient_key", "sex", "transfer_syntax"}`` or
    ``{"status": <skip reason>, ...}`` with reason one of ``unreadable_dicom``
    (not DICOM, or cut before the image attributes), ``no_pixel_data``,
    ``unsupported_transfer_syntax``, ``sex_missing``, ``sex_other``.
    ``patient_key`` is PatientID, or ``study:<uid>`` when absent;
    it stays in memory (used for the split) and is never written. A file whose
    pixel data is cut or broken passes here (its tags are read) and is then counted
    by :func:`convert_file` as ``pixel_decode_error``.
    """
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # broken files are counted, not printed
            ds = pydicom.dcmread(path, defer_size=4096)
            if not _has_pixels(ds):
                # Compressed (encapsulated) pixel data cut short makes pydicom drop the
                # whole data set; the tags before the pixels tell what the file is. Its
                # pixels then fail in convert_file (``pixel_decode_error``).
                before = _tags_before_cut_pixels(path)
                ds, has_pixels = (ds, False) if before is None else (before, True)
            else:
                has_pixels = True
            tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") \
                else ""
            has_rows = "Rows" in ds and "Columns" in ds
            patient_id = str(ds.get("PatientID", "") or "").strip()
            study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
            sex = ds.get("PatientSex", None)
    except Exception:  # noqa: BLE001 — any parse failure is a counted skip, never fatal
        return {"status": "unreadable_dicom"}
    out = {"transfer_syntax": tsuid,
           "patient_key": patient_id or (f"study:{study_uid}" if study_uid else "")}
    if not has_pixels:
        # pydicom stops quietly at end of file: a file cut before the image attributes
        # (or without a transfer syntax) is unreadable; one with them is "no pixel data".
        return {**out, "status": "no_pixel_data" if (has_rows and tsuid) else "unreadable_dicom"}
    if not tsuid or not transfer_syntax_supported(tsuid):
        return {**out, "status": "unsupported_transfer_syntax"}
    sex = str(sex or "").strip().upper()
    if not sex:
        return {**out, "status": "sex_missing"}
    if sex not in SEX_TO_PRIVATE:
        return {**out, "status": "sex_other"}
    return {**out, "status": "ok", "sex": sex}


_PIXEL_KEYS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# (7FE0,0010) Pixel Data, as its tag bytes appear in a little- and a big-endian file
_PIXEL_TAG_BYTES = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")


def _has_pixels(ds) -> bool:
    return any(k in ds for k in _PIXEL_KEYS)


def _tags_before_cut_pixels(path: str):
    """The data set up to its pixel data when the file holds a Pixel Data element that
    pydicom could not read (cut or broken), else ``None``."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        with open(path, "rb") as fh:
            blob = fh.read()
    except Exception:  # noqa: BLE001 — unreadable even without the pixels
        return None
    if "Rows" not in ds or not any(tag in blob[128:] for tag in _PIXEL_TAG_BYTES):
        return None
    return ds


def pixels_to_unit(ds, voi: bool = True) -> np.ndarray:
    """Decoded dataset -> float32 ``[H, W]`` in [0, 1], bright = dense (steps 1-4)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        arr = arr[0]
    expected = (int(ds.Rows), int(ds.Columns)) + ((spp,) if spp > 1 else ())
    if tuple(arr.shape) != expected:
        raise ValueError(f"decoded frame has shape {tuple(arr.shape)}, the header says "
                         f"{expected}")
    if spp > 1:  # pydicom returns RGB (YBR is converted); luminance like ITU-R 601
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        arr = apply_modality_lut(arr, ds)
        if voi:
            arr = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise ConstantImageError("constant or non-finite image")
    x = (arr - lo) / (hi - lo)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        x = 1.0 - x
    return x


class ConstantImageError(ValueError):
    """The image holds a single value (nothing to learn from)."""


def resize_unit(x: np.ndarray, image_size: Optional[int]) -> np.ndarray:
    """float32 [0, 1] ``[H, W]`` -> ``[S, S]`` (antialiased bilinear, clipped)."""
    if not image_size or x.shape == (image_size, image_size):
        return x
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(x, dtype=np.float32), mode="F")
    img = img.resize((int(image_size), int(image_size)), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def encode_png(x: np.ndarray, bit_depth: int = 8) -> bytes:
    """float [0, 1] ``[H, W]`` -> grayscale PNG bytes (8- or 16-bit, no metadata chunks)."""
    from PIL import Image

    if bit_depth == 8:
        img = Image.fromarray(np.round(x * 255.0).astype(np.uint8), mode="L")
    elif bit_depth == 16:
        img = Image.fromarray(np.round(x * 65535.0).astype(np.uint16))  # mode I;16
    else:
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def convert_file(path: str, image_size: Optional[int] = 448, bit_depth: int = 8,
                 voi: bool = True) -> dict:
    """Decode + convert one file; never raises for bad data.

    Returns ``{"status": "ok", "png": bytes, "sum": float, "sumsq": float,
    "pixels": int}`` (sums of the [0, 1] pixels, for the normalisation
    statistics) or ``{"status": "pixel_decode_error" | "constant_image"}``.
    """
    import pydicom

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # broken files are counted, not printed
            ds = pydicom.dcmread(path)
            problem = codestream_problem(ds)
            if problem is None and not _has_pixels(ds):
                problem = "no readable pixel data (cut or corrupt)"
            if problem is None:
                x = pixels_to_unit(ds, voi=voi)
                problem = decoder_warning_problem(caught)
        if problem is not None:
            return {"status": "pixel_decode_error", "detail": problem}
    except ConstantImageError:
        return {"status": "constant_image"}
    except Exception as err:  # noqa: BLE001 — truncated/corrupt pixel data is a counted skip
        return {"status": "pixel_decode_error",
                "detail": f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"}
    x = resize_unit(x, image_size)
    x64 = x.astype(np.float64)
    return {"status": "ok", "png": encode_png(x, bit_depth), "sum": float(x64.sum()),
            "sumsq": float(np.square(x64).sum()), "pixels": int(x.size)}


# --------------------------------------------------------------------------- codestream checks
#
# The JPEG decoders pydicom uses (Pillow, pylibjpeg) decode a damaged stream "without error"
# as long as its markers parse: 4,000 random bytes written over the middle of a JPEG
# stream came back as an image with a quarter of its rows garbage. The checks below read
# only the marker structure of the first frame (no decoding) and report what a conforming
# stream cannot contain: a marker code where entropy-coded data must be, restart markers
# out of order, a segment or tile-part that runs past the data, no end marker, bytes after
# it, or a frame size that disagrees with Rows / Columns / SamplesPerPixel.

#: ISO/IEC 10918 (JPEG baseline, extended, lossless) and 14495 (JPEG-LS) transfer syntaxes.
JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                           "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
JPEG_LS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
#: ISO/IEC 15444 (JPEG 2000, High-Throughput JPEG 2000) transfer syntaxes.
J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                          "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                          "1.2.840.10008.1.2.4.203"})
_HTJ2K = frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                    "1.2.840.10008.1.2.4.203"})
# start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (ISO 10918-1 B.1.1.3) and SOF55 (JPEG-LS)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
                  0xF7})


def _u16(data, i: int) -> int:
    return (data[i] << 8) | data[i + 1]


def _u32(data, i: int) -> int:
    return (data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]


def _size_problem(kind: str, width: int, height: int, samples: int, header) -> Optional[str]:
    rows, cols, spp = header
    if (width, height, samples) != (cols, rows, spp):
        return (f"{kind} frame is {width}x{height} with {samples} component(s) but the header "
                f"says Columns={cols}, Rows={rows}, SamplesPerPixel={spp}")
    return None


def _after_end(kind: str, data, i: int) -> Optional[str]:
    # writers pad a frame to an even length with 0x00 or 0xFF; anything else is not padding
    if data[i:].strip(b"\x00\xff"):
        return f"{kind}: {len(data) - i} byte(s) after the end-of-image marker"
    return None


def jpeg_problem(data, header, ls: bool = False) -> Optional[str]:
    """What is structurally wrong with one JPEG / JPEG-LS frame, or ``None``.

    ``header`` is ``(Rows, Columns, SamplesPerPixel)``. Inside entropy-coded data
    0xFF must be followed by 0x00 (JPEG; JPEG-LS: a byte below 0x80) or by the next
    restart marker in sequence; any other marker ends the scan and must be one that may
    follow a scan.
    """
    data = bytes(data)
    n, kind = len(data), "JPEG-LS" if ls else "JPEG"
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return f"{kind}: no start-of-image marker"
    i, frame, restart = 2, False, 0
    while True:
        if i >= n:
            return f"{kind}: the stream ends without an end-of-image marker (cut?)"
        if data[i] != 0xFF:
            return f"{kind}: no marker at byte {i} (corrupt stream)"
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return f"{kind}: the stream ends without an end-of-image marker (cut?)"
        m, at = data[i], i - 1
        i += 1
        if m == 0xD9:
            break
        if m < 0xC0 or 0xD0 <= m <= 0xD8:
            return f"{kind}: misplaced marker 0xFF{m:02X} at byte {at} (corrupt stream)"
        if i + 2 > n or _u16(data, i) < 2 or i + _u16(data, i) > n:
            return f"{kind}: marker segment 0xFF{m:02X} at byte {at} runs past the data"
        seg, i = bytes(data[i + 2:i + _u16(data, i)]), i + _u16(data, i)
        if m in _SOF:
            if frame or len(seg) < 6:
                return f"{kind}: a second or short frame header at byte {at}"
            frame = True
            height = _u16(seg, 1)
            problem = _size_problem(kind, _u16(seg, 3), height or header[0], seg[5], header)
            if problem:
                return problem
        elif m == 0xDD:
            if len(seg) < 2:
                return f"{kind}: short restart-interval segment at byte {at}"
            restart = _u16(seg, 0)
        elif m == 0xDA:
            if not frame:
                return f"{kind}: a scan before the frame header"
            expected = 0
            while True:  # entropy-coded data up to the marker that ends the scan
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return f"{kind}: the stream ends inside scan data (cut?)"
                k = j + 1
                if (data[k] < 0x80) if ls else (data[k] == 0x00):
                    i = k if ls else k + 1   # a stuffed data byte
                    continue
                while k < n and data[k] == 0xFF:
                    k += 1
                if k >= n:
                    return f"{kind}: the stream ends inside scan data (cut?)"
                if 0xD0 <= data[k] <= 0xD7:
                    if not restart or data[k] - 0xD0 != expected:
                        return (f"{kind}: restart marker 0xFF{data[k]:02X} out of sequence at "
                                f"byte {k - 1} (corrupt stream)")
                    expected = (expected + 1) % 8
                    i = k + 1
                    continue
                i = j
                break
    if not frame:
        return f"{kind}: no frame header"
    return _after_end(kind, data, i)


def _j2k_codestream(data):
    """The raw codestream of a JPEG 2000 frame (unwrapping a JP2 file, which some writers use)."""
    if bytes(data[4:8]) != b"jP  ":
        return data
    i = 0
    while i + 8 <= len(data):
        length, box = _u32(data, i), bytes(data[i + 4:i + 8])
        head = 8
        if length == 1 and i + 16 <= len(data):
            length, head = int.from_bytes(bytes(data[i + 8:i + 16]), "big"), 16
        elif length == 0:
            length = len(data) - i
        if box == b"jp2c":
            return data[i + head:i + length]
        if length < head:
            break
        i += length
    return b""


def j2k_problem(data, header, check_packets: bool = True) -> Optional[str]:
    """What is structurally wrong with one JPEG 2000 frame, or ``None``.

    Checks SIZ against ``header`` ``(Rows, Columns, SamplesPerPixel)``, walks the
    main header and every tile-part (``Psot`` lengths must land on the next SOT or on
    EOC) and, with ``check_packets``, that no byte pair 0xFF90-0xFFFF other than the
    SOP/EPH markers appears inside packet data (ISO 15444-1 A.1.1: the coders never emit
    one, so random bytes show up at once).
    """
    data = bytes(_j2k_codestream(bytes(data)))
    n, kind = len(data), "JPEG 2000"
    if n < 4 or data[:2] != b"\xff\x4f":
        return f"{kind}: no start-of-codestream marker"
    if data[2:4] != b"\xff\x51" or n < 42 or 4 + _u16(data, 4) > n:
        return f"{kind}: no image-size (SIZ) segment after the start marker"
    x, y, x0, y0 = _u32(data, 8), _u32(data, 12), _u32(data, 16), _u32(data, 20)
    problem = _size_problem(kind, x - x0, y - y0, _u16(data, 40), header)
    if problem:
        return problem
    i = 4 + _u16(data, 4)
    while True:  # main header, up to the first tile-part
        if i + 4 > n or data[i] != 0xFF:
            return f"{kind}: no marker at byte {i} in the main header (corrupt or cut)"
        m = data[i + 1]
        if m == 0x90:
            break
        if not 0x50 <= m <= 0x8F or _u16(data, i + 2) < 2 or i + 2 + _u16(data, i + 2) > n:
            return f"{kind}: bad main-header marker 0xFF{m:02X} at byte {i}"
        i += 2 + _u16(data, i + 2)
    end_of_data = data.rstrip(b"\x00")
    eoc = len(end_of_data) - 2 if end_of_data.endswith(b"\xff\xd9") else None
    while True:  # tile-parts
        if i + 2 > n:
            return f"{kind}: the codestream ends without an end-of-codestream marker (cut?)"
        if data[i] != 0xFF or data[i + 1] not in (0x90, 0xD9):
            return f"{kind}: expected a tile-part or the end marker at byte {i} (corrupt stream)"
        if data[i + 1] == 0xD9:
            i += 2
            break
        if i + 12 > n or _u16(data, i + 2) != 10:
            return f"{kind}: bad tile-part header at byte {i}"
        psot = _u32(data, i + 6)
        end = (eoc if eoc is not None and eoc > i else n + 1) if psot == 0 else i + psot
        if end > n:
            return f"{kind}: tile-part at byte {i} runs past the end of the data (cut?)"
        j = i + 12
        while True:  # tile-part header, up to SOD
            if j + 2 > end or data[j] != 0xFF:
                return f"{kind}: tile-part at byte {i} has no start-of-data marker"
            if data[j + 1] == 0x93:
                j += 2
                break
            if j + 4 > end or _u16(data, j + 2) < 2 or j + 2 + _u16(data, j + 2) > end:
                return f"{kind}: bad tile-part marker 0xFF{data[j + 1]:02X} at byte {j}"
            j += 2 + _u16(data, j + 2)
        if check_packets:
            k = data.find(b"\xff", j, end - 1)
            while k >= 0:
                code = data[k + 1]
                if code == 0x91:    # SOP marker segment (6 bytes)
                    k += 6
                elif code == 0x92:  # EPH marker
                    k += 2
                elif code >= 0x90:
                    return (f"{kind}: marker code 0xFF{code:02X} inside packet data at byte {k} "
                            f"(corrupt stream)")
                else:
                    k += 1
                k = data.find(b"\xff", k, end - 1)
        i = end
    return _after_end(kind, data, i)


_RLE_EXCESS = re.compile(r"RLE segment contains non-conformant padding - (\d+) vs\. (\d+) bytes")


def decoder_warning_problem(caught) -> Optional[str]:
    """A decoder warning (``warnings.catch_warnings(record=True)`` records) that means the
    pixel data is corrupt, or ``None``.

    pydicom's RLE decoder only warns when a segment decodes to more bytes than
    ``Rows x Columns``; one extra byte is the even-length padding some writers add,
    more means the run lengths are garbage (random bytes written over an RLE stream
    decode "fine" otherwise).
    """
    for w in caught:
        m = _RLE_EXCESS.search(str(w.message))
        if m and int(m.group(1)) - int(m.group(2)) > 1:
            return (f"RLE segment decodes to {m.group(1)} bytes, {m.group(2)} expected "
                    f"(corrupt run lengths)")
    return None


def codestream_problem(ds) -> Optional[str]:
    """A structural problem of the first frame's compressed stream, or ``None``.

    Only JPEG, JPEG-LS and JPEG 2000 streams are checked (see the section comment);
    native pixel data has no redundancy to check, and RLE is checked by its decoded
    segment lengths (pydicom, :func:`decoder_warning_problem`).
    """
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if tsuid not in JPEG_SYNTAXES | JPEG_LS_SYNTAXES | J2K_SYNTAXES:
        return None
    if "PixelData" not in ds:
        return "no pixel data (the compressed pixel data is cut short)"
    from pydicom.encaps import generate_frames

    header = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
              int(ds.get("SamplesPerPixel", 1) or 1))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=n_frames))
    except Exception as err:  # noqa: BLE001 — a broken item structure is a decode error
        return f"encapsulated pixel data: {' '.join(str(err).split())[:160]}"
    if tsuid in J2K_SYNTAXES:
        return j2k_problem(frame, header, check_packets=tsuid not in _HTJ2K)
    return jpeg_problem(frame, header, ls=tsuid in JPEG_LS_SYNTAXES)


def make_example(png: bytes, label: int, private: int, study_hash: str):
    """The de-identified record: exactly ``image``, ``label``, ``private``, ``study_hash``."""
    import tensorflow as tf

    feats = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "private": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(private)])),
        "study_hash": tf.train.Feature(bytes_list=tf.train.BytesList(value=[study_hash.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats))


__all__ = ["FEATURE_KEYS", "J2K_SYNTAXES", "JPEG_LS_SYNTAXES", "JPEG_SYNTAXES", "PRIVATE_NAMES",
           "SEX_TO_PRIVATE", "ConstantImageError", "codestream_problem", "convert_file",
           "decoder_warning_problem", "encode_png", "j2k_problem", "jpeg_problem",
           "make_example", "pixels_to_unit", "read_header", "resize_unit", "study_hash",
           "transfer_syntax_supported"]
