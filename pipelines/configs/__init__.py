"""Dataset presets for the CLI: ``pipelines/configs/<dataset>.py`` with a ``DEFAULTS`` dict.

A preset holds flag values (keys are flag names: ``optimizer``, ``lr``,
``batch_size``, ``lr_schedule``, ``epochs``, ``backbone``, ...) that replace the
generic defaults for that dataset; a flag the user sets explicitly always
wins. Adding a dataset preset needs no edit elsewhere.

A preset may also define ``SCALES = {"cpu": {...}, "smoke": {...}}``: the flags the
smaller recipes change (``--scale=cpu``: reaches the paper's regime on 2 CPU cores;
``--scale=smoke``: seconds, for tests and the notebook). ``--scale=paper`` (the
default) is ``DEFAULTS`` alone.

Example (``pipelines/configs/siim.py``)::

    DEFAULTS = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "lr_schedule": "plateau"}
    SCALES = {"smoke": {"image_size": 64, "epochs": 1}}
"""

from __future__ import annotations

import importlib
import re

from bridging_tf.options import SCALES, check_value  # noqa: F401  (SCALES: the choices)


def _module(dataset: str):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dataset or ""):
        return None
    try:
        return importlib.import_module(f"pipelines.configs.{dataset}")
    except ModuleNotFoundError as err:
        if err.name == f"pipelines.configs.{dataset}":
            return None
        raise


def load_preset(dataset: str, scale: str = "paper") -> dict:
    """The flags of ``pipelines/configs/<dataset>.py`` at ``scale`` (``{}`` when there is none).

    ``DEFAULTS`` is the published recipe (``scale="paper"``); ``SCALES[scale]`` holds
    only what the smaller recipe changes on top of it.
    """
    module = _module(dataset)
    if module is None:
        return {}
    out = dict(getattr(module, "DEFAULTS", {}))
    if scale != "paper":
        scales = getattr(module, "SCALES", {})
        if scale not in scales:
            from bridging_tf.errors import UserError
            raise UserError(f"--scale={scale}: no {scale!r} recipe for --dataset={dataset} "
                            f"(pipelines/configs/{dataset}.py has "
                            f"{', '.join(['paper', *scales]) or 'none'})")
        out.update(scales[scale])
    return out


def resolve(base: dict, explicit: dict) -> dict:
    """``base`` defaults <- the dataset's recipe at the chosen scale <- ``explicit`` values.

    The one place presets apply: ``pipelines.run.resolve_params`` (a job), and through it
    the sweep's cells and the "does this dataset read this option" check.
    """
    dataset = explicit.get("dataset", base.get("dataset"))
    scale = check_value("scale", explicit.get("scale", base["scale"]))
    out = dict(base)
    preset = load_preset(dataset, scale)
    unknown = sorted(set(preset) - set(base))
    if unknown:
        raise ValueError(f"pipelines/configs/{dataset}.py sets unknown flag(s): {unknown}")
    out.update(preset)
    out.update(explicit)
    out["scale"] = scale
    return out
