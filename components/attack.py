"""``attack``: embeddings (+ data for the decoder) -> attack artifact.

Runs :func:`bridging_tf.attacks.run_attacks` with the attacker trained on
``attack_train`` (the chosen protocol) and evaluated on every eval split, and
saves it under ``<attack>/main``. When the embeddings hold both
``attack_train_sound`` and ``attack_train_paper`` the linear probe is also run
with the other protocol (``<attack>/protocol_<name>``) so both are reported.
Each summary line names its attacker and protocol (:func:`protocol_labels`);
:func:`write_tensorboard` turns the results into TensorBoard scalars (the
report step writes them to ``<run>/report/logs``).

Example::

    attack.run({"embeddings": e, "data": d}, {"attack": Path("runs/x/attack")},
               attacks=["linear"], protocol="sound", seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from bridging_tf.options import DataOptions, RunOptions
from components.base import ArtifactWriter, load_bundle
from components.extract_bottleneck import load_embeddings, manifest

PROTOCOLS = ("sound", "paper")


def split_images(split, batch_size: int = 1024) -> np.ndarray:
    """All uint8 images of ``split`` in order (what the decoder attack reconstructs)."""
    return np.concatenate([x.numpy() for x, _ in split.dataset(batch_size, normalize=False)])


def make_input(get: Callable[[str], tuple], *, train: str, eval_splits: Sequence[str],
               num_private: int, private_names=None, val: Optional[str] = None,
               images: Optional[Callable[[str], np.ndarray]] = None):
    """:class:`AttackInputData` from ``get(split) -> (embeddings, private)``."""
    from bridging_tf.attacks import AttackInputData

    z_tr, p_tr = get(train)
    z_va, p_va = get(val) if val else (None, None)
    evals = {s: get(s) for s in eval_splits}
    kw = {}
    if images is not None:
        kw = dict(train_images=images(train), val_images=images(val) if val else None,
                  eval_images={s: images(s) for s in eval_splits})
    return AttackInputData(
        train_embeddings=z_tr, train_private=p_tr, val_embeddings=z_va, val_private=p_va,
        eval_embeddings={s: v[0] for s, v in evals.items()},
        eval_private={s: v[1] for s, v in evals.items()}, num_private=num_private,
        private_names=private_names, **kw)


def protocol_labels(protocol: str, train_split: str) -> dict:
    """``run_attacks`` keywords naming the protocol and its attacker set in the summaries.

    Biased-MNIST's ``attack_train_sound`` / ``attack_train_paper`` get the standard
    descriptions (``bridging_tf.attacks.results.PROTOCOL_ATTACKER_SETS``); a data set
    with a single ``attack_train`` split is named by that split.
    """
    if train_split == f"attack_train_{protocol}":
        return {"protocol": protocol}
    return {"protocol": protocol, "attacker_set": f"attacker set = the data set's {train_split!r}"}


#: metrics written to TensorBoard per (protocol, attacker, split), when present.
TENSORBOARD_METRICS = ("accuracy", "balanced_accuracy", "auc", "advantage", "chance_uniform",
                       "chance_majority", "mse", "psnr", "baseline_psnr", "colour_accuracy")


def write_tensorboard(by_protocol: Mapping[str, object], logdir, *, worst: Optional[dict] = None,
                      step: int = 0) -> Path:
    """Attack metrics as TensorBoard scalars under ``logdir`` (one event file).

    Tags: ``attack/<protocol>/<attacker>/<split>/<metric>`` for every attacker of
    every protocol (``by_protocol``: protocol -> :class:`AttackResults`), and
    ``attack/worst/<key>`` for the numeric worst-case keys (``worst_case``), all at ``step``.
    Returns ``logdir``.
    """
    import tensorflow as tf

    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for protocol, results in by_protocol.items():
            for r in results:
                for split, m in r.per_split.items():
                    for key in TENSORBOARD_METRICS:
                        v = m.get(key)
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            tf.summary.scalar(f"attack/{protocol}/{r.attack_type.value}/{split}/"
                                              f"{key}", float(v), step=step)
        for key, v in (worst or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                tf.summary.scalar(f"attack/worst/{key}", float(v), step=step)
        if worst and worst.get("private_attacker_worst"):
            tf.summary.text("attack/worst/attacker", str(worst["private_attacker_worst"]),
                            step=step)
    writer.flush()
    writer.close()
    return logdir


def headline(results, primary: str, prefix: str = "private") -> dict:
    """Flat metrics of a run: the linear (else first) attack on the primary split + each attack."""
    from bridging_tf.attacks import AttackType

    out = {}
    ordered = list(results)
    main = next((r for r in ordered if r.attack_type is AttackType.LINEAR), ordered[0])
    for r in ordered:
        split = r.per_split.get(primary, {})
        if "accuracy" in split:
            out[f"{prefix}_accuracy_{r.attack_type.value}"] = split["accuracy"]
        for key in ("psnr", "baseline_psnr", "colour_accuracy"):  # the decoder's numbers
            if key in split:
                out[f"decoder_{key}"] = split[key]
    m = main.per_split.get(primary, {})
    for key in ("accuracy", "balanced_accuracy", "chance_uniform", "chance_majority", "auc"):
        if key in m:
            out[f"{prefix}_{key}"] = m[key]
    return out


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *,
        attacks: Sequence[str] = ("linear",), protocol: str = DataOptions.attack_protocol,
        seed: int = DataOptions.seed, compare_protocols: bool = True,
        verbose: int = RunOptions.verbose) -> dict:
    from bridging_tf.attacks import AttackType, run_attacks
    from bridging_tf.attacks.worst import worst_case
    from bridging_tf.errors import UserError

    attacks = [AttackType.parse(a).value for a in attacks]
    if protocol not in PROTOCOLS:
        raise UserError(f"--attack_protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    params = {"attacks": attacks, "protocol": protocol, "seed": seed,
              "compare_protocols": compare_protocols}
    with ArtifactWriter("attack", "AttackResults", outputs["attack"], params=params,
                        inputs=inputs, seed=seed) as art:
        if art.skipped:
            return art.metrics
        emb = inputs["embeddings"]
        info = manifest(emb)
        cache = {}

        def get(name):
            if name not in cache:
                d = load_embeddings(emb, name)
                cache[name] = (d["embeddings"], d["private"])
            return cache[name]

        images = None
        opts = {}
        if "decoder" in attacks:
            if "data" not in inputs:
                raise UserError("the decoder attack needs the data artifact (images)")
            bundle = load_bundle(inputs["data"])
            images = lambda s: split_images(bundle[s])  # noqa: E731
            if bundle.metadata.get("colour_map") is not None:
                opts["palette"] = np.asarray(bundle.metadata["colour_map"], np.uint8)
        files = info["files"]
        val = "attack_val" if "attack_val" in files else None
        primary = info["primary_eval"]
        eval_splits = [primary] + [s for s in info["eval_splits"] if s != primary]
        common = dict(eval_splits=eval_splits, num_private=info["num_private"],
                      private_names=info.get("private_names"), val=val)
        train_name = (f"attack_train_{protocol}" if f"attack_train_{protocol}" in files
                      else "attack_train")
        data = make_input(get, train=train_name, images=images, **common)
        results = run_attacks(data, attacks, seed=seed, verbose=verbose,
                              **protocol_labels(protocol, train_name), **opts)
        results.save(art.path / "main")
        metrics = headline(results, primary)
        metrics[f"private_accuracy_{protocol}"] = metrics.get("private_accuracy")
        by_protocol = {protocol: results}
        if compare_protocols:
            for other in PROTOCOLS:
                name = f"attack_train_{other}"
                if other == protocol or name not in files:
                    continue
                r = run_attacks(make_input(get, train=name, **common), ["linear"], seed=seed,
                                verbose=verbose, **protocol_labels(other, name))
                r.save(art.path / f"protocol_{other}")
                metrics[f"private_accuracy_{other}"] = headline(r, primary)["private_accuracy"]
                by_protocol[other] = r
        # the headline: the strongest sound-protocol attacker (bridging_tf.attacks.worst)
        metrics.update(worst_case(by_protocol, primary))
        art.metrics = {k: v for k, v in metrics.items() if v is not None}
    return art.metrics
