"""KFP v2 adapter: compile the pipeline spec; run it with kfp.local.SubprocessRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("kfp")

STEPS = ("ingest-op", "train-op", "export-op", "extract-bottleneck-op", "attack-op", "report-op")


def test_compile_writes_a_kfp_v2_spec_with_every_step_and_the_job(tmp_path):
    import yaml

    from pipelines.kfp_pipeline import compile_pipeline
    from pipelines.run import resolve_params

    params = resolve_params({"method": "vanilla", "epochs": 2, "width": 0.25})
    path = compile_pipeline(params, tmp_path / "pipeline.yaml")
    spec = yaml.safe_load(path.read_text())
    assert spec["pipelineInfo"]["name"] == "bridging-tf"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(STEPS) == set(tasks)
    assert tasks["train-op"]["dependentTasks"] == ["ingest-op"]
    default = spec["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"]
    job = json.loads(default)
    assert job["method"] == "vanilla" and job["epochs"] == 2


def test_compile_into_a_missing_folder_is_a_user_error(tmp_path):
    from bridging_tf.errors import UserError
    from pipelines.kfp_pipeline import compile_pipeline
    from pipelines.run import resolve_params

    with pytest.raises(UserError, match="--compile"):
        compile_pipeline(resolve_params({}), tmp_path / "nope" / "p.yaml")


@pytest.mark.realdata
@pytest.mark.slow
def test_kfp_local_runner_runs_the_tiny_pipeline(mnist_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipelines.run", "--runner=kfp-local", "--method=vanilla",
           f"--data_dir={mnist_dir}", f"--output_dir={out}", "--train_size=200",
           "--val_size=100", "--test_size=100", "--attack_size=200", "--epochs=1",
           "--batch_size=100", "--width=0.125", "--verbose=0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "vanilla" and 0 <= res["private_accuracy"] <= 1
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["flags"]["runner"] == "kfp-local"
    for name in ("data", "model", "serving", "embeddings", "attack", "report"):
        assert "kfp_root" in meta["artifacts"][name]
        assert os.path.exists(os.path.join(meta["artifacts"][name], "artifact.json")), name
