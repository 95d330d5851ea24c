"""Datasets: one module per dataset, all returning a :class:`DataBundle`.

Use :func:`load` with a registry name; each loader takes keyword options
(``data_dir``, ``seed``, ...) and raises :class:`bridging_tf.errors.UserError`
with a one-line message when the data is missing or malformed.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, FrozenSet, Optional

from bridging_tf.datasets.base import ArraySplit, DataBundle, Split, normalize_images
from bridging_tf.errors import UserError

# name -> "module:function"; modules are imported lazily so that a user of
# Biased-MNIST never pays for (or needs the data of) the face/X-ray loaders.
_REGISTRY: Dict[str, str] = {
    "biased_mnist": "bridging_tf.datasets.biased_mnist:load_biased_mnist",
    "celeba": "bridging_tf.datasets.celeba:load_celeba",
    "imdb": "bridging_tf.datasets.imdb:load_imdb",
    "utkface": "bridging_tf.datasets.utkface:load_utkface",
    "siim": "bridging_tf.datasets.siim:load_siim",
}


# Optional ingestion step: name -> "module:function(data_dir, output_dir, **options) -> dict".
# When a dataset has one (e.g. SIIM: DICOM -> TFRecord shards), the pipeline's
# ingest component runs it once into an artifact directory and the loader is
# then called with ``data_dir=<that directory>``.
_PREPARE: Dict[str, str] = {
    "siim": "bridging_tf.datasets.siim:prepare_siim",
}


def get_preparer(name: str):
    """The dataset's ingestion function, or ``None`` when it reads raw files directly."""
    target = _PREPARE.get(name)
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def register(name: str, target: str) -> None:
    """Register ``name`` -> ``"module.path:function"`` (lazy import)."""
    _REGISTRY[name] = target


def available() -> list:
    return sorted(_REGISTRY)


def get_loader(name: str) -> Callable[..., DataBundle]:
    if name not in _REGISTRY:
        raise UserError(f"--dataset={name!r} is not known; choose one of {', '.join(available())}")
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def load(name: str, **options) -> DataBundle:
    """Build the named dataset's :class:`DataBundle`."""
    return get_loader(name)(**options)


def options(name: str) -> Optional[FrozenSet[str]]:
    """The keyword options dataset ``name`` reads: the named parameters of its loader
    (and of its ingestion step, when it has one), read from their signatures.

    ``None`` when a loader takes only ``**kwargs`` (nothing can be said). The CLI
    refuses an option the chosen dataset does not read instead of ignoring it::

        "image_size" in options("celeba")        # True
        "image_size" in options("biased_mnist")  # False: Biased-MNIST is always 28x28
    """
    import inspect

    funcs = [get_loader(name)]
    if get_preparer(name) is not None:
        funcs.append(get_preparer(name))
    named = set()
    for func in funcs:
        for param in inspect.signature(func).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                named.add(param.name)
    return frozenset(named) or None


__all__ = ["ArraySplit", "DataBundle", "Split", "available", "get_loader", "get_preparer", "load",
           "normalize_images", "options", "register"]
