"""tf.distribute: EnD's global-batch Gram terms: same loss/gradients on 1 and 2 replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent('''
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from bridging_tf.methods import build_method
    from bridging_tf.models import build_backbone

    def make(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            net = build_backbone("simple_conv", num_classes=10, variant="end", width=0.125,
                                 input_shape=(12, 12, 3))
            return build_method("end", backbone=net, num_classes=10, num_private=10,
                                hparams={"alpha": 1.0, "beta": 1.0})

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 12, 3)).astype("float32")
    y = {"label": rng.integers(0, 3, 8).astype("int32"),
         "private": rng.integers(0, 3, 8).astype("int32")}

    def loss_and_grads(model, x, y, n):
        with tf.GradientTape() as tape:
            logits, z = model.backbone(x, training=False)
            total, parts = model.compute_total_loss(x, y, logits, z)
            scaled = total / n
        return total, parts, tape.gradient(scaled, model.trainable_variables)

    one = make(tf.distribute.get_strategy())
    t1, p1, g1 = loss_and_grads(one, x, y, 1)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = make(mirrored)
    two.set_weights(one.get_weights())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    xb, yb = next(iter(mirrored.experimental_distribute_dataset(ds)))

    @tf.function
    def step(xb, yb):
        return mirrored.run(lambda a, b: loss_and_grads(two, a, b, 2), args=(xb, yb))

    t2, p2, g2 = step(xb, yb)
    mean = lambda v: float(mirrored.reduce("MEAN", v, axis=None))
    summed = lambda v: mirrored.reduce("SUM", v, axis=None).numpy()
    with mirrored.scope():
        two.compile(optimizer=keras.optimizers.Adam(1e-3))
    # Keras + MirroredStrategy needs even shards (the train component drops remainders).
    hist = two.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2,
                   verbose=0).history
    print("RESULT " + json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "loss": [float(t1), mean(t2)],
        "orth": [float(p1["end_orth"]), mean(p2["end_orth"])],
        "par": [float(p1["end_par"]), mean(p2["end_par"])],
        "grad_diff": max(float(np.max(np.abs(a.numpy() - summed(b)))) for a, b in zip(g1, g2)),
        "grad_max": max(float(np.max(np.abs(a.numpy()))) for a in g1),
        "fit_loss": hist["loss"][-1]}))
''')


def test_end_loss_and_gradients_match_on_1_and_2_replicas(tmp_path):
    script = tmp_path / "two_replicas.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    r = json.loads(line[0][len("RESULT "):])
    assert r["replicas"] == 2
    for key in ("loss", "orth", "par"):
        assert r[key][0] == pytest.approx(r[key][1], rel=1e-5, abs=1e-6), key
    assert r["grad_max"] > 1e-3 and r["grad_diff"] < 1e-5 * max(1.0, r["grad_max"])
    assert r["fit_loss"] == r["fit_loss"]  # fit under MirroredStrategy runs (not NaN)


def test_precision_and_xla_default_off_on_cpu(monkeypatch):
    from bridging_tf import distribute
    monkeypatch.setattr(distribute, "accelerators", lambda: {"GPU": 0, "TPU": 0})
    assert distribute.resolve_mixed_precision("auto") == "float32"
    assert distribute.resolve_jit("auto") is False
    monkeypatch.setattr(distribute, "accelerators", lambda: {"GPU": 1, "TPU": 0})
    assert distribute.resolve_mixed_precision("auto") == "mixed_bfloat16"
    assert distribute.resolve_jit("auto") is True
    assert distribute.resolve_mixed_precision("mixed_float16") == "mixed_float16"


def test_gather_global_is_identity_without_replicas():
    import tensorflow as tf

    from bridging_tf.distribute import gather_global
    z = tf.ones((3, 2))
    (out,) = gather_global(z)
    assert out is z
