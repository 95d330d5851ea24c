"""Training utilities: optimizers, the paper's step decay, resumable callbacks.

- :func:`make_optimizer` — ``adam`` or ``sgd`` (momentum); weight decay is
  *coupled* L2 and lives in :class:`bridging_tf.methods.DebiasModel`, not here.
- :class:`StepDecay` — PyTorch ``StepLR(step_size=20, gamma=0.1)`` stepped once
  per epoch, written as a serialisable ``LearningRateSchedule`` over
  optimizer iterations (so it survives save/restore with the optimizer).
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
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "plateau", "constant")


@keras.saving.register_keras_serializable(package="bridging_tf")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * gamma ** floor(epoch / step_epochs)`` with ``epoch = iteration // steps_per_epoch``.

    Example::

        sched = StepDecay(1e-3, steps_per_epoch=100)   # 1e-3 for epochs 0-19, 1e-4 for 20-39...
        keras.optimizers.Adam(sched)
    """

    def __init__(self, initial_learning_rate: float, steps_per_epoch: int,
                 step_epochs: int = 20, gamma: float = 0.1):
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.step_epochs = int(step_epochs)
        self.gamma = float(gamma)

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)
        k = tf.cast(tf.math.floordiv(epoch, self.step_epochs), tf.float32)
        return self.initial_learning_rate * tf.pow(tf.constant(self.gamma, tf.float32), k)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "steps_per_epoch": self.steps_per_epoch, "step_epochs": self.step_epochs,
                "gamma": self.gamma}


def make_optimizer(name: str = "adam", lr: float = 1e-3, *, schedule: str = "step",
                   steps_per_epoch: Optional[int] = None, step_epochs: int = 20,
                   gamma: float = 0.1, momentum: float = 0.9) -> keras.optimizers.Optimizer:
    """Build ``adam`` or ``sgd`` (momentum) with a ``step``/``plateau``/``constant`` lr.

    ``plateau`` keeps a plain float lr (a variable that :class:`PlateauStop` lowers).
    Weight decay is not set here: it is coupled L2 inside ``DebiasModel``.
    """
    if name not in OPTIMIZERS:
        from bridging_tf.errors import UserError
        raise UserError(f"--optimizer={name!r}: choose one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        from bridging_tf.errors import UserError
        raise UserError(f"--lr_schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if schedule == "step":
        if not steps_per_epoch:
            raise ValueError("schedule='step' needs steps_per_epoch")
        learning_rate = StepDecay(lr, steps_per_epoch, step_epochs, gamma)
    else:
        learning_rate = float(lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=momentum)


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
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.state_path)


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

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        value = float(value)
        if self._better(value):
            self.model.save_weights(self.weights_path, overwrite=True)
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

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 5,
                 min_lr: float = 1e-3, state_path=None):
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
    """``TerminateOnNaN`` that records where training diverged (``self.message``)."""

    def __init__(self):
        super().__init__()
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (math.isnan(float(loss)) or math.isinf(float(loss))):
            self.message = (f"training diverged: loss is {float(loss)} at epoch {self._epoch + 1}, "
                            f"batch {batch + 1}; lower --lr or check the input data")
            self.model.stop_training = True


def steps_per_epoch(size: int, batch_size: int, drop_remainder: bool = False) -> int:
    return max(1, size // batch_size if drop_remainder else math.ceil(size / batch_size))


def epoch_datasets(split, batch_size: int, *, seed: int, first_epoch: int, epochs: int,
                   drop_remainder: bool = False, augment: bool = False) -> tf.data.Dataset:
    """Epochs ``first_epoch..epochs-1`` of ``split``, each shuffled with its own seed.

    Epoch ``e`` is always shuffled with seed ``(seed, e)``, whatever epoch the
    stream starts at — a resumed run sees the same batches as an
    uninterrupted one. Use with ``fit(steps_per_epoch=steps_per_epoch(...))``.
    """
    parts = [split.dataset(batch_size, shuffle=True, seed=int(seed) * 100003 + e,
                           augment=augment, drop_remainder=drop_remainder)
             for e in range(first_epoch, max(epochs, first_epoch + 1))]
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds.prefetch(tf.data.AUTOTUNE)


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


__all__ = ["BestCheckpoint", "HistoryLog", "NaNGuard", "OPTIMIZERS", "PlateauStop", "SCHEDULES",
           "StepDecay", "backup_epoch", "epoch_datasets", "make_optimizer", "steps_per_epoch"]
