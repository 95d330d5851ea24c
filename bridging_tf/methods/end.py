"""EnD: Entangling and Disentangling deep representations (Tartaglione et al. 2021).

Adds two terms on the (unit-norm) bottleneck ``z`` of a batch, with
``G = clip(z zᵀ, -1, 1)`` and only strictly-lower-triangle pairs ``i > j``
(METHODS.md §3, matching the authors' code):

- **disentangling** ``R_⊥`` (``end_orth``): over pairs with the *same
  private label*, whatever their targets, the absolute value of the *sum*
  of cosines per private class, summed over classes and divided by the
  total number of such pairs (0 when there are none);
- **entangling** ``R_∥`` (``end_par``): over pairs with the *same target and
  different private label*, ``1 - mean((1 + G_ij) / 2)`` (0 when none).

``L = CE + alpha * R_⊥ + beta * R_∥``.

Pairs for ``R_∥``: by default **all** same-target / different-private pairs
(``pairs="all"``). The reference loop only visits the ordered class pairs
``(c, c')`` with ``c < c'`` and keeps ``i > j``, so it counts the pairs with
``b_i < b_j`` only — about half, depending on batch order;
``pairs="reference"`` reproduces that for bit-level comparisons with the
published numbers.

Example::

    model = EnDModel(simple_convnet(variant="end"), alpha=1.0, beta=1.0)
    model.compile(optimizer="adam")
    model.fit(train_ds, epochs=1)   # history: loss, ce_loss, end_orth, end_par, accuracy
"""

from __future__ import annotations

import keras
from keras import ops

from bridging_tf.distribute import gather_global
from bridging_tf.methods.base import DebiasModel, _labels, cross_entropy
from bridging_tf.options import EnDHparams

PAIR_MODES = ("all", "reference")


def _pair_matrices(z):
    z = ops.convert_to_tensor(z)
    n = ops.shape(z)[0]
    gram = ops.clip(ops.matmul(z, ops.transpose(z)), -1.0, 1.0)
    lower = ops.tril(ops.ones((n, n), dtype=z.dtype), k=-1)
    return gram, lower


def end_orthogonal(z, private, num_private: int):
    """``R_⊥``: disentangling term over same-private-label pairs (see module doc)."""
    gram, lower = _pair_matrices(z)
    onehot = ops.one_hot(ops.cast(private, "int32"), num_private, dtype=z.dtype)  # (B, K)
    # S_c = sum_{i>j} B_ic B_jc G_ij
    per_class = ops.sum(onehot * ops.matmul(gram * lower, onehot), axis=0)
    counts = ops.sum(onehot, axis=0)
    n_pairs = ops.sum(counts * (counts - 1.0) / 2.0)
    return ops.where(n_pairs > 0, ops.sum(ops.abs(per_class)) / ops.maximum(n_pairs, 1.0), 0.0)


def end_parallel(z, labels, private, pairs: str = EnDHparams.pairs):
    """``R_∥``: entangling term over same-target / different-private pairs."""
    if pairs not in PAIR_MODES:
        raise ValueError(f"pairs must be one of {PAIR_MODES}, got {pairs!r}")
    gram, lower = _pair_matrices(z)
    y = ops.cast(labels, "int32")
    b = ops.cast(private, "int32")
    same_y = ops.cast(ops.equal(y[:, None], y[None, :]), z.dtype)
    if pairs == "all":
        diff_b = ops.cast(ops.not_equal(b[:, None], b[None, :]), z.dtype)
    else:  # reference: only b_i < b_j among i > j
        diff_b = ops.cast(ops.less(b[:, None], b[None, :]), z.dtype)
    mask = same_y * diff_b * lower
    m = ops.sum(mask)
    mean_sim = ops.sum(mask * (1.0 + gram) / 2.0) / ops.maximum(m, 1.0)
    return ops.where(m > 0, 1.0 - mean_sim, 0.0)


@keras.saving.register_keras_serializable(package="bridging_tf")
class EnDRegularizer(keras.layers.Layer):
    """The EnD penalty as a layer: ``(z, labels, private) -> (alpha*R_⊥ + beta*R_∥, R_⊥, R_∥)``."""

    def __init__(self, num_private: int, alpha: float = EnDHparams.alpha,
                 beta: float = EnDHparams.beta, pairs: str = EnDHparams.pairs, **kwargs):
        super().__init__(**kwargs)
        if pairs not in PAIR_MODES:
            raise ValueError(f"pairs must be one of {PAIR_MODES}, got {pairs!r}")
        self.num_private = int(num_private)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.pairs = pairs

    def call(self, z, labels, private):
        z = ops.cast(z, "float32")
        r_orth = end_orthogonal(z, private, self.num_private)
        r_par = end_parallel(z, labels, private, self.pairs)
        return self.alpha * r_orth + self.beta * r_par, r_orth, r_par

    def get_config(self):
        return {**super().get_config(), "num_private": self.num_private, "alpha": self.alpha,
                "beta": self.beta, "pairs": self.pairs}


@keras.saving.register_keras_serializable(package="bridging_tf")
class EnDModel(DebiasModel):
    """Vanilla CE plus the EnD regulariser on the bottleneck.

    Args:
      backbone: ``image -> (logits, bottleneck)``; use the ``end`` variant
        (tanh last block, L2-normalised bottleneck) as the paper does.
      num_private: number of private classes (10 colours on Biased-MNIST).
      alpha, beta: weights of ``R_⊥`` and ``R_∥``.
      pairs: ``"all"`` (default) or ``"reference"`` (the half-pairs quirk).
      weight_decay: coupled L2 (see :class:`DebiasModel`).
    """

    method_name = "end"
    loss_term_names = ("end_orth", "end_par")
    uses_private_label = True
    #: CLI flag -> (default, help); the CLI defines one flag per entry and
    #: passes the values back as keyword arguments of the same name.
    HPARAMS = EnDHparams

    def __init__(self, backbone, num_private: int = 10, alpha: float = EnDHparams.alpha,
                 beta: float = EnDHparams.beta, pairs: str = EnDHparams.pairs,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, weight_decay=weight_decay, **kwargs)
        self.regularizer = EnDRegularizer(num_private, alpha, beta, pairs, name="end_regularizer")

    @property
    def alpha(self):
        return self.regularizer.alpha

    @property
    def beta(self):
        return self.regularizer.beta

    def compute_total_loss(self, x, y, logits, z, training=False):
        labels = _labels(y, "label", self.method_name)
        private = _labels(y, "private", self.method_name)
        ce = cross_entropy(labels, logits)
        # Under tf.distribute the Gram terms use the global batch (all-gather).
        z_all, labels_all, private_all = gather_global(z, labels, private)
        penalty, r_orth, r_par = self.regularizer(z_all, labels_all, private_all)
        return ce + penalty, {"ce_loss": ce, "end_orth": r_orth, "end_par": r_par}

    def get_config(self):
        return {**super().get_config(), "num_private": self.regularizer.num_private,
                "alpha": self.regularizer.alpha, "beta": self.regularizer.beta,
                "pairs": self.regularizer.pairs}
