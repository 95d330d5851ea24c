"""Issue 14: one run is one report — figures + CSVs, named protocols, TensorBoard attack scalars."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_pipeline_cli import _env

FIGURES = ("fig3_samples", "fig6_reconstruction", "fig8_gaussian_pc1", "attack_summary")
SOUND = "Linear probe, sound protocol (independent ρ=0.1 attacker set)"
PAPER = "Linear probe, paper protocol (ρ=0.999 attacker set, as the reference)"


@pytest.fixture(scope="module")
def smoke_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_report") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "--scale=smoke", f"--data_dir={mnist_dir}",
         f"--output_dir={out}", "--attacks=linear,mlp,decoder", "--verbose=2"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _csv(path: Path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_report_folder_holds_every_figure_with_its_csv(smoke_run):
    out, _ = smoke_run
    report = out / "report"
    for stem in FIGURES:
        png = report / f"{stem}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert _csv(report / f"{stem}.csv"), f"{stem}.csv is empty"
    assert (report / "fig6_reconstruction.npz").is_file()
    res = json.loads((out / "results.json").read_text())
    assert res["report_files"] == sorted(f"{s}.png" for s in FIGURES)
    samples = _csv(report / "fig3_samples.csv")
    assert {float(r["rho"]) for r in samples} == {0.1, 0.997}


def test_attack_summary_csv_holds_every_attacker_and_protocol(smoke_run):
    out, _ = smoke_run
    res = json.loads((out / "results.json").read_text())
    rows = {(r["attacker"], r["protocol"]): r for r in _csv(out / "report" / "attack_summary.csv")}
    assert set(rows) == {("linear", "sound"), ("mlp", "sound"), ("decoder", "sound"),
                         ("linear", "paper")}
    assert float(rows["linear", "sound"]["accuracy"]) == pytest.approx(
        res["private_accuracy_by_protocol"]["sound"], abs=1e-5)
    assert float(rows["linear", "paper"]["accuracy"]) == pytest.approx(
        res["private_accuracy_by_protocol"]["paper"], abs=1e-5)
    assert float(rows["mlp", "sound"]["accuracy"]) == pytest.approx(
        res["private_accuracy_mlp"], abs=1e-5)
    assert rows["decoder", "sound"]["metric"] == "colour_accuracy"


def _scalars(logdir: Path) -> dict:
    import tensorflow as tf

    events = sorted(logdir.glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {logdir}"
    out = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    out[v.tag] = float(tf.make_ndarray(v.tensor))
    return out


def test_attack_metrics_are_tensorboard_scalars(smoke_run):
    out, _ = smoke_run
    res = json.loads((out / "results.json").read_text())
    scalars = _scalars(out / "report" / "logs")
    assert scalars["attack/sound/linear/unbiased/accuracy"] == pytest.approx(
        res["private_accuracy_by_protocol"]["sound"], abs=1e-6)
    assert scalars["attack/paper/linear/unbiased/accuracy"] == pytest.approx(
        res["private_accuracy_by_protocol"]["paper"], abs=1e-6)
    assert scalars["attack/sound/mlp/unbiased/accuracy"] == pytest.approx(
        res["private_accuracy_mlp"], abs=1e-6)
    assert scalars["attack/sound/decoder/unbiased/psnr"] == pytest.approx(
        res["decoder_psnr"], abs=1e-4)
    assert scalars["attack/worst/private_accuracy_worst"] == pytest.approx(
        res["private_accuracy_worst"], abs=1e-6)


def test_printed_summary_names_each_protocol_and_attacker(smoke_run):
    _, proc = smoke_run
    lines = proc.stdout.splitlines()
    assert sum(ln.startswith(SOUND + ":") for ln in lines) == 1
    assert sum(ln.startswith(PAPER + ":") for ln in lines) == 1
    assert any(ln.startswith("MLP probe (2 hidden layers, early stopping), sound protocol")
               for ln in lines)
    assert any(ln.startswith("Decoder (reconstruction attack), sound protocol") for ln in lines)
    assert "the paper's attacker" not in proc.stdout


def test_the_report_step_is_cheap(smoke_run, tmp_path):
    from components.report import build_results, write_figures

    out, _ = smoke_run
    inputs = {k: out / k for k in ("model", "embeddings", "attack")}
    run_info = {"method": "end", "attack_protocol": "sound", "seed": 0}
    start = time.time()
    made = write_figures(tmp_path, inputs, run_info, build_results(inputs, run_info))
    assert time.time() - start < 30
    assert sorted(Path(f).name for f in made["files"]) == sorted(f"{s}.png" for s in FIGURES)


def _results(info):
    from bridging_tf.attacks import AttackResults, AttackType
    from bridging_tf.attacks.results import AttackResult

    m = {"accuracy": 0.5, "balanced_accuracy": 0.5, "chance_uniform": 0.5,
         "chance_majority": 0.5}
    return AttackResults({AttackType.LINEAR: AttackResult(AttackType.LINEAR, {"test": m})},
                         info={"primary_split": "test", **info})


def test_summary_names_the_protocol_only_when_recorded():
    assert _results({}).summary().startswith("Linear probe: private accuracy 50.0%")
    assert _results({"protocol": "paper"}).summary().startswith(PAPER + ": ")
    custom = _results({"protocol": "sound", "attacker_set": "attacker set = 'attack_train'"})
    assert custom.summary().startswith("Linear probe, sound protocol (attacker set = "
                                       "'attack_train'): ")


def test_attack_summary_bars_need_rows(tmp_path):
    from bridging_tf.reporting.figures import attack_summary_bars

    assert attack_summary_bars([], tmp_path / "a.png") is None
    rows = [{"attacker": "linear", "protocol": "sound", "split": "t", "metric": "accuracy",
             "accuracy": 0.25, "balanced_accuracy": np.float64(0.2), "chance_uniform": 0.1,
             "chance_majority": 0.3}]
    path = attack_summary_bars(rows, tmp_path / "a.png")
    assert path.is_file() and _csv(path.with_suffix(".csv"))[0]["accuracy"] == "0.25"
