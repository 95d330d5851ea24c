"""SIIM ingestion (prepare_siim): de-identification, patient split, bad input, parallelism.

Every competition folder here is generated (write_synthetic_competition), a
dozen or so tiny studies converted to 32-pixel PNGs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from bridging_tf.datasets import dicom, siim
from bridging_tf.datasets.siim import SKIP_REASONS, prepare_siim, split_patients
from bridging_tf.datasets.siim_ingest import CLASS_COLUMNS, IMAGE_CSV, STUDY_CSV
from bridging_tf.errors import DataError
from tests._synthetic_dicom import write_dicom, write_synthetic_competition

TARGETS = ("Negative for Pneumonia", "Typical Appearance")
FAKE = {"PatientName": "Fakeperson^Jolanda^Q", "PatientBirthDate": "19470311",
        "AccessionNumber": "ACCFAKE98765", "InstitutionName": "Saint Fakeington Infirmary",
        "ReferringPhysicianName": "Drfake^Quentin", "OtherPatientIDs": "OTHERFAKE4242"}


def _records(path):
    import tensorflow as tf

    out = []
    for raw in tf.data.TFRecordDataset(str(path)):
        ex = tf.train.Example.FromString(raw.numpy())
        f = ex.features.feature
        out.append({"keys": sorted(f), "label": f["label"].int64_list.value[0],
                    "private": f["private"].int64_list.value[0],
                    "study_hash": f["study_hash"].bytes_list.value[0].decode()})
    return out


def _split_records(out_dir, manifest):
    return {s: [r for shard in manifest["splits"][s]["shards"] for r in _records(out_dir / shard)]
            for s in siim.SPLITS}


def test_deidentified_outputs_hold_no_identifying_bytes(tmp_path):
    """Known fake PatientName / PatientID / birth date / accession / institution (and
    every raw study, series and SOP UID and image id) must appear in no output byte."""
    raw = tmp_path / "raw"
    info = write_synthetic_competition(raw, n_studies=12,
                                       classes=[TARGETS[i % 2] for i in range(12)],
                                       patient_tags=FAKE, patient_id_prefix="FAKEPID-4711-",
                                       transfer_syntaxes=("explicit", "rle", "jpeg2000"))
    out = tmp_path / "out"
    m = prepare_siim(raw, out, image_size=32, workers=1, salt="pepper", seed=3)
    assert m["counts"]["written"] == 12
    needles = [v for v in FAKE.values()] + ["FAKEPID-4711", "19470311", "Fakeperson"]
    for path in info["paths"]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        needles += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        assert str(ds.PatientName) == FAKE["PatientName"]  # the inputs really hold them
    needles += info["images"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".tfrecord", ".json"}
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            for enc in (needle.encode(), needle.encode("utf-16-le")):
                assert enc not in blob, f"{needle!r} found in {path.name}"
    recs = _split_records(out, m)
    assert all(r["keys"] == sorted(dicom.FEATURE_KEYS) for rs in recs.values() for r in rs)
    hashes = {dicom.study_hash(uid, "pepper") for uid in info["studies"]}
    assert {r["study_hash"] for rs in recs.values() for r in rs} == hashes
    assert "pepper" not in json.dumps(m)


def test_split_is_by_patient_and_disjoint(tmp_path):
    raw = tmp_path / "raw"
    n = 40  # two studies per patient -> 20 patients
    info = write_synthetic_competition(raw, n_studies=n, image_shape=(24, 24),
                                       classes=[TARGETS[i % 2] for i in range(n)])
    m = prepare_siim(raw, tmp_path / "out", image_size=16, workers=1, salt="s", seed=7)
    patient_of = {dicom.study_hash(uid, "s"): i // 2 for i, uid in enumerate(info["studies"])}
    recs = _split_records(tmp_path / "out", m)
    patients = {s: {patient_of[r["study_hash"]] for r in rs} for s, rs in recs.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert set().union(*patients.values()) == set(range(n // 2))
    # 20 patients: 1 val (5 %), 2 test (10 %), 17 train; whole patients -> 2 images each
    assert {s: len(p) for s, p in patients.items()} == {"train": 17, "val": 1, "test": 2}
    assert m["counts"]["written_by_split"] == {"train": 34, "val": 2, "test": 4}
    per_split = {s: m["splits"][s]["patients"] for s in siim.SPLITS}
    assert per_split == {"train": 17, "val": 1, "test": 2}


def test_split_patients_fractions_and_seed():
    keys = [f"p{i}" for i in range(1000)]
    a = split_patients(keys, seed=0)
    counts = {s: sum(v == s for v in a.values()) for s in siim.SPLITS}
    assert counts == {"train": 850, "val": 50, "test": 100}
    assert split_patients(list(reversed(keys)), seed=0) == a  # order of arrival does not matter
    assert split_patients(keys, seed=1) != a


def test_patient_key_falls_back_to_the_study_without_patient_id(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", np.ones((8, 8), np.uint16), patient_id=None,
                       study_uid="1.2.99")
    assert dicom.read_header(str(path))["patient_key"] == "study:1.2.99"


def _bad_input_folder(root: Path):
    """12 good studies (6 negative, 6 typical) + one instance of every bad-input kind."""
    classes = [TARGETS[i % 2] for i in range(12)] + ["Indeterminate Appearance",
                                                     "Atypical Appearance"]
    info = write_synthetic_competition(root, n_studies=14, image_shape=(32, 32), classes=classes)
    study_csv, image_csv = root / STUDY_CSV, root / IMAGE_CSV
    train = root / "train"
    extra_studies, extra_images = [], []

    def add(kind, *, write=None, csv_row=True, study_row=True, cls=TARGETS[0]):
        uid = f"1.2.826.0.1.3680043.10.999.77.{len(extra_studies) + 1}"
        image_id = f"bad{kind.replace('_', '')}"
        path = train / uid / f"{uid}.2" / f"{image_id}.dcm"
        if write is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, uid)
        if study_row:
            extra_studies.append(f"{uid}_study," + ",".join("1" if c == cls else "0"
                                                            for c in CLASS_COLUMNS))
        if csv_row:
            extra_images.append(f"{image_id}_image,,none 1 0 0 1 1,{uid}")
        return path

    img = np.tile(np.arange(32, dtype=np.uint16) * 100, (32, 1))

    def good(path, uid, **kw):
        write_dicom(path, img, study_uid=uid, patient_id=f"BAD-{uid[-2:]}", **kw)

    def truncated(path, uid):  # cut inside the pixel data
        good(path, uid)
        blob = path.read_bytes()
        path.write_bytes(blob[:len(blob) - 1000])

    def header_cut(path, uid):  # cut inside the header
        good(path, uid)
        path.write_bytes(path.read_bytes()[:150])

    def garbage(path, uid):
        path.write_bytes(os.urandom(2048))

    def no_pixels(path, uid):
        good(path, uid)
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path, enforce_file_format=True)

    def unsupported(path, uid):
        good(path, uid)
        ds = pydicom.dcmread(path)
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.save_as(path, enforce_file_format=True)

    def constant(path, uid):
        write_dicom(path, np.full((16, 16), 700, np.uint16), study_uid=uid, patient_id="BAD-c")

    add("truncated_pixels", write=truncated)
    add("truncated_header", write=header_cut)
    add("not_dicom", write=garbage)
    add("no_pixel_data", write=no_pixels)
    add("unsupported_ts", write=unsupported)
    add("sex_absent", write=lambda p, u: good(p, u, sex=None))
    add("sex_empty", write=lambda p, u: good(p, u, sex=""))
    add("sex_o", write=lambda p, u: good(p, u, sex="O"))
    add("constant", write=constant)
    add("csv_without_file", write=None)
    add("file_without_csv", write=good, csv_row=False)
    add("study_without_label", write=good, study_row=False)
    dup_dir = train / info["studies"][0] / "another_series"
    dup_dir.mkdir(parents=True)
    (dup_dir / f"{info['images'][0]}.dcm").write_bytes(Path(info["paths"][0]).read_bytes())
    extra_images.append(image_csv.read_text().splitlines()[1])  # first image row, again
    study_csv.write_text(study_csv.read_text() + "\n".join(extra_studies) + "\n")
    image_csv.write_text(image_csv.read_text() + "\n".join(extra_images) + "\n")
    return info


EXPECTED_SKIPS = {
    "duplicate_csv_row": 1, "excluded_class": 2, "study_without_label": 1,
    "csv_image_without_file": 1,
    "file_without_csv_row": 1, "duplicate_file": 1,
    "unreadable_dicom": 2,              # header cut at 150 bytes; random bytes
    "no_pixel_data": 1, "unsupported_transfer_syntax": 1,
    "sex_missing": 2,                   # tag absent; tag empty
    "sex_other": 1,                     # 'O'
    "pixel_decode_error": 1,            # file cut 1000 bytes short, inside the pixel data
    "constant_image": 1,
}


def test_every_bad_input_kind_is_counted_never_fatal(tmp_path):
    raw = tmp_path / "raw"
    _bad_input_folder(raw)
    out = tmp_path / "out"
    m = prepare_siim(raw, out, image_size=32, workers=2, salt="s")
    assert set(m["counts"]["skipped"]) == set(SKIP_REASONS)
    assert m["counts"]["skipped"] == EXPECTED_SKIPS
    assert m["counts"]["written"] == 12
    assert m["counts"]["excluded_by_class"] == {"Indeterminate Appearance": 1,
                                                "Atypical Appearance": 1}
    assert m["unsupported_transfer_syntaxes"] == {"1.2.840.10008.1.2.4.100": 1}
    assert not list(out.glob("*.tmp"))
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"] == m["counts"]


def test_workers_give_byte_identical_shards(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=12, image_shape=(48, 40),
                                classes=[TARGETS[i % 2] for i in range(12)],
                                transfer_syntaxes=("explicit", "rle"))
    m1 = prepare_siim(raw, tmp_path / "w1", image_size=32, workers=1, salt="s",
                      examples_per_shard=2)
    m2 = prepare_siim(raw, tmp_path / "w2", image_size=32, workers=2, salt="s",
                      examples_per_shard=2)
    assert m1["splits"] == m2["splits"]
    shards = [s for v in m1["splits"].values() for s in v["shards"]]
    assert len(shards) > 3
    for name in shards + ["labels.json"]:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def test_failure_midway_leaves_no_half_written_shard_and_no_manifest(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=12, image_shape=(24, 24),
                                classes=[TARGETS[i % 2] for i in range(12)])
    calls = {"n": 0}
    real = dicom.make_example

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # e.g. the job is killed
        return real(*a, **k)

    monkeypatch.setattr(dicom, "make_example", flaky)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_siim(raw, out, image_size=16, workers=1, salt="s", examples_per_shard=2)
    assert not list(out.glob("*.tmp"))
    assert not (out / "manifest.json").exists()
    for shard in out.glob("*.tfrecord"):  # completed shards only, each with its 2 records
        assert len(_records(shard)) == 2
    with pytest.raises(DataError):
        siim.load_siim(out)


def test_missing_layout_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError, match="train"):
        prepare_siim(tmp_path, tmp_path / "out")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=STUDY_CSV):
        prepare_siim(tmp_path, tmp_path / "out")
    (tmp_path / STUDY_CSV).write_text("id,Negative for Pneumonia\n")
    with pytest.raises(DataError, match="Typical Appearance"):
        prepare_siim(tmp_path, tmp_path / "out")


def test_benchmark_ingest_reports_images_per_second(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=8, image_shape=(64, 64),
                                classes=[TARGETS[i % 2] for i in range(8)])
    from benchmarks.dicom import benchmark_ingest

    ips = benchmark_ingest(raw, workers=1, image_size=32)
    assert np.isfinite(ips) and ips > 0


def test_pipeline_ingest_component_prepares_and_the_loader_reads_it(tmp_path):
    """The generic ``ingest`` component passes every dataset option (``data_dir`` included)
    as keywords to ``get_preparer("siim")``; the loader then reads the artifact."""
    from bridging_tf import datasets
    from components import ingest

    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=12, image_shape=(40, 40),
                                classes=[TARGETS[i % 2] for i in range(12)])
    assert datasets.get_preparer("siim") is prepare_siim
    opts = {"data_dir": str(raw), "image_size": 32, "seed": 0, "train_size": 5}
    ingest.run({}, {"data": tmp_path / "data"}, dataset="siim", options=opts)
    spec = json.loads((tmp_path / "data" / "dataset.json").read_text())
    bundle = datasets.load("siim", **spec["options"])
    assert bundle.image_shape == (32, 32, 3)
    assert sum(bundle[s].size for s in siim.SPLITS) == 12


def test_standalone_ingest_command(tmp_path, capsys):
    from components import ingest_siim

    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=6, image_shape=(24, 24),
                                classes=[TARGETS[i % 2] for i in range(6)])
    rc = ingest_siim.main(["ingest_siim", f"--data_dir={raw}", f"--output_dir={tmp_path / 'o'}",
                           "--image_size=16", "--workers=1", "--salt=x"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["counts"]["written"] == 6
    rc = ingest_siim.main(["ingest_siim", f"--data_dir={tmp_path / 'nope'}",
                           f"--output_dir={tmp_path / 'o2'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --data_dir") and len(err.strip().splitlines()) == 1


def test_sixteen_bit_shards_load_as_the_same_uint8_images(tmp_path):
    from bridging_tf import datasets

    raw = tmp_path / "raw"
    write_synthetic_competition(raw, n_studies=6, image_shape=(40, 40),
                                classes=[TARGETS[i % 2] for i in range(6)])
    for depth in (8, 16):
        prepare_siim(raw, tmp_path / f"b{depth}", image_size=24, bit_depth=depth, workers=1,
                     salt="s")
    imgs = {}
    for depth in (8, 16):
        b = datasets.load("siim", data_dir=str(tmp_path / f"b{depth}"), channels=1)
        x, _ = next(iter(b["train"].dataset(4, normalize=False)))
        assert x.dtype == "uint8" and x.shape[1:] == (24, 24, 1)
        imgs[depth] = x.numpy().astype(int)
    assert np.abs(imgs[8] - imgs[16]).max() <= 1


def test_real_cr_files_in_the_competition_layout_are_converted_and_deidentified(tmp_path):
    """The two real NEMA CR files (MONOCHROME1, PatientSex F), linked into a competition
    folder: both written as female, and none of their identifying tag values (name, ID,
    birth date, accession, institution, study date, UIDs) appears in any output byte."""
    from tests.conftest import shared_path

    raw = tmp_path / "raw"
    rows_s, rows_i, needles = [], [], []
    for i, name in enumerate(("RG1_UNCI.dcm", "RG3_UNCI.dcm")):
        src = shared_path("cxr_dicom", name)
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        dst = raw / "train" / study / series / f"real{i}.dcm"
        dst.parent.mkdir(parents=True)
        os.symlink(src, dst)  # never copy the real data
        rows_s.append(f"{study}_study,{1 - i},{i},0,0")
        rows_i.append(f"real{i}_image,,none 1 0 0 1 1,{study}")
        needles += [str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate),
                    str(ds.AccessionNumber), str(ds.InstitutionName), str(ds.StudyDate),
                    study, series, str(ds.SOPInstanceUID)]
    (raw / STUDY_CSV).write_text(",".join(("id",) + CLASS_COLUMNS) + "\n" + "\n".join(rows_s))
    (raw / IMAGE_CSV).write_text("id,boxes,label,StudyInstanceUID\n" + "\n".join(rows_i))
    out = tmp_path / "out"
    m = prepare_siim(raw, out, image_size=64, workers=1, salt="s")
    assert m["counts"]["written"] == 2 and m["counts"]["skipped_total"] == 0
    assert m["splits"]["train"]["private_counts"] == [0, 2]  # both F -> 1
    assert m["splits"]["train"]["label_counts"] == [1, 1]
    for path in out.rglob("*"):
        blob = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in blob, f"{needle!r} in {path.name}"
