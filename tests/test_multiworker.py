"""Issue 14: ``--strategy=multiworker`` for real: two worker processes on 127.0.0.1 (TF_CONFIG).

Each worker is one CPU replica of ``MultiWorkerMirroredStrategy`` (gRPC + ring
collectives) built by ``bridging_tf.distribute.get_strategy("multiworker")``.
They train EnD for a few steps on a fixed synthetic global batch (half each)
and must see the same loss, ``end_orth`` and ``end_par`` at every step, and
end with the same weights, as one process on the whole batch. The backbone
has no BatchNorm: BN statistics are per replica by design (see
``bridging_tf.distribute``), which would make the training-mode loss differ
for a reason that is not the distribution of the loss. The real
``simple_conv`` EnD backbone is compared too, in inference mode.

ReBias estimates HSIC per replica on its share of the batch (documented in
``bridging_tf.methods.rebias``): the test checks that the two-worker value is
exactly the mean of the per-shard HSICs and that it is *not* the global-batch
HSIC, so the documented difference is pinned down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO

STEPS = 3
TIMEOUT_S = 90

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    MODE = sys.argv[1]  # "single" or "worker"
    STEPS = int(sys.argv[2])
    if MODE == "worker":
        from bridging_tf.distribute import get_strategy
        strategy = get_strategy("multiworker")  # first, before any other TF op
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    from bridging_tf.methods import build_method
    from bridging_tf.methods.hsic import RbfHSIC
    from bridging_tf.models import build_backbone

    N, D, K = 16, 6, 3  # global batch, input features, classes (target and private)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    labels = rng.integers(0, K, N).astype("int32")
    private = rng.integers(0, K, N).astype("int32")
    images = rng.normal(size=(N, 12, 12, 3)).astype("float32")
    h_f = rng.normal(size=(N, 5)).astype("float32")
    h_g = (h_f[:, :3] + 0.5 * rng.normal(size=(N, 3))).astype("float32")
    replicas = strategy.num_replicas_in_sync

    def mlp_backbone():
        # BN-free "end"-style backbone: tanh bottleneck, L2-normalised, linear head.
        inp = keras.Input((D,))
        h = keras.layers.Dense(8, activation="tanh", name="enc")(inp)
        z = keras.layers.UnitNormalization(name="z")(h)
        logits = keras.layers.Dense(K, name="head")(z)
        return keras.Model(inp, [logits, z])

    def weights_like(model, seed):
        """Fixed random weights (identical in every process); BN variances kept positive."""
        r = np.random.default_rng(seed)
        out = []
        for v in model.weights:
            w = 0.5 * r.normal(size=tuple(v.shape))
            if "variance" in v.path:
                w = 0.5 + np.abs(w)
            out.append(w.astype("float32"))
        return out

    with strategy.scope():
        end = build_method("end", backbone=mlp_backbone(), num_classes=K, num_private=K,
                           weight_decay=1e-3, hparams={"alpha": 1.0, "beta": 1.0})
        end.set_weights(weights_like(end, 1))
        end.compile(optimizer=keras.optimizers.Adam(0.05))
        end.optimizer.build(end.trainable_variables)
        conv = build_method("end", backbone=build_backbone(
            "simple_conv", num_classes=K, variant="end", width=0.125, input_shape=(12, 12, 3)),
            num_classes=K, num_private=K, hparams={"alpha": 1.0, "beta": 1.0})
        conv.set_weights(weights_like(conv, 2))
        hsic = RbfHSIC(1.0, "fixed")

    def local(arr):
        """This replica's contiguous share of a global array (the whole array with one)."""
        def fn(ctx):
            n = N // ctx.num_replicas_in_sync
            i = ctx.replica_id_in_sync_group
            return tf.constant(arr[i * n:(i + 1) * n])
        return strategy.experimental_distribute_values_from_function(fn)

    data = {k: local(v) for k, v in dict(x=x, labels=labels, private=private, images=images,
                                         h_f=h_f, h_g=h_g).items()}

    def terms(model, xb, yl, yp, training):
        y = {"label": yl, "private": yp}
        logits, z = model.backbone(xb, training=training)
        total, parts = model.compute_total_loss(xb, y, logits, z, training=training)
        return total, parts["end_orth"], parts["end_par"]

    @tf.function
    def train_step(xb, yl, yp):
        def fn(xb, yl, yp):
            out = terms(end, xb, yl, yp, True)  # the loss the step below differentiates
            end.train_step((xb, {"label": yl, "private": yp}))
            return out
        return strategy.run(fn, args=(xb, yl, yp))

    @tf.function
    def probe(img, yl, yp, hf, hg):
        def fn(img, yl, yp, hf, hg):
            return (*terms(conv, img, yl, yp, False), hsic(hf, hg))
        return strategy.run(fn, args=(img, yl, yp, hf, hg))

    mean = lambda v: float(strategy.reduce("MEAN", v, axis=None))  # noqa: E731
    hist = {"loss": [], "end_orth": [], "end_par": []}
    for _ in range(STEPS):
        t, o, p = train_step(data["x"], data["labels"], data["private"])
        for key, v in zip(hist, (t, o, p)):
            hist[key].append(mean(v))
    ct, co, cp, hs = probe(data["images"], data["labels"], data["private"], data["h_f"],
                           data["h_g"])
    half = N // 2
    out = {"mode": MODE, "replicas": replicas, **hist,
           "weights": [w.tolist() for w in end.get_weights()],
           "conv": [mean(ct), mean(co), mean(cp)], "hsic": mean(hs),
           "hsic_global": float(hsic(h_f, h_g)),
           "hsic_halves": float(np.mean([float(hsic(h_f[:half], h_g[:half])),
                                         float(hsic(h_f[half:], h_g[half:]))]))}
    print("RESULT " + json.dumps(out), flush=True)
''')


def _free_ports(n: int):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_NUM_INTRAOP_THREADS": "1"}
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _result(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[-1][len("RESULT "):]) if line else {}


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    try:
        ports = _free_ports(2)
    except OSError as err:
        pytest.skip(f"cannot bind loopback TCP ports on this platform ({err})")
    script = tmp_path_factory.mktemp("multiworker") / "worker.py"
    script.write_text(SCRIPT)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    logs = []
    try:
        for i in range(2):
            cfg = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            log = open(script.with_name(f"worker{i}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(script), "worker", str(STEPS)], cwd=REPO,
                env=_env({"TF_CONFIG": cfg}), stdout=log, stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        # The single-process reference runs meanwhile (the workers wait on each other).
        single = subprocess.run([sys.executable, str(script), "single", str(STEPS)], cwd=REPO,
                                env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
        deadline = time.time() + TIMEOUT_S
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                break
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
        if any(p.poll() is None for p in procs):
            pytest.fail("the two workers did not finish within "
                        f"{TIMEOUT_S} s:\n" + "\n---\n".join(o[-2000:] for o in outputs))
    finally:
        _kill(procs)
        for log in logs:
            log.close()
    assert single.returncode == 0, single.stderr[-3000:]
    for p, o in zip(procs, outputs):
        assert p.returncode == 0, o[-3000:]
    return _result(single.stdout), [_result(o) for o in outputs]


def test_two_workers_train_end_like_one_process_on_the_global_batch(runs):
    single, workers = runs
    assert single["replicas"] == 1
    assert [w["replicas"] for w in workers] == [2, 2]
    for w in workers:
        for key in ("loss", "end_orth", "end_par"):
            assert len(w[key]) == STEPS
            assert w[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
        flat_s = [v for arr in single["weights"] for v in _flatten(arr)]
        flat_w = [v for arr in w["weights"] for v in _flatten(arr)]
        assert flat_w == pytest.approx(flat_s, rel=1e-4, abs=1e-5)
    # training moved the weights (so the equal losses after step 0 say something)
    assert abs(single["loss"][-1] - single["loss"][0]) > 1e-3
    assert single["end_orth"][0] > 0 and single["end_par"][0] > 0


def test_two_workers_see_the_real_backbones_end_terms_of_the_global_batch(runs):
    single, workers = runs
    for w in workers:
        assert w["conv"] == pytest.approx(single["conv"], rel=1e-5, abs=1e-6)


def test_rebias_hsic_is_estimated_per_replica_and_averaged(runs):
    single, workers = runs
    assert single["hsic"] == pytest.approx(single["hsic_global"], rel=1e-6)
    for w in workers:
        # documented: each replica estimates HSIC on its share; the reported value is their mean
        assert w["hsic"] == pytest.approx(single["hsic_halves"], rel=1e-5, abs=1e-6)
        assert abs(w["hsic"] - single["hsic_global"]) > 1e-4


def _flatten(v):
    if isinstance(v, list):
        for item in v:
            yield from _flatten(item)
    else:
        yield v


@pytest.mark.parametrize("value, match", [(None, "needs TF_CONFIG"), ("{not json", "not JSON"),
                                          ('{"cluster": {}}', "cluster.worker")])
def test_multiworker_without_a_usable_tf_config_is_a_user_error(monkeypatch, value, match):
    from bridging_tf import distribute
    from bridging_tf.errors import UserError

    monkeypatch.setattr(distribute, "_MULTIWORKER", None)
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=match):
        distribute.get_strategy("multiworker")


@pytest.mark.realdata
@pytest.mark.slow
def test_pipelines_run_trains_end_with_two_workers(mnist_dir, tmp_path):
    """``pipelines.run --strategy=multiworker`` as a TFJob runs it: one process per worker,
    each with its TF_CONFIG and its own output folder. ``model.fit`` trains under
    MultiWorkerMirroredStrategy (Keras 3's keras-team/keras#20585 worked around in
    DebiasModel): both workers log the same per-epoch losses and end with the same trainable
    weights; only BatchNorm's moving statistics, per replica by design, may differ."""
    import keras
    import numpy as np

    import bridging_tf.methods  # noqa: F401  (registers the model classes for loading)

    try:
        ports = _free_ports(2)
    except OSError as err:
        pytest.skip(f"cannot bind loopback TCP ports on this platform ({err})")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    try:
        for i in range(2):
            cfg = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            log = open(tmp_path / f"worker{i}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pipelines.run", "--method=end", "--strategy=multiworker",
                 f"--data_dir={mnist_dir}", f"--output_dir={tmp_path / f'run{i}'}",
                 "--train_size=256", "--val_size=64", "--test_size=64", "--attack_size=128",
                 "--epochs=2", "--batch_size=64", "--width=0.125", "--verbose=0"],
                cwd=REPO, env=_env({"TF_CONFIG": cfg}), stdout=log, stderr=subprocess.STDOUT,
                text=True, start_new_session=True))
        deadline = time.time() + 4 * TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
    finally:
        _kill(procs)
        for log in logs:
            log.close()
    for p, o in zip(procs, outputs):
        assert p.returncode == 0, o[-3000:]
    runs = [tmp_path / f"run{i}" for i in range(2)]
    hist = [json.loads((r / "model" / "history.json").read_text()) for r in runs]
    assert len(hist[0]["loss"]) == 2
    for key in ("loss", "ce_loss", "end_orth", "end_par", "val_loss"):
        assert hist[1][key] == pytest.approx(hist[0][key], rel=1e-5), key
    for r in runs:
        info = json.loads((r / "model" / "train_info.json").read_text())
        assert (info["strategy"], info["replicas"]) == ("multiworker", 2)
    models = [keras.saving.load_model(r / "model" / "model.keras") for r in runs]
    moving_differs = False
    for a, b in zip(models[0].weights, models[1].weights):
        if "moving_" in a.path:  # each replica normalised its own half of every batch
            moving_differs |= not np.allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=a.path)
    assert moving_differs, "the two workers saw the same data: the global batch was not split"
    for r in runs:
        assert "target_accuracy" in json.loads((r / "results.json").read_text())
