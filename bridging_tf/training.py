"""Training utilities: optimizers, the paper's step decay, resumable callbacks.

- :func:`make_optimizer` — ``adam`` or ``sgd`` (momentum); weight decay is
  *coupled* L2 and lives in :class:`bridging_tf.methods.DebiasModel`, not here.
- :func:`step_decay` — PyTorch ``StepLR(step_size=20, gamma=0.1)`` stepped once
  per epoch, as Keras's staircase ``ExponentialDecay`` over optimizer iterations
  (so it survives save/restore with the optimizer).
- :class:`PlateauStop` — ``ReduceLROnPlateau`` (÷10 after ``patience`` epochs
  without improvement of ``val_loss``) that stops training once the learning
  rate falls below ``min_lr`` (the SIIM recipe).
- :class:`BestCheckpoint` — keeps the weights of the best epoch on the
  ``val`` split (``val_accuracy`` by default) and restores them at the end.
- :class:`NaNGuard` — ``TerminateOnNaN`` that remembers where and why.
- :func:`epoch_datasets` — a deterministic per-epoch shuffled stream that can
  restart at any epoch, so a resumed run sees exactly the batches an
  uninterrupted run would have seen.

The stateful callbacks persist their state in a JSON file next to the
``BackupAndRestore`` backup, so a killed run resumes with the same best epoch,
plateau counter and history.

Example::

    opt = make_optimizer("adam", lr=1e-3, schedule="step", steps_per_epoch=235)
    model.compile(optimizer=opt)
    best = BestCheckpoint("work/best.weights.h5")
    model.fit(train_ds, validation_data=val_ds, epochs=80, callbacks=[best])
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from bridging_tf.fileio import write_text
from bridging_tf.options import TrainOptions, check_value, choices_of, job_fields

OPTIMIZERS = choices_of(job_fields()["optimizer"])   # declared in bridging_tf.options
SCHEDULES = choices_of(job_fields()["lr_schedule"])


def step_decay(initial_learning_rate: float, steps_per_epoch: int, step_epochs: int = 20,
               gamma: float = 0.1) -> keras.optimizers.schedules.ExponentialDecay:
    """``lr * gamma ** floor(epoch / step_epochs)`` with ``epoch = iteration // steps_per_epoch``.

    PyTorch ``StepLR`` stepped once per epoch, as Keras's staircase ``ExponentialDecay`` over
    optimizer iterations (so it survives save/restore with the optimizer).

    Example::

        sched = step_decay(1e-3, steps_per_epoch=100)   # 1e-3 for epochs 0-19, 1e-4 for 20-39...
        keras.optimizers.Adam(sched)
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    return keras.optimizers.schedules.ExponentialDecay(
        float(initial_learning_rate), decay_steps=int(steps_per_epoch) * int(step_epochs),
        decay_rate=float(gamma), staircase=True)


@keras.saving.register_keras_serializable(package="bridging_tf", name="StepDecay")
class _SavedStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Loads the ``StepDecay`` schedule in optimizers saved before it became :func:`step_decay`."""

    @classmethod
    def from_config(cls, config):
        return step_decay(**config)


def make_optimizer(name: str = TrainOptions.optimizer, lr: float = TrainOptions.lr, *,
                   schedule: str = TrainOptions.lr_schedule,
                   steps_per_epoch: Optional[int] = None,
                   step_epochs: int = TrainOptions.lr_step_epochs,
                   gamma: float = 0.1, momentum: float = 0.9) -> keras.optimizers.Optimizer:
    """Build ``adam`` or ``sgd`` (momentum) with a ``step``/``plateau``/``constant`` lr.

    ``plateau`` keeps a plain float lr (a variable that :class:`PlateauStop` lowers).
    Weight decay is not set here: it is coupled L2 inside ``DebiasModel``.
    """
    name, schedule = check_value("optimizer", name), check_value("lr_schedule", schedule)
    if schedule == "step":
        if not steps_per_epoch:
            raise ValueError("schedule='step' needs steps_per_epoch")
        learning_rate = step_decay(lr, steps_per_epoch, step_epochs, gamma)
    else:
        learning_rate = float(lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=momentum)


def save_weights_atomic(model, path) -> None:
    """``model.save_weights(path)`` through a temporary file and a rename: never a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5")
    model.save_weights(str(tmp), overwrite=True)
    os.replace(tmp, path)


def weights_file_ok(path) -> bool:
    """Whether ``path`` is a complete HDF5 weights file (opens and lists its groups)."""
    try:
        import h5py
        with h5py.File(str(path), "r") as f:
            list(f.keys())
        return True
    except Exception:  # OSError (truncated), h5py's own errors
        return False


class _PersistentCallback(keras.callbacks.Callback):
    """A callback whose ``state`` dict is saved to JSON at each epoch end and reloaded on start."""

    def __init__(self, state_path=None):
        super().__init__()
        self.state_path = Path(state_path) if state_path else None
        self.state = self.initial_state()

    def initial_state(self) -> dict:
        return {}

    def on_train_begin(self, logs=None):
        if self.state_path and self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
            self.restored(self.state)

    def restored(self, state) -> None:
        """Hook: apply a reloaded state (e.g. reset the learning rate)."""

    def save_state(self):
        if self.state_path:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.state_path, json.dumps(self.state))


class HistoryLog(_PersistentCallback):
    """Per-epoch logs accumulated across restarts (``history.json`` of the whole run)."""

    def initial_state(self):
        return {"epochs": []}

    def on_epoch_end(self, epoch, logs=None):
        rows = [r for r in self.state["epochs"] if r["epoch"] < epoch]
        row = {"epoch": int(epoch)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        opt = getattr(self.model, "optimizer", None)
        if opt is not None:
            row["lr"] = float(keras.ops.convert_to_numpy(opt.learning_rate))
        self.state["epochs"] = rows + [row]
        self.save_state()

    def as_dict(self) -> dict:
        """``{metric: [per-epoch values]}`` like ``History.history``."""
        out = {}
        for row in self.state["epochs"]:
            for k, v in row.items():
                if k != "epoch":
                    out.setdefault(k, []).append(v)
        return out


class BestCheckpoint(_PersistentCallback):
    """Save the weights whenever ``monitor`` improves; restore the best at the end.

    Model selection uses the ``val`` split only (never a test split). Without
    ``monitor`` in the logs (no val split) the last epoch is kept.

    Example::

        best = BestCheckpoint("work/best.weights.h5", monitor="val_accuracy")
        model.fit(..., callbacks=[best]);  best.best_epoch
    """

    def __init__(self, weights_path, monitor: str = "val_accuracy", mode: str = "max",
                 state_path=None, restore: bool = True):
        self.weights_path = str(weights_path)
        self.monitor = monitor
        self.mode = mode
        self.restore = restore
        super().__init__(state_path or (str(weights_path) + ".json"))

    def initial_state(self):
        return {"best": None, "best_epoch": None}

    @property
    def best_epoch(self):
        return self.state["best_epoch"]

    @property
    def best(self):
        return self.state["best"]

    def _better(self, value):
        best = self.state["best"]
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def restored(self, state) -> None:
        # A kill during an in-place write (older versions) leaves a torn weights file:
        # discard it and the record that points at it, rather than crash at the end.
        if state.get("best_epoch") is not None and not weights_file_ok(self.weights_path):
            print(f"[train] {self.weights_path} is incomplete (a torn write from an interrupted "
                  "run); discarding it and the best-epoch record", flush=True)
            try:
                os.remove(self.weights_path)
            except OSError:
                pass
            self.state = self.initial_state()
            self.save_state()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return
        value = float(value)
        if self._better(value):
            save_weights_atomic(self.model, self.weights_path)
            self.state = {"best": value, "best_epoch": int(epoch)}
            self.save_state()

    def on_train_end(self, logs=None):
        if (self.restore and self.state["best_epoch"] is not None
                and os.path.exists(self.weights_path)):
            self.model.load_weights(self.weights_path)


class PlateauStop(_PersistentCallback):
    """Divide the lr by ``1/factor`` after ``patience`` epochs without ``monitor`` improving;
    stop training once the lr is below ``min_lr``.

    Needs an optimizer with a float (variable) learning rate, i.e.
    ``make_optimizer(..., schedule="plateau")``.

    Example::

        PlateauStop(monitor="val_loss", factor=0.1, patience=5, min_lr=1e-3)
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1,
                 patience: int = TrainOptions.plateau_patience,
                 min_lr: float = TrainOptions.min_lr, state_path=None):
        self.monitor, self.factor, self.patience, self.min_lr = monitor, factor, patience, min_lr
        super().__init__(state_path)
        self.stopped_epoch = None

    def initial_state(self):
        return {"best": None, "wait": 0, "lr": None}

    def _other_optimizers(self):
        """Second-player optimizers (RUBi/ReBias g) that follow the same plateau schedule."""
        g_opt = getattr(self.model, "g_optimizer", None)
        return [g_opt] if g_opt is not None and g_opt is not self.model.optimizer else []

    def restored(self, state):
        if state.get("lr") is not None:
            self.model.optimizer.learning_rate = state["lr"]
            for other in self._other_optimizers():
                other.learning_rate = state["lr"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        opt = self.model.optimizer
        if value is None:
            value = (logs or {}).get(self.monitor.replace("val_", ""))
        if value is None:
            return
        value = float(value)
        if self.state["best"] is None or value < self.state["best"]:
            self.state["best"], self.state["wait"] = value, 0
        else:
            self.state["wait"] += 1
            if self.state["wait"] >= self.patience:
                lr = float(keras.ops.convert_to_numpy(opt.learning_rate)) * self.factor
                opt.learning_rate = lr
                for other in self._other_optimizers():
                    other.learning_rate = (
                        float(keras.ops.convert_to_numpy(other.learning_rate)) * self.factor)
                self.state["wait"] = 0
                print(f"\nPlateauStop: {self.monitor} did not improve for {self.patience} "
                      f"epochs; learning rate -> {lr:.3g}")
        lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
        self.state["lr"] = lr
        self.save_state()
        if lr < self.min_lr:
            print(f"\nPlateauStop: learning rate {lr:.3g} < min_lr {self.min_lr:.3g}; stopping.")
            self.stopped_epoch = epoch
            self.model.stop_training = True


class NaNGuard(keras.callbacks.Callback):
    """``TerminateOnNaN`` that records where training diverged (``self.message``).

    Checks the training loss after every batch, and at every epoch end the
    validation loss and every weight: a model with non-finite weights is never
    saved as finished. ``hint`` names the likely cause in the message (e.g.
    ``"--lr=1e+12 or --weight_decay=0.0001"``).
    """

    def __init__(self, hint: str = "--lr"):
        super().__init__()
        self.message = None
        self.hint = hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _diverged(self, what: str, where: str = "") -> None:
        self.message = (f"training diverged: {what} at epoch {self._epoch + 1}{where}; lower "
                        f"{self.hint} (or check the input data)")
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._diverged(f"loss is {float(loss)}", f", batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.message:
            return
        val = (logs or {}).get("val_loss")
        if val is not None and not math.isfinite(float(val)):
            self._diverged(f"validation loss is {float(val)}")
            return
        for w in self.model.weights:
            value = keras.ops.convert_to_numpy(w)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                self._diverged(f"weight {w.path} is not finite")
                return


class PlanTimer(keras.callbacks.Callback):
    """Measures the first steps and projects the training's wall time (printed and kept).

    After ``warmup`` steps (graph tracing) it times ``measure`` steps and prints
    the projection for ``total_steps``; after the first epoch (validation
    included) it prints the projection from the measured epoch time.
    ``self.plan`` holds both (``projected_train_s``, ``projected_from_epoch_s``).
    """

    def __init__(self, total_steps: int, epochs_left: int, warmup: int = 3, measure: int = 20):
        super().__init__()
        self.total_steps, self.epochs_left = int(total_steps), int(epochs_left)
        self.warmup, self.measure = int(warmup), int(measure)
        self.plan: dict = {}
        self._seen = 0
        self._t0 = None
        self._epoch_t0 = None
        self._epochs_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self.measure < 1:
            return  # too few steps per epoch to time them; the epoch time follows
        if self._seen == self.warmup:
            self._t0 = time.perf_counter()
        elif self._t0 is not None and self._seen == self.warmup + self.measure:
            per_step = (time.perf_counter() - self._t0) / self.measure
            total = per_step * self.total_steps
            self.plan.update(measured_step_s=round(per_step, 4),
                             projected_train_s=round(total, 1))
            print(f"\n[train] projected training time: {format_duration(total)} "
                  f"({self.total_steps:,} steps at {per_step * 1000:.0f} ms/step, "
                  "validation not included)", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done += 1
        if self._epochs_done == 1 and self._epoch_t0 is not None:
            took = time.perf_counter() - self._epoch_t0
            total = took * self.epochs_left
            self.plan.update(first_epoch_s=round(took, 1), projected_from_epoch_s=round(total, 1))
            print(f"\n[train] epoch {epoch + 1} took {format_duration(took)}; projected "
                  f"{format_duration(total)} for the {self.epochs_left} epochs of this run",
                  flush=True)


def format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def steps_per_epoch(size: int, batch_size: int, drop_remainder: bool = False) -> int:
    return max(1, size // batch_size if drop_remainder else math.ceil(size / batch_size))


def epoch_datasets(split, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
                   drop_remainder: bool = False, augment: bool = False) -> tf.data.Dataset:
    """Epochs ``first_epoch..epochs-1`` of ``split`` as one stream, each shuffled with its own seed.

    Epoch ``e`` is always shuffled with seed ``seed * 100003 + e``, whatever epoch the
    stream starts at — a resumed run sees the same batches as an uninterrupted one.
    The data is held once however many epochs there are (``Split.epochs``). Use with
    ``fit(steps_per_epoch=steps_per_epoch(...))``.
    """
    from bridging_tf.datasets.base import stream_epochs
    kw = dict(seed=seed, first_epoch=first_epoch, epochs=epochs, augment=augment,
              drop_remainder=drop_remainder)
    if hasattr(split, "epochs"):
        return split.epochs(batch_size, **kw)
    return stream_epochs(split, batch_size, **kw)  # a duck-typed split (e.g. SIIM's TFRecords)


def backup_epoch(backup_dir) -> int:
    """The epoch ``BackupAndRestore`` in ``backup_dir`` would resume at (0 if none)."""
    # A kill while the backup was being written leaves the previous one (``.bkp``),
    # which BackupAndRestore then falls back to; follow it the same way.
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        meta = Path(backup_dir) / name
        try:
            return int(json.loads(meta.read_text()).get("epoch", 0))
        except (ValueError, OSError, AttributeError):
            continue
    return 0


__all__ = ["BestCheckpoint", "HistoryLog", "NaNGuard", "OPTIMIZERS", "PlanTimer", "PlateauStop",
           "SCHEDULES", "backup_epoch", "epoch_datasets", "format_duration", "make_optimizer",
           "save_weights_atomic", "step_decay", "steps_per_epoch", "weights_file_ok"]
