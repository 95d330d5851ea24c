"""LearnedMixin + H (Clark et al. 2019) as run in the ReBias framework (METHODS.md §5).

The bias prior comes from a bias-only network g (1×1 SimpleConvNet on
Biased-MNIST), **pre-trained** with cross-entropy for ``lm_pretrain_epochs``
(5) epochs and then **frozen**. f is trained on

    s(x) = softplus(w·h_f(x) + b)                         (a learned gate on f's bottleneck)
    L    = CE(ℓ_f + s(x)·ℓ_g, y) + w_H · H(softmax(s(x)·ℓ_g))

with ``w_H = lm_entropy_weight = 0.36`` and H the entropy averaged over the
batch. g's raw logits are used (equivalent to log-probabilities inside CE and
softmax). At test time f's own logits are used.

Pre-training: :meth:`prepare` trains g (on a clone of f's optimizer config,
or Adam(1e-3) when not compiled yet). ``fit`` calls it for you the first
time when given a ``tf.data.Dataset``; a non-trainable counter
(``g_pretrained_epochs``, saved with the weights) makes repeated calls — and
reloaded models — skip it.

Differences from the reference, on purpose:

- g's BatchNorm is frozen too: g runs with ``training=False`` during f's
  training, so its moving statistics do not change. The reference keeps g in
  train mode, so its BN statistics drift (and batch statistics are used)
  while its weights are frozen (METHODS.md §11.10);
  ``reference_g_bn_drift=True`` reproduces that;
- the reference never steps the gate (``fc_lm`` stays at its random init,
  METHODS.md §5); here it is trained, ``reference_untrained_gate=True``
  reproduces the bug.

Trackers: ``loss``, ``ce_loss`` = ``CE(ℓ_f, y)`` (f's own CE, for comparison
with other methods; **not** in the objective), ``lm_mixed_ce`` (CE of the
combined logits), ``lm_entropy`` (H), ``lm_gate`` (mean s(x)), ``accuracy``.

Example::

    model = LearnedMixinModel(f, g, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.prepare(train_ds)          # 5 epochs of g (fit() does it if you forget)
    model.fit(train_ds, epochs=1)    # loss, ce_loss, lm_mixed_ce, lm_entropy, lm_gate, accuracy
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.methods.base import _labels, cross_entropy
from bridging_tf.methods.biased import BiasedBranchModel, BiasedModel, clone_optimizer
from bridging_tf.models.layers import torch_dense
from bridging_tf.options import LearnedMixinHparams

log = logging.getLogger(__name__)


def learned_mixin_loss(labels, f_logits, g_logits, gate,
                       entropy_weight: float = LearnedMixinHparams.lm_entropy_weight):
    """``(total, mixed_ce, entropy)`` for LearnedMixin + H.

    ``gate`` is ``s(x)`` with shape ``[B, 1]`` (already softplus-ed).
    """
    # float32 under mixed precision too (softmax/entropy of scaled logits)
    f_logits, g_logits, gate = (ops.cast(t, "float32") for t in (f_logits, g_logits, gate))
    scaled = gate * g_logits
    mixed_ce = cross_entropy(labels, f_logits + scaled)
    log_p = ops.log_softmax(scaled, axis=-1)
    entropy = ops.mean(-ops.sum(ops.exp(log_p) * log_p, axis=-1))
    return mixed_ce + entropy_weight * entropy, mixed_ce, entropy


@keras.saving.register_keras_serializable(package="bridging_tf")
class LearnedMixinModel(BiasedBranchModel):
    """LearnedMixin + H with a pre-trained, frozen bias-only network g.

    Args:
      backbone: f, ``image -> (logits, bottleneck)``.
      biased_backbone: g (``build_biased_backbone``).
      lm_entropy_weight: w_H (reference: 0.36).
      lm_pretrain_epochs: epochs of g pre-training in :meth:`prepare` (reference: 5).
      reference_untrained_gate: reproduce the reference bug (gate never trained).
      reference_g_bn_drift: run frozen g in train mode, as the reference does.
      weight_decay: coupled L2 (f, the gate, and g during pre-training).
    """

    method_name = "learned_mixin"
    loss_term_names = ("lm_mixed_ce", "lm_entropy", "lm_gate")
    g_trained_in_fit = False
    HPARAMS = LearnedMixinHparams

    def __init__(self, backbone, biased_backbone,
                 lm_entropy_weight: float = LearnedMixinHparams.lm_entropy_weight,
                 lm_pretrain_epochs: int = LearnedMixinHparams.lm_pretrain_epochs,
                 reference_untrained_gate: bool = LearnedMixinHparams.reference_untrained_gate,
                 reference_g_bn_drift: bool = LearnedMixinHparams.reference_g_bn_drift,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, biased_backbone, weight_decay=weight_decay, **kwargs)
        self.lm_entropy_weight = float(lm_entropy_weight)
        self.lm_pretrain_epochs = int(lm_pretrain_epochs)
        self.reference_untrained_gate = bool(reference_untrained_gate)
        self.reference_g_bn_drift = bool(reference_g_bn_drift)
        dim = self._bottleneck_dim(backbone)
        self.gate = torch_dense(1, dim, name="lm_gate")
        self.gate.build((None, dim))
        self.g_pretrained_epochs = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False,
            name="g_pretrained_epochs")

    def extra_f_variables(self):
        return [] if self.reference_untrained_gate else list(self.gate.trainable_variables)

    # ------------------------------------------------------------ pretraining
    @property
    def g_ready(self) -> bool:
        """Whether g has had its ``lm_pretrain_epochs`` of pre-training."""
        return int(keras.ops.convert_to_numpy(self.g_pretrained_epochs)) >= self.lm_pretrain_epochs

    def prepare(self, train_dataset, *, verbose: int = 1) -> None:
        """Pre-train g with CE for ``lm_pretrain_epochs`` epochs (skipped if already done)."""
        if self.g_ready:
            return
        log.info("%s: pre-training the biased network g for %d epochs (then frozen)",
                 self.method_name, self.lm_pretrain_epochs)
        compiled = getattr(self, "optimizer", None) is not None
        with self.distribute_strategy.scope():
            optimizer = (clone_optimizer(self.optimizer) if compiled
                         else keras.optimizers.Adam(1e-3))
            trainer = BiasedModel(self.biased_backbone, weight_decay=self.weight_decay,
                                  name="lm_g_pretrain")
            options = ({"run_eagerly": self.run_eagerly, "jit_compile": self.jit_compile}
                       if compiled else {})
            trainer.compile(optimizer=optimizer, **options)
        trainer.fit(train_dataset, epochs=self.lm_pretrain_epochs, verbose=verbose)
        self.g_pretrained_epochs.assign(self.lm_pretrain_epochs)

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit``, pre-training g first if :meth:`prepare` was not run.

        (The one Keras hook that sees the training data: ``train_step`` sees one batch.)
        """
        if not self.g_ready:
            if isinstance(x, tf.data.Dataset):
                self.prepare(x, verbose=kwargs.get("verbose", "auto"))
            else:
                log.warning("LearnedMixin: g is not pre-trained; call model.prepare(train_ds) "
                            "before fit() (fit only does it for a tf.data.Dataset)")
        return super().fit(x, *args, **kwargs)

    # ------------------------------------------------------------------- loss
    def compute_total_loss(self, x, y, logits, z, training=False):
        labels = _labels(y, "label", self.method_name)
        g_logits, _ = self.biased_backbone(x, training=bool(training and self.reference_g_bn_drift))
        g_logits = ops.stop_gradient(g_logits)
        gate = ops.softplus(self.gate(z))
        total, mixed_ce, entropy = learned_mixin_loss(labels, logits, g_logits, gate,
                                                      self.lm_entropy_weight)
        return total, {"ce_loss": cross_entropy(labels, logits), "lm_mixed_ce": mixed_ce,
                       "lm_entropy": entropy, "lm_gate": ops.mean(gate)}

    def get_config(self):
        return {**super().get_config(), "lm_entropy_weight": self.lm_entropy_weight,
                "lm_pretrain_epochs": self.lm_pretrain_epochs,
                "reference_untrained_gate": self.reference_untrained_gate,
                "reference_g_bn_drift": self.reference_g_bn_drift}
