"""Report from synthetic run folders: files exist, tables parse, figures have their CSV."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridging_tf.attacks import AttackResult, AttackResults, AttackType, gaussian_pc_view
from bridging_tf.errors import UserError
from bridging_tf.reporting import build_report, find_runs, run_row
from bridging_tf.reporting.tables import aggregate, fmt, parse_markdown_table

REPO = Path(__file__).resolve().parents[1]


def make_run(root, method, rho, seed, private_sound, private_paper, target, decoder=True):
    """A run folder as pipelines.run writes it (results.json + attack/main + protocol_paper)."""
    d = Path(root) / f"{method}_rho{rho:g}_seed{seed}"
    rng = np.random.default_rng(seed + int(rho * 1000))
    res = {"method": method, "dataset": "biased_mnist", "rho": rho, "seed": seed,
           "target_accuracy": target, "biased_accuracy": 0.99, "private_accuracy": private_sound,
           "private_chance": {"uniform": 0.1, "majority": 0.11},
           "private_accuracy_by_protocol": {"sound": private_sound, "paper": private_paper},
           "attack_protocol": "sound", "epochs": 1, "train_size": 300,
           "primary_eval": "unbiased", "private_accuracy_mlp": min(1.0, private_sound + 0.05)}
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(res))
    # The report artifact keeps a copy of results.json: must not count as another run.
    (d / "report").mkdir()
    (d / "report" / "results.json").write_text(json.dumps(res))
    per = {"accuracy": private_sound, "balanced_accuracy": private_sound, "chance_uniform": 0.1,
           "chance_majority": 0.11, "n": 20}
    results = {AttackType.LINEAR: AttackResult(AttackType.LINEAR, {"unbiased": per})}
    if decoder:
        images = np.random.default_rng(0).integers(0, 255, (6, 28, 28, 3), dtype=np.uint8)
        results[AttackType.DECODER] = AttackResult(
            AttackType.DECODER,
            {"unbiased": {"mse": 0.02, "psnr": 17.0, "baseline_mse": 0.1, "baseline_psnr": 10.0,
                          "colour_accuracy": private_sound, "colour_chance_uniform": 0.1,
                          "colour_chance_majority": 0.11, "n": 20}},
            arrays={"images:unbiased": images, "recon:unbiased": images // 2,
                    "private:unbiased": np.arange(6) % 10,
                    "colour_pred:unbiased": np.arange(6) % 10})
    z = rng.normal(size=(40, 8))
    y = np.arange(40) % 2
    z[:, 0] += y * (3.0 if method == "vanilla" else 0.1)
    view = gaussian_pc_view(z, y, ["a", "b"])
    AttackResults(results, {"unbiased": view}, {"primary_split": "unbiased"}).save(
        d / "attack" / "main")
    AttackResults({AttackType.LINEAR: AttackResult(
        AttackType.LINEAR, {"unbiased": dict(per, accuracy=private_paper)})},
        info={"primary_split": "unbiased"}).save(d / "attack" / "protocol_paper")
    return d


@pytest.fixture()
def runs_dir(tmp_path):
    for seed in (0, 1):
        for rho in (0.99, 0.997):
            make_run(tmp_path, "vanilla", rho, seed, 0.8 + 0.01 * seed, 0.9, 0.5)
            make_run(tmp_path, "end", rho, seed, 0.12 + 0.01 * seed, 0.05, 0.8)
    return tmp_path


def test_find_runs_skips_nested_copies_and_reads_both_protocols(runs_dir):
    runs = find_runs(runs_dir)
    assert len(runs) == 8
    assert set(runs[0].attacks) == {"sound", "paper"}
    row = run_row(runs[0])
    assert row["private_paper"] is not None and row["colour_from_reconstruction"] is not None


def test_aggregate_gives_mean_and_ci_over_seeds(runs_dir):
    agg = aggregate(run_row(r) for r in find_runs(runs_dir))
    assert len(agg) == 4
    van = next(a for a in agg if a["method"] == "vanilla" and a["rho"] == 0.99)
    assert van["private_sound"]["mean"] == pytest.approx(0.805)
    assert van["private_sound"]["n"] == 2 and van["private_sound"]["ci"] > 0
    assert fmt(van["private_sound"]).startswith("80.5 ± ")


def test_build_report_writes_tables_and_figures(runs_dir):
    out = build_report(runs_dir, data_dir=REPO.parent / "shared" / "data" / "mnist")
    rep = runs_dir / "report"
    for name in ("tables.md", "tables.csv", "tables.json", "runs.csv",
                 "fig4_polar_private_sound.png", "fig4_polar_private_sound.csv",
                 "fig4_polar_private_paper.png", "fig5_scatter_private_target_sound.png",
                 "fig5_scatter_private_target_sound.csv",
                 "fig6_reconstruction_biased_mnist_0.99.png",
                 "fig6_reconstruction_biased_mnist_0.99.csv",
                 "fig8_gaussian_pc1_biased_mnist_0.997.png",
                 "fig8_gaussian_pc1_biased_mnist_0.997.csv"):
        assert (rep / name).is_file(), name
    rows = parse_markdown_table((rep / "tables.md").read_text())
    assert len(rows) == 4
    end = next(r for r in rows if r["Method"] == "EnD" and r["ρ"] == "0.997")
    assert end["Private: sound"].startswith("12.5 ± ")
    assert end["Private: paper"] == "5.0 ± 0.0"
    assert end["Paper: private (paper protocol)"] == "18.7"
    assert json.loads((rep / "tables.json").read_text())[0]["method"] == "vanilla"
    scatter = (rep / "fig5_scatter_private_target_sound.csv").read_text().splitlines()
    assert scatter[0].startswith("method,rho") and len(scatter) == 5
    if (REPO.parent / "shared" / "data" / "mnist").is_dir():
        assert (rep / "fig3_biased_mnist_samples.png").is_file()
        assert (rep / "fig3_biased_mnist_samples.csv").is_file()
    assert out["runs"] == 8


def test_report_cli_writes_the_report(runs_dir):
    ok = subprocess.run([sys.executable, "-m", "pipelines.report", f"--runs={runs_dir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (runs_dir / "report" / "tables.md").is_file()



def test_report_cli_rejects_empty_folder_with_one_line(tmp_path, capsys):
    from pipelines import report

    assert report.main(["report", f"--runs={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --runs=")
    assert report.main(["report"]) == 2


def test_find_runs_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        find_runs(tmp_path / "missing")
    with pytest.raises(UserError, match="no results.json"):
        find_runs(tmp_path)


def test_eb_split_grid_writes_png_and_csv(tmp_path):
    from bridging_tf.reporting.figures import eb_split_grid
    rng = np.random.default_rng(0)
    grid = {"EB1": (rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), np.array([0, 1, 11, 5]),
                    np.array([1, 1, 0, 0])),
            "EB2": (rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), np.array([0, 2, 9]),
                    np.array([0, 0, 1]))}
    png = eb_split_grid(grid, tmp_path / "fig7.png", class_names=[str(i) for i in range(12)],
                        private_names=("male", "female"))
    assert png.is_file() and png.stat().st_size > 1000
    lines = (tmp_path / "fig7.csv").read_text().splitlines()
    assert lines[0] == "split,column,label,label_name,private,private_name"
    assert len(lines) == 1 + 4 + 3
    assert "EB2,2,9,9,1,female" in lines


def test_face_runs_are_grouped_by_split_and_target_not_rho():
    from bridging_tf.reporting.tables import setting_of
    from pipelines.pipeline import BASE_DEFAULTS, run_info
    params = {**BASE_DEFAULTS, "dataset": "utkface", "method": "end", "split": "EB1",
              "target": "age"}
    info = run_info(params)
    assert info["rho"] is None and info["split"] == "EB1"
    assert setting_of(info) == "EB1 / age"
    assert run_info({**BASE_DEFAULTS})["rho"] == 0.997


# ------------------------------------------------- worst-case leakage and the frontier
def test_run_row_falls_back_to_the_saved_sound_attacks_for_the_worst_case(runs_dir):
    # these runs' results.json predate the *_worst keys: computed from attack/main (sound)
    run = next(r for r in find_runs(runs_dir) if r.name == "end_rho0.997_seed1")
    row = run_row(run)
    assert row["private_worst"] == pytest.approx(0.13) and row["private_attacker_worst"] == "linear"
    assert row["private_advantage_worst"] == pytest.approx((0.13 - 0.1) / 0.9)


def test_report_has_worst_case_column_figures_and_frontier(runs_dir):
    build_report(runs_dir)
    rep = runs_dir / "report"
    end = next(r for r in parse_markdown_table((rep / "tables.md").read_text())
               if r["Method"] == "EnD" and r["ρ"] == "0.997")
    assert end["Private: worst case"].startswith("12.5 ± ") and end["Private: worst case"].endswith(
        "(linear)")
    for name in ("fig4_polar_private_worst.png", "fig5_scatter_private_target_worst.csv",
                 "fig9_frontier_biased_mnist_0.997.png", "fig9_frontier_biased_mnist_0.997.csv"):
        assert (rep / name).is_file(), name
    header = (rep / "tables.csv").read_text().splitlines()[0].split(",")
    assert "private_worst_mean" in header and "private_attacker_worst" in header


def _grid_run(root, method, hparams, seed, target, worst, linear):
    d = Path(root) / f"{method}_{'_'.join(f'{k}{v}' for k, v in hparams.items())}_seed{seed}"
    d.mkdir(parents=True)
    res = {"method": method, "dataset": "biased_mnist", "rho": 0.997, "seed": seed,
           "target_accuracy": target, "private_accuracy": linear, "hparams": hparams,
           "private_accuracy_by_protocol": {"sound": linear, "paper": linear},
           "private_chance": {"uniform": 0.1, "majority": 0.1}, "private_accuracy_mlp": worst,
           "private_accuracy_worst": worst, "private_attacker_worst": "mlp",
           "private_balanced_accuracy_worst": worst,
           "private_advantage_worst": (worst - 0.1) / 0.9, "attack_protocol": "sound"}
    (d / "results.json").write_text(json.dumps(res))


def test_hyperparameter_settings_are_separate_rows_labelled_by_what_varies(tmp_path):
    for seed in (0, 1):
        for alpha, target, worst in ((0.1, 0.3, 0.99), (1.0, 0.35, 0.9)):
            _grid_run(tmp_path, "end", {"alpha": alpha, "beta": 1.0, "pairs": "all"}, seed,
                      target + 0.01 * seed, worst, 0.2)
        _grid_run(tmp_path, "vanilla", {}, seed, 0.1, 1.0, 1.0)
    build_report(tmp_path)
    rows = {r["Method"]: r for r in parse_markdown_table(
        (tmp_path / "report" / "tables.md").read_text())}
    assert set(rows) == {"Vanilla", "EnD (alpha=0.1)", "EnD (alpha=1)"}
    assert rows["EnD (alpha=1)"]["Private: worst case"] == "90.0 ± 0.0 (mlp)"
    assert rows["EnD (alpha=0.1)"]["Advantage: worst"] == "0.99 ± 0.00"
    assert rows["Vanilla"]["Seeds"] == "2"


def test_pareto_front_and_frontier_figure(tmp_path):
    from bridging_tf.reporting.figures import pareto_front, privacy_utility_frontier

    assert pareto_front([(0.9, 0.5), (0.5, 0.4), (0.6, 0.3), (0.5, 0.4), (0.95, 0.5)]) == [0, 1, 3]

    def stat(mean, ci=float("nan"), n=1):
        return {"mean": mean, "ci": ci, "n": n}

    def row(method, config, target, worst, linear, n=2):
        empty = {"mean": float("nan"), "ci": float("nan"), "n": 0}
        return {"method": method, "config": config, "private_attacker_worst": "mlp",
                "target_accuracy": stat(target, 0.02, n), "private_worst": stat(worst, 0.01, n),
                "private_sound": stat(linear, 0.01, n) if linear is not None else empty,
                "private_chance_uniform": stat(0.1), "private_chance_majority": stat(0.12)}

    agg = [row("end", "alpha=0.1", 0.30, 0.99, 0.25), row("end", "alpha=1", 0.35, 0.97, 0.20),
           row("adversarial", "adv_lambda=1", 0.32, 0.60, None, n=1)]
    png = privacy_utility_frontier(agg, tmp_path / "frontier.png")
    assert png.is_file() and png.stat().st_size > 5000
    lines = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    worst = {(r["method"], r["config"]): r for r in lines if r["panel"] == "worst"}
    linear = {(r["method"], r["config"]): r for r in lines if r["panel"] == "linear"}
    assert {k for k, r in worst.items() if r["pareto"] == "1"} == {("end", "alpha=1"),
                                                                   ("adversarial", "adv_lambda=1")}
    assert set(linear) == {("end", "alpha=0.1"), ("end", "alpha=1")}   # no linear number: left out
    assert {k for k, r in linear.items() if r["pareto"] == "1"} == {("end", "alpha=1")}
    assert worst[("end", "alpha=1")]["attacker"] == "mlp"
    assert privacy_utility_frontier([row("end", "", 0.3, 0.9, 0.2, n=0)],
                                    tmp_path / "none.png") is None
