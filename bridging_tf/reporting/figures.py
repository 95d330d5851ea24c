"""The paper's figures (headless matplotlib), each saved as PNG + the CSV behind it.

- :func:`polar_private` — private accuracy per ρ per method (Fig. 4);
- :func:`scatter_private_target` — private vs target accuracy, marker size by ρ (Fig. 5);
- :func:`reconstruction_grid` — ground truth / decoded from each encoder (Fig. 6);
- :func:`gaussian_plot` — Gaussians per private class on PC1 (Fig. 8);
- :func:`biased_mnist_grid` — Biased-MNIST samples at each ρ (Fig. 3);
- :func:`privacy_utility_frontier` — target accuracy vs worst-case (and
  linear-probe) private accuracy, one curve per method, Pareto front marked.
- :func:`attack_summary_bars` — one run's attackers per protocol, chance marked.

``protocol`` in Fig. 4/5 is ``"sound"``, ``"paper"`` (the linear probe with
that attacker set) or ``"worst"`` (the worst case over the sound attackers).

Example::

    polar_private(agg_rows, "report/fig4_polar_sound.png", protocol="sound")
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bridging_tf.reporting.tables import method_label, row_label  # noqa: E402

SCATTER_SIZES = (1.0, 2.5, 5.0, 10.0)  # × 40, for ρ = 0.99 → 0.999 (BR print_table.py)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                        for v in r])
    return path


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _series(agg: List[dict], key: str) -> Dict[tuple, List[Tuple[float, dict, dict]]]:
    """(method, config) -> [(rho, stat, row)] for Biased-MNIST-like rows with a ``key`` value.

    ``config`` labels the method's varying hyper-parameters (``""`` if none vary).
    """
    out: Dict[tuple, List[Tuple[float, dict, dict]]] = {}
    for a in agg:
        if a.get("rho") is None or not a.get(key, {}).get("n"):
            continue
        out.setdefault((a["method"], a.get("config") or ""), []).append(
            (float(a["rho"]), a[key], a))
    for v in out.values():
        v.sort(key=lambda t: t[0])
    return out


def _protocol_text(protocol: str) -> str:
    return ("worst case over the sound attackers" if protocol == "worst"
            else f"{protocol} protocol")


def _private_series(agg: List[dict], protocol: str):
    """``(series of private_<protocol>, sorted ρ values)``."""
    series = _series(agg, f"private_{protocol}")
    return series, sorted({r for s in series.values() for r, _, _ in s})


def polar_private(agg: List[dict], path, protocol: str = "sound") -> Optional[Path]:
    """Fig. 4: one closed curve per method, one spoke per ρ, radius = private accuracy."""
    series, rhos = _private_series(agg, protocol)
    if not series:
        return None
    path = Path(path)
    theta = np.linspace(0, 2 * np.pi, len(rhos), endpoint=False)
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(projection="polar")
    rows = []
    for (method, config), pts in series.items():
        by = {r: s for r, s, _ in pts}
        vals = [100 * by[r]["mean"] if r in by else np.nan for r in rhos]
        t = np.r_[theta, theta[:1]]
        ax.plot(t, np.r_[vals, vals[:1]], marker="o", label=row_label(pts[0][2]))
        rows += [(method, r, by[r]["mean"], by[r]["ci"], by[r]["n"], config) for r in rhos
                 if r in by]
    ax.set_xticks(theta)
    ax.set_xticklabels([f"ρ={r:g}" for r in rhos])
    ax.set_ylim(0, 100)
    ax.set_title(f"Private class accuracy (%), {_protocol_text(protocol)}")
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    _write_csv(path.with_suffix(".csv"), ["method", "rho", "private_accuracy_mean",
                                          "private_accuracy_ci", "n_seeds", "config"], rows)
    return _save(fig, path)


def scatter_private_target(agg: List[dict], path, protocol: str = "sound") -> Optional[Path]:
    """Fig. 5: x = private accuracy, y = target accuracy, marker size grows with ρ."""
    series, rhos = _private_series(agg, protocol)
    if not series:
        return None
    path = Path(path)
    paper_rhos = (0.99, 0.995, 0.997, 0.999)
    sizes = {}
    for i, r in enumerate(rhos):  # the paper's size for its ρ values, else by rank
        k = next((j for j, p in enumerate(paper_rhos) if abs(p - r) < 1e-9), None)
        sizes[r] = 40 * SCATTER_SIZES[k if k is not None else min(i, len(SCATTER_SIZES) - 1)]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = []
    for i, ((method, config), pts) in enumerate(series.items()):
        xs, ys, ss = [], [], []
        for r, s, a in pts:
            t = a.get("target_accuracy")
            if not t or not t["n"]:
                continue
            xs.append(100 * s["mean"])
            ys.append(100 * t["mean"])
            ss.append(sizes[r])
            rows.append((method, r, s["mean"], s["ci"], t["mean"], t["ci"], sizes[r], config))
        ax.scatter(xs, ys, s=ss, alpha=0.7, color=f"C{i}", label=row_label(pts[0][2]))
    ax.set_xlabel(f"Private class accuracy (%), {_protocol_text(protocol)}")
    ax.set_ylabel("Target accuracy (%), unbiased test")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title("Larger markers = higher ρ (" + ", ".join(f"{r:g}" for r in rhos) + ")")
    ax.legend(fontsize=8)
    _write_csv(path.with_suffix(".csv"), ["method", "rho", "private_mean", "private_ci",
                                          "target_mean", "target_ci", "marker_size", "config"],
               rows)
    return _save(fig, path)


def reconstruction_grid(truth: np.ndarray, decoded: Mapping[str, np.ndarray], path,
                        colour_pred: Optional[Mapping[str, np.ndarray]] = None,
                        private: Optional[np.ndarray] = None) -> Path:
    """Fig. 6: row 0 ground truth, then one row per encoder's decoder output (uint8 NHWC)."""
    path = Path(path)
    n = len(truth)
    rows = [("ground truth", truth)] + [(f"decoded: {method_label(k)}", v)
                                        for k, v in decoded.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.25 * len(rows)), squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            img = imgs[j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    _save(fig, path)
    csv_rows = []
    for j in range(n):
        row = [j, None if private is None else int(private[j])]
        for k in decoded:
            cp = (colour_pred or {}).get(k)
            row.append(None if cp is None or j >= len(cp) else int(cp[j]))
        csv_rows.append(row)
    _write_csv(path.with_suffix(".csv"), ["index", "true_private"] +
               [f"colour_from_{k}" for k in decoded], csv_rows)
    np.savez_compressed(path.with_suffix(".npz"), truth=truth,
                        **{f"decoded_{k}": v for k, v in decoded.items()})
    return path


def gaussian_plot(views: Mapping[str, object], path, title: str = "") -> Path:
    """Fig. 8: one panel per model; histogram of PC1 projections + fitted Gaussian per class."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 3.6), squeeze=False)
    rows = []
    for ax, (label, view) in zip(axes[0], views.items()):
        curves = view.curves()
        bins = np.linspace(float(view.projections.min()), float(view.projections.max()), 31)
        for i, c in enumerate(view.classes):
            sel = view.projections[view.private == c["label"]]
            if len(view.classes) <= 4:  # histograms of many classes are unreadable
                ax.hist(sel, bins=bins, density=True, alpha=0.25, color=f"C{i}")
            ax.plot(curves["x"], curves[f"pdf_{c['name']}"], color=f"C{i}",
                    label=f"{c['name']}: N({c['mean']:.2f}, {c['std']:.2f})")
            rows.append((label, c["name"], c["label"], c["mean"], c["std"], c["count"],
                         view.overlap))
        ax.set_title(f"{method_label(label)} — overlap (BC) {view.overlap:.2f}")
        ax.set_xlabel("PC1 projection")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.04)
    _write_csv(path.with_suffix(".csv"), ["model", "class", "label", "mean", "std", "count",
                                          "overlap"], rows)
    # Per-sample data behind the histograms.
    samples = [(label, float(p), int(c)) for label, v in views.items()
               for p, c in zip(v.projections, v.private)]
    _write_csv(path.with_name(path.stem + "_projections.csv"), ["model", "projection", "private"],
               samples)
    return _save(fig, path)


def biased_mnist_grid(digits: np.ndarray, labels: np.ndarray, rhos: Sequence[float], path,
                      seed: int = 0, columns: int = 12) -> Path:
    """Fig. 3: rows = ρ values, ``columns`` random Biased-MNIST samples coloured at that ρ."""
    from bridging_tf.datasets.biased_mnist import COLOUR_NAMES, assign_colours, colourise

    path = Path(path)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(rhos), columns, figsize=(columns * 0.8, len(rhos) * 0.9),
                             squeeze=False)
    rows = []
    for i, rho in enumerate(rhos):
        bias = assign_colours(labels, float(rho), rng)
        pick = rng.choice(len(labels), size=columns, replace=False)
        imgs = colourise(digits[pick], bias[pick])
        for j in range(columns):
            ax = axes[i][j]
            ax.imshow(imgs[j])
            ax.set_xticks([])
            ax.set_yticks([])
            rows.append((rho, j, int(labels[pick[j]]), int(bias[pick[j]]),
                         COLOUR_NAMES[bias[pick[j]]], int(bias[pick[j]] == labels[pick[j]])))
        axes[i][0].set_ylabel(f"ρ={rho:g}", rotation=0, ha="right", va="center", fontsize=8)
        aligned = float(np.mean(bias == labels))
        axes[i][-1].yaxis.set_label_position("right")
        axes[i][-1].set_ylabel(f"{100 * aligned:.1f}% own colour", rotation=0, ha="left",
                               va="center", fontsize=7)
    _write_csv(path.with_suffix(".csv"), ["rho", "column", "digit", "colour", "colour_name",
                                          "own_colour"], rows)
    return _save(fig, path)


def eb_split_grid(splits: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]], path,
                  class_names: Optional[Sequence[str]] = None,
                  private_names: Optional[Sequence[str]] = None, title: str = "") -> Path:
    """Fig. 7: one row of sample faces per training split (EB1, EB2), captioned ``label / private``.

    ``splits`` maps a row name to ``(uint8 images [N, H, W, C], labels [N], private [N])``;
    the CSV beside the PNG lists every shown sample's row, column, label and private label.
    """
    path = Path(path)
    columns = max(len(v[0]) for v in splits.values())
    fig, axes = plt.subplots(len(splits), columns, figsize=(columns * 1.0, len(splits) * 1.25),
                             squeeze=False)
    rows = []
    for i, (name, (images, labels, private)) in enumerate(splits.items()):
        for j in range(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(images):
                ax.axis("off")
                continue
            img = images[j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img,
                      cmap="gray" if img.shape[-1] == 1 else None)
            lab = class_names[labels[j]] if class_names else str(int(labels[j]))
            prv = private_names[private[j]] if private_names else str(int(private[j]))
            ax.set_title(f"{lab}\n{prv}", fontsize=6)
            rows.append((name, j, int(labels[j]), lab, int(private[j]), prv))
        axes[i][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    _write_csv(path.with_suffix(".csv"), ["split", "column", "label", "label_name", "private",
                                          "private_name"], rows)
    return _save(fig, path)


# (metric key, panel name in the CSV, x-axis label) of the two frontier panels.
FRONTIER_PANELS = (
    ("private_worst", "worst", "Worst-case private accuracy (%), strongest sound attacker"),
    ("private_sound", "linear", "Private accuracy (%), linear probe (sound protocol)"),
)


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points on the privacy–utility Pareto front.

    A point ``(private, target)`` is on the front when no other point has a
    private accuracy as low *and* a target accuracy as high, one of them
    strictly (lower leakage and higher utility are both better).
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _err(cis: Sequence[float]):
    cis = np.asarray(cis, np.float64)
    return None if not np.isfinite(cis).any() else 100 * np.nan_to_num(cis)


def privacy_utility_frontier(agg: List[dict], path, title: str = "") -> Optional[Path]:
    """Target accuracy vs private accuracy, one curve per method; Pareto front and chance drawn.

    Left panel: the worst case over the sound attackers (the headline);
    right panel: the paper's linear probe (sound protocol). Each point is one
    hyper-parameter setting of a method (``pipelines.sweep --grid``), mean
    over seeds with 95 % CI bars where there are several seeds. The shaded
    band is "within 10 points of chance". Returns ``None`` when no row has
    both a target and a private accuracy. CSV columns: ``panel, method,
    config, private_mean, private_ci, target_mean, target_ci, n_seeds,
    pareto, attacker``.
    """
    path = Path(path)
    usable = [a for a in agg if a.get("target_accuracy", {}).get("n")
              and any(a.get(k, {}).get("n") for k, _, _ in FRONTIER_PANELS)]
    if not usable:
        return None
    fig, axes = plt.subplots(1, len(FRONTIER_PANELS), figsize=(6 * len(FRONTIER_PANELS), 4.8),
                             squeeze=False)
    methods = list(dict.fromkeys(a["method"] for a in usable))
    chance_u = [a["private_chance_uniform"]["mean"] for a in usable
                if a.get("private_chance_uniform", {}).get("n")]
    chance_m = [a["private_chance_majority"]["mean"] for a in usable
                if a.get("private_chance_majority", {}).get("n")]
    rows = []
    for ax, (key, panel, xlabel) in zip(axes[0], FRONTIER_PANELS):
        pts = [a for a in usable if a.get(key, {}).get("n")]
        if chance_u:
            cu = 100 * float(np.mean(chance_u))
            ax.axvspan(cu, min(cu + 10, 100), color="green", alpha=0.08,
                       label="within 10 points of chance")
            ax.axvline(cu, color="grey", ls=":", label=f"chance 1/K ({cu:.0f}%)")
        if chance_m and (not chance_u or abs(np.mean(chance_m) - np.mean(chance_u)) > 1e-3):
            cm = 100 * float(np.mean(chance_m))
            ax.axvline(cm, color="grey", ls="-.", label=f"chance majority ({cm:.0f}%)")
        for i, method in enumerate(methods):
            mine = sorted((a for a in pts if a["method"] == method),
                          key=lambda a: a[key]["mean"])
            if not mine:
                continue
            xs = [100 * a[key]["mean"] for a in mine]
            ys = [100 * a["target_accuracy"]["mean"] for a in mine]
            ax.errorbar(xs, ys, xerr=_err([a[key]["ci"] for a in mine]),
                        yerr=_err([a["target_accuracy"]["ci"] for a in mine]), fmt="-o",
                        color=f"C{i}", capsize=3, ms=5, label=method_label(method))
            for a, x, y in zip(mine, xs, ys):
                if a.get("config"):
                    ax.annotate(a["config"], (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=6, color=f"C{i}")
        front = set(pareto_front([(a[key]["mean"], a["target_accuracy"]["mean"]) for a in pts]))
        if front:
            fr = sorted((pts[j] for j in front), key=lambda a: a[key]["mean"])
            fx = [100 * a[key]["mean"] for a in fr]
            fy = [100 * a["target_accuracy"]["mean"] for a in fr]
            ax.step(fx, fy, where="post", ls="--", color="k", lw=1, label="Pareto front")
            ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="k", zorder=3)
        for j, a in enumerate(pts):
            rows.append((panel, a["method"], a.get("config") or "", a[key]["mean"], a[key]["ci"],
                         a["target_accuracy"]["mean"], a["target_accuracy"]["ci"],
                         a[key]["n"], int(j in front),
                         (a.get("private_attacker_worst") or "") if panel == "worst"
                         else "linear"))
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Target accuracy (%), primary (unbiased) test")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if not pts:
            ax.text(50, 50, "not measured", ha="center", va="center", color="grey")
    fig.suptitle(title or "Privacy–utility frontier: up and to the left is better (more "
                          "accuracy, less leakage)", fontsize=10)
    _write_csv(path.with_suffix(".csv"), ["panel", "method", "config", "private_mean",
                                          "private_ci", "target_mean", "target_ci", "n_seeds",
                                          "pareto", "attacker"], rows)
    return _save(fig, path)


def attack_summary_bars(rows: Sequence[Mapping[str, object]], path, title: str = ""
                        ) -> Optional[Path]:
    """One run's attackers: private accuracy per (attacker, protocol), chance levels marked.

    ``rows``: dicts with ``attacker``, ``protocol``, ``split``, ``metric`` (``accuracy``
    or, for the decoder, ``colour_accuracy``), ``accuracy``, ``balanced_accuracy``,
    ``chance_uniform``, ``chance_majority``. Returns ``None`` without rows. CSV
    columns: ``attacker, protocol, split, metric, accuracy, balanced_accuracy,
    chance_uniform, chance_majority``.
    """
    rows = [r for r in rows if r.get("accuracy") is not None]
    if not rows:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows) + 1.5), 4.2))
    x = np.arange(len(rows))
    acc = [100 * float(r["accuracy"]) for r in rows]
    bal = [100 * float(r["balanced_accuracy"]) if r.get("balanced_accuracy") is not None
           else np.nan for r in rows]
    colours = ["C0" if r.get("protocol") == "sound" else "C1" for r in rows]
    ax.bar(x - 0.18, acc, width=0.36, color=colours, label="accuracy")
    ax.bar(x + 0.18, bal, width=0.36, color=colours, alpha=0.45, label="balanced accuracy")
    for i, r in enumerate(rows):
        for key, ls in (("chance_uniform", ":"), ("chance_majority", "-.")):
            if r.get(key) is not None:
                ax.hlines(100 * float(r[key]), i - 0.42, i + 0.42, colors="k", linestyles=ls,
                          lw=1, label=None)
        ax.annotate(f"{acc[i]:.1f}", (i - 0.18, acc[i]), ha="center", va="bottom", fontsize=7)
    ax.plot([], [], "k:", lw=1, label="chance 1/K")
    ax.plot([], [], "k-.", lw=1, label="chance majority")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['attacker']}\n{r['protocol']} protocol" +
                        ("\n(colour)" if r.get("metric") == "colour_accuracy" else "")
                        for r in rows], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"Private accuracy (%), '{rows[0].get('split')}'")
    ax.set_title(title or "Attackers on the bottleneck (blue: sound, orange: paper protocol)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    _write_csv(path.with_suffix(".csv"), ["attacker", "protocol", "split", "metric", "accuracy",
                                          "balanced_accuracy", "chance_uniform",
                                          "chance_majority"],
               [(r["attacker"], r["protocol"], r.get("split"), r.get("metric"), r["accuracy"],
                 r.get("balanced_accuracy"), r.get("chance_uniform"), r.get("chance_majority"))
                for r in rows])
    return _save(fig, path)
