"""Build the whole report of a folder of runs (what ``pipelines.report`` calls)."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

import numpy as np

from bridging_tf.attacks import AttackType
from bridging_tf.fileio import write_text
from bridging_tf.reporting import figures, tables
from bridging_tf.reporting.runs import REPORT_DIR, Run, find_runs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_") or "all"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, text)


def _groups(runs: List[Run]) -> "OrderedDict[tuple, List[Run]]":
    """(dataset, setting) -> runs of the smallest seed there (one figure per group)."""
    out: "OrderedDict[tuple, List[Run]]" = OrderedDict()
    for run in sorted(runs, key=lambda r: (str(r.results.get("dataset")),
                                           float(r.results.get("rho") or 0),
                                           tables._method_key(str(r.results.get("method"))))):
        key = (run.results.get("dataset"), tables.setting_of(run.results))
        out.setdefault(key, []).append(run)
    for key, members in out.items():
        seed = min(int(r.results.get("seed") or 0) for r in members)
        out[key] = [r for r in members if int(r.results.get("seed") or 0) == seed]
    return out


def _recon_figures(runs: List[Run], out: Path, notes: List[str]) -> List[Path]:
    files = []
    for (dataset, setting), members in _groups(runs).items():
        truth, decoded, colours, private = None, OrderedDict(), {}, None
        for run in members:
            att = run.main_attacks()
            if att is None or AttackType.DECODER not in att:
                continue
            r = att.get(AttackType.DECODER)
            split = att.primary_split
            imgs, rec = r.arrays.get(f"images:{split}"), r.arrays.get(f"recon:{split}")
            if imgs is None or rec is None:
                continue
            if truth is None:
                truth, private = imgs, r.arrays.get(f"private:{split}")
            elif imgs.shape != truth.shape or not np.array_equal(imgs, truth):
                notes.append(f"reconstruction grid {dataset} {setting}: {run.name} decoded "
                             "different test images; left out")
                continue
            decoded[str(run.results.get("method"))] = rec
            if f"colour_pred:{split}" in r.arrays:
                colours[str(run.results.get("method"))] = r.arrays[f"colour_pred:{split}"]
        if truth is not None:
            files.append(figures.reconstruction_grid(
                truth, decoded, out / f"fig6_reconstruction_{_slug(dataset)}_{_slug(setting)}.png",
                colour_pred=colours, private=private))
    return files


def _gaussian_figures(runs: List[Run], out: Path) -> List[Path]:
    files = []
    for (dataset, setting), members in _groups(runs).items():
        views = OrderedDict()
        for run in members:
            att = run.main_attacks()
            if att is not None and att.primary_split in att.views:
                views[str(run.results.get("method"))] = att.views[att.primary_split]
        if views:
            files.append(figures.gaussian_plot(
                views, out / f"fig8_gaussian_pc1_{_slug(dataset)}_{_slug(setting)}.png",
                title=f"{dataset} {setting}: first principal component of the bottleneck"))
    return files


def _mnist_grid(runs: List[Run], out: Path, data_dir, notes: List[str]) -> List[Path]:
    mnist = [r for r in runs if r.results.get("dataset") == "biased_mnist"]
    if not mnist:
        return []
    if data_dir is None:
        for r in mnist:
            meta = r.path / "run_metadata.json"
            if meta.is_file():
                data_dir = (json.loads(meta.read_text()).get("flags") or {}).get("data_dir")
                if data_dir:
                    break
    from bridging_tf.datasets.mnist_source import load_mnist
    from bridging_tf.errors import UserError

    try:
        (x, y), _ = load_mnist(data_dir, allow_download=False)
    except UserError as err:
        notes.append(f"Fig. 3 sample grid skipped: MNIST not found ({err})")
        return []
    rhos = sorted({float(r.results["rho"]) for r in mnist if r.results.get("rho") is not None})
    rhos = rhos + [0.1] if 0.1 not in rhos else rhos
    return [figures.biased_mnist_grid(x, y, rhos,
                                      out / "fig3_biased_mnist_samples.png")]


def _sample_batch(split, n: int, seed: int):
    """``n`` shuffled uint8 images with their labels from ``split``."""
    x, y = next(iter(split.dataset(n, shuffle=True, seed=seed, normalize=False)))
    return x.numpy(), y["label"].numpy(), y["private"].numpy()


def _eb_grids(runs: List[Run], out: Path, notes: List[str], columns: int = 10) -> List[Path]:
    """Fig. 7: EB1 and EB2 training samples for each IMDB / UTKFace data folder among the runs."""
    from bridging_tf.datasets import load
    from bridging_tf.errors import UserError

    files, seen = [], set()
    for r in runs:
        dataset = r.results.get("dataset")
        meta_path = r.path / "run_metadata.json"
        if dataset not in ("imdb", "utkface") or not meta_path.is_file():
            continue
        flags = json.loads(meta_path.read_text()).get("flags") or {}
        key = (dataset, flags.get("data_dir"), flags.get("target"))
        if key in seen:
            continue
        seen.add(key)
        opts = {k: flags[k] for k in ("data_dir", "target", "seed") if flags.get(k) is not None}
        try:
            bundle = load(dataset, split="EB1", image_size=64, **opts)
        except UserError as err:
            notes.append(f"Fig. 7 EB split grid for {dataset} skipped: {err}")
            continue
        seed = int(flags.get("seed") or 0)
        grid = {"EB1": _sample_batch(bundle["train"], columns, seed),
                "EB2": _sample_batch(bundle["other_eb"], columns, seed)}
        files.append(figures.eb_split_grid(
            grid, out / f"fig7_eb_splits_{_slug(dataset)}.png", class_names=bundle.class_names,
            private_names=bundle.private_names,
            title=f"{dataset}: EB1 (women 0-29, men 40+) vs EB2 (men 0-29, women 40+)"))
    return files


def _frontier_figures(agg: List[dict], out: Path) -> List[Path]:
    """Fig. 9: the privacy–utility frontier of each (dataset, setting)."""
    files = []
    groups: "OrderedDict[tuple, List[dict]]" = OrderedDict()
    for a in agg:
        groups.setdefault((a["dataset"], a["setting"]), []).append(a)
    for (dataset, setting), members in groups.items():
        p = figures.privacy_utility_frontier(
            members, out / f"fig9_frontier_{_slug(dataset)}_{_slug(setting)}.png",
            title=f"{dataset} {setting}: privacy–utility frontier (up and left is better)")
        if p is not None:
            files.append(p)
    return files


def build_report(runs_dir, out_dir=None, data_dir=None) -> Dict[str, object]:
    """Read every run under ``runs_dir``; write tables and figures to ``out_dir``.

    ``out_dir`` defaults to ``<runs_dir>/report``. Returns ``{"files": [...],
    "notes": [...], "runs": n}``.

    Example::

        build_report("sweeps/mnist")["files"]
    """
    runs_dir = Path(runs_dir)
    runs = find_runs(runs_dir)
    out = Path(out_dir) if out_dir else runs_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = [tables.run_row(r) for r in runs]
    agg = tables.aggregate(rows)
    notes: List[str] = []
    files = [
        _write(out / "runs.csv", tables.runs_csv(rows)),
        _write(out / "tables.csv", tables.aggregate_csv(agg)),
        _write(out / "tables.json", tables.aggregate_json(agg)),
    ]
    for protocol in ("sound", "paper", "worst"):
        for fn, stem in ((figures.polar_private, "fig4_polar_private"),
                         (figures.scatter_private_target, "fig5_scatter_private_target")):
            p = fn(agg, out / f"{stem}_{protocol}.png", protocol=protocol)
            if p is not None:
                files.append(p)
    files += _frontier_figures(agg, out)
    files += _recon_figures(runs, out, notes)
    files += _gaussian_figures(runs, out)
    files += _mnist_grid(runs, out, data_dir, notes)
    files += _eb_grids(runs, out, notes)

    md = ["# Report", "", f"{len(runs)} run(s) under `{runs_dir}`.", "",
          tables.markdown_tables(agg), "## Attack summaries (one seed per line)", ""]
    for r in sorted(runs, key=lambda r: r.name):
        att = r.main_attacks()
        if att is not None:
            md.append(f"**{r.name}** ({r.protocol} protocol)")
            md += [f"- {line}" for line in att.summary().splitlines()]
            md.append("")
        elif r.results.get("attack_summary"):
            md += [f"**{r.name}**", f"- {r.results['attack_summary']}", ""]
    md += ["## Figures", ""]
    md += [f"- `{p.name}` (data: `{p.with_suffix('.csv').name}`)" for p in files
           if p.suffix == ".png"]
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    files.insert(0, _write(out / "tables.md", "\n".join(md) + "\n"))
    return {"files": [str(p) for p in files], "notes": notes, "runs": len(runs),
            "out_dir": str(out)}
