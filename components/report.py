"""``report``: model + embeddings + attack artifacts -> ``results.json``.

Everything in it is read from the upstream artifacts (measured there): target
accuracy per eval split, the probe's private accuracy with its chance levels,
the per-protocol private accuracies, training facts (best epoch, epochs run).

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


def build_results(inputs: Mapping[str, Path], run_info: dict) -> dict:
    from bridging_tf.attacks import AttackResults

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
    res["attacks"] = {r.attack_type.value: r.per_split for r in attacks}
    res["attack_summary"] = attacks.summary()
    return res


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *,
        run_info: Optional[dict] = None) -> dict:
    run_info = dict(run_info or {})
    with ArtifactWriter("report", "Results", outputs["report"], params={"run_info": run_info},
                        inputs=inputs, seed=run_info.get("seed")) as art:
        if art.skipped:
            return art.metrics
        res = build_results(inputs, run_info)
        write_json(art.path / "results.json", res)
        art.metrics = {k: v for k, v in res.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return art.metrics
