"""Debiasing methods: Keras model wrappers with a ``train_step`` override.

Every method wraps a backbone returning ``(logits, bottleneck)`` and is
trained with plain ``model.fit``. :data:`METHODS` maps the CLI names to the
classes; ``bridging_tf.methods.<name>`` holds each implementation.
"""

from __future__ import annotations

import importlib
from typing import Dict

from bridging_tf.errors import UserError
from bridging_tf.methods.adversarial import AdversarialModel, GradientReversal
from bridging_tf.methods.base import DebiasModel, add_coupled_weight_decay, cross_entropy
from bridging_tf.methods.biased import BiasedBranchModel, BiasedModel
from bridging_tf.methods.end import EnDModel, EnDRegularizer, end_orthogonal, end_parallel
from bridging_tf.methods.hsic import RbfHSIC, hsic_unbiased
from bridging_tf.methods.hsic_private import HSICPrivateModel, PrivateHSIC
from bridging_tf.methods.learned_mixin import LearnedMixinModel
from bridging_tf.methods.rebias import ReBiasModel
from bridging_tf.methods.rubi import RUBiModel
from bridging_tf.methods.vanilla import VanillaModel

# CLI name -> "module:Class" (imported lazily so one method's import cost is not everyone's).
_REGISTRY: Dict[str, str] = {
    "vanilla": "bridging_tf.methods.vanilla:VanillaModel",
    "end": "bridging_tf.methods.end:EnDModel",
    "biased": "bridging_tf.methods.biased:BiasedModel",
    "rubi": "bridging_tf.methods.rubi:RUBiModel",
    "learned_mixin": "bridging_tf.methods.learned_mixin:LearnedMixinModel",
    "rebias": "bridging_tf.methods.rebias:ReBiasModel",
    # privacy methods (beyond the paper): remove what a non-linear attacker could read
    "adversarial": "bridging_tf.methods.adversarial:AdversarialModel",
    "hsic_private": "bridging_tf.methods.hsic_private:HSICPrivateModel",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def available() -> list:
    return sorted(_REGISTRY)


def build_method(name: str, *, backbone, num_classes: int, num_private: int,
                 biased_backbone=None, weight_decay: float = 0.0, hparams=None):
    """Construct method ``name`` around ``backbone`` (and ``biased_backbone`` if it needs one).

    ``hparams`` may hold every method's flags; only the fields of the method's
    ``HPARAMS`` dataclass are passed on (a missing one: the dataclass's default).
    """
    cls = get_method_class(name)
    hparams = dict(hparams or {})
    kwargs = {k: hparams[k] for k in cls.HPARAMS.names() if hparams.get(k) is not None}
    if cls.uses_private_label:
        kwargs["num_private"] = num_private
    if cls.needs_biased_backbone:
        if biased_backbone is None:
            raise UserError(f"--method={name} needs a biased backbone g for this dataset")
        kwargs["biased_backbone"] = biased_backbone
    try:
        return cls(backbone, weight_decay=weight_decay, **kwargs)
    except ValueError as err:  # a bad hyper-parameter value: one line naming it
        raise UserError(f"--method={name}: {err}") from None


def all_hparams() -> dict:
    """Every registered method's hyper-parameters: flag name -> ``dataclasses.Field``."""
    import dataclasses
    out = {}
    for name in available():
        out.update({f.name: f for f in dataclasses.fields(get_method_class(name).HPARAMS)})
    return out


def get_method_class(name: str):
    if name not in _REGISTRY:
        raise UserError(f"--method={name!r} is not known; choose one of {', '.join(available())}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["AdversarialModel", "BiasedBranchModel", "BiasedModel", "GradientReversal",
           "HSICPrivateModel", "LearnedMixinModel", "PrivateHSIC", "RUBiModel", "RbfHSIC",
           "ReBiasModel", "hsic_unbiased",
           "DebiasModel", "EnDModel", "EnDRegularizer", "VanillaModel", "add_coupled_weight_decay",
           "all_hparams", "available", "build_method", "cross_entropy", "end_orthogonal",
           "end_parallel", "get_method_class",
           "register"]
