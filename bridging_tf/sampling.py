"""The one stratified split (face data sets' test pools, the MLP probe's validation split).

Example::

    kept, held = stratified_holdout(labels, 0.2, np.random.default_rng(0))
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def stratified_holdout(groups, fraction: float,
                       rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices: ``round(fraction * n_g)`` of every group held out.

    Every group keeps at least one example, and one of at least 2 gives one to each side.
    Returns ``(kept, held_out)`` sorted index arrays.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    groups = np.asarray(groups)
    held = []
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        held.append(idx[:min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(groups)), held), held
