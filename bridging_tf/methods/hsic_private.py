"""HSIC-private: make the bottleneck kernel-independent of the private label.

``L = CE(logits, y) + λ · HSIC_1(z, p)`` on each batch, with

- a Gaussian (RBF) kernel on the bottleneck ``z``, bandwidth by the per-batch
  median heuristic (``hsic_sigma_mode="median"``, the default) or a fixed
  ``hsic_sigma``;
- a delta kernel on the private label ``p``: ``L_ij = 1[p_i = p_j]``;
- the unbiased estimator ``HSIC_1`` (Song et al. 2012) that ReBias uses
  (:mod:`bridging_tf.methods.hsic`; 0 for batches of fewer than 4). Being
  unbiased, one batch's value can dip below 0 (noise, large for small
  batches); its expectation over batches is ``>= 0``.

With a characteristic kernel on ``z``, HSIC is zero only when ``z`` and ``p``
are independent, so the penalty sees *non-linear* dependence — what a
non-linear attacker exploits and EnD's cosine terms do not see. With the
delta kernel, HSIC is the (weighted) squared distance between the per-class
kernel mean embeddings of ``z`` and their average. Under ``tf.distribute`` the
estimate uses the global batch (all-gather), as EnD's terms do.

Scale: with 10 private classes HSIC stays small (about 0.015 for a bottleneck
that encodes the class outright, about 0 for an independent one), so ``λ`` is
large next to EnD's weights: the default is 100; sweep it over decades.

Example::

    model = HSICPrivateModel(simple_convnet(), num_private=10, hsic_lambda=100.0)
    model.compile(optimizer="adam")
    model.fit(train_ds, epochs=1)   # history: loss, ce_loss, hsic_private, accuracy
"""

from __future__ import annotations

import keras
from keras import ops

from bridging_tf.distribute import gather_global
from bridging_tf.methods.base import DebiasModel, _labels, cross_entropy
from bridging_tf.methods.hsic import (
    SIGMA_MODES,
    delta_kernel,
    hsic_unbiased_from_kernels,
    rbf_kernel,
)
from bridging_tf.options import HSICPrivateHparams


def hsic_private_penalty(z, private, num_private: int, sigma=None):
    """``HSIC_1(z, p)``: RBF kernel on ``z`` (``sigma=None``: median heuristic), delta on ``p``."""
    z = ops.cast(z, "float32")
    return hsic_unbiased_from_kernels(rbf_kernel(z, sigma), delta_kernel(private, num_private))


@keras.saving.register_keras_serializable(package="bridging_tf")
class PrivateHSIC(keras.layers.Layer):
    """``(z, private) -> HSIC_1(z, private)`` as a serialisable layer (no weights).

    Args:
      num_private: number of private classes ``K``.
      sigma: RBF width in ``"fixed"`` mode.
      sigma_mode: ``"median"`` (per-batch median heuristic) or ``"fixed"``.
    """

    def __init__(self, num_private: int, sigma: float = 1.0, sigma_mode: str = "median",
                 **kwargs):
        super().__init__(**kwargs)
        if sigma_mode not in SIGMA_MODES:
            raise ValueError(f"hsic_sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        if sigma_mode == "fixed" and not float(sigma) > 0:
            raise ValueError(f"hsic_sigma must be > 0, got {sigma}")
        if int(num_private) < 2:
            raise ValueError(f"num_private must be at least 2, got {num_private}")
        self.num_private = int(num_private)
        self.sigma = float(sigma)
        self.sigma_mode = sigma_mode
        self.built = True

    def call(self, z, private):
        return hsic_private_penalty(z, private, self.num_private,
                                    None if self.sigma_mode == "median" else self.sigma)

    def compute_output_shape(self, *args, **kwargs):
        return ()

    def get_config(self):
        return {**super().get_config(), "num_private": self.num_private, "sigma": self.sigma,
                "sigma_mode": self.sigma_mode}


@keras.saving.register_keras_serializable(package="bridging_tf")
class HSICPrivateModel(DebiasModel):
    """CE plus ``λ·HSIC(bottleneck, private label)``.

    Args:
      backbone: ``image -> (logits, bottleneck)``.
      num_private: number of private classes.
      hsic_lambda: ``λ``, the weight of the HSIC penalty.
      hsic_sigma: RBF width on the bottleneck when ``hsic_sigma_mode="fixed"``.
      hsic_sigma_mode: ``"median"`` (default) or ``"fixed"``.
      weight_decay: coupled L2 (see :class:`DebiasModel`).
    """

    method_name = "hsic_private"
    loss_term_names = ("hsic_private",)
    uses_private_label = True
    HPARAMS = HSICPrivateHparams

    def __init__(self, backbone, num_private: int = 10,
                 hsic_lambda: float = HSICPrivateHparams.hsic_lambda,
                 hsic_sigma: float = HSICPrivateHparams.hsic_sigma,
                 hsic_sigma_mode: str = HSICPrivateHparams.hsic_sigma_mode,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, weight_decay=weight_decay, **kwargs)
        if float(hsic_lambda) < 0:
            raise ValueError(f"hsic_lambda must be >= 0, got {hsic_lambda}")
        self.hsic_lambda = float(hsic_lambda)
        self.hsic = PrivateHSIC(num_private, hsic_sigma, hsic_sigma_mode, name="private_hsic")

    @property
    def num_private(self):
        return self.hsic.num_private

    def compute_total_loss(self, x, y, logits, z, training=False):
        labels = _labels(y, "label", self.method_name)
        private = _labels(y, "private", self.method_name)
        ce = cross_entropy(labels, logits)
        z_all, private_all = gather_global(z, private)
        penalty = self.hsic(z_all, private_all)
        return ce + self.hsic_lambda * penalty, {"ce_loss": ce, "hsic_private": penalty}

    def get_config(self):
        return {**super().get_config(), "num_private": self.hsic.num_private,
                "hsic_lambda": self.hsic_lambda, "hsic_sigma": self.hsic.sigma,
                "hsic_sigma_mode": self.hsic.sigma_mode}
