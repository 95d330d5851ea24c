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
flags you do not set (:func:`pipelines.configs.resolve`, the one place). Every
flag, method hyper-parameters (``--alpha``, ``--beta``, ...) included, is defined
from the option schema ``bridging_tf.options`` (``pipelines/_cli.py``).
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

from pipelines._quiet import import_tensorflow_quietly

# TF's C++ start-up lines stay off stderr: user errors are one line there.
import_tensorflow_quietly()

from bridging_tf import options  # noqa: E402
from bridging_tf.errors import DataError, UserError  # noqa: E402
from bridging_tf.methods import all_hparams  # noqa: E402
from pipelines import configs, run_folder  # noqa: E402
from pipelines._cli import define_flags, explicit_values, parse_flags, print_help  # noqa: E402
from pipelines.pipeline import BASE_DEFAULTS, build, run_local  # noqa: E402

FLAGS = flags.FLAGS
#: every flag: one per option of bridging_tf.options (job options, method hyper-parameters)
FLAG_NAMES = ([n for n in options.all_fields() if n in FLAGS] if "method" in FLAGS
              else define_flags(FLAGS, __name__))  # (imported twice: as __main__ and by name)


def resolve_params(params: Optional[dict] = None) -> dict:
    """Defaults <- dataset preset <- ``params`` (explicit values); includes method hparams.

    A method hyper-parameter not given stays ``None`` (its dataclass default applies).
    """
    base = {**BASE_DEFAULTS, **{k: None for k in all_hparams()}}
    unknown = sorted(set(params or {}) - set(base))
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)}")
    return configs.resolve(base, dict(params or {}))


def validate(p: dict) -> None:
    """Raise :class:`UserError` naming the first bad flag — before anything runs.

    Every option on its own (:func:`bridging_tf.options.check_values`: choices, integers,
    every float finite, bounds; values converted in place), then the run's own
    combinations and the dataset / backbone combination (:func:`_validate_dataset_and_model`),
    so a bad combination never costs an ingestion.
    """
    options.check_values(p)
    from components.remote_data import is_uri  # a URI: read by the ingest step (tf.io.gfile)
    if p.get("data_dir") and not is_uri(p["data_dir"]) and p["runner"] != "kfp" \
            and not Path(p["data_dir"]).expanduser().exists():
        raise DataError(f"--data_dir={p['data_dir']}: no such folder")
    if p["runner"] == "kfp" and not p.get("compile"):
        raise UserError("--runner=kfp needs --compile=PATH for the pipeline spec (YAML)")
    if p["runner"] == "kfp":
        from pipelines.kfp_pipeline import check_params  # data / weights the pods can read
        check_params(p)
    for name in ("image", "accelerator"):
        if p.get(name) and p["runner"] != "kfp":
            raise UserError(f"--{name} is used only with --runner=kfp (the compiled spec); "
                            "remove it")
    _validate_dataset_and_model(p)


def _validate_dataset_and_model(p: dict) -> None:
    """The dataset's options and the dataset / backbone / width / image-size combination.

    - An option the chosen dataset does not read (:func:`bridging_tf.datasets.options`)
      is refused when its value differs from that dataset's default (e.g.
      ``--image_size`` on Biased-MNIST, always 28x28); the same value as the default
      changes nothing and passes.
    - ``--width``: DenseNet-121 has fixed widths (``keras.applications.DenseNet121``
      has no channel multiplier: growth rate 32, blocks 6-12-24-16, a 1024-d
      bottleneck), so only 1.0. The scalable nets keep at least one channel in every
      conv, which for all three means a bottleneck of at least 8 dimensions
      (SimpleConvNet 16..128 channels: width >= 0.0625; ResNet-18 64..512: >= 0.015625;
      the biased g of ResNet-18 / DenseNet-121, 32..256: >= 0.03125); the upper end
      (``options.MAX_WIDTH``) is the schema's.
    - ``--image_size`` in [8, 4096]; DenseNet-121 needs at least 32x32 (Keras).
    - ``--weights`` must exist and the backbone must load weights; a dataset with an
      ingestion step (SIIM) needs ``--data_dir``.
    """
    import importlib
    import inspect

    from bridging_tf import datasets, methods, models
    from bridging_tf.models import biased_nets, resnet18, simple_conv
    from pipelines.pipeline import DATASET_OPTIONS

    min_bottleneck, (min_image, max_image) = 8, options.IMAGE_SIZE_RANGE
    ds = p["dataset"]
    used = datasets.options(ds)
    if used is not None:
        defaults = resolve_params({"dataset": ds, **({"scale": p["scale"]} if p.get("scale")
                                                      else {})})
        for name in DATASET_OPTIONS:
            value = p.get(name)
            if name not in used and value is not None and value != defaults.get(name):
                reads = ", ".join(f"--{n}" for n in DATASET_OPTIONS if n in used)
                raise UserError(f"--{name}={value} is not used by --dataset={ds} (it reads "
                                f"{reads}); remove it")
    if datasets.get_preparer(ds) is not None and not p.get("data_dir"):
        raise UserError(f"--dataset={ds} needs --data_dir (the raw data folder it ingests)")

    backbone = p.get("backbone") or options.default_backbone(ds)
    width = p["width"]
    if backbone == "densenet121" and width != 1.0:
        raise UserError(f"--width={width:g}: DenseNet-121 (--backbone=densenet121, here for "
                        f"--dataset={ds}) has fixed widths (growth rate 32, a 1024-d "
                        "bottleneck; Keras's DenseNet121 has no channel multiplier): use "
                        "--width=1.0, or --backbone=resnet18 for a scalable net")
    # (first conv, bottleneck) channels at width 1 of each scalable net built for the job
    nets = {"simple_conv": (simple_conv.BASE_WIDTHS[0], simple_conv.BASE_WIDTHS[-1]),
            "resnet18": (resnet18.STEM_WIDTH, resnet18.STAGE_WIDTHS[-1])}
    built = [(backbone, nets.get(backbone))]
    if methods.get_method_class(p["method"]).needs_biased_backbone:
        g = "simple_conv" if backbone == "simple_conv" else "local_convnet"
        built.append((f"{p['method']}'s biased net g ({g})",
                      (biased_nets.LOCAL_WIDTHS[0], biased_nets.LOCAL_WIDTHS[-1])
                      if g == "local_convnet" else nets["simple_conv"]))
    for name, channels in built:
        if channels is None:
            continue
        first, last = channels
        lowest = max(1.0 / first, min_bottleneck / last)
        if width < lowest:
            raise UserError(f"--width={width:g} leaves {name} a {round(last * width)}-d "
                            f"bottleneck; use --width >= {lowest:g} (every conv keeps a "
                            f"channel, the bottleneck >= {min_bottleneck} dimensions)")

    if used is not None and "image_size" in used:
        side = p.get("image_size")
        if side is not None and not min_image <= side <= max_image:
            raise UserError(f"--image_size={side} must be in [{min_image}, {max_image}] pixels")
        where = f"--image_size={side}"
    else:  # a dataset with a fixed size (Biased-MNIST: 28x28)
        module = importlib.import_module(datasets.get_loader(ds).__module__)
        side = getattr(module, "IMAGE_SIZE", None)
        where = f"--dataset={ds} ({side}x{side} images)"
    if backbone == "densenet121" and side is not None and side < 32:
        raise UserError(f"{where} is too small for --backbone=densenet121 (Keras's DenseNet121 "
                        "needs at least 32x32 pixels)")

    weights = p.get("weights")
    if weights and weights not in ("none", "None"):
        builder = models.get_backbone_builder(backbone)
        if "weights" not in inspect.signature(builder).parameters:
            raise UserError(f"--weights: backbone {backbone!r} does not load pretrained weights")
        if not Path(weights).expanduser().is_file():
            raise DataError(f"--weights={weights}: no such file")


def default_output_dir(p: dict) -> Path:
    return run_folder.default_output_dir(p)


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
    if p.get("strategy") == "multiworker" and p["runner"] == "local":
        from bridging_tf.distribute import multiworker_strategy
        multiworker_strategy()  # before TensorFlow's first op (it joins the cluster's workers)
    out = Path(output_dir or p.get("output_dir") or default_output_dir(p))
    p["output_dir"] = str(out)
    if p["runner"] == "kfp":
        from pipelines.kfp_pipeline import compile_pipeline
        path = compile_pipeline(p, p["compile"])
        print(f"KFP pipeline spec: {path}")
        return {"pipeline_spec": str(path)}
    created = prepare_output_dir(out)
    from components.lock import OutputLock
    lock = OutputLock.acquire(out)  # another live run there: UserError naming it (exit 2)
    meta = None
    try:
        run_folder.check_recorded_config(out, p)  # another run's folder: UserError naming flags
        meta = run_folder.start_metadata(out, p)
        _print_plan_header(p, out)
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
        results.setdefault("scale", p.get("scale"))
        _write_json(out / "results.json", results)
        run_folder.finish_metadata(out, meta, artifacts=artifacts, step_metrics=step_metrics,
                                   wall=time.time() - start)
    except UserError as err:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # no half-written run folder
        elif meta is not None:
            _write_json(out / run_folder.METADATA, {**meta, "status": "failed",
                                                    "error": str(err)})
        raise
    finally:
        lock.release()
    _print_locations(out, artifacts)
    return results


def _print_plan_header(p: dict, out: Path) -> None:
    """The run-level lines of the plan (the train step prints the rest before it trains)."""
    preset = f"pipelines/configs/{p['dataset']}.py"
    print(f"== plan: {p['dataset']} / {p['method']} at --scale={p.get('scale')} ({preset}); "
          f"output {out}", flush=True)
    note = run_folder.plan_note(p)
    if note:
        print(f"   note: {note}", flush=True)


def _print_locations(out: Path, artifacts: dict) -> None:
    print("\nArtifacts:")
    print(f"  results.json       {out / 'results.json'}")
    print(f"  run_metadata.json  {out / 'run_metadata.json'}")
    for name, path in artifacts.items():
        print(f"  {name:<18} {path}")
    model = Path(artifacts["model"]) / "model.keras"
    print(f"  model.keras        {model}")
    print(f"  tensorboard        {Path(artifacts['model']) / 'logs'}")


def main(argv=None) -> int:
    """Parse ``argv``, run the job; user errors -> one line on stderr, exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    if print_help(FLAGS, argv, __doc__, __name__):
        return 0
    status = parse_flags(FLAGS, argv)
    if status is not None:
        return status
    try:
        results = run_job(explicit_values(FLAGS, FLAG_NAMES))
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
