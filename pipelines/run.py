"""``python -m pipelines.run``: build the pipeline for the flags and run it.

Default job: Biased-MNIST at ρ = 0.997, ingest -> train -> export (TF Serving
SavedModel) -> extract_bottleneck -> attack (linear probe) -> report. Every
artifact lands under ``--output_dir`` (default
``./runs/<dataset>_<method>_rho<rho>_seed<seed>``) with ``results.json`` and
``run_metadata.json`` at its top. Rerunning the same command skips finished
steps and resumes a killed training from its last epoch.

Examples::

    python -m pipelines.run --method=end --data_dir=../shared/data/mnist
    python -m pipelines.run --method=vanilla --train_size=2000 --epochs=2 --width=0.25
    python -m pipelines.run --runner=kfp --compile=pipeline.yaml
    python -m pipelines.run --flagfile=my_run.flags

Dataset presets (``pipelines/configs/<dataset>.py``) replace the defaults of
flags you do not set. One flag per method hyper-parameter (``--alpha``,
``--beta``, ...) is defined from ``bridging_tf.methods.all_hparams()``.
From Python, :func:`run_job` runs one job and returns its ``results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from absl import flags

from pipelines._cli import parse_flags
from pipelines._quiet import import_tensorflow_quietly

# TF's C++ start-up lines stay off stderr: user errors are one line there.
import_tensorflow_quietly()

from bridging_tf.errors import DataError, UserError  # noqa: E402
from pipelines import configs  # noqa: E402
from pipelines.pipeline import BASE_DEFAULTS, attack_list, build, run_local  # noqa: E402

FLAGS = flags.FLAGS
CHOICES = {
    "attack_protocol": ("sound", "paper"),
    "strategy": ("default", "mirrored", "multiworker", "tpu"),
    "runner": ("local", "kfp", "kfp-local"),
    "optimizer": ("adam", "sgd"),
    "lr_schedule": ("step", "plateau", "constant"),
    "backbone_variant": ("auto", "vanilla", "end"),
    "mixed_precision": ("auto", "off", "mixed_float16", "mixed_bfloat16"),
    "jit_compile": ("auto", "true", "false"),
}

_HELP = {
    "method": "Debiasing method (see bridging_tf.methods.available()).",
    "dataset": "Dataset (see bridging_tf.datasets.available()).",
    "rho": "Biased-MNIST: colour/digit correlation of the training set, in [0, 1].",
    "data_dir": "Folder with the dataset's files (MNIST: mnist.npz or the IDX files).",
    "output_dir": "Run folder (default ./runs/<dataset>_<method>_rho<rho>_seed<seed>).",
    "epochs": "Training epochs.", "batch_size": "Training batch size.",
    "lr": "Initial learning rate.", "weight_decay": "Coupled L2 weight decay.",
    "optimizer": "adam | sgd (momentum 0.9).",
    "lr_schedule": "step (StepLR 20 epochs x0.1) | plateau (val loss; stop below --min_lr) "
                   "| constant.",
    "plateau_patience": "plateau: epochs without val-loss improvement before lr/10.",
    "min_lr": "plateau: stop training once the lr falls below this.",
    "seed": "Seed for data, initialisation and attacks.",
    "train_size": "Subsample the training set (quick runs).",
    "val_size": "Size of the validation split (model selection).",
    "test_size": "Subsample the test sets (quick runs).",
    "attack_size": "Attacker training examples.",
    "width": "Backbone channel multiplier (1.0 = the paper).",
    "backbone": "Backbone override (default per dataset).",
    "backbone_variant": "auto (EnD's tanh + L2-normalised bottleneck for --method=end, plain "
                        "otherwise) | vanilla | end. The paper's face Vanilla models use 'end'.",
    "weights": "Pretrained backbone weights file (ResNet-18: .weights.h5 or a torchvision "
               "state_dict .npz; DenseNet-121: a keras weights file). Default: from scratch.",
    "attack_protocol": "sound (independent rho=0.1 attacker set) | paper (fresh rho=0.999 set).",
    "attacks": "Comma list of attacks: linear[,mlp,decoder].",
    "target": "Target attribute (face datasets).", "private": "Private attribute (face datasets).",
    "split": "Dataset split option (e.g. IMDB EB1/EB2).", "image_size": "Input image size.",
    "strategy": "tf.distribute strategy: default | mirrored | multiworker | tpu.",
    "mixed_precision": "auto (bf16 on GPU/TPU, off on CPU) | off | mixed_float16 | mixed_bfloat16.",
    "jit_compile": "XLA: auto (on with GPU/TPU) | true | false.",
    "runner": "local (in-process) | kfp (compile with --compile) | kfp-local (kfp.local).",
    "compile": "With --runner=kfp: write the KFP pipeline spec (YAML) here.",
    "model_name": "Served model name (default <dataset>_<method>).",
    "verbose": "Keras verbosity (1 = progress bars).",
    "deterministic": "tf.config.experimental.enable_op_determinism().",
}
_INT = {"epochs", "batch_size", "plateau_patience", "seed", "train_size", "val_size",
        "test_size", "attack_size", "image_size", "verbose"}
_FLOAT = {"rho", "lr", "weight_decay", "min_lr", "width"}


def _define_flags():
    if "method" in FLAGS:
        return
    for name, default in BASE_DEFAULTS.items():
        if name in _INT:
            flags.DEFINE_integer(name, default, _HELP[name])
        elif name in _FLOAT:
            flags.DEFINE_float(name, default, _HELP[name])
        elif name == "deterministic":
            flags.DEFINE_bool(name, default, _HELP[name])
        else:
            flags.DEFINE_string(name, default, _HELP[name])
    from bridging_tf.methods import all_hparams
    for name, (default, help_text) in sorted(all_hparams().items()):
        if name in FLAGS:
            raise ValueError(f"method hyper-parameter {name!r} clashes with a pipeline flag")
        help_text = f"{help_text} (method default: {default})"
        if isinstance(default, bool):
            flags.DEFINE_bool(name, None, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, None, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(name, None, help_text)
        else:
            flags.DEFINE_string(name, None, help_text)


_define_flags()


def resolve_params(params: Optional[dict] = None) -> dict:
    """Defaults <- dataset preset <- ``params`` (explicit values); includes method hparams."""
    from bridging_tf.methods import all_hparams
    base = dict(BASE_DEFAULTS)
    base.update({k: None for k in all_hparams()})
    unknown = sorted(set(params or {}) - set(base))
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)}")
    explicit = {k: v for k, v in (params or {}).items()}
    return configs.resolve(base, explicit)


def validate(p: dict) -> None:
    """Raise :class:`UserError` naming the first bad flag."""
    from bridging_tf import datasets, methods
    from bridging_tf.attacks import AttackType

    if p["method"] not in methods.available():
        raise UserError(f"--method={p['method']!r} is not known; choose one of "
                        f"{', '.join(methods.available())}")
    if p["dataset"] not in datasets.available():
        raise UserError(f"--dataset={p['dataset']!r} is not known; choose one of "
                        f"{', '.join(datasets.available())}")
    if isinstance(p.get("jit_compile"), bool):
        p["jit_compile"] = "true" if p["jit_compile"] else "false"
    for name, choices in CHOICES.items():
        if str(p[name]) not in choices:
            raise UserError(f"--{name}={p[name]!r}: choose one of {', '.join(choices)}")
    if p.get("rho") is not None and not 0.0 <= float(p["rho"]) <= 1.0:
        raise UserError(f"--rho={p['rho']} is outside [0, 1]")
    for name in ("epochs", "batch_size"):
        if int(p[name]) < 1:
            raise UserError(f"--{name}={p[name]} must be at least 1")
    for name in ("lr", "width"):
        if float(p[name]) <= 0:
            raise UserError(f"--{name}={p[name]} must be > 0")
    if float(p["weight_decay"]) < 0:
        raise UserError(f"--weight_decay={p['weight_decay']} must be >= 0")
    for name in ("train_size", "val_size", "test_size", "attack_size"):
        if p.get(name) is not None and int(p[name]) < (0 if name == "val_size" else 1):
            raise UserError(f"--{name}={p[name]} must be a positive number of examples")
    for a in attack_list(p):
        AttackType.parse(a)
    if p.get("data_dir") and not Path(p["data_dir"]).expanduser().exists():
        raise DataError(f"--data_dir={p['data_dir']}: no such folder")
    if p["runner"] == "kfp" and not p.get("compile"):
        raise UserError("--runner=kfp needs --compile=PATH for the pipeline spec (YAML)")


def default_output_dir(p: dict) -> Path:
    return Path("runs") / f"{p['dataset']}_{p['method']}_rho{p.get('rho')}_seed{p['seed']}"


def prepare_output_dir(path: Path) -> bool:
    """Create ``path`` (or check it is writable); return whether it was created here."""
    existed = path.exists()
    try:
        if existed and not path.is_dir():
            raise UserError(f"--output_dir={path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--output_dir={path}: cannot write there "
                        f"({err.strerror or err})") from None
    return not existed


def _write_json(path: Path, obj) -> None:
    from components.base import write_json
    write_json(path, obj)


def run_job(params: dict, output_dir=None) -> dict:
    """Run one job (flag-name keys; missing ones take the defaults); return its ``results.json``.

    Example::

        res = run_job({"method": "end", "epochs": 1, "train_size": 500, "width": 0.25},
                      "runs/quick")
        res["private_accuracy"], res["target_accuracy"]
    """
    start = time.time()
    p = resolve_params(params)
    validate(p)
    out = Path(output_dir or p.get("output_dir") or default_output_dir(p))
    p["output_dir"] = str(out)
    if p["runner"] == "kfp":
        from pipelines.kfp_pipeline import compile_pipeline
        path = compile_pipeline(p, p["compile"])
        print(f"KFP pipeline spec: {path}")
        return {"pipeline_spec": str(path)}
    created = prepare_output_dir(out)
    try:
        if p.get("deterministic"):
            import tensorflow as tf
            tf.config.experimental.enable_op_determinism()
        if p["runner"] == "kfp-local":
            from pipelines.kfp_pipeline import run_kfp_local
            artifacts, step_metrics = run_kfp_local(p, out)
        else:
            steps = build(p, out)
            step_metrics = run_local(steps)
            artifacts = {k: str(v) for s in steps for k, v in s.outputs.items()}
        results = json.loads((Path(artifacts["report"]) / "results.json").read_text())
        _write_json(out / "results.json", results)
        meta = _run_metadata(p, artifacts, step_metrics, time.time() - start)
        _write_json(out / "run_metadata.json", meta)
    except UserError:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # no half-written run folder
        raise
    _print_locations(out, artifacts)
    return results


def _run_metadata(p, artifacts, step_metrics, wall) -> dict:
    from bridging_tf import distribute
    from components.base import package_versions
    from components.train import train_info
    info = train_info(artifacts["model"])
    return {"flags": p, "seed": p["seed"], "versions": package_versions(),
            "wall_time_s": round(wall, 2), "argv": sys.argv,
            "dataset_metadata": info.get("dataset_metadata"), "train_info": {
                k: v for k, v in info.items() if k != "dataset_metadata"},
            "devices": distribute.accelerators(), "artifacts": artifacts,
            "step_metrics": step_metrics}


def _print_locations(out: Path, artifacts: dict) -> None:
    print("\nArtifacts:")
    print(f"  results.json       {out / 'results.json'}")
    print(f"  run_metadata.json  {out / 'run_metadata.json'}")
    for name, path in artifacts.items():
        print(f"  {name:<18} {path}")
    model = Path(artifacts["model"]) / "model.keras"
    print(f"  model.keras        {model}")
    print(f"  tensorboard        {Path(artifacts['model']) / 'logs'}")


def _explicit_from_flags() -> dict:
    names = list(BASE_DEFAULTS)
    from bridging_tf.methods import all_hparams
    names += list(all_hparams())
    return {n: FLAGS[n].value for n in names if FLAGS[n].present}


def main(argv=None) -> int:
    """Parse ``argv``, run the job; user errors -> one line on stderr, exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print(FLAGS.module_help(sys.modules[__name__]))
        return 0
    status = parse_flags(FLAGS, argv)
    if status is not None:
        return status
    try:
        results = run_job(_explicit_from_flags())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    keys = ("target_accuracy", "biased_accuracy", "private_accuracy", "private_chance")
    if "target_accuracy" in results:
        print("\n" + json.dumps({k: results[k] for k in keys if k in results}))
    return 0


def entry_point() -> None:
    """Console script ``bridging-tf-run``."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
