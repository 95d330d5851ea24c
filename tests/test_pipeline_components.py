"""Component contract: artifact.json, atomic writes, skipping, training utilities."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from components.base import ARTIFACT_FILE, ArtifactWriter, read_artifact


def _produce(out, params, inputs=None, fail=False):
    with ArtifactWriter("demo", "Demo", out, params=params, inputs=inputs or {}) as art:
        if art.skipped:
            return art, False
        (art.path / "payload.txt").write_text("x")
        if fail:
            raise RuntimeError("boom")
        art.metrics = {"value": 1.5}
    return art, True


def test_artifact_json_records_type_params_fingerprint_versions_seed_times(tmp_path):
    _produce(tmp_path / "a", {"seed": 3, "lr": 0.1})
    meta = json.loads((tmp_path / "a" / ARTIFACT_FILE).read_text())
    for key in ("type", "producer", "parameters", "fingerprint", "inputs", "versions", "seed",
                "created", "finished", "metrics"):
        assert key in meta
    assert meta["type"] == "Demo" and meta["producer"] == "demo"
    assert meta["parameters"] == {"lr": 0.1, "seed": 3} and meta["seed"] == 3
    assert {"tensorflow", "keras", "numpy"} <= set(meta["versions"])
    assert meta["metrics"] == {"value": 1.5}


def test_same_fingerprint_is_skipped_and_other_params_rewrite(tmp_path):
    _, ran = _produce(tmp_path / "a", {"seed": 0})
    assert ran
    art, ran = _produce(tmp_path / "a", {"seed": 0})
    assert not ran and art.metrics == {"value": 1.5}
    first = read_artifact(tmp_path / "a")["fingerprint"]
    _, ran = _produce(tmp_path / "a", {"seed": 1})
    assert ran and read_artifact(tmp_path / "a")["fingerprint"] != first


def test_fingerprint_follows_upstream_artifacts(tmp_path):
    _produce(tmp_path / "up", {"seed": 0})
    _produce(tmp_path / "down", {}, inputs={"up": tmp_path / "up"})
    fp = read_artifact(tmp_path / "down")["fingerprint"]
    _produce(tmp_path / "up", {"seed": 9})  # upstream changed -> downstream must rerun
    _, ran = _produce(tmp_path / "down", {}, inputs={"up": tmp_path / "up"})
    assert ran and read_artifact(tmp_path / "down")["fingerprint"] != fp


def test_failed_step_leaves_no_output_and_no_temp_dir(tmp_path):
    with pytest.raises(RuntimeError):
        _produce(tmp_path / "a", {"seed": 0}, fail=True)
    assert not (tmp_path / "a").exists()
    assert not list(tmp_path.glob("a.tmp-*"))


def test_temp_dir_of_a_killed_process_is_cleaned(tmp_path):
    stale = tmp_path / "a.tmp-999999999"
    stale.mkdir()
    _produce(tmp_path / "a", {"seed": 0})
    assert not stale.exists() and (tmp_path / "a" / "payload.txt").exists()


def test_missing_input_artifact_is_a_one_line_user_error(tmp_path):
    from bridging_tf.errors import UserError
    with pytest.raises(UserError, match="missing or incomplete"):
        _produce(tmp_path / "a", {}, inputs={"data": tmp_path / "nope"})


def test_step_decay_matches_steplr_per_epoch_and_round_trips():
    from bridging_tf.training import step_decay
    sched = step_decay(1e-3, steps_per_epoch=10, step_epochs=20, gamma=0.1)
    lrs = [float(sched(s)) for s in (0, 199, 200, 399, 400)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert again.get_config() == sched.get_config()


def test_step_decay_saved_before_exponential_decay_still_deserializes():
    # The optimizer config that .keras files written with the old StepDecay class hold.
    import bridging_tf.training  # noqa: F401  (registers the old name)
    from bridging_tf.training import step_decay
    old = {"module": "bridging_tf.training", "class_name": "StepDecay",
           "config": {"initial_learning_rate": 0.001, "steps_per_epoch": 8, "step_epochs": 20,
                      "gamma": 0.1},
           "registered_name": "bridging_tf>StepDecay"}
    sched = keras.saving.deserialize_keras_object(old)
    assert isinstance(sched, keras.optimizers.schedules.ExponentialDecay)
    steps = [0, 1, 159, 160, 161, 319, 320, 480, 1000]
    want = [1e-3 * 0.1 ** (s // 8 // 20) for s in steps]
    got = [float(sched(s)) for s in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    fresh = step_decay(0.001, 8)
    assert got == [float(fresh(s)) for s in steps]
    opt = keras.optimizers.Adam.from_config({"learning_rate": old})
    assert float(opt.learning_rate) == pytest.approx(1e-3)


def test_make_optimizer_rejects_unknown_names():
    from bridging_tf.errors import UserError
    from bridging_tf.training import make_optimizer
    assert isinstance(make_optimizer("sgd", 0.1, schedule="plateau"), keras.optimizers.SGD)
    with pytest.raises(UserError, match="--optimizer"):
        make_optimizer("rmsprop")


def _tiny_model():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_best_checkpoint_restores_best_epoch_and_survives_restart(tmp_path):
    from bridging_tf.training import BestCheckpoint
    model = _tiny_model()
    best = BestCheckpoint(tmp_path / "best.weights.h5", monitor="val_accuracy")
    best.set_model(model)
    best.on_train_begin()
    for epoch, acc in enumerate([0.2, 0.7, 0.4]):
        model.layers[-1].kernel.assign(np.full((4, 2), float(epoch), "float32"))
        best.on_epoch_end(epoch, {"val_accuracy": acc})
    best.on_train_end()
    assert best.best_epoch == 1
    np.testing.assert_allclose(model.layers[-1].kernel.numpy(), 1.0)
    again = BestCheckpoint(tmp_path / "best.weights.h5")  # a resumed run keeps the record
    again.set_model(model)
    again.on_train_begin()
    assert again.best_epoch == 1 and again.best == pytest.approx(0.7)


def test_plateau_divides_lr_and_stops_below_min_lr():
    from bridging_tf.training import PlateauStop
    model = _tiny_model()
    cb = PlateauStop(monitor="val_loss", factor=0.1, patience=2, min_lr=0.005)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4]):
        cb.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert cb.stopped_epoch == 4


def test_nan_guard_stops_with_a_message():
    from bridging_tf.training import NaNGuard
    model = _tiny_model()
    guard = NaNGuard()
    guard.set_model(model)
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(4, {"loss": float("nan")})
    assert model.stop_training and "epoch 3, batch 5" in guard.message and "--lr" in guard.message


def test_epoch_stream_restarts_at_any_epoch_with_the_same_batches():
    from bridging_tf.datasets import ArraySplit
    from bridging_tf.training import epoch_datasets
    rng = np.random.default_rng(0)
    split = ArraySplit("t", rng.integers(0, 255, (10, 2, 2, 3), dtype=np.uint8),
                       np.arange(10), np.zeros(10))
    full = [y["label"].numpy().tolist() for _, y in
            epoch_datasets(split, 5, seed=1, first_epoch=0, epochs=3)]
    tail = [y["label"].numpy().tolist() for _, y in
            epoch_datasets(split, 5, seed=1, first_epoch=2, epochs=3)]
    assert tail == full[4:] and full[:2] != full[2:4]


def test_work_dir_with_another_fingerprint_is_not_resumed(tmp_path):
    work = tmp_path / "a.work"
    work.mkdir()
    (work / "fingerprint").write_text("something-else")
    (work / "stale").write_text("x")
    with ArtifactWriter("demo", "Demo", tmp_path / "a", params={}) as art:
        assert not (art.work_dir / "stale").exists()
        (art.path / "f").write_text("y")
    assert not work.exists() and os.path.exists(tmp_path / "a" / "f")


def test_backup_epoch_reads_keras_metadata_and_falls_back_to_previous(tmp_path):
    from bridging_tf.training import backup_epoch
    assert backup_epoch(tmp_path) == 0
    (tmp_path / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert backup_epoch(tmp_path) == 3
    (tmp_path / "training_metadata.json").write_text('{"epo')  # torn write
    (tmp_path / "training_metadata.json.bkp").write_text('{"epoch": 2, "batch": 0}')
    assert backup_epoch(tmp_path) == 2


def test_ingest_runs_the_dataset_preparer_once_and_points_the_loader_at_it(tmp_path, monkeypatch):
    from bridging_tf import datasets
    from components import ingest
    calls = []

    def prepare(data_dir, output_dir, **options):
        calls.append(data_dir)
        output_dir.mkdir(parents=True)
        (output_dir / "shard-0.tfrecord").write_bytes(b"")
        return {"written": 5}

    monkeypatch.setitem(datasets._PREPARE, "biased_mnist", "fake:prepare")
    monkeypatch.setattr(datasets, "get_preparer", lambda name: prepare)
    out = tmp_path / "data"
    metrics = ingest.run({}, {"data": out}, dataset="biased_mnist",
                         options={"data_dir": "/raw", "seed": 0})
    assert metrics == {"written": 5} and calls == ["/raw"]
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["options"]["data_dir"] == str(out.resolve() / "data") and spec["prepared"]
    assert (out / "data" / "shard-0.tfrecord").exists()
    ingest.run({}, {"data": out}, dataset="biased_mnist", options={"data_dir": "/raw", "seed": 0})
    assert len(calls) == 1  # same fingerprint: skipped


def test_plateau_also_lowers_the_second_players_optimizer():
    import keras

    from bridging_tf.methods import build_method
    from bridging_tf.models import build_backbone, build_biased_backbone
    from bridging_tf.training import PlateauStop
    f = build_backbone("simple_conv", width=0.125)
    g = build_biased_backbone("simple_conv", width=0.125)
    model = build_method("rebias", backbone=f, biased_backbone=g, num_classes=10,
                         num_private=10)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    assert model.g_optimizer is not model.optimizer
    cb = PlateauStop(monitor="val_loss", factor=0.1, patience=1, min_lr=1e-6)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, loss in enumerate([1.0, 1.1]):
        cb.on_epoch_end(epoch, {"val_loss": loss})
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert float(model.g_optimizer.learning_rate) == pytest.approx(0.001)
