"""``python -m pipelines.sweep``: run a grid of jobs (method × ρ × seed), then the report.

Each cell runs :func:`pipelines.run.run_job` into
``<output_dir>/<method>_rho<rho>_seed<seed>/`` (``<method>_seed<seed>`` for
datasets without ρ). ``--grid`` replaces ``--methods`` with a grid over each
method's hyper-parameters — the privacy–utility frontier:
``--grid='end:alpha=0.1,1,10;adversarial:adv_lambda=0.1,1,10'`` is
``method[:hparam=v1,v2,...[:hparam2=...]]`` per method (the cartesian
product of its lists; a bare ``vanilla`` is one cell with the defaults),
methods separated by ``;``. A hyper-parameter may be named by its unique
suffix (``adversarial:lambda`` = ``adv_lambda``); its cells are
``<method>_<hparam><value>..._rho<rho>_seed<seed>``.

A cell whose ``results.json`` exists is skipped, so a killed sweep resumes
where it stopped (and ``run_job`` itself resumes a half-finished cell). At
the end it writes ``summary.csv`` / ``summary.json`` (one row per cell, with
the worst-case leakage keys, + the mean ± 95 % CI over seeds) and the report under
``<output_dir>/report/``. Any other ``--flag=value`` is passed to every job
(``--data_dir``, ``--train_size``, ``--epochs``, ``--width``, ``--test_size``,
``--attacks``, ``--alpha`` ...), parsed with the run's own flag types.

Examples::

    python -m pipelines.sweep --methods=vanilla,end --rhos=0.99,0.995,0.997,0.999 \\
        --seeds=0,1,2 --output_dir=sweeps/mnist --data_dir=../shared/data/mnist
    python -m pipelines.sweep --methods=vanilla,end --rhos=0.997 --seeds=0 \\
        --output_dir=/tmp/tiny --train_size=300 --epochs=1 --width=0.125 --test_size=200
    python -m pipelines.sweep --grid='vanilla;end:alpha=0.1,1,10;adversarial:lambda=0.1,1,10' \\
        --rhos=0.997 --seeds=0,1,2 --attacks=linear,mlp --output_dir=sweeps/frontier
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from absl import flags

from pipelines._quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # the schema's method registry imports Keras: keep stderr clean

from bridging_tf import options  # noqa: E402
from bridging_tf.errors import UserError  # noqa: E402
from pipelines._cli import define_flags, explicit_values, parse_flags, print_help  # noqa: E402

FLAGS = flags.FlagValues()  # private: pipelines.run owns the global absl FLAGS
flags.DEFINE_list("methods", ["vanilla", "end"], "Comma list of methods.", flag_values=FLAGS)
flags.DEFINE_list("rhos", None, "Comma list of ρ (Biased-MNIST; default 0.99,0.995,0.997,0.999).",
                  flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Comma list of integer seeds.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Sweep folder (one sub-folder per cell).",
                    flag_values=FLAGS)
flags.DEFINE_bool("report", True, "Build the report at the end.", flag_values=FLAGS)
flags.DEFINE_string("grid", None, "Hyper-parameter grid per method, replacing --methods: "
                    "'end:alpha=0.1,1,10;adversarial:adv_lambda=0.1,1,10' "
                    "(method[:hparam=v1,v2,...[:hparam2=...]], methods separated by ';').",
                    flag_values=FLAGS)
#: the job flags (bridging_tf.options), passed to every cell; --output_dir is the sweep's
RUN_FLAGS = define_flags(FLAGS, __name__, skip=("output_dir",))
SUMMARY_KEYS = ("cell", "method", "hparams", "rho", "seed", "status", "wall_s",
                "target_accuracy", "biased_accuracy", "private_accuracy_worst",
                "private_attacker_worst", "private_balanced_accuracy_worst",
                "private_advantage_worst", "private_accuracy", "private_accuracy_sound",
                "private_accuracy_paper", "private_chance_uniform", "private_chance_majority",
                "private_accuracy_mlp", "attack_protocol", "epochs", "train_size", "error")

#: one method entry of a sweep: a method name, or ``{"method": ..., "hparams": {...}}``.
MethodSpec = Union[str, dict]


def _value_text(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


def hparams_label(hparams: Optional[dict]) -> str:
    """``"alpha=0.1 beta=1"`` (the grid's values of a cell; ``""`` for none)."""
    return " ".join(f"{k}={_value_text(v)}" for k, v in (hparams or {}).items())


def cell_name(method: str, rho: Optional[float], seed: int,
              hparams: Optional[dict] = None) -> str:
    """``end_rho0.997_seed0`` (``end_seed0`` without ρ; ``end_alpha0.1_rho0.997_seed0``, grid)."""
    head = method + "".join(f"_{k}{_value_text(v)}" for k, v in (hparams or {}).items())
    return f"{head}_seed{seed}" if rho is None else f"{head}_rho{float(rho):g}_seed{seed}"


def _spec(m: MethodSpec) -> dict:
    return {"method": m, "hparams": {}} if isinstance(m, str) else {
        "method": m["method"], "hparams": dict(m.get("hparams") or {})}


def grid(methods: Sequence[MethodSpec], rhos: Sequence[Optional[float]],
         seeds: Sequence[int]) -> List[dict]:
    """Cells in run order: seed-major, then ρ, then method (a full table per seed first).

    A method given as ``{"method": ..., "hparams": {...}}`` (from :func:`parse_grid`)
    gives cells with an ``hparams`` entry.
    """
    cells = []
    for s in seeds:
        for r in rhos:
            for m in methods:
                spec = _spec(m)
                cell = {"method": spec["method"], "rho": r, "seed": s}
                if spec["hparams"]:
                    cell["hparams"] = spec["hparams"]
                cells.append(cell)
    return cells


def _resolve_hparam(method: str, name: str, part: str) -> str:
    from bridging_tf.methods import get_method_class

    names = list(get_method_class(method).HPARAMS.names())
    if name in names:
        return name
    matches = [n for n in names if n.endswith(f"_{name}")]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(names) or "none"
    if matches:
        raise UserError(f"--grid: {name!r} in {part!r} is ambiguous for {method} "
                        f"({', '.join(matches)})")
    raise UserError(f"--grid: {method} has no hyper-parameter {name!r} (in {part!r}); "
                    f"its hyper-parameters: {known}")


def parse_grid(text: str) -> List[dict]:
    """``"end:alpha=0.1,1;vanilla"`` -> ``[{"method", "hparams"}, ...]`` (one per config).

    Values are typed and checked by the option schema (:mod:`bridging_tf.options`). A
    malformed part is a one-line :class:`UserError` naming it.

    Example::

        parse_grid("end:alpha=0.1,1;adversarial:lambda=1")
        # [{"method": "end", "hparams": {"alpha": 0.1}}, {"method": "end", "hparams":
        #   {"alpha": 1.0}}, {"method": "adversarial", "hparams": {"adv_lambda": 1.0}}]
    """
    from bridging_tf import methods as methods_mod

    configs: List[dict] = []
    parts = [p.strip() for p in str(text or "").split(";")]
    if not any(parts):
        raise UserError("--grid is empty; e.g. --grid='end:alpha=0.1,1,10;adversarial:"
                        "adv_lambda=0.1,1,10'")
    for part in parts:
        if not part:
            continue
        method, *specs = [t.strip() for t in part.split(":")]
        if method not in methods_mod.available():
            raise UserError(f"--grid: unknown method {method!r} in {part!r}; choose one of "
                            f"{', '.join(methods_mod.available())}")
        axes: Dict[str, list] = {}
        for spec in specs:
            name, eq, values = (t.strip() for t in spec.partition("="))
            if not eq or not name:
                raise UserError(f"--grid: {spec!r} in {part!r} is not hparam=v1,v2,...")
            name = _resolve_hparam(method, name, part)
            if name in axes:
                raise UserError(f"--grid: {name} is given twice in {part!r}")
            items = [v.strip() for v in values.split(",")]
            if not values or not all(items):
                raise UserError(f"--grid: {spec!r} in {part!r} has an empty value")
            typed = []
            for v in items:
                try:
                    typed.append(options.check_value(name, v))
                except UserError as err:
                    raise UserError(f"--grid: {name}={v} in {part!r}: {err}") from None
            axes[name] = list(dict.fromkeys(typed))
        for combo in itertools.product(*axes.values()):
            config = {"method": method, "hparams": dict(zip(axes, combo))}
            if config not in configs:
                configs.append(config)
    return configs


def _summary_row(cell: str, params: dict, status: str, wall: float, res: Optional[dict],
                 error: str = "", hparams: Optional[dict] = None) -> dict:
    res = res or {}
    by = res.get("private_accuracy_by_protocol") or {}
    chance = res.get("private_chance")
    chance = chance if isinstance(chance, dict) else {"uniform": chance}
    row = {"cell": cell, "method": params["method"], "hparams": hparams_label(hparams),
           "rho": params.get("rho"), "seed": params["seed"], "status": status,
           "wall_s": round(wall, 2), "target_accuracy": res.get("target_accuracy"),
           "biased_accuracy": res.get("biased_accuracy"),
           "private_accuracy_worst": res.get("private_accuracy_worst"),
           "private_attacker_worst": res.get("private_attacker_worst"),
           "private_balanced_accuracy_worst": res.get("private_balanced_accuracy_worst"),
           "private_advantage_worst": res.get("private_advantage_worst"),
           "private_accuracy": res.get("private_accuracy"),
           "private_accuracy_sound": by.get("sound"), "private_accuracy_paper": by.get("paper"),
           "private_chance_uniform": chance.get("uniform"),
           "private_chance_majority": chance.get("majority"),
           "private_accuracy_mlp": res.get("private_accuracy_mlp"),
           "attack_protocol": res.get("attack_protocol"), "epochs": res.get("epochs"),
           "train_size": res.get("train_size"), "error": error}
    return row


def run_sweep(output_dir, methods: Sequence[MethodSpec], rhos: Sequence[Optional[float]],
              seeds: Sequence[int], run_params: Optional[dict] = None,
              run_job: Optional[Callable[[dict, Path], dict]] = None,
              report: bool = True, data_dir=None) -> Dict[str, object]:
    """Run every missing cell, write ``summary.csv`` / ``summary.json`` and the report.

    ``methods``: names, or ``{"method", "hparams"}`` configs (:func:`parse_grid`).
    ``run_job(params, output_dir) -> results`` defaults to :func:`pipelines.run.run_job`.
    Returns ``{"rows": [...], "failed": n, "report": {...} | None}``.
    """
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output_dir={out}: cannot create it ({err.strerror or err})") from None
    if run_job is None:
        from pipelines.run import run_job
    run_params = dict(run_params or {})
    for reserved in ("method", "rho", "seed", "output_dir"):
        if reserved in run_params:
            raise UserError(f"--{reserved} is set by the sweep grid; use --{reserved}s "
                            "(or --output_dir for the sweep folder)")
    for spec in map(_spec, methods):
        for name in spec["hparams"]:
            if name in run_params:
                raise UserError(f"--{name} is set by --grid for {spec['method']}; drop --{name}")
    rows = []
    cells = grid(methods, rhos, seeds)
    for i, c in enumerate(cells, 1):
        hparams = c.get("hparams") or {}
        name = cell_name(c["method"], c["rho"], c["seed"], hparams)
        cell_dir = out / name
        params = {**run_params, **hparams, "method": c["method"], "seed": int(c["seed"])}
        if c["rho"] is not None:
            params["rho"] = float(c["rho"])
        done = cell_dir / "results.json"
        if done.is_file():
            print(f"[{i}/{len(cells)}] {name}: results.json exists, skipped")
            rows.append(_summary_row(name, params, "skipped", 0.0, json.loads(done.read_text()),
                                     hparams=hparams))
            continue
        print(f"[{i}/{len(cells)}] {name}: running")
        start = time.time()
        try:
            res = run_job(params, cell_dir)
            rows.append(_summary_row(name, params, "done", time.time() - start, res,
                                     hparams=hparams))
        except UserError:
            raise  # the same flags would fail in every cell
        except Exception as err:  # a bug in one cell: keep going, report it
            traceback.print_exc()
            rows.append(_summary_row(name, params, "failed", time.time() - start, None,
                                     f"{type(err).__name__}: {err}", hparams=hparams))
        finally:
            try:
                import keras
                keras.backend.clear_session()
            except Exception:  # noqa: BLE001 - best effort between cells
                pass
    failed = sum(r["status"] == "failed" for r in rows)
    specs = [_spec(m) for m in methods]
    summary = {"grid": {"methods": list(dict.fromkeys(s["method"] for s in specs)),
                        "configs": specs, "rhos": list(rhos), "seeds": list(seeds)},
               "run_params": run_params, "cells": rows}
    rep = None
    finished = [r for r in rows if r["status"] != "failed"]
    if finished:
        from bridging_tf.reporting import aggregate, find_runs, run_row
        wanted = {r["cell"] for r in finished}
        runs = [r for r in find_runs(out) if r.path.parent == out and r.name in wanted]
        summary["aggregate"] = aggregate([run_row(r) for r in runs])
    _write_summary(out, summary, rows)
    if report and finished:
        from bridging_tf.reporting import build_report
        rep = build_report(out, data_dir=data_dir or run_params.get("data_dir"))
    return {"rows": rows, "failed": failed, "report": rep}


def _write_summary(out: Path, summary: dict, rows: List[dict]) -> None:
    from bridging_tf.fileio import write_text
    from bridging_tf.reporting.tables import aggregate_json

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_KEYS)
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in SUMMARY_KEYS})
    write_text(out / "summary.csv", buf.getvalue())
    agg = summary.pop("aggregate", [])
    doc = json.loads(json.dumps(summary, default=str))
    doc["aggregate"] = json.loads(aggregate_json(agg))
    write_text(out / "summary.json", json.dumps(doc, indent=2, ensure_ascii=False))


def main(argv=None) -> int:
    """Parse flags, run the sweep; user errors -> one line on stderr, exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    if print_help(FLAGS, argv, __doc__, __name__):
        return 0
    FLAGS.unparse_flags()  # each call starts from the defaults (in-process callers, tests)
    status = parse_flags(FLAGS, argv)
    if status is not None:
        return status
    try:
        if not FLAGS.output_dir:
            raise UserError("--output_dir=DIR is required (the sweep folder)")
        run_params = explicit_values(FLAGS, [n for n in RUN_FLAGS if n != "dataset"])
        try:
            seeds = [int(s) for s in FLAGS.seeds]
        except ValueError:
            raise UserError(f"--seeds={','.join(FLAGS.seeds)}: seeds must be integers") from None
        if FLAGS.rhos:
            rhos = [options.check_value("rho", r, flag="--rhos") for r in FLAGS.rhos]
        elif FLAGS.dataset == "biased_mnist":
            from bridging_tf.datasets.biased_mnist import TRAIN_RHOS
            rhos = list(TRAIN_RHOS)
        else:
            rhos = [None]
        if FLAGS.grid is not None:
            if FLAGS["methods"].present:
                raise UserError("--grid replaces --methods; give one of them (a bare method "
                                "name in the grid is one default cell: --grid='vanilla;end:...')")
            methods = parse_grid(FLAGS.grid)
        else:
            methods = FLAGS.methods
        if not methods or not seeds:
            raise UserError("--methods and --seeds must not be empty")
        run_params["dataset"] = FLAGS.dataset
        result = run_sweep(FLAGS.output_dir, methods, rhos, seeds, run_params,
                           report=FLAGS.report)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(FLAGS.output_dir)
    print(f"\nSummary: {out / 'summary.csv'}, {out / 'summary.json'}")
    if result["report"]:
        print(f"Report: {result['report']['out_dir']}/tables.md")
    if result["failed"]:
        print(f"{result['failed']} cell(s) failed; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def entry_point() -> None:
    """Console script entry."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
