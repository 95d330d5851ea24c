"""--weights: pretrained backbone weights reach the backbone, or a one-line error."""

import numpy as np
import pytest

from bridging_tf.datasets.base import ArraySplit, DataBundle
from bridging_tf.errors import UserError
from components.train import build_model


def _bundle(shape=(32, 32, 3)):
    x = np.zeros((4,) + shape, np.uint8)
    split = ArraySplit("train", x, np.zeros(4), np.zeros(4))
    return DataBundle(name="celeba", splits={"train": split}, eval_splits=("train",),
                      primary_eval="train", num_classes=2, num_private=2, image_shape=shape)


def test_weights_file_is_loaded_into_resnet18(tmp_path):
    bundle = _bundle()
    first = build_model(bundle, method="vanilla", backbone=None, width=0.125,
                        weight_decay=0.0, hparams={}, seed=1)
    path = tmp_path / "r18.weights.h5"
    first.backbone.save_weights(path)
    second = build_model(bundle, method="vanilla", backbone=None, width=0.125,
                         weight_decay=0.0, hparams={}, seed=2, weights=str(path))
    for a, b in zip(first.backbone.weights, second.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--weights"):
        build_model(_bundle(), method="end", backbone=None, width=0.125, weight_decay=0.0,
                    hparams={}, seed=0, weights=str(tmp_path / "nope.weights.h5"))


def test_backbone_without_pretrained_weights_says_so(tmp_path):
    bundle = _bundle((28, 28, 3))
    with pytest.raises(UserError, match="does not load pretrained weights"):
        build_model(bundle, method="vanilla", backbone="simple_conv", width=0.125,
                    weight_decay=0.0, hparams={}, seed=0, weights=str(tmp_path / "w.h5"))
