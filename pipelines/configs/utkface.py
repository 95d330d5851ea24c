"""UTKFace preset: the IMDB-faces recipe applied to UTKFace (METHODS.md §7.3, §8.3).

UTKFace is not in the paper; it is run exactly like IMDB faces (ResNet-18,
224×224, Adam lr 1e-4 constant, weight decay 1e-4, batch 256, 50 epochs,
EB1 training split, target the 12 age bins, private gender).

Example::

    python -m pipelines.run --dataset=utkface --method=end --data_dir=/data/utkface
    python -m pipelines.run --dataset=utkface --method=vanilla --split=EB2 --data_dir=/data/utkface
"""

DEFAULTS = {
    "backbone": "resnet18",
    # The paper's face Vanilla models share EnD's architecture (tanh last block,
    # L2-normalised bottleneck): Vanilla is EnD with alpha = beta = 0 (METHODS.md §7.3).
    "backbone_variant": "end",
    "split": "EB1",
    "target": "age",
    "image_size": 224,
    "optimizer": "adam",
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "lr_schedule": "constant",
    "batch_size": 256,
    "epochs": 50,
}
