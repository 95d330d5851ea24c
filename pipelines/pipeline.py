"""The pipeline definition: which component runs on which artifacts, with which parameters.

``build(params, output_dir)`` turns resolved flags into an ordered list of
:class:`Step` (ingest -> train -> export -> extract_bottleneck -> attack ->
report), each a component module with its input/output artifact paths under
``output_dir``. :func:`run_local` runs them in-process, in order; a step
whose output artifact already has the same fingerprint is skipped, so a
killed run resumes where it stopped. The KFP adapter
(:mod:`pipelines.kfp_pipeline`) walks the same list into a KFP v2 graph: one task
per step, its artifacts from the steps that output them, its own ``Step.params``.

Example::

    steps = build(resolve_params({"method": "end", "epochs": 1}), "runs/demo")
    metrics = run_local(steps)
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Dict, List

from bridging_tf import options

#: Which options each step takes (declared in :mod:`bridging_tf.options`).
DATASET_OPTIONS = options.DataOptions.names()
TRAIN_PARAMS = (*options.TrainOptions.names(), "seed")

#: Flag name -> default (every job option): the generic defaults a dataset preset may replace.
BASE_DEFAULTS = {k: v for cls in options.GROUPS for k, v in cls.defaults().items()}


@dataclasses.dataclass
class Step:
    """One component invocation: ``component.run(inputs, outputs, **params)``."""

    name: str
    component: str
    inputs: Dict[str, Path]
    outputs: Dict[str, Path]
    params: dict

    def run(self) -> dict:
        module = importlib.import_module(f"components.{self.component}")
        return module.run(self.inputs, self.outputs, **self.params)


def hparams_of(params: dict) -> dict:
    """The chosen method's hyper-parameters: the flag value, else the method's default."""
    return options.hparams_of(params["method"], params)


def attack_list(params: dict) -> List[str]:
    value = params.get("attacks") or options.RunOptions.attacks
    if isinstance(value, str):
        value = [a.strip() for a in value.split(",") if a.strip()]
    return list(value)


def dataset_options(params: dict) -> dict:
    opts = {k: params[k] for k in DATASET_OPTIONS if params.get(k) is not None}
    from components.remote_data import is_uri
    if opts.get("data_dir") and not is_uri(opts["data_dir"]):  # a URI is read via tf.io.gfile
        opts["data_dir"] = str(Path(opts["data_dir"]).expanduser().resolve())
    return opts


def run_info(params: dict) -> dict:
    mnist = params["dataset"] == "biased_mnist"
    return {"method": params["method"], "dataset": params["dataset"],
            # rho is a Biased-MNIST option; the other data sets are told apart by target / split
            "rho": params.get("rho") if mnist else None,
            "target": None if mnist else params.get("target"),
            "private": None if mnist else params.get("private"),
            "split": None if mnist else params.get("split"),
            "seed": params["seed"], "epochs": params["epochs"],
            "attack_protocol": params["attack_protocol"], "attacks": attack_list(params),
            "width": params["width"], "batch_size": params["batch_size"], "lr": params["lr"],
            "optimizer": params["optimizer"], "hparams": hparams_of(params)}


def build(params: dict, output_dir) -> List[Step]:
    """Steps of one job; artifacts data, model, serving, embeddings, attack, report."""
    out = Path(output_dir)
    a = {name: out / name for name in ("data", "model", "serving", "embeddings", "attack",
                                       "report")}
    train_params = {k: params[k] for k in TRAIN_PARAMS if k in params}
    train_params["hparams"] = hparams_of(params)
    train_params["verbose"] = params.get("verbose", 1)
    attacks = attack_list(params)
    attack_inputs = {"embeddings": a["embeddings"]}
    if "decoder" in attacks:
        attack_inputs["data"] = a["data"]
    return [
        Step("ingest", "ingest", {}, {"data": a["data"]},
             {"dataset": params["dataset"], "options": dataset_options(params),
              "hash_data": bool(params.get("hash_data"))}),
        Step("train", "train", {"data": a["data"]}, {"model": a["model"]}, train_params),
        Step("export", "export", {"model": a["model"]}, {"serving": a["serving"]},
             {"model_name": params.get("model_name")}),
        Step("extract_bottleneck", "extract_bottleneck", {"model": a["model"], "data": a["data"]},
             {"embeddings": a["embeddings"]}, {}),
        Step("attack", "attack", attack_inputs, {"attack": a["attack"]},
             {"attacks": attacks, "protocol": params["attack_protocol"], "seed": params["seed"],
              "verbose": params.get("verbose", 1)}),
        Step("report", "report", {"model": a["model"], "embeddings": a["embeddings"],
                                  "attack": a["attack"]}, {"report": a["report"]},
             {"run_info": run_info(params)}),
    ]


def run_local(steps: List[Step]) -> Dict[str, dict]:
    """Run ``steps`` in-process, in order; returns ``{step: metrics}``."""
    metrics = {}
    for step in steps:
        print(f"== {step.name} ==", flush=True)
        metrics[step.name] = step.run()
    return metrics


def run_component(component: str, params_json: str, inputs: dict, outputs: dict) -> str:
    """Run ``components.<component>.run`` with one step's own parameters (the KFP entry).

    ``params_json`` is that step's ``Step.params`` as JSON (what :func:`build` gives it), so
    a KFP task receives only its own parameters. Returns the metrics as JSON; imports no KFP.
    """
    import json
    step = Step(component, component, {k: Path(v) for k, v in inputs.items()},
                {k: Path(v) for k, v in outputs.items()}, json.loads(params_json))
    return json.dumps(step.run())
