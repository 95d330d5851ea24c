"""RUBi (Cadene et al. 2019) as run in the ReBias framework (METHODS.md §4).

Two networks: the target f and the biased g (1×1 SimpleConvNet on
Biased-MNIST). Each training step:

- **g** is trained with its own cross-entropy on the target labels and its
  own optimizer (``g_ce``);
- a **bias head** ``q = W·stop_gradient(h_g) + b`` on g's bottleneck gives bias
  logits; ``ops.stop_gradient`` is the reference's gradient-multiplier-by-0,
  so nothing from the RUBi loss reaches g;
- **f** minimises ``CE(ℓ_f ⊙ sigmoid(q), y) + w · CE(q, y)``
  (``rubi_loss`` + ``rubi_weight`` · ``bias_ce``); the head is stepped by f's
  optimizer. No plain ``CE(ℓ_f, y)`` is in the objective.

At test time (``call``, ``embed``, ``encoder``, the export) only f is used.

Trackers: ``loss`` (f's objective), ``ce_loss`` = ``CE(ℓ_f, y)`` — f's *own*
cross-entropy, reported for comparability with the other methods and the
test-time prediction, **not** part of the RUBi objective —, ``rubi_loss``
(CE of the masked logits), ``bias_ce`` (CE of the bias head), ``g_ce`` (g's
CE), ``accuracy`` (f's logits).

Differences from the reference, on purpose:

- the reference never steps the bias head (a bug, METHODS.md §4/§11.1:
  ``fc_rubi`` stays at its random init). Here it is trained by default;
  ``reference_untrained_head=True`` reproduces the bug (to compare with the
  paper's RUBi numbers);
- the reference runs g forward twice per iteration (once for g's update,
  once after it for the mask); here g runs forward once per step and the mask
  uses those (pre-update) features — one Adam step of difference, no gradient
  flows there anyway, and each forward is computed once.

Example::

    f = simple_convnet(kernel_size=7, width=0.25)
    g = build_biased_backbone("simple_conv", width=0.25)
    model = RUBiModel(f, g, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))   # g gets a clone
    model.fit(train_ds, epochs=1)   # loss, ce_loss, rubi_loss, bias_ce, g_ce, accuracy
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.methods.base import _labels, cross_entropy
from bridging_tf.methods.biased import BiasedBranchModel
from bridging_tf.models.layers import torch_dense
from bridging_tf.options import RUBiHparams


def rubi_loss(labels, f_logits, bias_logits, weight: float = RUBiHparams.rubi_weight):
    """``(total, masked_ce, bias_ce)`` with ``total = CE(ℓ_f ⊙ σ(q), y) + weight·CE(q, y)``."""
    f_logits, bias_logits = ops.cast(f_logits, "float32"), ops.cast(bias_logits, "float32")
    masked = f_logits * ops.sigmoid(bias_logits)
    masked_ce = cross_entropy(labels, masked)
    bias_ce = cross_entropy(labels, bias_logits)
    return masked_ce + weight * bias_ce, masked_ce, bias_ce


@keras.saving.register_keras_serializable(package="bridging_tf")
class RUBiModel(BiasedBranchModel):
    """RUBi: f's logits masked by a bias branch on a jointly trained biased network g.

    Args:
      backbone: f, ``image -> (logits, bottleneck)``.
      biased_backbone: g, same contract (``build_biased_backbone``).
      rubi_weight: weight of the question loss ``CE(q, y)`` (reference: 1.0).
      reference_untrained_head: reproduce the reference bug (head never trained).
      weight_decay: coupled L2, applied to f, the head and g.
    """

    method_name = "rubi"
    loss_term_names = ("rubi_loss", "bias_ce", "g_ce")
    HPARAMS = RUBiHparams

    def __init__(self, backbone, biased_backbone, rubi_weight: float = RUBiHparams.rubi_weight,
                 reference_untrained_head: bool = RUBiHparams.reference_untrained_head,
                 weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, biased_backbone, weight_decay=weight_decay, **kwargs)
        self.rubi_weight = float(rubi_weight)
        self.reference_untrained_head = bool(reference_untrained_head)
        dim = self._bottleneck_dim(biased_backbone)
        num_classes = int(backbone.outputs[0].shape[-1])
        self.bias_head = torch_dense(num_classes, dim, name="rubi_head")
        self.bias_head.build((None, dim))

    def extra_f_variables(self):
        return [] if self.reference_untrained_head else list(self.bias_head.trainable_variables)

    def compute_total_loss(self, x, y, logits, z, training=False, g_outputs=None):
        """f's RUBi objective; ``g_outputs=(g_logits, h_g)`` avoids a second g forward."""
        labels = _labels(y, "label", self.method_name)
        if g_outputs is None:
            g_outputs = self.biased_backbone(x, training=training)
        g_logits, h_g = g_outputs
        q = self.bias_head(ops.stop_gradient(h_g))
        total, masked_ce, bias_ce = rubi_loss(labels, logits, q, self.rubi_weight)
        return total, {"ce_loss": cross_entropy(labels, logits), "rubi_loss": masked_ce,
                       "bias_ce": bias_ce, "g_ce": cross_entropy(labels, g_logits)}

    def train_step(self, data):
        x, y = self._unpack(data)
        f_vars = self.trainable_for_step()
        g_vars = self.g_variables
        f_factor = self.loss_factor(self.optimizer)
        g_factor = self.loss_factor(self.g_optimizer)
        with tf.GradientTape() as f_tape, tf.GradientTape() as g_tape:
            logits, z = self.backbone(x, training=True)
            g_outputs = self.biased_backbone(x, training=True)
            total, parts = self.compute_total_loss(x, y, logits, z, training=True,
                                                   g_outputs=g_outputs)
            f_scaled = self.scaled(total, f_factor)
            g_scaled = self.scaled(parts["g_ce"], g_factor)
        self.apply_player_step(self.g_optimizer, g_tape, g_scaled, g_vars, g_factor)
        self.apply_player_step(self.optimizer, f_tape, f_scaled, f_vars, f_factor)
        return self.update_trackers(y, logits, total, parts)

    def get_config(self):
        return {**super().get_config(), "rubi_weight": self.rubi_weight,
                "reference_untrained_head": self.reference_untrained_head}
