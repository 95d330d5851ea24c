"""Dataset presets for the CLI: ``pipelines/configs/<dataset>.py`` with a ``DEFAULTS`` dict.

A preset holds flag values (keys are flag names: ``optimizer``, ``lr``,
``batch_size``, ``lr_schedule``, ``epochs``, ``backbone``, ...) that replace the
generic defaults for that dataset; a flag the user sets explicitly always
wins. Adding a dataset preset needs no edit elsewhere.

Example (``pipelines/configs/siim.py``)::

    DEFAULTS = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "lr_schedule": "plateau"}
"""

from __future__ import annotations

import importlib
import re


def load_preset(dataset: str) -> dict:
    """The ``DEFAULTS`` of ``pipelines/configs/<dataset>.py`` (``{}`` when there is none)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dataset or ""):
        return {}
    try:
        module = importlib.import_module(f"pipelines.configs.{dataset}")
    except ModuleNotFoundError as err:
        if err.name == f"pipelines.configs.{dataset}":
            return {}
        raise
    return dict(getattr(module, "DEFAULTS", {}))


def resolve(base: dict, explicit: dict) -> dict:
    """``base`` defaults <- the preset of the chosen dataset <- ``explicit`` values."""
    dataset = explicit.get("dataset", base.get("dataset"))
    out = dict(base)
    preset = load_preset(dataset)
    unknown = sorted(set(preset) - set(base))
    if unknown:
        raise ValueError(f"pipelines/configs/{dataset}.py sets unknown flag(s): {unknown}")
    out.update(preset)
    out.update(explicit)
    return out
