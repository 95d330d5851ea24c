"""Biased-MNIST preset: the paper's recipe (METHODS.md §2, §8.1).

SimpleConvNet, Adam lr 1e-3 with coupled L2 weight decay 1e-4, StepLR(20, 0.1)
per epoch, batch 256, 80 epochs, train ρ = 0.997.
"""

DEFAULTS = {
    "backbone": "simple_conv",
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "lr_schedule": "step",
    "batch_size": 256,
    "epochs": 80,
    "rho": 0.997,
}
