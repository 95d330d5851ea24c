"""Reconstruction attack: decode the input image from the frozen bottleneck.

**Unverified design.** The reference repository has no decoder (METHODS.md
§8.5); the paper only shows Fig. 2c/6 (a decoder trained on the frozen
bottleneck). This one is ours:

``z [D] → Dense(h0·w0·c, ReLU) → reshape [h0, w0, c]
→ Conv2DTranspose(c/2, 4, stride 2, same, ReLU) → Conv2DTranspose(c/4, 4, stride 2, same, ReLU)
→ Conv2D(C, 3, same, sigmoid) → crop to [H, W, C]``, with ``h0 = ceil(H/4)`` and
``c = base_channels`` (default 64; 10 epochs, batch 128 — about 13 M multiply-adds
per 28×28 image, so a 6k-image attack trains in about a minute on 2 CPU cores).

Trained with Adam (lr 1e-3) on the MSE between the output and the true
image scaled to [0, 1]; the reported split images are never seen in
training. Reported per split: MSE, PSNR (mean per image, data range 1), and
the same for a *mean-image baseline* (the average training image), the
reconstruction analogue of a chance level.

With a colour ``palette`` (Biased-MNIST: ``COLOUR_MAP``) the background colour
is read back from each reconstruction — the per-channel median over the
pixels that are background in the true image (the pixels equal to the
true palette colour; a 2-pixel border when there are none) — snapped to the
nearest palette entry and compared with the private label: the *colour
accuracy from the reconstruction* (paper Fig. 6).

Example::

    dec = train_decoder(z_train, images_train, epochs=20)
    recon = dec.reconstruct(z_test)                 # float32 in [0, 1]
    colour_from_reconstruction(recon, images_test, COLOUR_MAP, c_test)
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import tensorflow as tf


def build_decoder(dim: int, image_shape, *, base_channels: int = 64, seed: int = 0):
    """The decoder (see module doc) as a ``keras.Model`` mapping ``[D] -> [H, W, C]``."""
    import keras

    h, w, c = (int(v) for v in image_shape)
    h0, w0 = int(math.ceil(h / 4)), int(math.ceil(w / 4))
    init = lambda k: keras.initializers.GlorotUniform(seed=seed + k)  # noqa: E731
    z = keras.Input((dim,), name="embedding")
    x = keras.layers.Dense(h0 * w0 * base_channels, activation="relu",
                           kernel_initializer=init(0), name="project")(z)
    x = keras.layers.Reshape((h0, w0, base_channels))(x)
    x = keras.layers.Conv2DTranspose(base_channels // 2, 4, strides=2, padding="same",
                                     activation="relu", kernel_initializer=init(1),
                                     name="up1")(x)
    x = keras.layers.Conv2DTranspose(base_channels // 4, 4, strides=2, padding="same",
                                     activation="relu", kernel_initializer=init(2),
                                     name="up2")(x)
    x = keras.layers.Conv2D(c, 3, padding="same", activation="sigmoid",
                            kernel_initializer=init(3), name="image")(x)
    if (4 * h0, 4 * w0) != (h, w):
        x = keras.layers.Cropping2D(((0, 4 * h0 - h), (0, 4 * w0 - w)))(x)
    return keras.Model(z, x, name="decoder")


class Decoder:
    """A trained decoder; :meth:`reconstruct` returns float32 images in [0, 1]."""

    def __init__(self, model, history: Optional[dict] = None):
        self.model = model
        self.history = history or {}

    def reconstruct(self, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        from bridging_tf.attacks.probes import batched_call

        return batched_call(self.model, embeddings, batch_size)


def train_decoder(embeddings: np.ndarray, images: np.ndarray, *, epochs: int = 10,
                  batch_size: int = 128, lr: float = 1e-3, base_channels: int = 64,
                  seed: int = 0, verbose: int = 0) -> Decoder:
    """Fit the decoder on (embedding, uint8 image) pairs with MSE on [0, 1] pixels."""
    import keras

    z = np.asarray(embeddings, np.float32)
    model = build_decoder(z.shape[1], images.shape[1:], base_channels=base_channels, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    ds = (tf.data.Dataset.from_tensor_slices((z, images))
          .shuffle(len(z), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size)
          .map(lambda a, b: (a, tf.cast(b, tf.float32) / 255.0))
          .prefetch(tf.data.AUTOTUNE))
    hist = model.fit(ds, epochs=epochs, shuffle=False, verbose=2 if verbose else 0)
    return Decoder(model, {k: [float(v) for v in vals] for k, vals in hist.history.items()})


def image_mse(recon: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-image MSE between float [0, 1] reconstructions and uint8 images."""
    target = np.asarray(images, np.float32) / 255.0
    diff = np.asarray(recon, np.float32) - target
    return np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)


def psnr(mse: np.ndarray) -> np.ndarray:
    """PSNR in dB for data range 1 (capped at 100 dB for a perfect match)."""
    mse = np.asarray(mse, np.float64)
    return np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10)), 100.0)


def background_mask(images: np.ndarray, palette: np.ndarray, private: np.ndarray,
                    border: int = 2) -> np.ndarray:
    """Bool ``[N, H, W]``: pixels equal to the image's true palette colour.

    Images with no such pixel fall back to a ``border``-pixel frame.
    """
    palette = np.asarray(palette)
    colour = palette[np.asarray(private)][:, None, None, :]
    mask = np.all(np.asarray(images) == colour, axis=-1)
    frame = np.zeros(mask.shape[1:], bool)
    frame[:border, :] = frame[-border:, :] = True
    frame[:, :border] = frame[:, -border:] = True
    empty = ~mask.reshape(len(mask), -1).any(axis=1)
    mask[empty] = frame
    return mask


def nearest_palette(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest (Euclidean, in [0, 255] RGB) palette entry for each colour."""
    d = np.asarray(colours, np.float64)[:, None, :] - np.asarray(palette, np.float64)[None]
    return np.argmin(np.sum(d ** 2, axis=-1), axis=1).astype(np.int32)


def decoded_colours(recon: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image median background colour (in [0, 255]) of float [0, 1] reconstructions."""
    recon = np.asarray(recon, np.float32)
    out = np.empty((len(recon), recon.shape[-1]), np.float32)
    for i in range(len(recon)):
        out[i] = np.median(recon[i][mask[i]], axis=0) * 255.0
    return out


def colour_from_reconstruction(recon: np.ndarray, images: np.ndarray, palette: np.ndarray,
                               private: np.ndarray) -> Dict[str, object]:
    """Colour accuracy read back from reconstructions (see module doc).

    Returns ``{"colour_accuracy", "colour_balanced_accuracy", "predicted"}``.
    """
    from bridging_tf.attacks.metrics import balanced_accuracy

    private = np.asarray(private)
    pred = nearest_palette(decoded_colours(recon, background_mask(images, palette, private)),
                           palette)
    return {"colour_accuracy": float(np.mean(pred == private)),
            "colour_balanced_accuracy": balanced_accuracy(private, pred),
            "predicted": pred}
