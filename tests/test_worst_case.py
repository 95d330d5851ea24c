"""Worst-case leakage: the strongest sound attacker on the primary split is the headline."""

import json
from pathlib import Path

import numpy as np
import pytest

from bridging_tf.attacks import AttackResult, AttackResults, AttackType
from bridging_tf.attacks.worst import WORST_KEYS, normalised_advantage, worst_case


def probe(acc, bal=None, k=10, split="unbiased"):
    return {split: {"accuracy": acc, "balanced_accuracy": acc if bal is None else bal,
                    "chance_uniform": 1.0 / k, "chance_majority": 0.12, "n": 100}}


def decoder(colour_acc, colour_bal, split="unbiased"):
    m = {"mse": 0.02, "psnr": 17.0, "baseline_mse": 0.1, "baseline_psnr": 10.0, "n": 100}
    if colour_acc is not None:
        m.update(colour_accuracy=colour_acc, colour_balanced_accuracy=colour_bal,
                 colour_chance_uniform=0.1, colour_chance_majority=0.12)
    return {split: m}


def results(**per_attack):
    types = {"linear": AttackType.LINEAR, "mlp": AttackType.MLP, "decoder": AttackType.DECODER}
    return AttackResults({types[k]: AttackResult(types[k], v) for k, v in per_attack.items()},
                         info={"primary_split": "unbiased"})


def test_the_strongest_attacker_is_the_headline():
    sound = results(linear=probe(0.24, 0.23), mlp=probe(0.99, 0.97),
                    decoder=decoder(0.86, 0.98))
    w = worst_case({"sound": sound}, "unbiased")
    assert set(w) == set(WORST_KEYS)
    assert w["private_accuracy_worst"] == 0.99 and w["private_attacker_worst"] == "mlp"
    # worst case per metric: the decoder's balanced accuracy is the highest one
    assert w["private_balanced_accuracy_worst"] == 0.98
    assert w["private_advantage_worst"] == pytest.approx((0.98 - 0.1) / 0.9)


def test_the_decoder_colour_recovery_counts_as_an_attacker():
    w = worst_case({"sound": results(linear=probe(0.3), decoder=decoder(0.8, 0.7))}, "unbiased")
    assert (w["private_attacker_worst"], w["private_accuracy_worst"]) == ("decoder", 0.8)
    # a decoder without a colour palette predicts no private label: not an attacker
    w = worst_case({"sound": results(linear=probe(0.3), decoder=decoder(None, None))})
    assert (w["private_attacker_worst"], w["private_accuracy_worst"]) == ("linear", 0.3)


def test_paper_protocol_attackers_never_count():
    sound = results(linear=probe(0.2), mlp=probe(0.5))
    paper = results(linear=probe(0.9), mlp=probe(0.95))
    w = worst_case({"sound": sound, "paper": paper}, "unbiased")
    assert (w["private_accuracy_worst"], w["private_attacker_worst"]) == (0.5, "mlp")
    # a run with --attack_protocol=paper: only its sound linear probe is held-out sound evidence
    w = worst_case({"paper": paper, "sound": results(linear=probe(0.4))}, "unbiased")
    assert (w["private_accuracy_worst"], w["private_attacker_worst"]) == (0.4, "linear")
    assert worst_case({"paper": paper}, "unbiased") == {}


def test_only_the_primary_split_is_read_and_ties_go_to_the_simpler_attacker():
    sound = AttackResults({
        AttackType.LINEAR: AttackResult(AttackType.LINEAR, {**probe(0.6), **probe(1.0,
                                                                                  split="biased")}),
        AttackType.MLP: AttackResult(AttackType.MLP, {**probe(0.6), **probe(0.1, split="biased")})},
        info={"primary_split": "unbiased"})
    w = worst_case(sound)   # a bare AttackResults is the sound one; split from its info
    assert (w["private_accuracy_worst"], w["private_attacker_worst"]) == (0.6, "linear")
    assert worst_case(sound, "biased")["private_accuracy_worst"] == 1.0
    assert worst_case(sound, "no_such_split") == {}


def test_normalised_advantage():
    assert normalised_advantage(0.1, 10) == pytest.approx(0.0)
    assert normalised_advantage(1.0, 10) == pytest.approx(1.0)
    assert normalised_advantage(0.55, 10) == pytest.approx(0.5)
    assert normalised_advantage(0.75, 2) == pytest.approx(0.5)
    assert np.isnan(normalised_advantage(0.5, 1))


def _embeddings_artifact(root: Path, seed=0):
    """An extract_bottleneck artifact whose private label is radial: MLP yes, linear no."""
    from components.base import ArtifactWriter, write_json

    rng = np.random.default_rng(seed)

    def split(n):
        z = rng.normal(size=(n, 2)).astype("float32")
        p = (np.linalg.norm(z, axis=1) > 1.1774).astype("int32")   # median radius: balanced
        return {"embeddings": z, "logits": np.zeros((n, 2), "float32"),
                "labels": np.zeros(n, "int32"), "private": p}

    with ArtifactWriter("extract_bottleneck", "Embeddings", root, params={"fake": seed},
                        inputs={}) as art:
        files = {}
        for name, n in (("attack_train_sound", 600), ("attack_train_paper", 600),
                        ("unbiased", 300)):
            np.savez(art.path / f"{name}.npz", **split(n))
            files[name] = f"{name}.npz"
        files["attack_train"] = files["attack_train_sound"]
        write_json(art.path / "splits.json", {
            "files": files, "aliases": {"attack_train": "attack_train_sound"},
            "eval_splits": ["unbiased"], "primary_eval": "unbiased", "num_private": 2,
            "num_classes": 2, "private_names": None})
        art.metrics = {"accuracy_unbiased": 0.5}
    return root


def test_attack_component_writes_the_worst_case_keys(tmp_path):
    from components import attack

    emb = _embeddings_artifact(tmp_path / "embeddings")
    metrics = attack.run({"embeddings": emb}, {"attack": tmp_path / "attack"},
                         attacks=["linear", "mlp"], protocol="sound", seed=0, verbose=0)
    assert metrics["private_attacker_worst"] == "mlp"
    assert metrics["private_accuracy_worst"] == metrics["private_accuracy_mlp"]
    assert metrics["private_accuracy_mlp"] > metrics["private_accuracy_linear"] + 0.2
    saved = AttackResults.load(tmp_path / "attack" / "main")
    mlp = saved.get("mlp").per_split["unbiased"]
    assert metrics["private_balanced_accuracy_worst"] == pytest.approx(max(
        mlp["balanced_accuracy"], saved.get("linear").per_split["unbiased"]["balanced_accuracy"]))
    assert metrics["private_advantage_worst"] == pytest.approx(
        2 * metrics["private_balanced_accuracy_worst"] - 1)
    meta = json.loads((tmp_path / "attack" / "artifact.json").read_text())
    assert meta["metrics"]["private_attacker_worst"] == "mlp"


def test_a_paper_protocol_run_reports_only_its_sound_linear_probe_as_worst_case(tmp_path):
    from components import attack

    emb = _embeddings_artifact(tmp_path / "embeddings", seed=1)
    metrics = attack.run({"embeddings": emb}, {"attack": tmp_path / "attack"},
                         attacks=["linear", "mlp"], protocol="paper", seed=0, verbose=0)
    # the (strong) MLP was trained on the paper set: it does not count
    assert metrics["private_accuracy_mlp"] > metrics["private_accuracy_sound"] + 0.2
    assert metrics["private_attacker_worst"] == "linear"
    assert metrics["private_accuracy_worst"] == metrics["private_accuracy_sound"]


@pytest.mark.realdata
@pytest.mark.parametrize("method, flags", [
    ("adversarial", ["--adv_lambda=0.5", "--adv_warmup_epochs=0.5", "--adv_steps=2",
                     "--adv_hidden=64"]),
    ("hsic_private", ["--hsic_lambda=50", "--hsic_sigma_mode=median"]),
])
def test_cli_run_of_each_privacy_method_writes_the_worst_case_keys(mnist_dir, tmp_path, method,
                                                                   flags):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / method
    cmd = [sys.executable, "-m", "pipelines.run", f"--method={method}", f"--data_dir={mnist_dir}",
           f"--output_dir={out}", "--train_size=300", "--val_size=200", "--test_size=200",
           "--attack_size=300", "--epochs=1", "--batch_size=64", "--width=0.125", "--verbose=0",
           "--attacks=linear,mlp", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == method
    for key in WORST_KEYS:
        assert key in res, key
    assert res["private_attacker_worst"] in ("linear", "mlp")
    assert res["private_accuracy_worst"] == max(res["private_accuracy_linear"],
                                                res["private_accuracy_mlp"])
    assert res["private_accuracy_worst"] >= res["private_accuracy"]   # never below the paper's
    bal = res["private_balanced_accuracy_worst"]
    assert res["private_advantage_worst"] == pytest.approx((bal - 0.1) / 0.9)
    hist = json.loads((out / "model" / "history.json").read_text())
    term = "adv_ce" if method == "adversarial" else "hsic_private"
    assert np.isfinite(hist[term][0]) and np.isfinite(hist[f"val_{term}"][0])
    given = {f.split("=")[0][2:]: f.split("=")[1] for f in flags}
    for name, value in given.items():   # the flags reached the method
        got = res["hparams"][name]
        assert got == value if isinstance(got, str) else got == pytest.approx(float(value)), name
