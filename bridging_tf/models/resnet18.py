"""ResNet-18 (He et al. 2016) as torchvision builds it, with the EnD bottleneck.

7×7/2 stem conv + BN + ReLU + 3×3/2 max-pool, four stages of two basic
blocks (64-128-256-512 channels × ``width``; stride 2 from stage 2 on, a
1×1 conv + BN shortcut where the shape changes), global average pooling →
the named ``bottleneck`` (512-d at ``width=1``) → a Linear ``logits`` head.
Padding is explicit (``ZeroPadding2D`` + ``valid``) so shapes and weights
match PyTorch exactly; BN uses PyTorch's momentum/eps, convs Kaiming-normal
fan_out (METHODS.md §13). With a 1000-class head it has 11,689,512 trainable
parameters, the torchvision count.

``variant="end"`` (METHODS.md §3, §7.3): **both** activations of the last
basic block (``layer4_1``, after ``bn1`` and after the residual add) are tanh
— torchvision's block calls one shared ``relu`` module twice, and the
reference swaps that module — and the pooled vector is L2-normalised.
The paper's *Vanilla* CelebA/IMDB checkpoints use this same architecture
(EnD with α = β = 0), so build ``variant="end"`` for both when reproducing
Tables 2–3; ``variant="vanilla"`` is the plain ResNet-18.

``weights=PATH`` loads either a ``.weights.h5`` file saved from this
architecture (``model.save_weights``) or a torchvision ResNet-18
``state_dict`` saved as ``.npz`` — e.g. the ImageNet weights, converted on a
machine with PyTorch by::

    sd = torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict()
    np.savez("r18.npz", **{k: v.numpy() for k, v in sd.items()})

(:func:`load_torchvision_npz`; OIHW kernels are transposed to HWIO). Layers
whose shapes differ only in the head (1000 ImageNet classes vs. this task's)
keep their initial values. Without ``weights`` the network trains from
scratch — nothing is downloaded.

Example::

    net = resnet18(num_classes=2, variant="end", width=0.25, input_shape=(64, 64, 3))
    logits, z = net(images)          # (B, 2), (B, 128) with ||z|| = 1
"""

from __future__ import annotations

import logging
import os
import warnings

import keras
import numpy as np

from bridging_tf.errors import UserError
from bridging_tf.models.layers import (
    L2Normalize,
    torch_batchnorm,
    torch_conv_kernel_init,
    torch_dense,
)

log = logging.getLogger(__name__)

VARIANTS = ("vanilla", "end")
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS = (2, 2, 2, 2)
STEM_WIDTH = 64


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv(x, filters, kernel, stride, pad, name):
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                               kernel_initializer=torch_conv_kernel_init(), name=name)(x)


def basic_block(x, filters: int, stride: int, name: str, act: str = "relu"):
    """conv3×3-BN-act-conv3×3-BN (+ shortcut) - act; ``act`` is used for both activations."""
    shortcut = x
    y = _conv(x, filters, 3, stride, 1, f"{name}_conv1")
    y = torch_batchnorm(name=f"{name}_bn1")(y)
    y = keras.layers.Activation(act, name=f"{name}_{act}1")(y)
    y = _conv(y, filters, 3, 1, 1, f"{name}_conv2")
    y = torch_batchnorm(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, 0, f"{name}_downsample_conv")
        shortcut = torch_batchnorm(name=f"{name}_downsample_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation(act, name=f"{name}_{act}2")(y)


def resnet18(num_classes: int = 2, variant: str = "vanilla", width: float = 1.0,
             input_shape=(224, 224, 3), weights=None, name: str = "resnet18", **unused):
    """Build the functional ResNet-18 returning ``[logits, bottleneck]``.

    Args:
      num_classes: size of the ``logits`` head.
      variant: ``"vanilla"`` or ``"end"`` (tanh last block + unit-norm bottleneck).
      width: channel multiplier (1.0 = ResNet-18; e.g. 0.125 for CPU tests).
      input_shape: ``(H, W, C)``; any size >= 32 works.
      weights: optional ``.weights.h5`` path to load.
    """
    if variant not in VARIANTS:
        raise UserError(f"variant={variant!r}: choose one of {', '.join(VARIANTS)}")
    if width <= 0:
        raise UserError(f"--width={width} must be > 0")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(inputs, _ch(STEM_WIDTH, width), 7, 2, 3, "conv1")
    x = torch_batchnorm(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    # zero padding = PyTorch's -inf padding here: the inputs are ReLU outputs (>= 0)
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    n_stages = len(STAGE_WIDTHS)
    for s, (c, n) in enumerate(zip(STAGE_WIDTHS, BLOCKS)):
        for b in range(n):
            last = s == n_stages - 1 and b == n - 1
            act = "tanh" if (last and variant == "end") else "relu"
            stride = 2 if (b == 0 and s > 0) else 1
            x = basic_block(x, _ch(c, width), stride, f"layer{s + 1}_{b}", act)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    if variant == "end":
        z = L2Normalize(name="bottleneck")(x)
    else:
        z = keras.layers.Identity(name="bottleneck")(x)
    logits = torch_dense(num_classes, _ch(STAGE_WIDTHS[-1], width), name="logits")(z)
    model = keras.Model(inputs, [logits, z], name=name)
    if weights:
        load_backbone_weights(model, weights)
    return model


def load_backbone_weights(model: keras.Model, path) -> None:
    """Load ``.weights.h5`` or a torchvision ``.npz`` into ``model``.

    A head with another class count keeps its initial values.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(f"--weights={path}: file not found")
    if path.endswith(".npz"):
        load_torchvision_npz(model, path)
        return
    if not path.endswith(".weights.h5"):
        raise UserError(f"--weights={path}: expected a Keras '.weights.h5' file saved from "
                        f"this architecture or a torchvision state_dict as '.npz'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except ValueError:
        # Typically the head: ImageNet's 1000 classes vs. this task's classes.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.load_weights(path, skip_mismatch=True)
        except Exception as err:
            raise UserError(f"--weights={path} does not fit {model.name} "
                            f"({type(err).__name__}: {_first_line(err)})") from None
        log.warning("loaded %s; layers with a different shape (e.g. the logits head) "
                    "keep their initial values", path)
    except Exception as err:  # h5py / structure errors
        raise UserError(f"--weights={path} could not be loaded into {model.name} "
                        f"({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def torchvision_names(model: keras.Model) -> dict:
    """Keras layer name -> torchvision ``state_dict`` prefix for this ResNet-18."""
    out = {"conv1": "conv1", "bn1": "bn1", "logits": "fc"}
    for layer in model.layers:
        parts = layer.name.split("_")
        if not (parts[0].startswith("layer") and len(parts) >= 3):
            continue
        prefix = f"{parts[0]}.{parts[1]}"
        rest = "_".join(parts[2:])
        mapping = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2",
                   "downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
        if rest in mapping:
            out[layer.name] = f"{prefix}.{mapping[rest]}"
    return out


def _torch_arrays(layer, prefix):
    """torchvision key -> array for one Keras layer (in Keras layout order)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        keys = ("weight", "bias", "running_mean", "running_var")
        return [f"{prefix}.{k}" for k in keys], [lambda a: a] * 4
    if isinstance(layer, keras.layers.Conv2D):
        return [f"{prefix}.weight"], [lambda a: np.transpose(a, (2, 3, 1, 0))]   # OIHW -> HWIO
    return [f"{prefix}.weight", f"{prefix}.bias"], [lambda a: a.T, lambda a: a]


def load_torchvision_npz(model: keras.Model, path) -> None:
    """Copy a torchvision ResNet-18 ``state_dict`` (``.npz``) into ``model``.

    Every backbone tensor must be present with the right shape (a wrong
    width or architecture is a :class:`UserError` naming the key); the
    ``fc`` head is copied only when its class count matches.
    """
    try:
        arrays = dict(np.load(path))
    except Exception as err:
        raise UserError(f"--weights={path} is not a readable .npz ({type(err).__name__})") from None
    head_skipped = False
    for name, prefix in torchvision_names(model).items():
        layer = model.get_layer(name)
        keys, convert = _torch_arrays(layer, prefix)
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise UserError(f"--weights={path} has no {missing[0]!r}; expected a torchvision "
                            f"ResNet-18 state_dict")
        values = [c(np.asarray(arrays[k], np.float32)) for k, c in zip(keys, convert)]
        current = layer.get_weights()
        bad = [(k, v.shape, w.shape) for k, v, w in zip(keys, values, current)
               if v.shape != w.shape]
        if bad and name == "logits":
            head_skipped = True
            continue
        if bad:
            k, got, want = bad[0]
            raise UserError(f"--weights={path}: {k!r} has shape {got}, this model needs {want} "
                            f"(check --width)")
        layer.set_weights(values)
    if head_skipped:
        log.warning("loaded %s; its fc head has another class count and keeps its initial "
                    "values", path)


def torchvision_state_dict(model: keras.Model) -> dict:
    """The inverse of :func:`load_torchvision_npz`: torchvision-named numpy arrays."""
    out = {}
    for name, prefix in torchvision_names(model).items():
        layer = model.get_layer(name)
        keys, _ = _torch_arrays(layer, prefix)
        for k, w in zip(keys, layer.get_weights()):
            if isinstance(layer, keras.layers.Conv2D):
                w = np.transpose(w, (3, 2, 0, 1))
            elif isinstance(layer, keras.layers.Dense) and w.ndim == 2:
                w = w.T
            out[k] = w
    return out
