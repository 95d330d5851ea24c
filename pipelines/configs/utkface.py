"""UTKFace preset: the IMDB-faces recipe applied to UTKFace (METHODS.md §7.3, §8.3).

UTKFace is not in the paper; it is run exactly like IMDB faces (ResNet-18,
224×224, Adam lr 1e-4 constant, weight decay 1e-4, batch 256, 50 epochs,
EB1 training split, target the 12 age bins, private gender).

Example::

    python -m pipelines.run --dataset=utkface --method=end --data_dir=/data/utkface
    python -m pipelines.run --dataset=utkface --method=vanilla --split=EB2 --data_dir=/data/utkface
"""

from pipelines.configs._faces import FACE_RECIPE, FACE_SCALES

DEFAULTS = {
    **FACE_RECIPE,
    "split": "EB1",
    "target": "age",
}

SCALES = FACE_SCALES
