"""``extract_bottleneck``: model + data -> embeddings artifact (one ``.npz`` per split).

Streams each split in batches through the backbone in inference mode and
writes ``<split>.npz`` with ``embeddings`` (float32 ``[N, D]``), ``logits``,
``labels`` and ``private``; ``splits.json`` lists the files and the aliases
(``attack_train`` is one of ``attack_train_sound`` / ``attack_train_paper``).
The returned metrics hold ``accuracy_<split>`` for every eval split, measured
from the logits.

Example::

    extract_bottleneck.run({"model": m, "data": d}, {"embeddings": Path("runs/x/embeddings")})
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from components.base import ArtifactWriter, load_bundle, write_json
from components.train import load_model

ATTACK_SPLITS = ("attack_train", "attack_train_sound", "attack_train_paper", "attack_val")


def inference_fn(backbone):
    """A traced ``x -> (bottleneck, logits)`` in inference mode (float32 outputs)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x):
        logits, z = backbone(x, training=False)
        return tf.cast(z, tf.float32), tf.cast(logits, tf.float32)

    return step


def embed_split(backbone, split, batch_size: int = 512, step=None):
    """``(embeddings, logits)`` of ``split`` in order, batch by batch, inference mode."""
    step = step or inference_fn(backbone)
    zs, ls = [], []
    for x, _ in split.dataset(batch_size):
        z, logit = step(x)
        zs.append(z.numpy())
        ls.append(logit.numpy())
    return np.concatenate(zs), np.concatenate(ls)


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *, batch_size: int = 512) -> dict:
    with ArtifactWriter("extract_bottleneck", "Embeddings", outputs["embeddings"],
                        params={"batch_size": batch_size}, inputs=inputs) as art:
        if art.skipped:
            return art.metrics
        bundle = load_bundle(inputs["data"])
        model = load_model(inputs["model"])
        names = [n for n in ATTACK_SPLITS if n in bundle.splits] + list(bundle.eval_splits)
        files, aliases, seen, metrics = {}, {}, {}, {}
        step = inference_fn(model.original_model)
        for name in names:
            split = bundle[name]
            if id(split) in seen and name == "attack_train":
                aliases[name] = seen[id(split)]
                continue
            if name == "attack_train":  # resolved below once its twin is written
                protocol = bundle.metadata.get("attack_protocol")
                twin = f"attack_train_{protocol}"
                if twin in bundle.splits and bundle.splits[twin] is split:
                    aliases[name] = twin
                    continue
            z, logits = embed_split(model.original_model, split, batch_size, step)
            labels, private = split.labels(), split.private()
            np.savez(art.path / f"{name}.npz", embeddings=z, logits=logits, labels=labels,
                     private=private)
            files[name] = f"{name}.npz"
            seen[id(split)] = name
            if name in bundle.eval_splits:
                metrics[f"accuracy_{name}"] = float(np.mean(np.argmax(logits, 1) == labels))
            print(f"[extract_bottleneck] {name}: {z.shape[0]} x {z.shape[1]}")
        for alias, target in aliases.items():
            files[alias] = files[target]
        write_json(art.path / "splits.json", {
            "files": files, "aliases": aliases, "eval_splits": list(bundle.eval_splits),
            "primary_eval": bundle.primary_eval, "num_private": bundle.num_private,
            "num_classes": bundle.num_classes,
            "private_names": list(bundle.private_names) if bundle.private_names else None})
        art.metrics = metrics
    return art.metrics


def load_embeddings(artifact, split: str) -> dict:
    """``{"embeddings", "logits", "labels", "private"}`` of ``split`` (embeddings artifact)."""
    import json
    manifest = json.loads((Path(artifact) / "splits.json").read_text())
    with np.load(Path(artifact) / manifest["files"][split]) as f:
        return {k: f[k] for k in f.files}


def manifest(artifact) -> dict:
    import json
    return json.loads((Path(artifact) / "splits.json").read_text())
