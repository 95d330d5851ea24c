"""SavedModel export (TF Serving layout) and the serving clients against a loopback server."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from bridging_tf.datasets import ArraySplit, DataBundle, normalize_images
from bridging_tf.export import export_encoder
from bridging_tf.models import build_backbone
from bridging_tf.serving import RestClient, ServingError, make_client, parse_url
from tests.dev_server import DevServer as LoopbackServer

MEAN, STD = (0.5, 0.4, 0.3), (0.5, 0.5, 0.25)
SHAPE = (12, 12, 3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = build_backbone("simple_conv", num_classes=4, variant="end", width=0.125,
                         input_shape=SHAPE)
    base = tmp_path_factory.mktemp("serving")
    vdir = export_encoder(net, base, "enc", mean=MEAN, std=STD, version=3)
    return net, base, vdir


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def test_export_has_tf_serving_layout_and_models_config(exported):
    _, base, vdir = exported
    assert vdir == base / "enc" / "3" and (vdir / "saved_model.pb").exists()
    config = (base / "models.config").read_text()
    # the path the tensorflow/serving container sees with the export mounted at /models
    assert 'name: "enc"' in config and 'base_path: "/models/enc"' in config
    assert str(base) not in config and str(base.resolve()) not in config


def test_saved_model_outputs_equal_keras_on_normalised_input(exported):
    net, _, vdir = exported
    loaded = tf.saved_model.load(str(vdir))
    assert set(loaded.signatures) == {"serving_default", "bottleneck"}
    images = _images(5)
    out = loaded.signatures["serving_default"](image=tf.constant(images))
    logits, z = net(normalize_images(images, MEAN, STD), training=False)
    np.testing.assert_allclose(out["logits"].numpy(), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["bottleneck"].numpy(), z.numpy(), atol=1e-5)
    only = loaded.signatures["bottleneck"](image=tf.constant(images))
    assert set(only) == {"bottleneck"}


def test_signatures_take_one_uint8_image_input_and_return_float32(exported):
    _, _, vdir = exported
    loaded = tf.saved_model.load(str(vdir))
    for name in ("serving_default", "bottleneck"):
        sig = loaded.signatures[name]
        inputs = sig.structured_input_signature[1]
        assert list(inputs) == ["image"]
        assert inputs["image"].dtype == tf.uint8
        assert inputs["image"].shape.as_list() == [None, *SHAPE]
        assert all(s.dtype == tf.float32 for s in sig.structured_outputs.values())


def test_export_holds_only_inference_variables(exported):
    net, _, vdir = exported
    loaded = tf.saved_model.load(str(vdir))
    names = [v.name for v in loaded.variables]
    assert len(names) == len(net.weights)
    assert sorted(v.shape.num_elements() for v in loaded.variables) == \
        sorted(int(np.prod(w.shape)) for w in net.weights)
    assert not any(k in n.lower() for n in names for k in ("iteration", "learning_rate",
                                                          "momentum", "velocity", "optimizer"))


def test_rest_client_matches_in_process_embeddings_in_batches(exported):
    net, base, vdir = exported
    images = _images(7)
    want = tf.saved_model.load(str(vdir)).signatures["serving_default"](image=tf.constant(images))
    with LoopbackServer(base) as server:
        client = RestClient(server.url, "enc", batch_size=3, timeout=20)
        out = client.predict(images)
        assert server.requests == 3
        np.testing.assert_allclose(out["bottleneck"], want["bottleneck"].numpy(), atol=1e-6)
        np.testing.assert_allclose(out["logits"], want["logits"].numpy(), atol=1e-6)
        pinned = make_client(f"{server.url}/v1/models/enc/versions/3", batch_size=4)
        np.testing.assert_allclose(pinned.embed(images), want["bottleneck"].numpy(), atol=1e-6)
        sig = RestClient(server.url, "enc", signature_name="bottleneck").predict(images[:2])
        assert set(sig) == {"bottleneck"}


def test_rest_client_errors_are_one_line_and_bounded(exported):
    _, base, _ = exported
    images = _images(2)
    with LoopbackServer(base) as server:
        url = server.url
        with pytest.raises(ServingError, match="HTTP 404.*Servable not found"):
            RestClient(url, "nope", retries=0).predict(images)
        assert RestClient(url, "enc").status()["model_version_status"][0]["version"] == "3"
        with pytest.raises(ServingError, match="HTTP 404"):
            RestClient(url, "nope", retries=0).status()
        with pytest.raises(ServingError, match="uint8"):
            RestClient(url, "enc").predict(images.astype(np.float32))
        with pytest.raises(ServingError, match="HTTP 400"):
            RestClient(url, "enc").predict(np.zeros((1, 5, 5, 3), np.uint8))
    start = time.time()
    with pytest.raises(ServingError, match="cannot connect.*gave up after 3 tries") as err:
        RestClient(url, "enc", retries=2, backoff=0.05, timeout=1).predict(images)
    assert time.time() - start < 5 and "\n" not in str(err.value)


def test_rest_client_retries_503_then_succeeds(exported):
    _, base, _ = exported
    with LoopbackServer(base, fail_first=2) as server:
        z = RestClient(server.url, "enc", retries=3, backoff=0.01).embed(_images(2))
        assert z.shape[0] == 2 and server.requests == 3
    with LoopbackServer(base, fail_first=5) as server:
        with pytest.raises(ServingError, match="HTTP 503.*gave up after 2 tries"):
            RestClient(server.url, "enc", retries=1, backoff=0.01).embed(_images(2))


def test_rest_client_timeout_and_wrong_shape(exported):
    _, base, _ = exported
    with LoopbackServer(base, delay_s=1.0) as server:
        with pytest.raises(ServingError, match="timed out after 0.2s"):
            RestClient(server.url, "enc", timeout=0.2, retries=1, backoff=0.01).embed(_images(2))
    with LoopbackServer(base, truncate_rows=True) as server:
        with pytest.raises(ServingError, match="shape .* for a batch of 3"):
            RestClient(server.url, "enc").embed(_images(3))


def test_grpc_client_server_down_is_bounded_one_line_error():
    pytest.importorskip("tensorflow_serving",
        reason="needs tensorflow-serving-api: the [test]/[serving] extras install it")
    client = make_client("grpc://127.0.0.1:9", "enc", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(ServingError, match="UNAVAILABLE.*gave up after 2 tries"):
        client.embed(_images(1))


def test_grpc_client_matches_in_process_embeddings(exported):
    pytest.importorskip("tensorflow_serving",
        reason="needs tensorflow-serving-api: the [test]/[serving] extras install it")
    from tests.dev_server import DevGrpcServer as LoopbackGrpcServer
    _, base, vdir = exported
    images = _images(5)
    want = tf.saved_model.load(str(vdir)).signatures["serving_default"](image=tf.constant(images))
    with LoopbackGrpcServer(base) as server:
        client = make_client(f"grpc://{server.target}", "enc", batch_size=2, timeout=20)
        np.testing.assert_allclose(client.embed(images), want["bottleneck"].numpy(), atol=1e-6)
        with pytest.raises(ServingError, match="NOT_FOUND"):
            make_client(f"grpc://{server.target}", "nope", retries=0).embed(images)
        client.close()


def test_parse_url_needs_a_model_name():
    assert parse_url("http://h:1/v1/models/m/versions/2") == ("http", "h:1", "m", 2)
    with pytest.raises(ServingError, match="--model_name"):
        parse_url("http://h:1")


def _bundle():
    rng = np.random.default_rng(1)

    def split(name, n):
        private = rng.integers(0, 3, n)
        images = rng.integers(0, 40, (n, *SHAPE)).astype(np.uint8)
        images += (private * 100).astype(np.uint8)[:, None, None, None]  # leak via brightness
        return ArraySplit(name, images, rng.integers(0, 4, n), private, MEAN, STD)

    splits = {"attack_train": split("attack_train", 150), "unbiased": split("unbiased", 60)}
    return DataBundle(name="toy", splits=splits, eval_splits=("unbiased",),
                      primary_eval="unbiased", num_classes=4, num_private=3, image_shape=SHAPE,
                      mean=MEAN, std=STD)


def test_external_rest_attack_reproduces_in_process_private_accuracy(tmp_path):
    from bridging_tf.attacks import AttackInputData, run_attacks
    from components.extract_bottleneck import embed_split
    from pipelines.attack_served import served_attack

    keras.utils.set_random_seed(1)
    net = build_backbone("simple_conv", num_classes=4, width=0.125, input_shape=SHAPE)
    base = tmp_path / "serving"
    export_encoder(net, base, "enc", mean=MEAN, std=STD)
    bundle = _bundle()
    local = {n: embed_split(net, bundle[n])[0] for n in ("attack_train", "unbiased")}
    data = AttackInputData(train_embeddings=local["attack_train"],
                           train_private=bundle["attack_train"].private(),
                           eval_embeddings={"unbiased": local["unbiased"]},
                           eval_private={"unbiased": bundle["unbiased"].private()}, num_private=3)
    opts = {"linear_lr": 0.5, "linear_batch_size": 32}  # a probe strong enough to see the leak
    inproc = run_attacks(data, ["linear"], seed=0, verbose=0, **opts)
    with LoopbackServer(base) as server:
        remote = served_attack(RestClient(server.url, "enc", batch_size=64), bundle,
                               attacks=["linear"], seed=0, verbose=0, **opts)
    a = inproc.get("linear").per_split["unbiased"]["accuracy"]
    b = remote.get("linear").per_split["unbiased"]["accuracy"]
    assert a > 0.5 and abs(a - b) <= 1 / 60 + 1e-9


@pytest.fixture(scope="module")
def tiny_run(mnist_dir, tmp_path_factory):
    """A smoke-size ``pipelines.run`` job (a colour-leaking vanilla model), run as users do."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    out = tmp_path_factory.mktemp("served") / "run"
    cmd = [sys.executable, "-m", "pipelines.run", f"--data_dir={mnist_dir}",
           f"--output_dir={out}", "--method=vanilla", "--train_size=300", "--val_size=100",
           "--test_size=200", "--epochs=2", "--batch_size=32", "--width=0.25", "--lr=0.01",
           "--verbose=0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.realdata
def test_attack_served_from_run_reproduces_both_protocols_with_no_other_flag(tiny_run, capsys):
    import json

    from pipelines.attack_served import main
    inproc = json.loads((tiny_run / "results.json").read_text())["private_accuracy_by_protocol"]
    assert set(inproc) == {"sound", "paper"}
    with LoopbackServer(tiny_run / "serving") as server:
        code = main(["attack_served", f"--url={server.url}", f"--from_run={tiny_run}",
                     "--verbose=0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    served = json.loads(out.strip().splitlines()[-1])
    assert served["private_accuracy_sound"] == pytest.approx(inproc["sound"], abs=1e-9)
    assert served["private_accuracy_paper"] == pytest.approx(inproc["paper"], abs=1e-9)
    assert served["private_accuracy"] == pytest.approx(inproc["sound"], abs=1e-9)
    # the run's split sizes were used (not the dataset's defaults: 55,000 training digits)
    for split, n in (("attack_train_sound", 300), ("attack_train_paper", 300),
                     ("attack_val", 100), ("unbiased", 200)):
        assert f"{split}: {n} embeddings over the wire" in out, out
    assert "sound protocol" in out and "paper protocol" in out


@pytest.mark.realdata
def test_run_export_models_config_holds_no_path_of_this_machine(tiny_run):
    config = (tiny_run / "serving" / "models.config").read_text()
    assert 'base_path: "/models/biased_mnist_vanilla"' in config
    assert str(tiny_run) not in config and str(tiny_run.resolve()) not in config
