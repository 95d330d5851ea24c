"""IMDB-faces preset: the paper's recipe (Sec. 4 setup, Sec. 4.2, Table 3; METHODS.md §7.3, §8.3).

ResNet-18 on 224×224 face crops, Adam lr 1e-4, batch 256, 50 epochs; train on
the extreme-bias split EB1 (women 0–29 + men 40+), target the 12 age bins,
private gender. The paper states no learning-rate decay and no weight decay
for the face experiments: the lr is kept constant and the Biased-MNIST weight
decay (1e-4) is reused. No EnD α/β were published for IMDB: the method
defaults apply.

Example::

    python -m pipelines.run --dataset=imdb --method=end --split=EB2 --data_dir=/data/imdb
    python -m pipelines.run --dataset=imdb --method=vanilla --target=gender --data_dir=/data/imdb
"""

from pipelines.configs._faces import FACE_RECIPE, FACE_SCALES

DEFAULTS = {
    **FACE_RECIPE,
    "split": "EB1",
    "target": "age",
}

SCALES = FACE_SCALES
