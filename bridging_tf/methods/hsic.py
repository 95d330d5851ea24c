"""HSIC with RBF kernels: the unbiased estimator used by ReBias (METHODS.md §6).

``HSIC_1(X, Y)`` (Song et al. 2012) on a batch of ``m >= 4`` paired feature
vectors, with ``K̃``/``L̃`` the RBF kernel matrices of ``X``/``Y`` with zero
diagonal::

    HSIC_1 = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((m-1)(m-2)) - 2/(m-2) · 1ᵀK̃L̃1] / (m(m-3))

``k(a, b) = exp(-||a - b||² / (2σ²))``. ReBias uses a fixed ``σ = 1`` on
Biased-MNIST; ``sigma=None`` (``"median"`` mode) uses the median heuristic
``σ = sqrt(median of the off-diagonal pairwise squared distances)`` of the
batch itself (the reference recomputes it once per epoch over 25% of the
training batches, ImageNet only; per-batch is the cheap, stateless version).
The reference zeroes the diagonal with a broadcasting quirk that gives the
same value for RBF kernels (METHODS.md §11.9); here the diagonal is zeroed
explicitly. Both traces are ``O(m²)``: ``tr(K̃L̃) = Σ K̃ ⊙ L̃`` (symmetric
kernels) and ``1ᵀK̃L̃1 = (K̃1)·(L̃1)``, so there is no ``m×m`` matmul.

Batches with fewer than 4 samples have no unbiased estimate; the value is 0
there (a ragged last batch then contributes nothing).

:func:`delta_kernel` (``L_ij = 1[p_i = p_j]``) is the kernel on a class label
that ``hsic_private`` pairs with the RBF kernel on the bottleneck.

Example::

    value = hsic_unbiased(h_f, h_g, sigma_x=1.0, sigma_y=1.0)   # scalar
    layer = RbfHSIC(sigma=1.0)
    value = layer(h_f, h_g)
"""

from __future__ import annotations

import keras
from keras import ops

SIGMA_MODES = ("fixed", "median")


def pairwise_sq_distances(x):
    """``D_ij = ||x_i - x_j||²`` for the rows of ``x`` (flattened), clipped at 0."""
    x = ops.convert_to_tensor(x)
    x = ops.reshape(x, (ops.shape(x)[0], -1))
    sq = ops.sum(ops.square(x), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    return ops.maximum(d2, 0.0)


def median_sigma(d2):
    """Median heuristic from squared distances: ``sqrt(median_{i≠j} D_ij)``, gradient-free.

    Uses a sort (no boolean masks) so it stays XLA-compatible.
    """
    d2 = ops.stop_gradient(d2)
    m = ops.shape(d2)[0]
    eye = ops.eye(m, dtype=d2.dtype)
    # diagonal -> +inf so it sorts last; take the median of the m(m-1) off-diagonal values
    flat = ops.sort(ops.reshape(d2 + eye * 1e30, (-1,)))
    n = m * (m - 1)
    lo = ops.maximum((n - 1) // 2, 0)
    hi = ops.maximum(n // 2, 0)
    med = 0.5 * (ops.take(flat, lo) + ops.take(flat, hi))
    return ops.sqrt(ops.maximum(med, 1e-12))


def rbf_kernel(x, sigma=1.0):
    """RBF kernel matrix ``exp(-||x_i - x_j||² / (2σ²))``; ``sigma=None`` = median heuristic."""
    d2 = pairwise_sq_distances(ops.cast(x, "float32"))
    if sigma is None:
        sigma = median_sigma(d2)
    return ops.exp(-d2 / (2.0 * ops.square(ops.cast(sigma, d2.dtype))))


def delta_kernel(labels, num_classes: int):
    """Delta kernel on integer labels: ``L_ij = 1[labels_i == labels_j]`` (float32, ``m×m``)."""
    onehot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), int(num_classes),
                         dtype="float32")
    return ops.matmul(onehot, ops.transpose(onehot))


def hsic_unbiased_from_kernels(kx, ky):
    """Unbiased HSIC from two symmetric ``m×m`` kernel matrices (0 when ``m < 4``)."""
    k = ops.convert_to_tensor(kx)
    lk = ops.cast(ops.convert_to_tensor(ky), k.dtype)
    m_int = ops.shape(k)[0]
    m = ops.cast(m_int, k.dtype)
    off = 1.0 - ops.eye(m_int, dtype=k.dtype)
    kt = k * off
    lt = lk * off
    trace = ops.sum(kt * lt)                                   # tr(K̃L̃), K̃, L̃ symmetric
    sum_k = ops.sum(kt)
    sum_l = ops.sum(lt)
    ones_kl_ones = ops.sum(ops.sum(kt, axis=0) * ops.sum(lt, axis=0))   # 1ᵀK̃L̃1
    valid = m >= 4.0
    safe = lambda v: ops.where(valid, v, 1.0)  # noqa: E731 - avoid 0/0 (and NaN grads) for m < 4
    value = (trace + sum_k * sum_l / safe((m - 1.0) * (m - 2.0))
             - 2.0 * ones_kl_ones / safe(m - 2.0)) / safe(m * (m - 3.0))
    return ops.where(valid, value, ops.zeros_like(value))


def hsic_unbiased(x, y, sigma_x=1.0, sigma_y=1.0):
    """Unbiased RBF-kernel HSIC between paired batches ``x`` [m, ...] and ``y`` [m, ...].

    ``sigma_x``/``sigma_y``: kernel widths; ``None`` = per-batch median heuristic.
    """
    return hsic_unbiased_from_kernels(rbf_kernel(x, sigma_x), rbf_kernel(y, sigma_y))


@keras.saving.register_keras_serializable(package="bridging_tf")
class RbfHSIC(keras.layers.Layer):
    """``(x, y) -> HSIC_1(x, y)`` with RBF kernels, as a serialisable layer.

    Args:
      sigma: kernel width for both inputs in ``"fixed"`` mode (ReBias: 1.0).
      sigma_mode: ``"fixed"`` or ``"median"`` (per-batch median heuristic).
    """

    def __init__(self, sigma: float = 1.0, sigma_mode: str = "fixed", **kwargs):
        super().__init__(**kwargs)
        if sigma_mode not in SIGMA_MODES:
            raise ValueError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        if sigma_mode == "fixed" and not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.sigma_mode = sigma_mode
        self.built = True  # no weights

    def call(self, x, y):
        s = None if self.sigma_mode == "median" else self.sigma
        return hsic_unbiased(x, y, s, s)

    def compute_output_shape(self, *args, **kwargs):
        return ()

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "sigma_mode": self.sigma_mode}
