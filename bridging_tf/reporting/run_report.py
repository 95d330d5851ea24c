"""The figures of one run (what the ``report`` step writes next to ``results.json``).

``pipelines.report`` draws the paper's figures for a folder of runs; this
module draws, from one run's artifacts and with the same functions of
:mod:`bridging_tf.reporting.figures`, each beside the CSV behind it:

- ``fig3_samples.png`` — training samples (Biased-MNIST: the digits coloured
  at the run's ρ and at ρ=0.1; other data sets: the first images of ``train``
  and of the primary eval split);
- ``fig6_reconstruction.png`` (+ ``.npz``) — ground truth / decoded images,
  when the decoder attack ran;
- ``fig8_gaussian_pc1.png`` — the Gaussians per private class on PC1 of the
  primary eval split's bottleneck;
- ``attack_summary.png`` — private accuracy of every attacker under every
  protocol with the chance levels.

A figure that cannot be drawn (MNIST files gone, no decoder) is left out with
a note; it never fails the run. It costs seconds (no model is run).

Example::

    build_run_report("runs/x/report", {"sound": results}, method="end",
                     data_spec={"name": "biased_mnist", "options": {"rho": 0.997, ...}})
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from bridging_tf.attacks import AttackType
from bridging_tf.errors import UserError
from bridging_tf.reporting import figures

SAMPLES = "fig3_samples.png"
RECONSTRUCTION = "fig6_reconstruction.png"
GAUSSIANS = "fig8_gaussian_pc1.png"
ATTACK_SUMMARY = "attack_summary.png"


def attack_rows(by_protocol: Mapping[str, object]) -> List[dict]:
    """One row per (protocol, attacker), primary split (:func:`figures.attack_summary_bars`)."""
    rows = []
    for protocol, results in by_protocol.items():
        split = results.primary_split
        for r in results:
            m = r.per_split.get(split)
            if not m:
                continue
            if r.attack_type is AttackType.DECODER:
                if "colour_accuracy" not in m:
                    continue  # only a PSNR: not a private accuracy
                rows.append({"attacker": r.attack_type.value, "protocol": protocol,
                             "split": split, "metric": "colour_accuracy",
                             "accuracy": m["colour_accuracy"],
                             "balanced_accuracy": m.get("colour_balanced_accuracy"),
                             "chance_uniform": m.get("colour_chance_uniform"),
                             "chance_majority": m.get("colour_chance_majority")})
            else:
                rows.append({"attacker": r.attack_type.value, "protocol": protocol,
                             "split": split, "metric": "accuracy", "accuracy": m.get("accuracy"),
                             "balanced_accuracy": m.get("balanced_accuracy"),
                             "chance_uniform": m.get("chance_uniform"),
                             "chance_majority": m.get("chance_majority")})
    return rows


def _samples(out: Path, data_spec: Optional[dict], primary: Optional[str], seed: int,
             notes: List[str]) -> List[Path]:
    if not data_spec:
        notes.append("sample grid skipped: the data artifact was not found")
        return []
    name, options = data_spec.get("name"), dict(data_spec.get("options") or {})
    try:
        if name == "biased_mnist":
            from bridging_tf.datasets.mnist_source import load_mnist

            (x, y), _ = load_mnist(options.get("data_dir"), allow_download=False)
            rhos = sorted({float(options.get("rho", 0.997)), 0.1})
            return [figures.biased_mnist_grid(x, y, rhos, out / SAMPLES, seed=seed)]
        from bridging_tf import datasets

        bundle = datasets.load(name, **options)
        grid = OrderedDict()
        for split in dict.fromkeys(["train", primary]):
            if split is None:
                continue
            xb, yb = next(iter(bundle[split].dataset(10, normalize=False)))
            grid[split] = (xb.numpy(), yb["label"].numpy(), yb["private"].numpy())
        return [figures.eb_split_grid(grid, out / SAMPLES, class_names=bundle.class_names,
                                      private_names=bundle.private_names,
                                      title=f"{name}: first images of each split")]
    except (UserError, OSError, KeyError, StopIteration) as err:
        notes.append(f"sample grid skipped: {str(err).splitlines()[0] if str(err) else err!r}")
        return []


def build_run_report(out_dir, by_protocol: Mapping[str, object], *, method: str = "model",
                     data_spec: Optional[dict] = None, seed: int = 0) -> Dict[str, list]:
    """Write one run's figures + CSVs into ``out_dir``; ``{"files": [...], "notes": [...]}``.

    ``by_protocol``: protocol -> :class:`AttackResults`, the run's own protocol first
    (it holds every attacker and the PCA view). ``data_spec``: the ingest step's
    ``dataset.json`` (``{"name", "options"}``), for the sample grid.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: List[Path] = []
    notes: List[str] = []
    main = next(iter(by_protocol.values()), None)
    primary = main.primary_split if main is not None else None
    files += _samples(out, data_spec, primary, seed, notes)
    if main is not None and AttackType.DECODER in main:
        r = main.get(AttackType.DECODER)
        imgs, rec = r.arrays.get(f"images:{primary}"), r.arrays.get(f"recon:{primary}")
        if imgs is not None and rec is not None:
            colours = r.arrays.get(f"colour_pred:{primary}")
            files.append(figures.reconstruction_grid(
                imgs, {method: rec}, out / RECONSTRUCTION,
                colour_pred={method: colours} if colours is not None else None,
                private=r.arrays.get(f"private:{primary}")))
        else:
            notes.append("reconstruction figure skipped: no sample reconstructions were saved")
    if main is not None and primary in main.views:
        files.append(figures.gaussian_plot(
            {method: main.views[primary]}, out / GAUSSIANS,
            title=f"'{primary}': first principal component of the bottleneck"))
    bars = figures.attack_summary_bars(attack_rows(by_protocol), out / ATTACK_SUMMARY,
                                       title=f"{method}: private accuracy per attacker")
    if bars is not None:
        files.append(bars)
    return {"files": [str(p) for p in files], "notes": notes}
