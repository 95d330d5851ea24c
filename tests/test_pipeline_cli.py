"""The CLI end to end on real MNIST (tiny), resume after kill -9, and user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

TINY = ["--method=end", "--train_size=300", "--val_size=200", "--test_size=200",
        "--attack_size=300", "--epochs=4", "--batch_size=64", "--width=0.125", "--verbose=2"]


def _cmd(mnist_dir, out, *extra):
    return [sys.executable, "-m", "pipelines.run", f"--data_dir={mnist_dir}",
            f"--output_dir={out}", *TINY, *extra]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _run(cmd):
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = _run(_cmd(mnist_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.realdata
def test_cli_writes_results_metadata_model_and_artifacts(finished_run):
    out, proc = finished_run
    res = json.loads((out / "results.json").read_text())
    for key in ("method", "dataset", "rho", "seed", "target_accuracy", "biased_accuracy",
                "accuracy_unbiased", "accuracy_biased", "accuracy_rho0", "private_accuracy",
                "private_chance", "private_balanced_accuracy", "private_accuracy_by_protocol",
                "attack_protocol", "epochs", "train_size"):
        assert key in res, key
    assert res["method"] == "end" and res["dataset"] == "biased_mnist" and res["rho"] == 0.997
    assert res["train_size"] == 300 and res["epochs"] == 4 and res["attack_protocol"] == "sound"
    for key in ("target_accuracy", "biased_accuracy", "private_accuracy"):
        assert 0.0 <= res[key] <= 1.0
    assert set(res["private_accuracy_by_protocol"]) == {"sound", "paper"}
    assert res["private_chance"]["uniform"] == pytest.approx(0.1)
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["flags"]["epochs"] == 4 and meta["seed"] == 0 and meta["wall_time_s"] > 0
    assert "tensorflow" in meta["versions"] and meta["dataset_metadata"]["rho"] == 0.997
    assert (out / "model" / "model.keras").exists() and (out / "model" / "logs").exists()
    assert (out / "serving" / "biased_mnist_end" / "1" / "saved_model.pb").exists()
    for name in ("data", "model", "serving", "embeddings", "attack", "report"):
        assert (out / name / "artifact.json").exists(), name
    assert not list(out.glob("*.tmp-*")) and not list(out.glob("*.work"))
    assert str(out / "results.json") in proc.stdout  # where each artifact is


@pytest.mark.realdata
def test_rerunning_a_finished_job_skips_every_step(finished_run, mnist_dir):
    out, _ = finished_run
    before = (out / "results.json").read_text()
    proc = _run(_cmd(mnist_dir, out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("up to date, skipped") == 6
    assert json.loads((out / "results.json").read_text()) == json.loads(before)


@pytest.mark.realdata
@pytest.mark.slow
def test_kill_9_mid_training_resumes_to_the_same_result(finished_run, mnist_dir, tmp_path):
    out_a, _ = finished_run
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(mnist_dir, out), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = out / "model.work" / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if meta.exists() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (out / "model" / "artifact.json").exists()
    resumed = _run(_cmd(mnist_dir, out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the checkpoint after epoch" in resumed.stdout
    a = json.loads((out_a / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    for key in ("target_accuracy", "biased_accuracy", "accuracy_rho0", "private_accuracy",
                "best_epoch"):
        assert a[key] == b[key], key
    ha = json.loads((out_a / "model" / "history.json").read_text())
    hb = json.loads((out / "model" / "history.json").read_text())
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5)


# ---------------------------------------------------------------- user errors (in-process)
@pytest.fixture
def cli(capsys):
    from absl import flags

    from pipelines import run

    def call(*args):
        flags.FLAGS.unparse_flags()
        code = run.main(["pipelines.run", *args])
        flags.FLAGS.unparse_flags()
        return code, capsys.readouterr().err.strip()

    return call


@pytest.mark.parametrize("args, needle", [
    (["--rho=1.5"], "--rho=1.5 is outside [0, 1]"),
    (["--method=nope"], "--method='nope' is not known"),
    (["--attack_protocol=maybe"], "--attack_protocol"),
    (["--strategy=cloud"], "--strategy"),
    (["--attacks=linear,psychic"], "psychic"),
    (["--epochs=abc"], "epochs"),
    (["--data_dir=/no/such/folder"], "--data_dir=/no/such/folder"),
])
def test_bad_flags_give_one_line_and_exit_2(cli, tmp_path, args, needle):
    out = tmp_path / "out"
    code, err = cli(f"--output_dir={out}", *args)
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and not out.exists()


def test_unwritable_output_dir_gives_one_line_and_exit_2(cli, tmp_path, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = cli(f"--output_dir={blocker}/run", f"--data_dir={mnist_dir}")
    assert code == 2 and f"--output_dir={blocker}/run" in err and len(err.splitlines()) == 1


def test_data_error_mid_pipeline_leaves_no_half_written_run(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "mnist.npz").write_bytes(b"not a zip")
    out = tmp_path / "out"
    code, err = cli(f"--output_dir={out}", f"--data_dir={empty}", "--epochs=1")
    assert code == 2 and "mnist.npz" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_flagfile_is_read_and_its_errors_are_one_line(cli, tmp_path):
    flagfile = tmp_path / "job.flags"
    flagfile.write_text("--method=end\n--rho=-0.5\n")
    code, err = cli(f"--flagfile={flagfile}", f"--output_dir={tmp_path / 'out'}")
    assert code == 2 and "--rho=-0.5 is outside [0, 1]" in err and len(err.splitlines()) == 1


def test_one_flag_per_method_hyperparameter():
    from absl import flags

    import pipelines.run  # noqa: F401  (defines the flags)
    from bridging_tf.methods import all_hparams
    assert all(name in flags.FLAGS for name in all_hparams())


def test_dataset_preset_fills_only_unset_flags(monkeypatch):
    import types

    from pipelines.run import resolve_params
    fake = types.ModuleType("pipelines.configs.fakeset")
    fake.DEFAULTS = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "lr_schedule": "plateau"}
    monkeypatch.setitem(sys.modules, "pipelines.configs.fakeset", fake)
    p = resolve_params({"dataset": "fakeset", "lr": 0.05})
    assert (p["optimizer"], p["lr"], p["batch_size"], p["lr_schedule"]) == ("sgd", 0.05, 16,
                                                                            "plateau")
    assert resolve_params({})["optimizer"] == "adam"


def test_cli_process_user_error_is_exactly_one_stderr_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.run", "--rho=2",
                           f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --rho=2.0 is outside [0, 1]"]
    assert not out.exists()
