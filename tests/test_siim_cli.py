"""One command: competition folder -> ingest -> train -> export -> attack -> report.

DenseNet-121 at 32 px, one epoch.

Slow (about 80 s of CPU: DenseNet-121 is traced for training, export and
extraction); deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._synthetic_dicom import write_synthetic_competition

REPO = Path(__file__).resolve().parents[1]
FAKE = {"PatientName": "Fakeperson^Clitest", "InstitutionName": "Fakeington Cli Hospital"}


@pytest.mark.slow
def test_siim_end_runs_end_to_end_from_the_competition_layout(tmp_path):
    raw = tmp_path / "raw"
    info = write_synthetic_competition(
        raw, n_studies=32, image_shape=(64, 56), patient_tags=FAKE,
        classes=["Negative for Pneumonia", "Typical Appearance"] * 16,
        transfer_syntaxes=("explicit", "rle", "jpeg2000", "jpeg_baseline"))
    out = tmp_path / "run"
    # seed 1: the 16 generated patients put one woman and one man in the test split
    cmd = [sys.executable, "-m", "pipelines.run", "--dataset=siim", "--method=end",
           f"--data_dir={raw}", "--image_size=32", "--epochs=1", "--seed=1",
           f"--output_dir={out}", "--verbose=0"]
    env = {**os.environ, "BRIDGING_TF_SIIM_SALT": "cli-test-salt"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "siim" and res["method"] == "end"
    assert res["backbone"] == "densenet121" and res["optimizer"] == "sgd"
    assert 0.0 <= res["private_accuracy"] <= 1.0 and 0.0 <= res["target_accuracy"] <= 1.0
    flags = json.loads((out / "run_metadata.json").read_text())["flags"]  # the siim preset
    assert (flags["lr"], flags["batch_size"], flags["lr_schedule"], flags["min_lr"]) == (
        0.1, 16, "plateau", 1e-3)
    assert flags["alpha"] == flags["beta"] == 0.011 and flags["image_size"] == 32
    manifest = json.loads((out / "data" / "data" / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 32 and manifest["image_size"] == 32
    needles = list(FAKE.values()) + info["studies"] + info["images"] + ["cli-test-salt"]
    for path in out.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in blob, f"{needle!r} in {path.relative_to(out)}"
