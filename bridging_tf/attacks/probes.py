"""Attribute-inference probes on frozen embeddings: the paper's linear probe and an MLP.

The linear probe reproduces the reference attacker (METHODS.md §7.4): one
Dense layer (PyTorch ``nn.Linear`` init), plain SGD lr 0.01 without momentum
or weight decay, StepLR(20, 0.1) stepped per epoch, 50 epochs, batch 256,
reshuffled every epoch, last partial batch kept, cross-entropy on the private
label, no early stopping (the last epoch is reported). One ``tf.function``
runs a whole epoch over in-memory tensors, so 10k × 128 × 50 epochs takes
well under a second on CPU.

The MLP probe is a stronger adversary than the paper's: standardised inputs,
two ReLU hidden layers, Adam, early stopping on a validation split (restoring
the best weights).

Example::

    probe = train_linear_probe(z_train, c_train, num_classes=10, seed=0)
    probs = probe.predict_proba(z_test)
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from bridging_tf.sampling import stratified_holdout


class LinearProbe:
    """A trained ``softmax(x @ W + b)`` probe (see :func:`train_linear_probe`)."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, history: Optional[dict] = None):
        self.kernel = np.asarray(kernel, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.history = history or {}

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) @ self.kernel + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def train_linear_probe(x: np.ndarray, y: np.ndarray, num_classes: int, *, epochs: int = 50,
                       lr: float = 0.01, batch_size: int = 256, step_size: int = 20,
                       gamma: float = 0.1, seed: int = 0, verbose: int = 0) -> LinearProbe:
    """Fit the paper's linear attacker (see module doc); returns a :class:`LinearProbe`."""
    import keras

    # PyTorch StepLR stepped per epoch, in float64 as PyTorch computes it (``history["lr"]``).
    schedule = keras.optimizers.schedules.ExponentialDecay(
        np.float64(lr), decay_steps=step_size, decay_rate=np.float64(gamma), staircase=True)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(d)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b
    w = tf.Variable(rng.uniform(-bound, bound, (d, num_classes)).astype(np.float32))
    b = tf.Variable(rng.uniform(-bound, bound, (num_classes,)).astype(np.float32))
    xt, yt = tf.constant(x), tf.constant(y)
    n_batches = int(math.ceil(n / batch_size))

    @tf.function(reduce_retracing=True)
    def run_epoch(perm, lr_t):
        total = tf.constant(0.0)
        for i in tf.range(n_batches):
            idx = perm[i * batch_size:tf.minimum((i + 1) * batch_size, n)]
            xb, yb = tf.gather(xt, idx), tf.gather(yt, idx)
            with tf.GradientTape() as tape:
                logits = tf.matmul(xb, w) + b
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
            gw, gb = tape.gradient(loss, [w, b])
            w.assign_sub(lr_t * gw)
            b.assign_sub(lr_t * gb)
            total += loss * tf.cast(tf.shape(idx)[0], tf.float32)
        acc = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(tf.matmul(xt, w) + b, axis=1, output_type=tf.int32), yt),
            tf.float32))
        return total / n, acc

    history: Dict[str, List[float]] = {"loss": [], "accuracy": [], "lr": []}
    bar = _progbar(epochs, verbose, "linear probe")
    for epoch in range(epochs):
        lr_e = float(schedule(epoch))
        loss, acc = run_epoch(tf.constant(rng.permutation(n).astype(np.int32)),
                              tf.constant(lr_e, tf.float32))
        history["loss"].append(float(loss))
        history["accuracy"].append(float(acc))
        history["lr"].append(float(lr_e))
        if bar is not None:
            bar.update(epoch + 1, [("loss", float(loss)), ("accuracy", float(acc))])
    return LinearProbe(w.numpy(), b.numpy(), history)


class MLPProbe:
    """A trained Keras MLP probe (see :func:`train_mlp_probe`)."""

    def __init__(self, model, history: Optional[dict] = None, best_epoch: Optional[int] = None):
        self.model = model
        self.history = history or {}
        self.best_epoch = best_epoch

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = batched_call(self.model, x, 4096)
        logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def train_mlp_probe(x: np.ndarray, y: np.ndarray, num_classes: int, *,
                    x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
                    hidden: Sequence[int] = (256, 256), lr: float = 1e-3, batch_size: int = 256,
                    max_epochs: int = 200, patience: int = 10, val_fraction: float = 0.2,
                    seed: int = 0, verbose: int = 0) -> MLPProbe:
    """Fit a 2-hidden-layer MLP with early stopping on validation loss.

    Without ``x_val`` a stratified ``val_fraction`` of the training data is held out.
    """
    import keras

    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if x_val is None:
        tr, va = stratified_holdout(y, val_fraction, np.random.default_rng(seed))
        x, y, x_val, y_val = x[tr], y[tr], x[va], y[va]
    x_val = np.asarray(x_val, np.float32)
    y_val = np.asarray(y_val, np.int32)
    norm = keras.layers.Normalization(name="standardize")
    norm.adapt(x)
    layers = [keras.Input((x.shape[1],)), norm]
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(
            units, activation="relu", name=f"hidden{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i)))
    layers.append(keras.layers.Dense(
        num_classes, name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 100)))
    model = keras.Sequential(layers, name="mlp_probe")
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train_ds = (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(4096)
    monitor = "val_loss" if len(x_val) else "loss"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience,
                                         restore_best_weights=True)
    hist = model.fit(train_ds, validation_data=val_ds if len(x_val) else None,
                     epochs=max_epochs, callbacks=[stop], shuffle=False,
                     verbose=2 if verbose else 0)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    losses = history.get(monitor, [])
    best = int(np.argmin(losses)) + 1 if losses else None
    return MLPProbe(model, history, best)


def batched_call(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model(x, training=False)`` in chunks, eagerly (no per-shape retracing of ``predict``)."""
    x = np.asarray(x, np.float32)
    outs = [np.asarray(model(tf.constant(x[i:i + batch_size]), training=False))
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,) + tuple(model.output_shape[1:]),
                                                      np.float32)


def _progbar(epochs: int, verbose: int, name: str):
    if not verbose:
        return None
    import keras

    print(f"Training {name} for {epochs} epochs")
    return keras.utils.Progbar(epochs, verbose=1, unit_name="epoch")
