"""Train-step throughput per method, interleaved with the matmul reference.

Every *case* is a blocking callable doing a known amount of work (images,
FLOPs). All cases are built and traced first, then timed round-robin:
each round runs one window of every case back to back, so a burst of load
from the other processes on the machine hits the whole round, and the
per-round ratios (step FLOP/s ÷ matmul FLOP/s, method time ÷ Vanilla time)
are far steadier than the absolute numbers. We report medians over rounds.

Cases:

- ``matmul``: ``tf.matmul`` of two ``n×n`` float32 matrices (2n³ FLOPs) — the
  machine's achievable dense float32 rate in this process, right now;
- ``vanilla``, ``end``, ``rubi``, ``learned_mixin``, ``rebias``: one Keras
  ``train_function`` call (the exact function ``fit`` runs: forward,
  backward, coupled weight decay, Adam, trackers) on a fixed in-memory
  batch, so the input pipeline is not in the measurement;
- diagnostics (``--diagnostics``): ``raw_conv`` — the four ``tf.nn.conv2d`` of
  SimpleConvNet alone, forward + backward under a real cross-entropy loss
  (no bias, BN, ReLU or optimizer);
  ``raw_conv_fwd`` — the same forward only; ``vanilla_fwd`` — the backbone
  forward in training mode; ``vanilla_fusedbn`` / ``vanilla_nobn`` — Vanilla with BN as one
  ``FusedBatchNormV3`` op / without BN; ``g_only`` — the 1×1 biased net's own
  train step (what RUBi / ReBias add); ``vanilla_xla`` (``--xla``) — Vanilla
  with ``jit_compile=True``.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import numpy as np

from benchmarks.flops import model_flops, step_flops
from benchmarks.timing import median

METHODS = ("vanilla", "end", "rubi", "learned_mixin", "rebias")


class Case:
    """A blocking unit of work: ``run()`` does ``images`` images / ``flops`` FLOPs."""

    def __init__(
        self,
        name: str,
        run: Callable[[], object],
        images: int,
        flops: float,
        trace_s: float = float("nan"),
        info: Optional[dict] = None,
    ):
        self.name, self.run, self.images, self.flops = name, run, images, float(flops)
        self.trace_s = trace_s
        self.info = dict(info or {})
        self.times: List[float] = []


def matmul_case(n: int, reps: int = 1, dtype: str = "float32", name: str = "matmul") -> Case:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)

    @tf.function
    def mm(a, b):
        return tf.reduce_sum(tf.matmul(a, b)[:1, :1])

    def run():
        for _ in range(reps):
            mm(a, b).numpy()

    t0 = time.perf_counter()
    run()
    return Case(
        name,
        run,
        0,
        2.0 * n**3 * reps,
        time.perf_counter() - t0,
        {"n": n, "reps": reps, "dtype": dtype},
    )


def numpy_matmul_case(n: int, reps: int = 1) -> Case:
    """``numpy`` (OpenBLAS) float32 matmul: a second, library-independent machine rate."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def run():
        for _ in range(reps):
            a @ b

    t0 = time.perf_counter()
    run()
    return Case(
        "matmul_numpy",
        run,
        0,
        2.0 * n**3 * reps,
        time.perf_counter() - t0,
        {"n": n, "reps": reps, "dtype": "float32", "library": "numpy"},
    )


def tracing_count(train_function) -> Optional[int]:
    """Total traces of the ``tf.function`` objects inside a Keras ``train_function`` closure."""
    seen, total, stack = set(), 0, [train_function]
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        counter = getattr(fn, "experimental_get_tracing_count", None)
        if counter is not None:
            total += int(counter())
            fn = getattr(fn, "_python_function", fn)
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value):
                stack.append(value)
    return total


def _random_batch(batch: int, shape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = {
        "label": rng.integers(0, 10, batch).astype("int32"),
        "private": rng.integers(0, 10, batch).astype("int32"),
    }
    return x, y


def build_method_model(
    method: str, *, width: float, input_shape, weight_decay: float = 1e-4, kernel_size: int = 7
):
    """(model, f, g) for ``method`` around the paper's SimpleConvNet."""
    from bridging_tf import methods, models
    from bridging_tf.models.simple_conv import simple_convnet

    cls = methods.get_method_class(method)
    f = simple_convnet(
        kernel_size=kernel_size,
        variant="end" if method == "end" else "vanilla",
        width=width,
        input_shape=input_shape,
    )
    g = (models.build_biased_backbone("simple_conv", width=width, input_shape=input_shape)
         if cls.needs_biased_backbone else None)
    model = methods.build_method(
        method,
        backbone=f,
        num_classes=10,
        num_private=10,
        biased_backbone=g,
        weight_decay=weight_decay,
        hparams={},
    )
    return model, f, g


def method_case(
    method: str,
    *,
    batch: int,
    width: float,
    input_shape=(28, 28, 3),
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    name: Optional[str] = None,
) -> Case:
    """Compile ``method`` and return its traced, warm train-step case."""
    import keras
    import tensorflow as tf

    model, f, g = build_method_model(method, width=width, input_shape=input_shape)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    if hasattr(model, "g_pretrained_epochs"):  # LearnedMixin: g counts as pre-trained
        model.g_pretrained_epochs.assign(getattr(model, "lm_pretrain_epochs", 0))
    x, y = _random_batch(batch, input_shape)
    it = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    model.make_train_function()
    fn = model.train_function

    def run():
        out = fn(it)
        return float(out["loss"])

    t0 = time.perf_counter()
    run()  # trace + first step
    trace_s = time.perf_counter() - t0
    run()  # one more warm-up step (Adam slots, caches)
    traces = tracing_count(fn)
    fl = step_flops(method, f, g) if method != "biased" else step_flops("vanilla", g)
    per_step = fl["per_example"] * batch
    if method == "end":  # the Gram matrix z zᵀ (B²·d MACs) and its gradient
        d = int(f.outputs[1].shape[-1])
        per_step += 3 * 2 * batch * batch * d
    fl = {k: v for k, v in fl.items() if k != "f_per_layer"}
    case = Case(
        name or method,
        run,
        batch * steps_per_execution,
        per_step * steps_per_execution,
        trace_s,
        {
            "method": method,
            "flops_per_image": per_step / batch,
            "jit_compile": jit_compile,
            "steps_per_execution": steps_per_execution,
            "traces_after_warmup": traces,
            **fl,
        },
    )
    case.after_timing = lambda: {"traces_after_timing": tracing_count(fn)}
    return case


def raw_conv_cases(
    *, batch: int, width: float, kernel_size: int = 7, input_shape=(28, 28, 3)
) -> List[Case]:
    """The four convs of SimpleConvNet alone: forward+backward, and forward only."""
    import tensorflow as tf

    from bridging_tf.models.simple_conv import scaled_widths, simple_convnet

    widths = scaled_widths(width)
    rng = np.random.default_rng(0)
    filters, cin = [], int(input_shape[-1])
    for cout in widths:
        filters.append(
            tf.Variable(
                rng.normal(0, 0.05, (kernel_size, kernel_size, cin, cout)).astype("float32")
            )
        )
        cin = cout
    xb, yb = _random_batch(batch, input_shape)
    x, labels = tf.constant(xb), tf.constant(yb["label"])
    head = tf.constant(rng.normal(0, 0.05, (cin, 10)).astype("float32"))

    @tf.function
    def fwd_bwd(x):
        # A real loss (GAP -> fixed linear head -> cross-entropy), so the convs'
        # backprop sees a data-dependent gradient. (With ``reduce_mean(h)`` the
        # upstream gradient is a constant and the step came out ~1.4x faster
        # than the same convs under a real loss: not a fair bound.)
        with tf.GradientTape() as tape:
            h = x
            for w in filters:
                h = tf.nn.conv2d(h, w, 1, "SAME")
            logits = tf.matmul(tf.reduce_mean(h, axis=[1, 2]), head)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, filters)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    @tf.function
    def fwd(x):
        h = x
        for w in filters:
            h = tf.nn.conv2d(h, w, 1, "SAME")
        return tf.reduce_sum(h)

    fl = model_flops(simple_convnet(kernel_size=kernel_size, width=width, input_shape=input_shape))
    conv_fwd = sum(v["forward"] for k, v in fl["per_layer"].items() if k.startswith("conv"))
    conv_train = sum(v["train"] for k, v in fl["per_layer"].items() if k.startswith("conv"))
    cases = []
    for name, fn, flops in (("raw_conv", fwd_bwd, conv_train), ("raw_conv_fwd", fwd, conv_fwd)):

        def run(fn=fn):
            return float(fn(x))

        t0 = time.perf_counter()
        run()
        cases.append(
            Case(
                name,
                run,
                batch,
                flops * batch,
                time.perf_counter() - t0,
                {"flops_per_image": flops},
            )
        )
    return cases


class _FusedBN:
    """Factory of a BN layer whose training branch is one ``FusedBatchNormV3`` op."""

    @staticmethod
    def layer(name):
        import keras
        import tensorflow as tf

        class FusedBatchNorm(keras.layers.BatchNormalization):
            def call(self, inputs, training=None, mask=None):
                if not training:
                    return super().call(inputs, training=training)
                y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                    inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
                )
                # FusedBatchNormV3 returns the Bessel-corrected variance; undo it so the
                # moving statistics match keras.layers.BatchNormalization exactly.
                n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], var.dtype)
                var = var * (n - 1.0) / n
                self.moving_mean.assign(
                    self.moving_mean * self.momentum + mean * (1.0 - self.momentum)
                )
                self.moving_variance.assign(
                    self.moving_variance * self.momentum + var * (1.0 - self.momentum)
                )
                return y

        return FusedBatchNorm(momentum=0.9, epsilon=1e-5, name=name)


def bn_variant_case(kind: str, *, batch: int, width: float, input_shape=(28, 28, 3)) -> Case:
    """Vanilla step with BN as one fused op (``fusedbn``) or without BN (``nobn``).

    Same SimpleConvNet otherwise (7×7, same widths, ReLU, GAP, dense), same
    ``VanillaModel`` train step: the difference to ``vanilla`` is what Keras'
    unfused BatchNormalization (moments + batch_normalization, ~10 elementwise
    passes per layer forward+backward) costs.
    """
    import keras
    import tensorflow as tf

    from bridging_tf.methods.vanilla import VanillaModel
    from bridging_tf.models.simple_conv import scaled_widths

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, ch in enumerate(scaled_widths(width)):
        x = keras.layers.Conv2D(ch, 7, padding="same", name=f"conv{i + 1}")(x)
        if kind == "fusedbn":
            x = _FusedBN.layer(f"bn{i + 1}")(x)
        elif kind != "nobn":
            raise ValueError(kind)
        x = keras.layers.Activation("relu")(x)
    z = keras.layers.GlobalAveragePooling2D(name="bottleneck")(x)
    logits = keras.layers.Dense(10, name="logits")(z)
    f = keras.Model(inputs, [logits, z])
    model = VanillaModel(f, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    xb, yb = _random_batch(batch, input_shape)
    it = iter(tf.data.Dataset.from_tensors((xb, yb)).repeat())
    model.make_train_function()
    fn = model.train_function

    def run():
        return float(fn(it)["loss"])

    t0 = time.perf_counter()
    run()
    trace_s = time.perf_counter() - t0
    run()
    per_image = model_flops(f)["train"]
    return Case(
        f"vanilla_{kind}", run, batch, per_image * batch, trace_s, {"flops_per_image": per_image}
    )


def forward_case(*, batch: int, width: float, input_shape=(28, 28, 3)) -> Case:
    """Vanilla backbone forward in training mode (BN batch statistics), no gradient."""
    import tensorflow as tf

    from bridging_tf.models.simple_conv import simple_convnet

    f = simple_convnet(kernel_size=7, width=width, input_shape=input_shape)
    x = tf.constant(_random_batch(batch, input_shape)[0])

    @tf.function
    def fwd(x):
        logits, _ = f(x, training=True)
        return tf.reduce_sum(logits)

    def run():
        return float(fwd(x))

    t0 = time.perf_counter()
    run()
    return Case(
        "vanilla_fwd", run, batch, model_flops(f)["forward"] * batch, time.perf_counter() - t0
    )


def run_rounds(
    cases: List[Case], rounds: int, steps_per_window: int, log: Callable[[str], None] = print
) -> None:
    """Time ``rounds`` windows of every case, round-robin (results in ``case.times``)."""
    for r in range(rounds):
        parts = []
        for case in cases:
            t0 = time.perf_counter()
            for _ in range(1 if case.name.startswith("matmul") else steps_per_window):
                case.run()
            dt = time.perf_counter() - t0
            if not case.name.startswith("matmul"):
                dt /= steps_per_window
            case.times.append(dt)
            parts.append(f"{case.name}={dt:.2f}s")
        log(f"  round {r + 1}/{rounds}: " + " ".join(parts))
    for case in cases:
        after = getattr(case, "after_timing", None)
        if after is not None:
            case.info.update(after())


def summarise(cases: List[Case], reference: str = "matmul", baseline: str = "vanilla") -> Dict:
    """Per case: images/s, GFLOP/s, ratio to matmul (median of per-round ratios), × baseline.

    ``ratio_to_matmul`` uses the TF matmul of the same round; ``ratio_to_best_matmul``
    the faster of TF and numpy in that round (the stricter reference).
    """
    by_name = {c.name: c for c in cases}
    ref = by_name.get(reference)
    alt = by_name.get("matmul_numpy")
    base = by_name.get(baseline)
    out = {}
    for c in cases:
        rates = [c.flops / t for t in c.times]
        row = {
            "seconds_per_step_median": median(c.times),
            "seconds": [round(t, 4) for t in c.times],
            "gflops_per_step": c.flops / 1e9,
            "gflops_per_s_median": median(rates) / 1e9,
            "trace_and_first_step_s": c.trace_s,
            **c.info,
        }
        if c.images:
            row["images_per_s_median"] = median([c.images / t for t in c.times])
        if ref is not None and c is not ref and not c.name.startswith("matmul"):
            ref_rates = [ref.flops / t for t in ref.times]
            row["ratio_to_matmul"] = median([a / b for a, b in zip(rates, ref_rates)])
            if alt is not None and c is not alt:
                best = [max(a, alt.flops / t) for a, t in zip(ref_rates, alt.times)]
                row["ratio_to_best_matmul"] = median([a / b for a, b in zip(rates, best)])
        if base is not None and c.images and c is not base:
            row["time_vs_vanilla"] = median([a / b for a, b in zip(c.times, base.times)])
        out[c.name] = row
    return out
