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
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def available() -> list:
    return sorted(_REGISTRY)


def build_backbone(name: str, **kwargs):
    """Build backbone ``name`` (``simple_conv``, ...) with its keyword options."""
    if name not in _REGISTRY:
        raise UserError(f"backbone {name!r} is not known; choose one of {', '.join(available())}")
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)(**kwargs)


__all__ = ["L2Normalize", "available", "build_backbone", "register"]
