"""Tiny end-to-end CLI jobs (``pipelines.run``) on the real CelebA and UTKFace subsets."""

from __future__ import annotations

import json

import pytest

from bridging_tf.errors import UserError
from tests.conftest import shared_path

TINY = {"method": "end", "image_size": 32, "width": 0.125, "epochs": 1, "batch_size": 32,
        "test_size": 16, "train_size": 64, "jit_compile": "false", "verbose": 0}


@pytest.mark.slow
def test_celeba_end_job_runs_end_to_end(tmp_path):
    from pipelines.run import run_job

    res = run_job({**TINY, "dataset": "celeba", "data_dir": str(shared_path("celeba"))},
                  tmp_path / "run")
    assert res["primary_eval"] == "unbiased" and res["backbone"] == "resnet18"
    assert 0.0 <= res["accuracy_unbiased"] <= 1.0 and "accuracy_bias_conflicting" in res
    assert res["private_chance"]["uniform"] == 0.5 and res["hparams"]["alpha"] == 25.0
    meta = json.loads((tmp_path / "run" / "run_metadata.json").read_text())
    assert meta["dataset_metadata"]["protocol"].startswith("partial folder")


@pytest.mark.slow
def test_utkface_end_job_runs_end_to_end(tmp_path):
    from pipelines.run import run_job

    res = run_job({**TINY, "dataset": "utkface", "split": "EB1",
                   "data_dir": str(shared_path("utkface"))}, tmp_path / "run")
    assert res["primary_eval"] == "test" and "accuracy_other_eb" in res
    assert 0.0 <= res["target_accuracy"] <= 1.0 and 0.0 <= res["private_accuracy"] <= 1.0
    meta = json.loads((tmp_path / "run" / "run_metadata.json").read_text())
    assert meta["dataset_metadata"]["skipped_malformed_names"] == 2


def test_bad_face_flags_are_user_errors(tmp_path):
    from pipelines.run import run_job

    with pytest.raises(UserError, match="--target='Blonde'"):
        run_job({**TINY, "dataset": "celeba", "target": "Blonde",
                 "data_dir": str(shared_path("celeba"))}, tmp_path / "a")
    with pytest.raises(UserError, match="--split"):
        run_job({**TINY, "dataset": "utkface", "split": "EB3",
                 "data_dir": str(shared_path("utkface"))}, tmp_path / "b")
