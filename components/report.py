"""``report``: model + embeddings + attack artifacts -> ``results.json`` + figures.

Everything in it is read from the upstream artifacts (measured there): target
accuracy per eval split, the probe's private accuracy with its chance levels,
the per-protocol private accuracies, the worst case over the sound attackers
(``private_accuracy_worst``, ``private_attacker_worst``,
``private_balanced_accuracy_worst``, ``private_advantage_worst``; see
``bridging_tf.attacks.worst``), training facts (best epoch, epochs run).

Beside it (``bridging_tf.reporting.run_report``): the run's figures with their
CSVs — sample grid, reconstruction (when the decoder ran), PC1 Gaussians,
attack summary — and ``logs/``, a TensorBoard event file with every
attacker's metrics per protocol (``attack/<protocol>/<attacker>/<split>/<metric>``)
and the worst case (``attack/worst/*``). The samples are read from the ingest
artifact (an optional ``data`` input, else the run folder's ``data/``).

Example::

    report.run({"model": m, "embeddings": e, "attack": a}, {"report": Path("runs/x/report")},
               run_info={"method": "end", "dataset": "biased_mnist", "rho": 0.997, "seed": 0})
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from components.base import ArtifactWriter, read_artifact, write_json
from components.extract_bottleneck import manifest
from components.train import train_info


def _attacks_by_protocol(attack_dir: Path, main, protocol: Optional[str]) -> dict:
    from bridging_tf.attacks import AttackResults

    out = {protocol or "sound": main}
    for d in sorted(attack_dir.glob("protocol_*")):
        out.setdefault(d.name[len("protocol_"):], AttackResults.load(d))
    return out


def build_results(inputs: Mapping[str, Path], run_info: dict) -> dict:
    from bridging_tf.attacks import AttackResults
    from bridging_tf.attacks.worst import WORST_KEYS, worst_case

    info = train_info(inputs["model"])
    emb = read_artifact(inputs["embeddings"])["metrics"]
    att = read_artifact(inputs["attack"])["metrics"]
    splits = manifest(inputs["embeddings"])
    primary = splits["primary_eval"]
    res = dict(run_info)
    res.update({"train_size": info["train_examples"], "val_size": info["val_examples"],
                "primary_eval": primary, "eval_splits": splits["eval_splits"],
                "backbone": info["backbone"], "best_epoch": info["best_epoch"],
                "epochs_run": info["epochs_run"], "model_selection": info["monitor"] + " on val"})
    for key, value in emb.items():
        res[key] = value
    res["target_accuracy"] = emb.get(f"accuracy_{primary}")
    if "accuracy_biased" in emb:
        res["biased_accuracy"] = emb["accuracy_biased"]
    res["private_accuracy"] = att.get("private_accuracy")
    res["private_balanced_accuracy"] = att.get("private_balanced_accuracy")
    res["private_chance"] = {"uniform": att.get("private_chance_uniform"),
                             "majority": att.get("private_chance_majority")}
    by_protocol = {p: att[f"private_accuracy_{p}"] for p in ("sound", "paper")
                   if f"private_accuracy_{p}" in att}
    if len(by_protocol) == 2:
        res["private_accuracy_by_protocol"] = by_protocol
    res.update({k: v for k, v in att.items() if k.startswith("private_accuracy_")
                and k[len("private_accuracy_"):] in ("linear", "mlp", "decoder")})
    res.update({k: v for k, v in att.items() if k.startswith("decoder_")})
    attacks = AttackResults.load(Path(inputs["attack"]) / "main")
    # Worst case over the sound attackers (recomputed from the saved results for an attack
    # artifact written before these keys existed).
    worst = {k: att[k] for k in WORST_KEYS if k in att}
    if not worst:
        worst = worst_case(_attacks_by_protocol(Path(inputs["attack"]), attacks,
                                                run_info.get("attack_protocol")), primary)
    res.update(worst)
    res["attacks"] = {r.attack_type.value: r.per_split for r in attacks}
    res["attack_summary"] = attacks.summary()
    return res


def _data_spec(inputs: Mapping[str, Path]) -> Optional[dict]:
    """The ingest step's ``dataset.json``: the ``data`` input, else the run folder's ``data/``."""
    import json

    candidates = [inputs["data"]] if inputs.get("data") else []
    candidates.append(Path(inputs["model"]).parent / "data")
    for d in candidates:
        path = Path(d) / "dataset.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
    return None


def write_figures(path: Path, inputs: Mapping[str, Path], run_info: dict, res: dict) -> dict:
    """The per-run figures + CSVs and the TensorBoard attack scalars (``logs/``) into ``path``."""
    from bridging_tf.attacks import AttackResults
    from bridging_tf.attacks.worst import WORST_KEYS
    from bridging_tf.reporting.run_report import build_run_report
    from components.attack import write_tensorboard

    attack_dir = Path(inputs["attack"])
    by_protocol = _attacks_by_protocol(attack_dir, AttackResults.load(attack_dir / "main"),
                                       run_info.get("attack_protocol"))
    out = build_run_report(path, by_protocol, method=str(run_info.get("method") or "model"),
                           data_spec=_data_spec(inputs), seed=int(run_info.get("seed") or 0))
    write_tensorboard(by_protocol, path / "logs", worst={k: res[k] for k in WORST_KEYS
                                                         if k in res},
                      step=int(res.get("epochs_run") or 0))
    for note in out["notes"]:
        print(f"[report] note: {note}")
    return out


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *,
        run_info: Optional[dict] = None, figures: bool = True) -> dict:
    """``results.json`` and, with ``figures``, the figures, CSVs and ``logs/`` (TensorBoard)."""
    run_info = dict(run_info or {})
    params = {"run_info": run_info, "figures": bool(figures)}
    with ArtifactWriter("report", "Results", outputs["report"], params=params,
                        inputs={k: v for k, v in inputs.items() if k != "data"},
                        seed=run_info.get("seed")) as art:
        if art.skipped:
            return art.metrics
        res = build_results(inputs, run_info)
        if figures:
            made = write_figures(art.path, inputs, run_info, res)
            res["report_files"] = sorted(Path(f).name for f in made["files"])
            if made["notes"]:
                res["report_notes"] = made["notes"]
        write_json(art.path / "results.json", res)
        art.metrics = {k: v for k, v in res.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return art.metrics
