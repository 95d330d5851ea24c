"""Synthetic SIIM competition folders and DICOM files, for the tests and the ingest benchmark.

Not part of the package: ``bridging_tf`` reads DICOMs, it never writes them.

Example::

    from tests._synthetic_dicom import write_dicom, write_synthetic_competition
    write_synthetic_competition("/tmp/siim_raw", n_studies=12,
                                transfer_syntaxes=("explicit", "rle", "jpeg2000"))
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bridging_tf.datasets.siim_ingest import CLASS_COLUMNS, IMAGE_CSV, STUDY_CSV


def write_synthetic_competition(root, n_studies: int = 12, image_shape=(96, 80), seed: int = 0,
                                transfer_syntaxes: Sequence[str] = ("explicit",),
                                classes: Optional[Sequence[str]] = None,
                                patient_tags: Optional[dict] = None,
                                patient_id_prefix: str = "P") -> dict:
    """Write a tiny fake competition folder (for the tests and ``benchmarks/dicom.py``).

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
        img = synthetic_pixels(rng, image_shape, label, sex)
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


def synthetic_pixels(rng, shape, label: int, sex: str) -> np.ndarray:
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
