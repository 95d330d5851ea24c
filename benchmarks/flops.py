"""Analytic FLOP counts of a functional Keras model (convs and dense layers).

Counted (multiply and add = 2 FLOPs):

- ``Conv2D``: ``2 · H_out · W_out · k_h · k_w · C_in · C_out`` per image forward
  (bias add not counted);
- ``Dense``: ``2 · d_in · d_out`` per example forward.

Training (forward + backward) = forward + weight gradient (same FLOPs as the
forward) + input gradient (same FLOPs as the forward) — i.e. 3× the forward
— except for layers fed directly by the model input, whose input gradient
is never computed (2×). BatchNorm, activations, pooling, the losses and the
optimizer are *not* counted: they are memory-bound elementwise work, a few
FLOPs per activation, and are what makes a step slower than its conv FLOPs
alone would predict.

SimpleConvNet, 7×7, width 1.0, 28×28×3 (the paper's f):
forward 829.8 MFLOP/image (conv4 alone 629.4), train 2,485.7 MFLOP/image,
636.3 GFLOP per batch of 256. The 1×1 biased g: 16.9 MFLOP forward.
"""

from __future__ import annotations

from typing import Dict

import keras


def _layer_forward_flops(layer) -> int:
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape  # (None, H, W, C) channels_last
        kh, kw = layer.kernel_size
        cin = int(layer.input.shape[-1])
        cout = int(layer.filters)
        if layer.data_format == "channels_first":
            h, w = int(out[2]), int(out[3])
        else:
            h, w = int(out[1]), int(out[2])
        return 2 * h * w * kh * kw * cin * cout
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(layer.input.shape[-1]) * int(layer.units)
    return 0


def model_flops(model: keras.Model) -> Dict[str, object]:
    """``{"forward": F, "train": T, "per_layer": {...}}`` per example for a functional model."""
    input_names = {id(t) for t in model.inputs}
    per_layer, fwd, train = {}, 0, 0
    for layer in model.layers:
        f = _layer_forward_flops(layer)
        if not f:
            continue
        try:
            fed_by_input = id(layer.input) in input_names
        except (AttributeError, ValueError):
            fed_by_input = False
        t = f * (2 if fed_by_input else 3)
        per_layer[layer.name] = {"forward": f, "train": t}
        fwd += f
        train += t
    return {"forward": fwd, "train": train, "per_layer": per_layer}


def step_flops(method: str, f_model: keras.Model, g_model=None) -> Dict[str, object]:
    """Per-example FLOPs of one training step of ``method``.

    - vanilla / end: f forward + backward (EnD's Gram matrix, B²·d, is added
      by the caller since it depends on the batch);
    - rubi: f train + g train (g's CE is stepped every batch);
    - learned_mixin: f train + g forward (g is frozen after pre-training);
    - rebias: f train + g train + one more g forward (f's step sees the updated g).
    """
    f = model_flops(f_model)
    g = model_flops(g_model) if g_model is not None else {"forward": 0, "train": 0}
    total = f["train"]
    if method == "rubi":
        total += g["train"]
    elif method == "learned_mixin":
        total += g["forward"]
    elif method == "rebias":
        total += g["train"] + g["forward"]
    return {
        "per_example": total,
        "f_forward": f["forward"],
        "f_train": f["train"],
        "g_forward": g["forward"],
        "g_train": g["train"],
        "f_per_layer": f["per_layer"],
    }
