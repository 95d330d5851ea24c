"""Issue 13, the training side: no torn checkpoint, no non-finite model saved as finished."""

from __future__ import annotations

import json

import keras
import numpy as np

from bridging_tf.training import BestCheckpoint, NaNGuard, save_weights_atomic, weights_file_ok


def _model():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_best_weights_are_written_to_a_temporary_name_and_renamed(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "best.weights.h5"
    seen = []
    real = model.save_weights

    def spy(target, overwrite=True):
        seen.append(str(target))
        return real(target, overwrite=overwrite)

    monkeypatch.setattr(model, "save_weights", spy)
    save_weights_atomic(model, path)
    assert seen and seen[0] != str(path) and seen[0].endswith(".weights.h5")
    assert weights_file_ok(path) and not list(tmp_path.glob(".*tmp*"))


def test_a_torn_best_weights_file_is_discarded_on_resume_not_crashed_on(tmp_path, capsys):
    model = _model()
    path = tmp_path / "best.weights.h5"
    model.save_weights(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a kill mid-write (older versions wrote in place)
    (tmp_path / "best.weights.h5.json").write_text(json.dumps({"best": 0.9, "best_epoch": 4}))
    assert not weights_file_ok(path)
    best = BestCheckpoint(path)
    best.set_model(model)
    best.on_train_begin()
    assert best.best_epoch is None and not path.exists()
    assert "incomplete" in capsys.readouterr().out
    best.on_epoch_end(0, {"val_accuracy": 0.5})  # the next improvement is saved again
    best.on_train_end()
    assert weights_file_ok(path) and best.best_epoch == 0


def test_non_finite_weights_stop_training_with_the_likely_cause():
    model = _model()
    guard = NaNGuard(hint="--lr=1e+12 or --weight_decay=0.0001")
    guard.set_model(model)
    guard.on_epoch_begin(1)
    guard.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.0})
    assert guard.message is None
    w = model.layers[-1].kernel
    w.assign(np.full(w.shape, np.inf, np.float32))
    guard.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.0})
    assert model.stop_training and "not finite" in guard.message and "--lr=1e+12" in guard.message
    assert "\n" not in guard.message


def test_non_finite_validation_loss_stops_training():
    model = _model()
    guard = NaNGuard(hint="--lr=1 or --weight_decay=0")
    guard.set_model(model)
    guard.on_epoch_begin(0)
    guard.on_epoch_end(0, {"loss": 1.0, "val_loss": float("nan")})
    assert "validation loss is nan at epoch 1" in guard.message and "--lr=1" in guard.message


def test_best_checkpoint_ignores_a_non_finite_monitor(tmp_path):
    model = _model()
    best = BestCheckpoint(tmp_path / "best.weights.h5")
    best.set_model(model)
    best.on_epoch_end(0, {"val_accuracy": float("inf")})
    assert best.best_epoch is None and not (tmp_path / "best.weights.h5").exists()
