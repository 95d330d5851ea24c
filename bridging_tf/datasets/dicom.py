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
    it stays in memory (used for the split) and is never written.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=4096)
        tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
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


def pixels_to_unit(ds, voi: bool = True) -> np.ndarray:
    """Decoded dataset -> float32 ``[H, W]`` in [0, 1], bright = dense (steps 1-4)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        arr = arr[0]
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
        ds = pydicom.dcmread(path)
        x = pixels_to_unit(ds, voi=voi)
    except ConstantImageError:
        return {"status": "constant_image"}
    except Exception:  # noqa: BLE001 — truncated/corrupt pixel data is a counted skip
        return {"status": "pixel_decode_error"}
    x = resize_unit(x, image_size)
    x64 = x.astype(np.float64)
    return {"status": "ok", "png": encode_png(x, bit_depth), "sum": float(x64.sum()),
            "sumsq": float(np.square(x64).sum()), "pixels": int(x.size)}


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


__all__ = ["FEATURE_KEYS", "PRIVATE_NAMES", "SEX_TO_PRIVATE", "ConstantImageError", "convert_file",
           "encode_png", "make_example", "pixels_to_unit", "read_header", "resize_unit",
           "study_hash", "transfer_syntax_supported"]
