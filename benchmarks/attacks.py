"""Attack-suite seconds: the paper's linear probe and the MLP probe.

Synthetic but realistic inputs: ``n`` × ``dim`` float32 embeddings in which
the private class (10 classes) is partly linearly decodable (class means on
a random direction set plus unit Gaussian noise), 10k train / 2k val / 10k
eval by default — the shape of a Biased-MNIST attack (10k × 128). Timing
covers what ``run_attacks`` does for that attack: fit + predict on every
split + metrics (``AttackResult.wall_time_s``); the linear probe's fit alone
(``train_linear_probe``) is timed separately.
"""

from __future__ import annotations

import time
from typing import Dict

import numpy as np

from benchmarks.timing import median


def synthetic_attack_data(
    n: int = 10_000,
    dim: int = 128,
    num_private: int = 10,
    n_eval: int = 10_000,
    n_val: int = 2_000,
    seed: int = 0,
):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.0, (num_private, dim)).astype(np.float32)

    def draw(m):
        y = rng.integers(0, num_private, m).astype(np.int32)
        return (means[y] * 0.3 + rng.normal(0, 1, (m, dim))).astype(np.float32), y

    (xt, yt), (xv, yv), (xe, ye) = draw(n), draw(n_val), draw(n_eval)
    return xt, yt, xv, yv, xe, ye


def bench_attacks(
    *, n: int, dim: int, linear_epochs: int, mlp_max_epochs: int, repeats: int = 1, log=print
) -> Dict[str, object]:
    from bridging_tf.attacks import AttackInputData, AttackType, run_attacks
    from bridging_tf.attacks.probes import train_linear_probe

    xt, yt, xv, yv, xe, ye = synthetic_attack_data(n, dim, n_eval=n, n_val=max(n // 5, 20))
    data = AttackInputData(
        train_embeddings=xt,
        train_private=yt,
        val_embeddings=xv,
        val_private=yv,
        eval_embeddings={"unbiased": xe},
        eval_private={"unbiased": ye},
        num_private=10,
    )
    out: Dict[str, object] = {
        "n_train": n,
        "dim": dim,
        "linear_epochs": linear_epochs,
        "mlp_max_epochs": mlp_max_epochs,
    }
    fit_s, lin_s, mlp_s, mlp_epochs = [], [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        train_linear_probe(xt, yt, 10, epochs=linear_epochs, seed=r)
        fit_s.append(time.perf_counter() - t0)
        res = run_attacks(
            data,
            [AttackType.LINEAR],
            seed=r,
            verbose=0,
            pca_view=False,
            linear_epochs=linear_epochs,
        )
        lin_s.append(res.get(AttackType.LINEAR).wall_time_s)
        res = run_attacks(
            data, [AttackType.MLP], seed=r, verbose=0, pca_view=False, mlp_max_epochs=mlp_max_epochs
        )
        mlp = res.get(AttackType.MLP)
        mlp_s.append(mlp.wall_time_s)
        mlp_epochs.append(len(mlp.history.get("loss", [])))
        log(
            f"  attacks repeat {r + 1}/{repeats}: linear fit {fit_s[-1]:.2f}s, linear suite "
            f"{lin_s[-1]:.2f}s, mlp suite {mlp_s[-1]:.2f}s ({mlp_epochs[-1]} epochs)"
        )
    out.update(
        linear_fit_s_median=median(fit_s),
        linear_suite_s_median=median(lin_s),
        mlp_suite_s_median=median(mlp_s),
        mlp_epochs_run=mlp_epochs,
        linear_fit_s=fit_s,
        linear_suite_s=lin_s,
        mlp_suite_s=mlp_s,
    )
    return out
