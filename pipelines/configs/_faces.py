"""The paper's face-experiment recipe shared by the CelebA, IMDB and UTKFace presets.

ResNet-18 on 224×224 faces, Adam lr 1e-4 kept constant, batch 256, 50 epochs
(paper Sec. 4 setup; METHODS.md §7.3). The paper's face Vanilla models share
EnD's architecture (tanh last block, L2-normalised bottleneck): Vanilla is EnD
with alpha = beta = 0, hence ``backbone_variant="end"``.
"""

FACE_RECIPE = {
    "backbone": "resnet18",
    "backbone_variant": "end",
    "image_size": 224,
    "optimizer": "adam",
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "lr_schedule": "constant",
    "batch_size": 256,
    "epochs": 50,
}

#: Smaller face recipes (``--scale``): 64-pixel inputs and a quarter-width ResNet-18 on a
#: CPU (what the README's face runs use), 32 pixels and one epoch for a smoke test.
FACE_SCALES = {
    "cpu": {"image_size": 64, "width": 0.25, "batch_size": 64, "epochs": 8, "lr": 1e-3},
    "smoke": {"image_size": 32, "width": 0.125, "batch_size": 32, "epochs": 1, "lr": 1e-3},
}
