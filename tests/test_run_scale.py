"""Issue 11: scale presets, the stated plan, resolved run_metadata, no silent overwrites."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_pipeline_cli import _env

SMOKE = ["--scale=smoke", "--verbose=2", "--attacks=linear"]


def _run(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "pipelines.run", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "run"
    proc = _run([f"--data_dir={mnist_dir}", f"--output_dir={out}", "--method=end", *SMOKE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_scale_presets_resolve_in_order_and_explicit_flags_win():
    from pipelines.run import resolve_params
    paper = resolve_params({})
    assert paper["scale"] == "paper" and paper["epochs"] == 80 and paper["width"] == 1.0
    cpu = resolve_params({"scale": "cpu"})
    from pipelines.configs.biased_mnist import SCALES
    for k, v in SCALES["cpu"].items():
        assert cpu[k] == v
    assert resolve_params({"scale": "cpu", "epochs": 3})["epochs"] == 3
    smoke = resolve_params({"scale": "smoke", "dataset": "utkface"})
    assert smoke["image_size"] == 32 and smoke["epochs"] == 1 and smoke["backbone"] == "resnet18"


def test_unknown_scale_is_a_one_line_error(tmp_path):
    proc = _run(["--scale=huge", f"--output_dir={tmp_path / 'x'}"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--scale" in proc.stderr and "paper" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_default_folder_names_scale_and_no_rho_outside_mnist():
    from pipelines.run import default_output_dir, resolve_params
    assert default_output_dir(resolve_params({"scale": "cpu"})).name == \
        "biased_mnist_end_rho0.997_cpu_seed0"
    face = default_output_dir(resolve_params({"dataset": "celeba", "method": "vanilla"})).name
    assert face == "celeba_vanilla_Blond_Hair-Male_paper_seed0" and "rho" not in face
    utk = default_output_dir(resolve_params({"dataset": "utkface", "scale": "smoke"})).name
    assert utk == "utkface_end_age_EB1_smoke_seed0"


@pytest.mark.realdata
def test_the_plan_is_printed_before_training_with_a_projection(smoke_run):
    _, proc = smoke_run
    out = proc.stdout
    assert "--scale=smoke" in out
    plan = out.index("[train] plan:")
    assert plan < out.index("[train] projected training time") < out.index("[train] epoch 1 took")
    for words in ("train 500", "val 200", "steps/epoch", "batch 64", "width 0.125",
                  "parameters", "precision float32", "XLA off", "CPU ("):
        assert words in out[plan:], words


@pytest.mark.realdata
def test_run_metadata_is_resolved_and_finished(smoke_run):
    out, _ = smoke_run
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["status"] == "finished" and meta["scale"] == "smoke"
    resolved = meta["resolved"]
    nulls = [k for k, v in resolved.items() if v is None]
    assert not nulls, nulls
    assert resolved["train_size"] == 500 and resolved["val_size"] == 200
    assert resolved["backbone"] == "simple_conv" and resolved["mixed_precision"] == "float32"
    assert resolved["hparams"] == {"alpha": 1.0, "beta": 1.0, "pairs": "all"} or \
        set(resolved["hparams"]) >= {"alpha", "beta"}
    assert "image_size" not in resolved  # not a Biased-MNIST option
    plan = meta["plan"]
    assert plan["steps_per_epoch"] == 8 and plan["total_steps"] == 8
    assert plan["first_epoch_s"] > 0
    res = json.loads((out / "results.json").read_text())
    assert res["scale"] == "smoke"


@pytest.mark.realdata
def test_a_folder_holding_another_configuration_is_refused(smoke_run, mnist_dir):
    out, _ = smoke_run
    before = (out / "results.json").read_text()
    proc = _run([f"--data_dir={mnist_dir}", f"--output_dir={out}", "--method=end", *SMOKE,
                 "--epochs=2", "--width=0.25"])
    assert proc.returncode == 2, proc.stdout[-2000:]
    err = proc.stderr.strip()
    assert "\n" not in err and "--epochs (recorded 1, now 2)" in err and "--width" in err
    assert "--overwrite" in err
    assert (out / "results.json").read_text() == before  # untouched
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["status"] == "finished" and meta["flags"]["epochs"] == 1


@pytest.mark.realdata
def test_the_same_configuration_reuses_its_folder(smoke_run, mnist_dir):
    out, _ = smoke_run
    proc = _run([f"--data_dir={mnist_dir}", f"--output_dir={out}", "--method=end", *SMOKE])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("up to date, skipped") == 6


def test_a_non_run_folder_is_refused(tmp_path):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "thesis.tex").write_text("x")
    proc = _run([f"--output_dir={target}", *SMOKE])
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    assert (target / "thesis.tex").read_text() == "x"


def test_differing_flags_ignores_display_only_flags():
    from pipelines.run_folder import differing_flags
    rec = {"epochs": 2, "verbose": 1, "lr": 0.001, "data_dir": None}
    assert differing_flags(rec, {"epochs": 2, "verbose": 2, "lr": 1e-3, "data_dir": None}) == []
    assert differing_flags(rec, {"epochs": 3, "lr": 1e-3}) == [("epochs", 2, 3)]
    assert differing_flags({}, {"epochs": 3}) == []  # a record from an older version


@pytest.mark.realdata
def test_a_diverging_run_fails_in_the_train_step_naming_the_learning_rate(mnist_dir, tmp_path):
    out = tmp_path / "run"
    proc = _run([f"--data_dir={mnist_dir}", f"--output_dir={out}", *SMOKE, "--lr=1e12"])
    assert proc.returncode == 2, proc.stdout[-2000:]
    err = proc.stderr.strip()
    assert "\n" not in err and "training diverged" in err and "--lr=1e+12" in err
    assert not (out / "model" / "artifact.json").exists()  # never saved as a finished model
