"""The SIIM TFRecord loader (datasets.load("siim")) and the DenseNet-121 backbone, tiny sizes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bridging_tf import datasets
from bridging_tf.datasets.siim import prepare_siim
from bridging_tf.errors import DataError
from bridging_tf.models import build_backbone
from tests._synthetic_dicom import write_synthetic_competition

TARGETS = ("Negative for Pneumonia", "Typical Appearance")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("siim")
    write_synthetic_competition(root / "raw", n_studies=24, image_shape=(64, 56),
                                classes=[TARGETS[i % 2] for i in range(24)],
                                transfer_syntaxes=("explicit", "jpeg2000"))
    manifest = prepare_siim(root / "raw", root / "prep", image_size=48, workers=1, salt="s",
                            examples_per_shard=4)
    return root, manifest


def test_bundle_shapes_splits_and_metadata(prepared):
    root, manifest = prepared
    b = datasets.load("siim", data_dir=str(root / "prep"), image_size=32, channels=3, seed=0)
    assert set(b.splits) == {"train", "val", "test", "attack_train", "attack_val"}
    assert b["attack_train"] is b["train"] and b.primary_eval == "test"
    assert b.image_shape == (32, 32, 3) and b.num_classes == 2 and b.num_private == 2
    assert b.metadata["manifest_counts"] == manifest["counts"]
    assert b.mean == (manifest["train_mean"],) * 3
    sizes = {s: b[s].size for s in ("train", "val", "test")}
    assert sizes == manifest["counts"]["written_by_split"] and sum(sizes.values()) == 24
    x, y = next(iter(b["train"].dataset(5)))
    assert x.shape == (5, 32, 32, 3) and x.dtype == "float32"
    assert y["label"].dtype == "int32" and y["private"].dtype == "int32"
    raw, _ = next(iter(b["train"].dataset(5, normalize=False)))
    assert raw.dtype == "uint8"
    np.testing.assert_allclose(x.numpy(), (raw.numpy() / 255.0 - b.mean[0]) / b.std[0], atol=1e-5)


def test_unshuffled_order_matches_labels_and_private(prepared):
    root, _ = prepared
    b = datasets.load("siim", data_dir=str(root / "prep"), channels=1)
    assert b.image_shape == (48, 48, 1)
    split = b["train"]
    ys = [(y["label"].numpy(), y["private"].numpy()) for _, y in split.dataset(7)]
    np.testing.assert_array_equal(np.concatenate([a for a, _ in ys]), split.labels())
    np.testing.assert_array_equal(np.concatenate([p for _, p in ys]), split.private())
    shuffled = np.concatenate([y["label"].numpy()
                               for _, y in split.dataset(7, shuffle=True, seed=1)])
    assert sorted(shuffled) == sorted(split.labels())
    flipped, _ = next(iter(split.dataset(split.size, augment=True, seed=3, normalize=False)))
    plain, _ = next(iter(split.dataset(split.size, normalize=False)))
    same = [np.array_equal(f, p) for f, p in zip(flipped.numpy(), plain.numpy())]
    mirrored = [np.array_equal(f, p[:, ::-1]) for f, p in zip(flipped.numpy(), plain.numpy())]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored)


def test_raw_competition_folder_is_refused_with_the_ingest_command(prepared):
    root, _ = prepared
    with pytest.raises(DataError, match="ingest_siim"):
        datasets.load("siim", data_dir=str(root / "raw"))


def test_densenet_vanilla_is_keras_pooled_features_and_end_is_unit_norm():
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    van = build_backbone("densenet121", num_classes=2, variant="vanilla", input_shape=(32, 32, 1))
    assert van.inputs[0].name == "image" and van.get_layer("bottleneck") is not None
    logits, z = van(x)
    assert logits.shape == (2, 2) and z.shape == (2, 1024)
    feats = van.get_layer("densenet121_features")
    ref = keras.layers.GlobalAveragePooling2D()(keras.ops.relu(feats(x)))
    np.testing.assert_allclose(z, ref, atol=1e-5)
    end = build_backbone("densenet121", num_classes=2, variant="end", input_shape=(32, 32, 3))
    _, z = end(np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_densenet_loads_a_weights_file_into_a_one_channel_model(tmp_path):
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "notop.weights.h5"
    base.save_weights(path)
    net = build_backbone("densenet121", num_classes=2, input_shape=(32, 32, 1), weights=str(path))
    assert net.get_layer("gray_to_rgb") is not None
    np.testing.assert_array_equal(
        net.get_layer("densenet121_features").get_layer("conv1_conv").kernel.numpy(),
        base.get_layer("conv1_conv").kernel.numpy())
    assert net(np.zeros((1, 32, 32, 1), "float32"))[1].shape == (1, 1024)


def test_end_on_densenet_fits_one_step_on_the_loaded_bundle(prepared):
    from bridging_tf.methods import build_method

    root, _ = prepared
    b = datasets.load("siim", data_dir=str(root / "prep"), image_size=32, channels=1)
    net = build_backbone("densenet121", num_classes=2, variant="end", input_shape=b.image_shape)
    model = build_method("end", backbone=net, num_classes=2, num_private=2, weight_decay=1e-4,
                         hparams={"alpha": 0.011, "beta": 0.011})
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    hist = model.fit(b["train"].dataset(8, shuffle=True, augment=True, drop_remainder=True),
                     epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    for key in ("loss", "ce_loss", "end_orth", "end_par"):
        assert np.isfinite(hist.history[key][0])
