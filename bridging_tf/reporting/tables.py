"""Tables in the paper's layout (Tables 2–4; Biased-MNIST per ρ), mean ± 95 % CI over seeds.

Each run becomes one flat row (:func:`run_row`); rows sharing (dataset,
setting, method, method hyper-parameters) are aggregated over seeds
(:func:`aggregate`, Student-t CI). Both attack protocols are shown side by
side: *sound* (attacker trained on an independent ρ = 0.1 set) and *paper*
(the reference's ρ = 0.999 set). The headline leakage is the *worst case*:
the highest private accuracy over every sound-protocol attacker run (linear,
MLP, colour from the decoder's reconstruction; ``bridging_tf.attacks.worst``).
Runs of one method with different hyper-parameters (a ``pipelines.sweep
--grid``) are separate rows, labelled by the hyper-parameters that vary.
Biased-MNIST tables add the reference's own numbers (METHODS.md §10).

Example::

    rows = [run_row(r) for r in find_runs("sweeps/mnist")]
    agg = aggregate(rows)
    print(markdown_tables(agg))
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

from bridging_tf.attacks import AttackType, mean_ci
from bridging_tf.attacks.worst import worst_case
from bridging_tf.markdown import markdown_table
from bridging_tf.reporting import reference
from bridging_tf.reporting.runs import Run

METHOD_ORDER = ("vanilla", "biased", "rubi", "learned_mixin", "rebias", "end", "adversarial",
                "hsic_private")
METHOD_LABELS = {"vanilla": "Vanilla", "biased": "Biased (g)", "rubi": "RUBi",
                 "learned_mixin": "LearnedMixin", "rebias": "ReBias", "end": "EnD",
                 "adversarial": "Adversarial", "hsic_private": "HSIC-private"}

# metric key -> column header (values are fractions in [0, 1] unless noted).
METRICS = OrderedDict([
    ("target_accuracy", "Target"),
    ("biased_accuracy", "Biased test (ρ=1)"),
    ("private_worst", "Private: worst case"),
    ("private_sound", "Private: sound"),
    ("private_paper", "Private: paper"),
    ("private_mlp", "Private: MLP"),
    ("colour_from_reconstruction", "Colour from recon."),
    ("decoder_psnr", "Recon. PSNR dB"),
    ("pc1_overlap", "PC1 overlap (BC)"),
    ("private_balanced_worst", "Balanced: worst"),
    ("private_advantage_worst", "Advantage: worst"),
    ("private_chance_uniform", "Chance 1/K"),
    ("private_chance_majority", "Chance majority"),
])
NOT_PERCENT = {"decoder_psnr", "pc1_overlap", "private_advantage_worst"}


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _method_key(name: str):
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), name)


def setting_of(results: dict) -> str:
    """The row group of a run: ρ for Biased-MNIST, else target / split."""
    if results.get("dataset") == "biased_mnist" or (
            results.get("rho") is not None and not results.get("target")):
        rho = results.get("rho")
        return f"ρ={float(rho):g}" if rho is not None else ""
    parts = [str(results[k]) for k in ("split", "target") if results.get(k)]
    return " / ".join(parts)


def _primary_metric(attacks, attack_type, split, key):
    if attacks is None or attack_type not in attacks:
        return None
    m = attacks.get(attack_type).per_split.get(split) or {}
    return m.get(key)


def run_row(run: Run) -> Dict[str, object]:
    """One flat row of a run (fractions in [0, 1]; None when not measured)."""
    r = run.results
    main = run.main_attacks()
    primary = r.get("primary_eval") or (main.primary_split if main else None)
    by_protocol = dict(r.get("private_accuracy_by_protocol") or {})
    if not by_protocol and r.get("private_accuracy") is not None:
        by_protocol[run.protocol] = r["private_accuracy"]
    for p, att in run.attacks.items():
        if p not in by_protocol:
            v = _primary_metric(att, AttackType.LINEAR, primary, "accuracy")
            if v is not None:
                by_protocol[p] = v
    saved = r.get("attacks") or {}
    mlp = r.get("private_accuracy_mlp")
    if mlp is None:
        mlp = _primary_metric(main, AttackType.MLP, primary, "accuracy")
    dec = (saved.get("decoder") or {}).get(primary) or {}
    colour = dec.get("colour_accuracy", _primary_metric(main, AttackType.DECODER, primary,
                                                        "colour_accuracy"))
    psnr = dec.get("psnr", _primary_metric(main, AttackType.DECODER, primary, "psnr"))
    overlap = None
    if main is not None and primary in main.views:
        overlap = main.views[primary].overlap
    chance = r.get("private_chance")
    if isinstance(chance, dict):
        cu, cm = chance.get("uniform"), chance.get("majority")
    else:
        cu, cm = chance, None
    worst = {k: r.get(k) for k in ("private_accuracy_worst", "private_attacker_worst",
                                   "private_balanced_accuracy_worst", "private_advantage_worst")}
    if worst["private_accuracy_worst"] is None:  # a run from before the worst-case keys
        worst.update(worst_case(run.attacks, primary))
    hparams = r.get("hparams") if isinstance(r.get("hparams"), dict) else {}
    return {
        "run": run.name, "path": str(run.path), "dataset": r.get("dataset"),
        "method": r.get("method"), "rho": r.get("rho"), "seed": r.get("seed"),
        "setting": setting_of(r), "attack_protocol": run.protocol,
        "target_accuracy": r.get("target_accuracy"), "biased_accuracy": r.get("biased_accuracy"),
        "private_sound": by_protocol.get("sound"), "private_paper": by_protocol.get("paper"),
        "private_mlp": mlp, "colour_from_reconstruction": colour, "decoder_psnr": psnr,
        "pc1_overlap": overlap, "private_chance_uniform": cu, "private_chance_majority": cm,
        "private_worst": worst["private_accuracy_worst"],
        "private_attacker_worst": worst["private_attacker_worst"],
        "private_balanced_worst": worst["private_balanced_accuracy_worst"],
        "private_advantage_worst": worst["private_advantage_worst"],
        "hparams": dict(hparams),
        "epochs": r.get("epochs"), "train_size": r.get("train_size"),
    }


def _sortable(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _hparams_key(row) -> tuple:
    return tuple((k, _sortable(v)) for k, v in sorted((row.get("hparams") or {}).items()))


def _fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_label(hparams: dict, keys: Sequence[str]) -> str:
    """``"alpha=0.1, beta=1"``: the ``keys`` of ``hparams`` (the ones that vary in a table)."""
    return ", ".join(f"{k}={_fmt_value(hparams[k])}" for k in keys if k in hparams)


def _sort_key(row):
    rho = row.get("rho")
    return (str(row.get("dataset")), -1.0 if rho is None else float(rho), row.get("setting") or "",
            _method_key(str(row.get("method"))), _hparams_key(row))


def aggregate(rows: Iterable[dict], confidence: float = 0.95) -> List[dict]:
    """Group rows by (dataset, setting, method, hparams): ``<metric>`` -> {mean, ci, n} + seeds.

    ``config`` labels a group by the hyper-parameters that differ between the
    groups of its method in the same dataset (``""`` when they never do);
    ``private_attacker_worst`` lists the worst-case attacker(s) over its seeds.
    """
    groups: "OrderedDict[tuple, List[dict]]" = OrderedDict()
    for row in sorted(rows, key=_sort_key):
        key = (row["dataset"], row["setting"], row["method"], _hparams_key(row))
        groups.setdefault(key, []).append(row)
    varying: Dict[tuple, List[str]] = {}
    by_method: Dict[tuple, List[dict]] = {}
    for (dataset, _setting, method, _h), members in groups.items():
        by_method.setdefault((dataset, method), []).append(members[0].get("hparams") or {})
    for k, configs in by_method.items():
        names = sorted({n for c in configs for n in c})
        varying[k] = [n for n in names if len({repr(c.get(n)) for c in configs}) > 1]
    out = []
    for (dataset, setting, method, _h), members in groups.items():
        hparams = dict(members[0].get("hparams") or {})
        agg = {"dataset": dataset, "setting": setting, "method": method,
               "rho": members[0].get("rho"), "seeds": sorted(m.get("seed") for m in members
                                                             if m.get("seed") is not None),
               "epochs": members[0].get("epochs"), "train_size": members[0].get("train_size"),
               "hparams": hparams,
               "config": config_label(hparams, varying.get((dataset, method), [])),
               "private_attacker_worst": "/".join(sorted(
                   {str(m["private_attacker_worst"]) for m in members
                    if m.get("private_attacker_worst")}))}
        for key in METRICS:
            vals = [m[key] for m in members if m.get(key) is not None]
            mean, ci = mean_ci(vals, confidence)
            agg[key] = {"mean": mean, "ci": ci, "n": len(vals)}
        out.append(agg)
    return out


def row_label(agg_row: dict) -> str:
    """``"EnD (alpha=0.1)"``: the method's label plus its varying hyper-parameters."""
    label = method_label(agg_row["method"])
    return f"{label} ({agg_row['config']})" if agg_row.get("config") else label


def fmt(stat: Optional[dict], percent: bool = True, digits: int = 1) -> str:
    """``"93.2 ± 0.4"`` (CI only with ≥ 2 seeds); ``"–"`` when missing."""
    if not stat or stat.get("n", 0) == 0 or _nan(stat.get("mean")):
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{scale * stat['mean']:.{digits}f}"
    if not _nan(stat.get("ci")):
        text += f" ± {scale * stat['ci']:.{digits}f}"
    return text


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _present(agg: List[dict], key: str) -> bool:
    return any(a[key]["n"] for a in agg)


def markdown_tables(agg: List[dict]) -> str:
    """One Markdown table per dataset (percent, mean ± 95 % CI over seeds)."""
    parts = []
    for dataset in OrderedDict((a["dataset"], None) for a in agg):
        rows = [a for a in agg if a["dataset"] == dataset]
        cols = [k for k in METRICS if k in ("target_accuracy", "private_sound", "private_paper")
                or _present(rows, k)]
        is_mnist = dataset == "biased_mnist"
        header = ["Method", "ρ" if is_mnist else "Setting"] + [METRICS[k] for k in cols] + ["Seeds"]
        if is_mnist:
            header += ["Paper: target", "Paper: private (paper protocol)"]
        body = []
        for a in rows:
            cells = [row_label(a), a["setting"].replace("ρ=", "") if is_mnist
                     else (a["setting"] or "–")]
            for k in cols:
                cell = fmt(a[k], percent=k not in NOT_PERCENT,
                           digits=1 if k not in NOT_PERCENT else 2)
                if k == "private_worst" and a.get("private_attacker_worst") and cell != "–":
                    cell += f" ({a['private_attacker_worst']})"
                cells.append(cell)
            cells.append(str(len(a["seeds"])))
            if is_mnist:
                pt = reference.lookup(reference.PUBLISHED_TARGET, a["method"], a["rho"])
                bt = reference.lookup(reference.BR_TARGET, a["method"], a["rho"])
                bp = reference.lookup(reference.BR_PRIVATE, a["method"], a["rho"])
                cells.append("–" if pt is None else f"{pt:.1f} (BR ckpt {bt:.1f})"
                             if bt is not None else f"{pt:.1f}")
                cells.append("–" if bp is None else f"{bp:.1f}")
            body.append(cells)
        scale = ""
        if rows and rows[0].get("train_size"):
            scale = f" Scale: train_size={rows[0]['train_size']}, epochs={rows[0]['epochs']}."
        title = {"biased_mnist": "Biased-MNIST (Fig. 4/5 numbers)", "celeba": "CelebA (Table 2)",
                 "imdb": "IMDB (Table 3)", "siim": "SIIM-FISABIO-RSNA (Table 4)"}.get(
                     dataset, str(dataset))
        parts.append(f"### {title}\n\nAccuracies in %, mean ± 95% CI over seeds (Student t); "
                     "Target on the primary (unbiased) test split; Private: worst case = the "
                     "highest private accuracy over every attacker run with the sound protocol "
                     "(linear, MLP, colour from the decoder's reconstruction; the attacker that "
                     "reached it in brackets), the headline; Private = linear probe "
                     "(paper's attacker) trained with the *sound* protocol (independent ρ=0.1 "
                     "set) or the *paper* protocol (ρ=0.999 set); MLP = 2-hidden-layer probe "
                     "with early stopping (run's own protocol); Balanced / Advantage: worst = "
                     "the highest balanced accuracy over the same attackers and "
                     f"(balanced − 1/K)/(1 − 1/K) (0 = chance, 1 = perfect).{scale}\n\n"
                     + markdown_table(header, body))
    return "\n".join(parts)


def runs_csv(rows: List[dict]) -> str:
    """Per-run rows as CSV (fractions)."""
    keys = list(rows[0]) if rows else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else json.dumps(r[k], sort_keys=True)
                        if isinstance(r.get(k), dict) else r.get(k)) for k in keys})
    return buf.getvalue()


def aggregate_csv(agg: List[dict]) -> str:
    """Aggregated rows as CSV: ``<metric>_mean``, ``<metric>_ci``, ``<metric>_n`` (fractions)."""
    head = ["dataset", "setting", "rho", "method", "config", "n_seeds", "private_attacker_worst"]
    for k in METRICS:
        head += [f"{k}_mean", f"{k}_ci", f"{k}_n"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    for a in agg:
        row = [a["dataset"], a["setting"], "" if a["rho"] is None else a["rho"], a["method"],
               a.get("config") or "", len(a["seeds"]), a.get("private_attacker_worst") or ""]
        for k in METRICS:
            s = a[k]
            row += ["" if _nan(s["mean"]) else f"{s['mean']:.6g}",
                    "" if _nan(s["ci"]) else f"{s['ci']:.6g}", s["n"]]
        w.writerow(row)
    return buf.getvalue()


def aggregate_json(agg: List[dict]) -> str:
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return None if _nan(v) else v
    return json.dumps(clean(agg), indent=2, ensure_ascii=False)


def parse_markdown_table(text: str) -> List[Dict[str, str]]:
    """Rows of the first Markdown table in ``text`` as dicts (used by the tests)."""
    lines = []
    for raw in text.splitlines():
        if raw.strip().startswith("|"):
            lines.append(raw.strip())
        elif lines:
            break  # end of the first table
    if len(lines) < 2:
        return []
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header has {len(header)}: {line}")
        rows.append(dict(zip(header, cells)))
    return rows
