"""Sweep: grid layout, resume skips finished cells, summary files, flag errors."""

import csv
import json
from pathlib import Path

import pytest

from bridging_tf.errors import UserError
from pipelines import sweep


def fake_run_job(calls):
    def run_job(params, output_dir):
        calls.append((dict(params), Path(output_dir).name))
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        private = 0.9 if params["method"] == "vanilla" else 0.15
        res = {"method": params["method"], "dataset": "biased_mnist", "rho": params["rho"],
               "seed": params["seed"], "target_accuracy": 0.5, "biased_accuracy": 1.0,
               "private_accuracy": private, "private_chance": {"uniform": 0.1, "majority": 0.12},
               "private_accuracy_by_protocol": {"sound": private, "paper": private / 2},
               "attack_protocol": "sound", "epochs": params.get("epochs"), "train_size": 300}
        (out / "results.json").write_text(json.dumps(res))
        return res
    return run_job


def test_cell_names_and_grid_order():
    assert sweep.cell_name("end", 0.997, 2) == "end_rho0.997_seed2"
    assert sweep.cell_name("end", None, 0) == "end_seed0"
    cells = sweep.grid(["vanilla", "end"], [0.99, 0.999], [0, 1])
    assert len(cells) == 8 and cells[0] == {"method": "vanilla", "rho": 0.99, "seed": 0}
    assert cells[3] == {"method": "end", "rho": 0.999, "seed": 0}


def test_sweep_resume_skips_finished_cells(tmp_path):
    calls = []
    out = sweep.run_sweep(tmp_path, ["vanilla", "end"], [0.99, 0.997], [0, 1],
                          {"epochs": 1}, run_job=fake_run_job(calls), report=False)
    assert len(calls) == 8 and out["failed"] == 0
    assert calls[0][0] == {"epochs": 1, "method": "vanilla", "seed": 0, "rho": 0.99}
    (tmp_path / "end_rho0.997_seed1" / "results.json").unlink()
    calls.clear()
    again = sweep.run_sweep(tmp_path, ["vanilla", "end"], [0.99, 0.997], [0, 1],
                            {"epochs": 1}, run_job=fake_run_job(calls), report=False)
    assert [c[1] for c in calls] == ["end_rho0.997_seed1"]
    assert sorted(r["status"] for r in again["rows"]) == ["done"] + ["skipped"] * 7


def test_sweep_writes_summary_and_report(tmp_path):
    sweep.run_sweep(tmp_path, ["vanilla", "end"], [0.997], [0, 1], {},
                    run_job=fake_run_job([]), report=True)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == 4 and rows[0]["cell"] == "vanilla_rho0.997_seed0"
    assert float(rows[0]["private_accuracy_paper"]) == pytest.approx(0.45)
    doc = json.loads((tmp_path / "summary.json").read_text())
    end = next(a for a in doc["aggregate"] if a["method"] == "end")
    assert end["private_sound"]["mean"] == pytest.approx(0.15) and end["private_sound"]["n"] == 2
    assert (tmp_path / "report" / "tables.md").is_file()
    assert (tmp_path / "report" / "fig5_scatter_private_target_paper.png").is_file()


def test_failed_cell_is_recorded_and_the_rest_run(tmp_path):
    calls = []
    ok = fake_run_job(calls)

    def flaky(params, output_dir):
        if params["method"] == "end":
            raise RuntimeError("boom")
        return ok(params, output_dir)

    out = sweep.run_sweep(tmp_path, ["vanilla", "end"], [0.99], [0], {}, run_job=flaky,
                          report=False)
    assert out["failed"] == 1
    failed = next(r for r in out["rows"] if r["status"] == "failed")
    assert failed["error"] == "RuntimeError: boom"


def test_grid_flags_cannot_be_passed_through(tmp_path):
    with pytest.raises(UserError, match="set by the sweep grid"):
        sweep.run_sweep(tmp_path, ["end"], [0.99], [0], {"rho": 0.5}, run_job=fake_run_job([]))


def test_cli_bad_values_exit_2_with_one_line(tmp_path, capsys):
    assert sweep.main(["sweep", f"--output_dir={tmp_path}", "--rhos=0.9,1.5"]) == 2
    assert sweep.main(["sweep", f"--output_dir={tmp_path}", "--seeds=a"]) == 2
    assert sweep.main(["sweep", "--methods=end"]) == 2
    assert sweep.main(["sweep", f"--output_dir={tmp_path}", "--no_such_flag=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("error: ") for e in err)
    assert "outside [0, 1]" in err[0] and "--no_such_flag" in err[3]


# ------------------------------------------------------------------ --grid (the frontier)
FRONTIER = {  # (method, strength) -> (target, worst-case private, linear private)
    ("end", 0.1): (0.30, 0.99, 0.25), ("end", 1.0): (0.35, 0.97, 0.20),
    ("adversarial", 0.1): (0.25, 0.95, 0.50), ("adversarial", 1.0): (0.32, 0.60, 0.40),
}


def fake_grid_job(calls):
    def run_job(params, output_dir):
        calls.append((dict(params), Path(output_dir).name))
        method = params["method"]
        strength = params["alpha"] if method == "end" else params["adv_lambda"]
        target, worst, linear = FRONTIER[(method, strength)]
        noise = 0.01 * params["seed"]
        hparams = ({"alpha": strength, "beta": 1.0, "pairs": "all"} if method == "end" else
                   {"adv_lambda": strength, "adv_steps": 1, "adv_warmup_epochs": 0.0,
                    "adv_hidden": 256})
        res = {"method": method, "dataset": "biased_mnist", "rho": params["rho"],
               "seed": params["seed"], "target_accuracy": target + noise,
               "private_accuracy": linear, "private_chance": {"uniform": 0.1, "majority": 0.11},
               "private_accuracy_by_protocol": {"sound": linear, "paper": linear / 2},
               "private_accuracy_mlp": worst + noise, "private_accuracy_worst": worst + noise,
               "private_attacker_worst": "mlp", "private_balanced_accuracy_worst": worst,
               "private_advantage_worst": (worst - 0.1) / 0.9, "hparams": hparams,
               "attack_protocol": "sound", "epochs": 1, "train_size": 300}
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res))
        return res
    return run_job


def test_parse_grid_gives_one_config_per_value_typed_by_the_run_flags():
    configs = sweep.parse_grid("end:alpha=0.1,1,10;adversarial:lambda=0.5;vanilla;")
    assert configs == [{"method": "end", "hparams": {"alpha": 0.1}},
                       {"method": "end", "hparams": {"alpha": 1.0}},
                       {"method": "end", "hparams": {"alpha": 10.0}},
                       {"method": "adversarial", "hparams": {"adv_lambda": 0.5}},
                       {"method": "vanilla", "hparams": {}}]
    both = sweep.parse_grid("end:alpha=0.1,1:beta=2;adversarial:adv_steps=1,3")
    assert [c["hparams"] for c in both] == [{"alpha": 0.1, "beta": 2.0},
                                            {"alpha": 1.0, "beta": 2.0},
                                            {"adv_steps": 1}, {"adv_steps": 3}]
    assert isinstance(both[-1]["hparams"]["adv_steps"], int)
    assert sweep.cell_name("end", 0.997, 1, {"alpha": 0.1}) == "end_alpha0.1_rho0.997_seed1"


@pytest.mark.parametrize("grid, needle", [
    ("end:alpha", "'alpha' in 'end:alpha' is not hparam=v1,v2"),
    ("nope:alpha=1", "unknown method 'nope' in 'nope:alpha=1'"),
    ("end:alpha=1;end:lambda=1", "end has no hyper-parameter 'lambda' (in 'end:lambda=1')"),
    ("end:alpha=1,,2", "'alpha=1,,2' in 'end:alpha=1,,2' has an empty value"),
    ("end:alpha=big", "alpha=big in 'end:alpha=big'"),
    ("adversarial:adv_steps=1.5", "adv_steps=1.5 in 'adversarial:adv_steps=1.5'"),
    (";", "--grid is empty"),
])
def test_malformed_grid_is_one_line_naming_the_bad_part(tmp_path, capsys, grid, needle):
    assert sweep.main(["sweep", f"--output_dir={tmp_path}", f"--grid={grid}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --grid") and needle in err[0], err


def test_grid_conflicts_with_methods_and_with_passed_through_hparams(tmp_path, capsys):
    assert sweep.main(["sweep", f"--output_dir={tmp_path}", "--grid=end:alpha=1",
                       "--methods=end"]) == 2
    assert "--grid replaces --methods" in capsys.readouterr().err
    with pytest.raises(UserError, match="--alpha is set by --grid"):
        sweep.run_sweep(tmp_path, sweep.parse_grid("end:alpha=1"), [0.997], [0], {"alpha": 2.0},
                        run_job=fake_grid_job([]), report=False)


def test_grid_sweep_runs_each_config_and_summarises_worst_case_leakage(tmp_path):
    calls = []
    grid = sweep.parse_grid("end:alpha=0.1,1;adversarial:lambda=0.1,1")
    out = sweep.run_sweep(tmp_path, grid, [0.997], [0, 1], {"epochs": 1},
                          run_job=fake_grid_job(calls), report=True)
    assert out["failed"] == 0 and len(calls) == 8
    assert calls[0] == ({"epochs": 1, "alpha": 0.1, "method": "end", "seed": 0, "rho": 0.997},
                        "end_alpha0.1_rho0.997_seed0")
    assert calls[3][1] == "adversarial_adv_lambda1_rho0.997_seed0"
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    first = rows[0]
    assert first["hparams"] == "alpha=0.1" and first["private_attacker_worst"] == "mlp"
    assert float(first["private_accuracy_worst"]) == pytest.approx(0.99)
    assert float(first["private_advantage_worst"]) == pytest.approx(0.89 / 0.9)
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["grid"]["configs"][3] == {"method": "adversarial", "hparams": {"adv_lambda": 1.0}}
    agg = {(a["method"], a["config"]): a for a in doc["aggregate"]}
    assert set(agg) == {("end", "alpha=0.1"), ("end", "alpha=1"), ("adversarial", "adv_lambda=0.1"),
                        ("adversarial", "adv_lambda=1")}
    best = agg[("adversarial", "adv_lambda=1")]["private_worst"]
    assert best["mean"] == pytest.approx(0.605) and best["n"] == 2 and best["ci"] > 0
    # rerun: every cell is found by its grid name and skipped
    calls.clear()
    again = sweep.run_sweep(tmp_path, grid, [0.997], [0, 1], {"epochs": 1},
                            run_job=fake_grid_job(calls), report=False)
    assert calls == [] and {r["status"] for r in again["rows"]} == {"skipped"}
    frontier = (tmp_path / "report" / "fig9_frontier_biased_mnist_0.997.csv").read_text()
    assert (tmp_path / "report" / "fig9_frontier_biased_mnist_0.997.png").is_file()
    on_front = {(r["method"], r["config"]) for r in csv.DictReader(frontier.splitlines())
                if r["panel"] == "worst" and r["pareto"] == "1"}
    assert on_front == {("adversarial", "adv_lambda=1"), ("end", "alpha=1")}
