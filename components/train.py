"""``train``: data artifact -> model artifact (``model.keras``, ``history.json``, TensorBoard logs).

Builds the bundle (``bridging_tf.datasets.load``), the backbone
(``bridging_tf.models.build_backbone``; default per dataset in
:func:`bridging_tf.options.default_backbone`), the method (``bridging_tf.methods.build_method``),
calls ``model.prepare(train_ds)`` and ``fit``s with:

- ``BackupAndRestore`` in ``<model>.work/backup`` every epoch, and a data
  stream that restarts at the resumed epoch with that epoch's own shuffle
  seed, so a run killed mid-training and rerun finishes with the same weights
  as an uninterrupted one;
- best-on-``val`` checkpoint choice (``val_accuracy``), restored at the end;
- ``PlateauStop`` when ``lr_schedule="plateau"``; TensorBoard; a NaN guard.

Example::

    train.run({"data": Path("runs/x/data")}, {"model": Path("runs/x/model")},
              method="end", epochs=1, width=0.25, hparams={"alpha": 1.0, "beta": 1.0})
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping, Optional

from bridging_tf.errors import UserError
from bridging_tf.options import DataOptions, RunOptions, default_backbone
from bridging_tf.options import TrainOptions as T
from components.base import ArtifactWriter, load_bundle, write_json


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the message says where and what to change."""


def build_model(bundle, *, method: str, backbone: Optional[str], width: float,
                weight_decay: float, hparams: dict, seed: int, weights: Optional[str] = None,
                backbone_variant: str = T.backbone_variant):
    """The method wrapper for ``bundle`` (seeded: same seed -> same initial weights)."""
    import keras

    from bridging_tf import methods, models

    keras.utils.set_random_seed(int(seed))
    cls = methods.get_method_class(method)
    name = backbone or default_backbone(bundle.name)
    T(backbone_variant=backbone_variant)  # UserError naming --backbone_variant
    if backbone_variant == "auto":
        backbone_variant = "end" if method == "end" else "vanilla"
    kw = dict(num_classes=bundle.num_classes, variant=backbone_variant,
              width=width, input_shape=tuple(bundle.image_shape))
    if weights:
        import inspect

        from bridging_tf.models import get_backbone_builder
        if "weights" not in inspect.signature(get_backbone_builder(name)).parameters:
            raise UserError(f"--weights: backbone {name!r} does not load pretrained weights")
        net = models.build_backbone(name, **kw, weights=str(Path(weights).expanduser()))
    else:
        net = models.build_backbone(name, **kw)
    biased = None
    if cls.needs_biased_backbone:
        biased = models.build_biased_backbone(name, **{**kw, "variant": "vanilla"})
    return methods.build_method(method, backbone=net, num_classes=bundle.num_classes,
                                num_private=bundle.num_private, biased_backbone=biased,
                                weight_decay=weight_decay, hparams=hparams)


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *, method: str,
        backbone: Optional[str] = T.backbone, width: float = T.width, epochs: int = T.epochs,
        batch_size: int = T.batch_size, lr: float = T.lr, weight_decay: float = T.weight_decay,
        optimizer: str = T.optimizer, lr_schedule: str = T.lr_schedule,
        lr_step_epochs: int = T.lr_step_epochs, lr_gamma: float = 0.1,
        plateau_patience: int = T.plateau_patience, min_lr: float = T.min_lr,
        monitor: str = "val_accuracy", seed: int = DataOptions.seed, hparams: Optional[dict] = None,
        strategy: str = T.strategy, mixed_precision: str = T.mixed_precision,
        jit_compile=T.jit_compile, weights: Optional[str] = T.weights,
        backbone_variant: str = T.backbone_variant,
        verbose: int = RunOptions.verbose) -> dict:
    """Train one model (defaults: :class:`bridging_tf.options.TrainOptions`)."""
    hparams = dict(hparams or {})
    params = dict(method=method, backbone=backbone, width=width, epochs=epochs,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                  lr_schedule=lr_schedule, lr_step_epochs=lr_step_epochs, lr_gamma=lr_gamma,
                  plateau_patience=plateau_patience, min_lr=min_lr, monitor=monitor, seed=seed,
                  hparams=hparams, strategy=strategy, mixed_precision=mixed_precision,
                  jit_compile=jit_compile, weights=weights,
                  backbone_variant=backbone_variant)
    with ArtifactWriter("train", "Model", outputs["model"], params=params, inputs=inputs,
                        seed=seed) as art:
        if art.skipped:
            return art.metrics
        art.metrics, art.extra = _train(inputs, art, params, verbose)
    return art.metrics


def _train(inputs, art, p, verbose):
    import keras

    from bridging_tf import distribute, training

    bundle = load_bundle(inputs["data"])
    train_split = bundle["train"]
    strategy = distribute.get_strategy(p["strategy"])
    policy = distribute.resolve_mixed_precision(p["mixed_precision"])
    jit = distribute.resolve_jit(p["jit_compile"])
    old_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        replicas = int(strategy.num_replicas_in_sync)
        # Keras under MirroredStrategy fails on uneven per-replica shards: with several
        # replicas every batch is full (the last partial batch of each epoch is dropped).
        drop = replicas > 1
        if drop and p["batch_size"] % replicas:
            raise UserError(f"--batch_size={p['batch_size']} must be a multiple of the "
                            f"{replicas} replicas of --strategy={p['strategy']}")
        steps = training.steps_per_epoch(train_split.size, p["batch_size"], drop_remainder=drop)
        with strategy.scope():
            model = build_model(bundle, method=p["method"], backbone=p["backbone"],
                                width=p["width"], weight_decay=p["weight_decay"],
                                hparams=p["hparams"], seed=p["seed"], weights=p.get("weights"),
                                backbone_variant=p.get("backbone_variant", "auto"))
            opt = training.make_optimizer(p["optimizer"], p["lr"], schedule=p["lr_schedule"],
                                          steps_per_epoch=steps, step_epochs=p["lr_step_epochs"],
                                          gamma=p["lr_gamma"])
            model.compile(optimizer=opt, jit_compile=jit)
        work = art.work_dir
        backup_dir = work / "backup"
        first_epoch = min(training.backup_epoch(backup_dir), p["epochs"])
        plan = training_plan(bundle, model, p, steps=steps, strategy=strategy, policy=policy,
                             jit=jit, first_epoch=first_epoch, output=art.output)
        print_plan(plan)
        model.prepare(train_split.dataset(p["batch_size"], shuffle=True, seed=p["seed"],
                                          augment=True),
                      verbose=verbose)
        if first_epoch:
            print(f"[train] resuming from the checkpoint after epoch {first_epoch} in {backup_dir}")
        train_ds = training.epoch_datasets(train_split, p["batch_size"], seed=p["seed"],
                                           first_epoch=first_epoch, epochs=p["epochs"],
                                           drop_remainder=drop, augment=True)
        val_ds = (bundle["val"].dataset(p["batch_size"], drop_remainder=drop)
                  if "val" in bundle.splits else None)
        history = training.HistoryLog(work / "history_state.json")
        best = training.BestCheckpoint(work / "best.weights.h5", monitor=p["monitor"])
        guard = training.NaNGuard(hint=f"--lr={p['lr']:g} or --weight_decay={p['weight_decay']:g}")
        timer = training.PlanTimer(steps * (p["epochs"] - first_epoch), p["epochs"] - first_epoch,
                                   measure=min(20, steps - 4))
        callbacks = [guard, timer, history, best]
        plateau = None
        if p["lr_schedule"] == "plateau":
            plateau = training.PlateauStop("val_loss" if val_ds is not None else "loss",
                                           patience=p["plateau_patience"], min_lr=p["min_lr"],
                                           state_path=work / "plateau_state.json")
            callbacks.append(plateau)
        callbacks += [keras.callbacks.TensorBoard(str(work / "logs"), write_graph=False,
                                                  profile_batch=0),
                      keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False,
                                                       double_checkpoint=True)]
        model.fit(train_ds, validation_data=val_ds, epochs=p["epochs"], steps_per_epoch=steps,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # shuffled per epoch
        if guard.message:
            raise TrainingDiverged(guard.message)

        model.save(art.path / "model.keras")
        hist = history.as_dict()
        write_json(art.path / "history.json", hist)
        if (work / "logs").exists():
            shutil.copytree(work / "logs", art.path / "logs")
        info = {"dataset": bundle.name, "method": p["method"],
                "backbone": p["backbone"] or default_backbone(bundle.name),
                "num_classes": bundle.num_classes, "num_private": bundle.num_private,
                "image_shape": list(bundle.image_shape), "mean": list(bundle.mean),
                "std": list(bundle.std), "train_examples": int(train_split.size),
                "val_examples": int(bundle["val"].size) if "val" in bundle.splits else 0,
                "dataset_metadata": bundle.metadata,
                "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
                "monitor": p["monitor"],
                "epochs_run": len(hist.get("loss", [])), "mixed_precision": policy,
                "jit_compile": bool(jit), "strategy": p["strategy"],
                "replicas": int(strategy.num_replicas_in_sync),
                "stopped_early": bool(plateau is not None and plateau.stopped_epoch is not None),
                "split_sizes": {k: int(v.size) for k, v in bundle.splits.items()},
                "primary_eval": bundle.primary_eval,
                "plan": {**plan, **timer.plan}}
        write_json(art.path / "train_info.json", info)
        metrics = {"epochs_run": info["epochs_run"],
                   "best_epoch": -1 if info["best_epoch"] is None else info["best_epoch"]}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if hist.get(key):
                metrics[f"final_{key}"] = hist[key][-1]
        if best.best is not None:
            metrics[f"best_{p['monitor']}"] = best.best
        return metrics, {"train_info": info}
    finally:
        keras.mixed_precision.set_global_policy(old_policy)


def training_plan(bundle, model, p, *, steps, strategy, policy, jit, first_epoch,
                  output) -> dict:
    """What this training is about to do, resolved (printed by :func:`print_plan`)."""
    import os

    import tensorflow as tf

    from bridging_tf import distribute
    acc = distribute.accelerators()
    devices = ([f"{n} x {kind}" for kind, n in acc.items() if n]
               or [f"CPU ({os.cpu_count()} cores)"])
    try:
        params = int(model.count_params())
    except ValueError:  # not built yet
        params = None
    return {"dataset": bundle.name,
            "split_sizes": {k: int(v.size) for k, v in bundle.splits.items()},
            "steps_per_epoch": int(steps), "epochs": int(p["epochs"]),
            "first_epoch": int(first_epoch),
            "total_steps": int(steps) * (int(p["epochs"]) - int(first_epoch)),
            "batch_size": int(p["batch_size"]), "optimizer": p["optimizer"], "lr": p["lr"],
            "lr_schedule": p["lr_schedule"], "method": p["method"],
            "backbone": p["backbone"] or default_backbone(bundle.name), "width": p["width"],
            "parameters": params, "devices": devices,
            "replicas": int(strategy.num_replicas_in_sync), "precision": policy,
            "xla": bool(jit), "output": str(output), "tf_version": tf.__version__}


def print_plan(plan: dict) -> None:
    sizes = " · ".join(f"{k} {v:,}" for k, v in plan["split_sizes"].items())
    params = f", {plan['parameters'] / 1e6:.2f} M parameters" if plan["parameters"] else ""
    resumed = (f" (resuming after epoch {plan['first_epoch']})" if plan["first_epoch"] else "")
    lines = [
        f"data      {plan['dataset']}: {sizes}",
        f"training  {plan['epochs']} epochs x {plan['steps_per_epoch']:,} steps/epoch = "
        f"{plan['steps_per_epoch'] * plan['epochs']:,} steps{resumed}, batch {plan['batch_size']}, "
        f"{plan['optimizer']} lr {plan['lr']:g} ({plan['lr_schedule']})",
        f"model     {plan['method']} on {plan['backbone']} (width {plan['width']:g}{params})",
        f"device    {', '.join(plan['devices'])}, {plan['replicas']} replica(s) · precision "
        f"{plan['precision']} · XLA {'on' if plan['xla'] else 'off'}",
        f"output    {plan['output']}",
    ]
    print("[train] plan:\n" + "\n".join("  " + line for line in lines), flush=True)


def load_model(model_artifact):
    """Reload the trained method wrapper from a model artifact."""
    import keras

    import bridging_tf.methods  # noqa: F401  (registers the classes)
    import bridging_tf.training  # noqa: F401  (registers StepDecay for the saved optimizer)
    from bridging_tf.methods import get_method_class

    info = train_info(model_artifact)
    get_method_class(info["method"])  # import the module that registers the class
    return keras.saving.load_model(Path(model_artifact) / "model.keras")


def train_info(model_artifact) -> dict:
    import json
    path = Path(model_artifact) / "train_info.json"
    if not path.exists():
        raise UserError(f"{path} is missing; the model artifact is incomplete")
    return json.loads(path.read_text())
