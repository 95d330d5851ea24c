"""ReBias (Bahng et al. 2020): HSIC min–max between f and a biased g (METHODS.md §6).

Each batch, alternating (the reference order, ``n_g_update=1``):

1. **g step** — minimise ``CE(ℓ_g, y) − λ_g · HSIC(h_g, h_f)``; only g's
   optimizer steps (f's features are held fixed with ``stop_gradient``);
2. **f step** — minimise ``CE(ℓ_f, y) + λ_f · HSIC(h_f, h_g)`` with the
   *updated* g's features held fixed.

HSIC is the unbiased RBF-kernel estimator (:mod:`bridging_tf.methods.hsic`)
on the post-GAP bottlenecks, σ = 1 by default (``rebias_sigma``), or the
per-batch median heuristic (``rebias_kernel_sigma_mode="median"``).
``λ_f = λ_g = 0`` is Vanilla f plus an independently trained g.

Cost: f runs forward once per step — its parameters do not change during the
g step, so the forward recorded for f's gradient is exactly the one the g
step reads. g (cheap: 1×1 convs) runs forward twice, before and after its
update, as in the reference. The reference also runs f forward twice in
train mode, so its f BatchNorm statistics move twice per batch; here once.
Under ``tf.distribute`` each replica estimates HSIC on its own share of the
batch (the reference's DataParallel gathers the whole batch first).

Two optimizers, as in the keras-io GAN example::

    model = ReBiasModel(f, g, weight_decay=1e-4)
    model.compile(f_optimizer=keras.optimizers.Adam(1e-3),
                  g_optimizer=keras.optimizers.Adam(1e-3))
    # or model.compile(optimizer=keras.optimizers.Adam(1e-3))  (g gets a clone)
    model.fit(train_ds, epochs=1)   # loss, ce_loss, hsic_f, hsic_g, g_ce, accuracy

Trackers: ``loss`` (f's objective), ``ce_loss`` (f's CE), ``hsic_f``
(HSIC in the f step), ``hsic_g`` (HSIC in the g step, before g's update;
equal to ``hsic_f`` in evaluation), ``g_ce`` (g's CE), ``accuracy`` (f).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.methods.base import _labels, cross_entropy
from bridging_tf.methods.biased import BiasedBranchModel
from bridging_tf.methods.hsic import SIGMA_MODES, RbfHSIC
from bridging_tf.options import ReBiasHparams


@keras.saving.register_keras_serializable(package="bridging_tf")
class ReBiasModel(BiasedBranchModel):
    """ReBias: f made HSIC-independent of an adversarially trained biased g.

    Args:
      backbone: f, ``image -> (logits, bottleneck)``.
      biased_backbone: g (``build_biased_backbone``).
      rebias_lambda_f: weight of ``HSIC(h_f, h_g)`` in f's loss (reference: 1).
      rebias_lambda_g: weight of ``−HSIC(h_g, h_f)`` in g's loss (reference: 1).
      rebias_sigma: RBF kernel width in ``"fixed"`` mode (Biased-MNIST: 1).
      rebias_kernel_sigma_mode: ``"fixed"`` or ``"median"`` (per-batch heuristic).
      weight_decay: coupled L2 on both players.
    """

    method_name = "rebias"
    loss_term_names = ("hsic_f", "hsic_g", "g_ce")
    HPARAMS = ReBiasHparams

    def __init__(self, backbone, biased_backbone,
                 rebias_lambda_f: float = ReBiasHparams.rebias_lambda_f,
                 rebias_lambda_g: float = ReBiasHparams.rebias_lambda_g,
                 rebias_sigma: float = ReBiasHparams.rebias_sigma,
                 rebias_kernel_sigma_mode: str = ReBiasHparams.rebias_kernel_sigma_mode,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, biased_backbone, weight_decay=weight_decay, **kwargs)
        if rebias_kernel_sigma_mode not in SIGMA_MODES:
            raise ValueError(f"rebias_kernel_sigma_mode must be one of {SIGMA_MODES}, "
                             f"got {rebias_kernel_sigma_mode!r}")
        self.rebias_lambda_f = float(rebias_lambda_f)
        self.rebias_lambda_g = float(rebias_lambda_g)
        self.hsic = RbfHSIC(rebias_sigma, rebias_kernel_sigma_mode, name="hsic")

    @property
    def rebias_sigma(self):
        return self.hsic.sigma

    @property
    def rebias_kernel_sigma_mode(self):
        return self.hsic.sigma_mode

    def g_loss(self, labels, g_logits, h_g, h_f):
        """g's objective ``CE_g − λ_g·HSIC(h_g, h_f)``, f fixed -> ``(loss, ce, hsic)``."""
        g_ce = cross_entropy(labels, g_logits)
        hsic_g = self.hsic(h_g, ops.stop_gradient(h_f))
        return g_ce - self.rebias_lambda_g * hsic_g, g_ce, hsic_g

    def f_loss(self, labels, logits, h_f, h_g):
        """f's objective ``CE_f + λ_f·HSIC(h_f, h_g)``, g fixed -> ``(loss, ce, hsic)``."""
        ce = cross_entropy(labels, logits)
        hsic_f = self.hsic(h_f, ops.stop_gradient(h_g))
        return ce + self.rebias_lambda_f * hsic_f, ce, hsic_f

    def compute_total_loss(self, x, y, logits, z, training=False, g_step=None):
        """f's objective and every tracker's value, in training and evaluation alike.

        ``g_step=(h_g, g_ce, hsic_g)`` comes from this batch's g step (``h_g`` after g's
        update, the other two before it); without it (evaluation) g runs forward once and
        ``hsic_g`` equals ``hsic_f``.
        """
        labels = _labels(y, "label", self.method_name)
        if g_step is None:
            g_logits, h_g = self.biased_backbone(x, training=training)
            g_ce, hsic_g = cross_entropy(labels, g_logits), None
        else:
            h_g, g_ce, hsic_g = g_step
        total, ce, hsic_f = self.f_loss(labels, logits, z, h_g)
        return total, {"ce_loss": ce, "hsic_f": hsic_f,
                       "hsic_g": hsic_f if hsic_g is None else hsic_g, "g_ce": g_ce}

    def train_step(self, data):
        x, y = self._unpack(data)
        labels = _labels(y, "label", self.method_name)
        f_vars = self.trainable_for_step()
        g_vars = self.g_variables
        f_factor = self.loss_factor(self.optimizer)
        g_factor = self.loss_factor(self.g_optimizer)
        with tf.GradientTape() as f_tape:
            logits, h_f = self.backbone(x, training=True)
            with f_tape.stop_recording():
                # 1) g step: fit y while maximising dependence on (fixed) f.
                with tf.GradientTape() as g_tape:
                    g_logits, h_g = self.biased_backbone(x, training=True)
                    g_total, g_ce, hsic_g = self.g_loss(labels, g_logits, h_g, h_f)
                    g_scaled = self.scaled(g_total, g_factor)
                self.apply_player_step(self.g_optimizer, g_tape, g_scaled, g_vars, g_factor)
                # 2) the f step sees the updated g (a cheap second g forward).
                if self.rebias_lambda_f != 0.0:
                    _, h_g = self.biased_backbone(x, training=True)
            total, parts = self.compute_total_loss(x, y, logits, h_f, training=True,
                                                   g_step=(h_g, g_ce, hsic_g))
            f_scaled = self.scaled(total, f_factor)
        self.apply_player_step(self.optimizer, f_tape, f_scaled, f_vars, f_factor)
        return self.update_trackers(y, logits, total, parts)

    def get_config(self):
        return {**super().get_config(), "rebias_lambda_f": self.rebias_lambda_f,
                "rebias_lambda_g": self.rebias_lambda_g, "rebias_sigma": self.hsic.sigma,
                "rebias_kernel_sigma_mode": self.hsic.sigma_mode}
