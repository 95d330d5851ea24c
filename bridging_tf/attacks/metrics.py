"""Metrics for attribute-inference probes, and mean ± CI over seeds.

Every probe is reported with the chance levels beside it: ``1/K`` (uniform)
and the majority-class rate of the evaluated split. For binary private
attributes the AUC (rank based, ties averaged) and the attacker advantage
``max |TPR - FPR|`` over all thresholds are added.

Example::

    m = classification_metrics(y_true, probs, num_classes=2)
    m["accuracy"], m["chance_majority"], m["auc"], m["advantage"]
    mean, half = mean_ci([0.91, 0.93, 0.92])     # 95 % t-interval half-width
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple

import numpy as np


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls)) if recalls else float("nan")


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1)."""
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order]
    # Cut only where the score changes so tied scores move together.
    cut = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[cut]
    fp = np.cumsum(~y)[cut]
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def auc_score(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score_pos > score_neg) + 0.5 P(tie) (Mann–Whitney)."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def attacker_advantage(y_true: np.ndarray, scores: np.ndarray) -> float:
    """``max |TPR - FPR|`` over thresholds (tensorflow/privacy's definition)."""
    if len(np.unique(np.asarray(y_true))) < 2:
        return float("nan")
    fpr, tpr = roc_curve(y_true, scores)
    return float(np.max(np.abs(tpr - fpr)))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           num_classes: Optional[int] = None) -> Dict[str, float]:
    """Accuracy, balanced accuracy and chance levels (+ AUC/advantage if binary).

    Args:
      y_true: int labels ``[N]``.
      probs: class probabilities or scores ``[N, K]``.
      num_classes: ``K`` (defaults to ``probs.shape[1]``).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs)
    k = int(num_classes or probs.shape[1])
    y_pred = np.argmax(probs, axis=1)
    counts = np.bincount(y_true, minlength=k)
    out = {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "chance_uniform": 1.0 / k,
        "chance_majority": float(counts.max() / max(len(y_true), 1)),
        "n": int(len(y_true)),
    }
    if k == 2:
        score = probs[:, 1] - probs[:, 0]  # monotone in P(class 1) for softmax outputs
        out["auc"] = auc_score(y_true == 1, score)
        out["advantage"] = attacker_advantage(y_true == 1, score)
    return out


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Tuple[float, float]:
    """Mean and the half-width of a Student-t confidence interval.

    NaN values are dropped; with fewer than two values the half-width is NaN.

    Example::

        mean_ci([0.5, 0.6, 0.7])   # (0.6, 0.248...)
    """
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and not _isnan(v)], np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = t.ppf(0.5 + confidence / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True
