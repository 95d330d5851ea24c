"""PCA / Gaussian view of the embeddings (paper Fig. 8, METHODS.md §8.4).

Fits the first principal component jointly on all embeddings (centred, no
whitening — sklearn ``PCA(1)``), projects onto it, and fits a 1-D Gaussian
per private class by maximum likelihood (mean, *population* std, as
``scipy.stats.norm.fit``). The overlap of two classes is the Bhattacharyya
coefficient ``BC = exp(-BD)``,
``BD = (μ1-μ2)² / (4(σ1²+σ2²)) + ½ ln((σ1²+σ2²) / (2σ1σ2))``:
1 = identical distributions, 0 = disjoint. With more than two classes the
pairwise matrix and its off-diagonal mean are reported.

The sign of a principal component is arbitrary; like sklearn ≥ 1.5 we make the
largest-magnitude entry of the component positive.

Example::

    view = gaussian_pc_view(z_test, gender_test, names=["male", "female"])
    view.classes[0]["mean"], view.overlap
    view.to_csv("pc_gaussians.csv")
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from bridging_tf.errors import UserError


def first_principal_component(x: np.ndarray):
    """(component [D], mean [D], projections [N], explained_variance_ratio)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comp = vt[0]
    if comp[np.argmax(np.abs(comp))] < 0:
        comp = -comp
    total = float(np.sum(s ** 2))
    ratio = float(s[0] ** 2 / total) if total > 0 else float("nan")
    return comp, mean, xc @ comp, ratio


def bhattacharyya_coefficient(mu1: float, s1: float, mu2: float, s2: float) -> float:
    """Overlap of N(mu1, s1²) and N(mu2, s2²) in [0, 1]."""
    v = s1 ** 2 + s2 ** 2
    if s1 <= 0 or s2 <= 0:
        return 1.0 if (mu1 == mu2 and s1 == s2) else 0.0
    bd = (mu1 - mu2) ** 2 / (4.0 * v) + 0.5 * math.log(v / (2.0 * s1 * s2))
    return float(math.exp(-bd))


@dataclasses.dataclass
class GaussianView:
    """Result of :func:`gaussian_pc_view`: per-class Gaussians on PC1 and their overlap."""

    projections: np.ndarray
    private: np.ndarray
    classes: List[Dict[str, float]]
    overlap_matrix: np.ndarray
    explained_variance_ratio: float
    component: np.ndarray
    mean: np.ndarray

    @property
    def overlap(self) -> float:
        """Bhattacharyya coefficient (2 classes) or the mean over class pairs."""
        k = len(self.overlap_matrix)
        if k < 2:
            return float("nan")
        return float(self.overlap_matrix[~np.eye(k, dtype=bool)].mean())

    def to_dict(self) -> Dict[str, object]:
        return {"classes": self.classes, "overlap": self.overlap,
                "overlap_matrix": self.overlap_matrix.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio,
                "n": int(len(self.projections))}

    def curves(self, num: int = 200) -> Dict[str, np.ndarray]:
        """x grid and the pdf of each class (columns ``pdf_<name>``)."""
        from scipy.stats import norm

        lo = min(c["mean"] - 4 * max(c["std"], 1e-6) for c in self.classes)
        hi = max(c["mean"] + 4 * max(c["std"], 1e-6) for c in self.classes)
        x = np.linspace(lo, hi, num)
        out = {"x": x}
        for c in self.classes:
            out[f"pdf_{c['name']}"] = norm.pdf(x, c["mean"], max(c["std"], 1e-12))
        return out

    def to_csv(self, path) -> Path:
        """Write the per-sample projections (``projection,private``) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["projection", "private"])
            for p, c in zip(self.projections, self.private):
                w.writerow([f"{p:.6g}", int(c)])
        return path

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"projections": self.projections, "private": self.private,
                "overlap_matrix": self.overlap_matrix, "component": self.component,
                "mean": self.mean}

    @classmethod
    def from_saved(cls, info: dict, arrays: Dict[str, np.ndarray]) -> "GaussianView":
        return cls(projections=arrays["projections"], private=arrays["private"],
                   classes=list(info["classes"]), overlap_matrix=arrays["overlap_matrix"],
                   # NaN is saved as null in JSON (all-identical embeddings: no variance)
                   explained_variance_ratio=float("nan")
                   if info.get("explained_variance_ratio") is None
                   else float(info["explained_variance_ratio"]),
                   component=arrays["component"], mean=arrays["mean"])


def gaussian_pc_view(embeddings: np.ndarray, private: np.ndarray,
                     names: Optional[Sequence[str]] = None) -> GaussianView:
    """Project on PC1 and fit one Gaussian per private class (see module doc)."""
    x = np.asarray(embeddings)
    y = np.asarray(private).astype(np.int64)
    if x.ndim != 2 or len(x) < 2:
        raise UserError(f"PCA view needs a 2-D array of at least 2 embeddings, got shape {x.shape}")
    if len(y) != len(x):
        raise UserError(f"PCA view: {len(x)} embeddings but {len(y)} private labels")
    comp, mean, proj, ratio = first_principal_component(x)
    classes = []
    for c in np.unique(y):
        p = proj[y == c]
        name = str(names[c]) if names is not None and c < len(names) else str(int(c))
        classes.append({"label": int(c), "name": name, "mean": float(p.mean()),
                        "std": float(p.std()), "count": int(len(p))})
    k = len(classes)
    mat = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            mat[i, j] = mat[j, i] = bhattacharyya_coefficient(
                classes[i]["mean"], classes[i]["std"], classes[j]["mean"], classes[j]["std"])
    return GaussianView(proj.astype(np.float32), y.astype(np.int32), classes, mat, ratio,
                        comp.astype(np.float32), mean.astype(np.float32))
