"""Attacks on a frozen bottleneck: does it still leak the private attribute?

Flat, tensorflow/privacy-style API:

- :class:`AttackInputData` — embeddings + private labels per split (and images
  for the decoder);
- :class:`AttackType` — ``LINEAR`` (the paper's probe), ``MLP`` (a stronger
  adversary), ``DECODER`` (reconstruction of the input, unverified design);
- :func:`run_attacks` -> :class:`AttackResults` with ``summary()``,
  ``to_table()``, ``to_dict()``, ``save()`` / ``load()`` (JSON + ``.npz``);
- :func:`gaussian_pc_view` — Gaussians per private class on the first
  principal component (paper Fig. 8); :func:`mean_ci` — mean ± CI over seeds.

Example::

    from bridging_tf.attacks import AttackInputData, AttackType, run_attacks
    data = AttackInputData(train_embeddings=z_tr, train_private=c_tr,
                           eval_embeddings={"unbiased": z_te},
                           eval_private={"unbiased": c_te}, num_private=10)
    results = run_attacks(data, [AttackType.LINEAR, AttackType.MLP], seed=0)
    print(results.summary())
"""

from bridging_tf.attacks.api import DEFAULT_OPTIONS, run_attacks
from bridging_tf.attacks.data import AttackInputData, AttackType
from bridging_tf.attacks.gaussian import (
                                          GaussianView,
                                          bhattacharyya_coefficient,
                                          first_principal_component,
                                          gaussian_pc_view,
)
from bridging_tf.attacks.metrics import (
                                          attacker_advantage,
                                          auc_score,
                                          balanced_accuracy,
                                          classification_metrics,
                                          mean_ci,
)
from bridging_tf.attacks.results import AttackResult, AttackResults

__all__ = [
    "AttackInputData", "AttackResult", "AttackResults", "AttackType", "DEFAULT_OPTIONS",
    "GaussianView", "attacker_advantage", "auc_score", "balanced_accuracy",
    "bhattacharyya_coefficient", "classification_metrics", "first_principal_component",
    "gaussian_pc_view", "mean_ci", "run_attacks",
]
