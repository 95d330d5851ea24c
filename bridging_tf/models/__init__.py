"""Backbones. Each is a functional ``keras.Model`` with one input named
``image`` (float32, normalised) and two outputs ``(logits, bottleneck)``;
the bottleneck is the layer named ``bottleneck`` (what the attacks read).

:func:`build_backbone` is the registry entry point used by the components.
"""

from __future__ import annotations

import importlib
from typing import Dict

from bridging_tf.errors import UserError
from bridging_tf.models.layers import L2Normalize

# name -> "module:function(num_classes=..., variant=..., width=..., input_shape=..., **kw)"
_REGISTRY: Dict[str, str] = {
    "simple_conv": "bridging_tf.models.simple_conv:simple_convnet",
    "resnet18": "bridging_tf.models.resnet18:resnet18",
    "densenet121": "bridging_tf.models.densenet121:densenet121",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def available() -> list:
    return sorted(_REGISTRY)


def get_backbone_builder(name: str):
    """The function that builds backbone ``name``."""
    if name not in _REGISTRY:
        raise UserError(f"backbone {name!r} is not known; choose one of {', '.join(available())}")
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def build_backbone(name: str, **kwargs):
    """Build backbone ``name`` (``simple_conv``, ...) with its keyword options."""
    return get_backbone_builder(name)(**kwargs)


# f's backbone name -> its biased network g (ReBias, RUBi, LearnedMixin, --method=biased).
# simple_conv: the same net with 1×1 kernels (sees per-pixel colour only, METHODS.md §2);
# resnet18 / densenet121: a 7×7-pixel receptive-field net (see biased_nets.py for why).
_BIASED: Dict[str, str] = {
    "simple_conv": "bridging_tf.models.simple_conv:simple_convnet",
    "resnet18": "bridging_tf.models.biased_nets:local_convnet",
    "densenet121": "bridging_tf.models.biased_nets:local_convnet",
}


def build_biased_backbone(f_backbone_name: str, **kwargs):
    """Build the biased network g that goes with target backbone ``f_backbone_name``.

    Takes f's keyword options (``num_classes``, ``width``, ``input_shape``, ...).
    g is always the plain (ReLU, unnormalised) variant: ``variant`` and
    ``kernel_size`` are overridden. Example::

        g = build_biased_backbone("simple_conv", width=0.25)   # 1×1-kernel SimpleConvNet
    """
    if f_backbone_name not in _BIASED:
        raise UserError(f"backbone {f_backbone_name!r} has no biased network g; "
                        f"choose one of {', '.join(sorted(_BIASED))}")
    module, func = _BIASED[f_backbone_name].split(":")
    kwargs = {k: v for k, v in kwargs.items()
              if k not in ("variant", "kernel_size", "name", "pretrained", "weights")}
    if f_backbone_name == "simple_conv":
        kwargs.update(kernel_size=1, variant="vanilla")
    return getattr(importlib.import_module(module), func)(name="biased_" + f_backbone_name,
                                                          **kwargs)


__all__ = ["L2Normalize", "available", "build_backbone", "build_biased_backbone", "register"]
