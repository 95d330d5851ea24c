"""CelebA preset: the paper's recipe (Sec. 4 setup, Sec. 4.2, Table 2; METHODS.md §7.3, §8.2).

ResNet-18 on 224×224 aligned faces, Adam lr 1e-4, batch 256, 50 epochs; target
``Blond_Hair`` with the private attribute ``Male`` (inverted: 1 = female).
The paper states no learning-rate decay and no weight decay for the face
experiments: the lr is kept constant and the Biased-MNIST weight decay (1e-4)
is reused. EnD's ``alpha``/``beta`` are the best Blond_Hair sweep run the EnD
authors posted (EnD issue #3: α = 25, β = 36); for ``--target=Heavy_Makeup``
their best run was ``--alpha=6 --beta=1``.

Example::

    python -m pipelines.run --dataset=celeba --method=end --data_dir=/data/celeba
    python -m pipelines.run --dataset=celeba --method=end --target=Heavy_Makeup \\
        --alpha=6 --beta=1 --data_dir=/data/celeba
"""

from pipelines.configs._faces import FACE_RECIPE, FACE_SCALES

DEFAULTS = {
    **FACE_RECIPE,
    "target": "Blond_Hair",
    "private": "Male",
    "alpha": 25.0,
    "beta": 36.0,
}

SCALES = FACE_SCALES
