"""Worst-case leakage: the strongest attacker's numbers, not the weakest one's.

The paper reports the linear probe only; a 2-hidden-layer MLP or the decoder
can recover the private attribute from a bottleneck that the linear probe
finds nothing in. The headline of a run is therefore the **highest** private
accuracy over every attacker that was run with the ``sound`` protocol —
trained on the attacker split, evaluated on a held-out eval split (never on
its own training data) — on the primary eval split:

- ``linear`` and ``mlp``: ``accuracy``, ``balanced_accuracy`` and
  ``chance_uniform`` (= 1/K) of the probe;
- ``decoder`` (only with a colour palette, i.e. Biased-MNIST): the colour
  read back from the reconstruction, ``colour_accuracy`` /
  ``colour_balanced_accuracy`` / ``colour_chance_uniform``.

Each ``*_worst`` value is the maximum over those attackers *of that metric*
(a worst case per metric, so accuracy and balanced accuracy may come from
different attackers on imbalanced data); ``private_attacker_worst`` names
the attacker behind ``private_accuracy_worst`` (ties go to the first in
linear, mlp, decoder order). ``private_advantage_worst`` is the normalised
advantage of the best balanced accuracy, ``(bacc - 1/K) / (1 - 1/K)``: 0 at
chance, 1 for a perfect attacker (this is not the binary
``max |TPR - FPR|`` ``advantage`` of :func:`classification_metrics`).

Example::

    from bridging_tf.attacks.worst import worst_case
    worst_case({"sound": results}, "unbiased")
    # {"private_accuracy_worst": 0.99, "private_attacker_worst": "mlp", ...}
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Union

from bridging_tf.attacks.data import AttackType
from bridging_tf.attacks.results import AttackResults

#: the keys :func:`worst_case` returns (when any sound attacker reported on the split).
WORST_KEYS = ("private_accuracy_worst", "private_attacker_worst",
              "private_balanced_accuracy_worst", "private_advantage_worst")
#: the only protocol whose attackers count (independent attacker set, held-out evaluation).
SOUND = "sound"

# attack -> (accuracy key, balanced-accuracy key, 1/K key) in its per-split metrics.
_KEYS = {
    AttackType.LINEAR: ("accuracy", "balanced_accuracy", "chance_uniform"),
    AttackType.MLP: ("accuracy", "balanced_accuracy", "chance_uniform"),
    AttackType.DECODER: ("colour_accuracy", "colour_balanced_accuracy", "colour_chance_uniform"),
}


def _value(v) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def normalised_advantage(balanced_accuracy: float, num_classes: int) -> float:
    """``(bacc - 1/K) / (1 - 1/K)``: 0 at chance, 1 for a perfect attacker (NaN for K < 2)."""
    k = int(num_classes)
    if k < 2 or _value(balanced_accuracy) is None:
        return float("nan")
    return (float(balanced_accuracy) - 1.0 / k) / (1.0 - 1.0 / k)


def attacker_scores(results: AttackResults, split: str) -> Dict[str, dict]:
    """``attack -> {"accuracy", "balanced_accuracy", "chance_uniform"}`` on ``split``.

    Attackers without a private-label prediction on ``split`` (a decoder
    without a palette) are left out.
    """
    out = {}
    for t in AttackType:  # a fixed order: linear, mlp, decoder
        if t not in results:
            continue
        m = results.get(t).per_split.get(split) or {}
        acc_key, bal_key, chance_key = _KEYS[t]
        acc = _value(m.get(acc_key))
        if acc is None:
            continue
        out[t.value] = {"accuracy": acc, "balanced_accuracy": _value(m.get(bal_key)),
                        "chance_uniform": _value(m.get(chance_key))}
    return out


def worst_case(attacks: Union[Mapping[str, AttackResults], AttackResults],
               split: Optional[str] = None) -> dict:
    """The ``*_worst`` keys (see the module doc) from the ``sound`` attackers on ``split``.

    Args:
      attacks: ``protocol -> AttackResults`` (only ``"sound"`` is read; a run
        with ``--attack_protocol=paper`` has only its sound *linear* probe
        there), or one :class:`AttackResults` taken to be the sound one.
      split: the primary eval split (default: the results' own primary split).

    Returns ``{}`` when no sound attacker reported on ``split``.
    """
    results = attacks if isinstance(attacks, AttackResults) else attacks.get(SOUND)
    if results is None:
        return {}
    split = split or results.primary_split
    scores = attacker_scores(results, split) if split else {}
    if not scores:
        return {}
    attacker = None
    for name, s in scores.items():
        if attacker is None or s["accuracy"] > scores[attacker]["accuracy"]:
            attacker = name
    out = {"private_accuracy_worst": scores[attacker]["accuracy"],
           "private_attacker_worst": attacker}
    balanced = [(s["balanced_accuracy"], s["chance_uniform"]) for s in scores.values()
                if s["balanced_accuracy"] is not None]
    if balanced:
        bacc, chance = max(balanced, key=lambda t: t[0])
        out["private_balanced_accuracy_worst"] = bacc
        if chance:
            out["private_advantage_worst"] = normalised_advantage(bacc, round(1.0 / chance))
    return out


__all__ = ["SOUND", "WORST_KEYS", "attacker_scores", "normalised_advantage", "worst_case"]
