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
