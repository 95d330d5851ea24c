"""SIIM-FISABIO-RSNA preset: the paper's recipe (Sec. 4 setup, Sec. 4.3, Table 4).

DenseNet-121 on 448×448 chest X-rays, SGD (momentum 0.9) lr 0.1, weight decay
1e-4, batch 16; lr ÷10 after 5 epochs without validation-loss improvement,
training stops once the lr falls below 1e-3 (``lr_schedule="plateau"``,
``plateau_patience=5``, ``min_lr=1e-3``); ``epochs`` is only the upper bound.

EnD "low" / "high" (Table 4): the paper only says the regulariser weighs
≈1 % ("low") and ≈10 % ("high") of the minimised objective. With
``alpha = beta = w`` the share is ``w (R⊥ + R∥) / (CE + w (R⊥ + R∥))``.
:data:`END_WEIGHTS` fixes ``w`` at initialisation, where CE ≈ ln 2 = 0.69 and
R⊥ + R∥ ≈ 0.61 (measured: 0.07 + 0.54 on a freshly initialised ``end``
DenseNet-121 in training mode, batch 16); :func:`end_weight_for_share`
recomputes ``w`` from a run's own first-epoch trackers (``ce_loss``,
``end_orth``, ``end_par`` in ``history.json``). The preset uses "low";
for "high" pass ``--alpha=0.13 --beta=0.13``.

Example::

    python -m pipelines.run --dataset=siim --method=end --data_dir=/data/siim
    python -m pipelines.run --dataset=siim --method=end --alpha=0.13 --beta=0.13 \\
        --data_dir=/data/siim
"""


def end_weight_for_share(share: float, ce: float, r_orth: float, r_par: float) -> float:
    """``w`` (= alpha = beta) with ``w (r_orth + r_par) = share * (ce + w (r_orth + r_par))``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    return share / (1.0 - share) * ce / (r_orth + r_par)


#: EnD weights for the paper's two settings (alpha = beta; see the module doc).
END_WEIGHTS = {
    "low": round(end_weight_for_share(0.01, 0.69, 0.07, 0.54), 3),    # 0.011
    "high": round(end_weight_for_share(0.10, 0.69, 0.07, 0.54), 2),   # 0.13
}

DEFAULTS = {
    "backbone": "densenet121",
    "optimizer": "sgd",          # momentum 0.9 (the CLI's sgd)
    "lr": 0.1,
    "weight_decay": 1e-4,
    "batch_size": 16,
    "lr_schedule": "plateau",
    "plateau_patience": 5,
    "min_lr": 1e-3,
    "epochs": 100,               # upper bound; the plateau schedule stops the run
    "image_size": 448,
    "alpha": END_WEIGHTS["low"],
    "beta": END_WEIGHTS["low"],
}

#: Smaller recipes (``--scale``; DenseNet-121 has fixed widths): 128-pixel X-rays with a
#: 20-epoch bound on a CPU; 64 pixels and one epoch for a smoke test.
SCALES = {
    "cpu": {"image_size": 128, "epochs": 20},
    "smoke": {"image_size": 64, "batch_size": 8, "epochs": 1},
}
