"""Adversarial removal: an MLP adversary on the bottleneck, trained through gradient reversal.

Ganin & Lempitsky (ICML 2015); the same idea on coloured MNIST in Kim et al.,
"Learning Not to Learn" (CVPR 2019). An adversary ``A`` — an MLP with two
hidden layers (``adv_hidden`` units each, ReLU) — reads the bottleneck ``z``
and predicts the private label ``p``. Between ``z`` and ``A`` sits a
:class:`GradientReversal` layer: the identity forward, ``-λ_t · grad``
backward. One backward pass of ``CE(ℓ, y) + CE(A(GRL(z)), p)`` then gives

- the adversary the gradient of its own loss, ``∇_A CE_adv`` (it learns to
  predict ``p``);
- the encoder ``∇(CE − λ_t·CE_adv)``: it learns the target while making the
  adversary's job harder.

Per batch: ``adv_steps − 1`` extra adversary-only steps on the (fixed)
bottleneck first, then the joint step above, so the adversary takes
``adv_steps`` steps per encoder step, with its own optimizer. ``λ_t`` ramps
linearly from 0 to ``adv_lambda`` over the first ``adv_warmup_epochs`` epochs
(counted in encoder steps; 0 = no ramp). ``fit`` reads the number of steps
per epoch from ``steps_per_epoch=`` or the dataset's length.

Trackers: ``loss`` = the encoder's objective ``CE − λ_t·CE_adv``,
``ce_loss``, ``adv_ce`` (the adversary's CE on the batch, before the joint
step's update), ``adv_accuracy`` (the adversary's private accuracy on the
batch — near chance does *not* mean the information is gone: a fresh
attacker trained afterwards may still find it), ``adv_weight`` (``λ_t``),
``accuracy``. The adversary is training machinery: ``call``/``embed``/
``encoder`` are the backbone's only and it is never exported.

A known limit of reversal (Elazar & Goldberg 2018): maximising the
adversary's CE is unbounded, and an encoder can raise it by making the
adversary *confidently wrong* — which still encodes the attribute — so
``loss`` may go negative at large ``λ``. Judge the method by the post-hoc
attackers (``private_accuracy_worst``), never by ``adv_accuracy``.

Two optimizers, like ReBias::

    model = AdversarialModel(simple_convnet(), num_private=10, adv_lambda=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))       # adversary: a clone
    # or model.compile(optimizer=..., adversary_optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train_ds, epochs=1)
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.methods.base import DebiasModel, _labels, add_coupled_weight_decay, cross_entropy
from bridging_tf.methods.biased import BiasedBranchModel, second_optimizer
from bridging_tf.options import AdversarialHparams


def gradient_reversal(x, scale=1.0):
    """Identity forward; backward multiplies the incoming gradient by ``-scale``.

    ``scale`` gets no gradient (it is a schedule value, not a parameter).
    """
    x = tf.convert_to_tensor(x)
    scale = tf.cast(tf.convert_to_tensor(scale), x.dtype)

    @tf.custom_gradient
    def _reverse(v, s):
        def grad(dy):
            return -tf.cast(s, dy.dtype) * dy, tf.zeros_like(s)
        return tf.identity(v), grad

    return _reverse(x, scale)


@keras.saving.register_keras_serializable(package="bridging_tf")
class GradientReversal(keras.layers.Layer):
    """The gradient-reversal layer: ``y = x``, ``dL/dx = -scale · dL/dy``.

    ``scale`` is the layer's default; ``layer(x, scale=t)`` overrides it per
    call (a tensor, e.g. a warm-up schedule).

    Example::

        grl = GradientReversal(1.0)
        logits = adversary(grl(z))       # the encoder is pushed away from what helps A
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.built = True  # no weights

    def call(self, x, scale=None):
        return gradient_reversal(x, self.scale if scale is None else scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build_adversary(dim: int, num_private: int, hidden: int = 256, name: str = "adversary"):
    """The adversary MLP: ``[D] -> Dense(h, ReLU) -> Dense(h, ReLU) -> Dense(K)`` logits."""
    return keras.Sequential([
        keras.Input((int(dim),), name="bottleneck"),
        keras.layers.Dense(int(hidden), activation="relu", name="hidden1"),
        keras.layers.Dense(int(hidden), activation="relu", name="hidden2"),
        keras.layers.Dense(int(num_private), name="private_logits"),
    ], name=name)


@keras.saving.register_keras_serializable(package="bridging_tf")
class AdversarialModel(DebiasModel):
    """CE on the target; an MLP adversary on the bottleneck through gradient reversal.

    Args:
      backbone: ``image -> (logits, bottleneck)``.
      num_private: number of private classes.
      adv_lambda: ``λ``, the reversal strength (the encoder minimises
        ``CE − λ·CE_adv``).
      adv_warmup_epochs: epochs over which ``λ_t`` ramps linearly from 0 to
        ``λ`` (0: the full ``λ`` from the first step).
      adv_steps: adversary steps per encoder step (``k``, at least 1).
      adv_hidden: units of each of the adversary's two hidden layers.
      steps_per_epoch: encoder steps per epoch for the warm-up (``fit`` sets it).
      weight_decay: coupled L2 on the encoder and the adversary.
    """

    method_name = "adversarial"
    loss_term_names = ("adv_ce", "adv_accuracy", "adv_weight")
    uses_private_label = True
    HPARAMS = AdversarialHparams

    def __init__(self, backbone, num_private: int = 10,
                 adv_lambda: float = AdversarialHparams.adv_lambda,
                 adv_warmup_epochs: float = AdversarialHparams.adv_warmup_epochs,
                 adv_steps: int = AdversarialHparams.adv_steps,
                 adv_hidden: int = AdversarialHparams.adv_hidden,
                 steps_per_epoch=None, weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, weight_decay=weight_decay, **kwargs)
        for name, value, ok, what in (
                ("adv_lambda", adv_lambda, float(adv_lambda) >= 0, ">= 0"),
                ("adv_warmup_epochs", adv_warmup_epochs, float(adv_warmup_epochs) >= 0, ">= 0"),
                ("adv_steps", adv_steps, int(adv_steps) >= 1 and int(adv_steps) == adv_steps,
                 "an integer >= 1"),
                ("adv_hidden", adv_hidden, int(adv_hidden) >= 1, ">= 1"),
                ("num_private", num_private, int(num_private) >= 2, ">= 2")):
            if not ok:
                raise ValueError(f"{name} must be {what}, got {value!r}")
        self.num_private = int(num_private)
        self.adv_lambda = float(adv_lambda)
        self.adv_warmup_epochs = float(adv_warmup_epochs)
        self.adv_steps = int(adv_steps)
        self.adv_hidden = int(adv_hidden)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        dim = int(backbone.outputs[1].shape[-1])
        self.adversary = build_adversary(dim, self.num_private, self.adv_hidden)
        self.reversal = GradientReversal(self.adv_lambda, name="gradient_reversal")
        self.adversary_optimizer = None

    # --------------------------------------------------------------- variables
    @property
    def adversary_variables(self):
        return list(self.adversary.trainable_variables)

    def trainable_for_step(self):
        """The main optimizer steps the encoder (backbone) only; the adversary has its own."""
        return list(self.backbone.trainable_variables)

    # ---------------------------------------------------------------- schedule
    def current_lambda(self):
        """``λ_t = λ · min(1, step / (adv_warmup_epochs · steps_per_epoch))`` (float32 scalar)."""
        lam = ops.convert_to_tensor(self.adv_lambda, "float32")
        if self.adv_warmup_epochs <= 0:
            return lam
        if not self.steps_per_epoch:
            raise ValueError("adv_warmup_epochs needs the number of steps per epoch: fit() on a "
                             "dataset of known length, pass steps_per_epoch=, or construct the "
                             "model with steps_per_epoch=")
        step = (ops.cast(self.optimizer.iterations, "float32")
                if getattr(self, "optimizer", None) is not None else 0.0)
        ramp = ops.minimum(1.0, step / (self.adv_warmup_epochs * float(self.steps_per_epoch)))
        return lam * ramp

    def _set_steps_per_epoch(self, steps) -> None:
        if steps and int(steps) != self.steps_per_epoch:
            self.steps_per_epoch = int(steps)
            # λ_t's schedule is traced into the step functions: rebuild them.
            self.train_function = None
            self.test_function = None

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit``; records the steps per epoch the warm-up of ``λ`` counts in."""
        if self.adv_warmup_epochs > 0:
            steps = kwargs.get("steps_per_epoch")
            if steps is None and isinstance(x, tf.data.Dataset):
                card = int(x.cardinality())
                steps = card if card > 0 else None
            elif steps is None and x is not None and not args:
                first = next(iter(x.values())) if isinstance(x, dict) else (
                    x[0] if isinstance(x, (list, tuple)) else x)
                if hasattr(first, "__len__"):
                    n = len(first) * (1.0 - float(kwargs.get("validation_split") or 0.0))
                    steps = math.ceil(n / int(kwargs.get("batch_size") or 32))
            self._set_steps_per_epoch(steps)
        return super().fit(x, *args, **kwargs)

    # -------------------------------------------------------------------- loss
    def compute_total_loss(self, x, y, logits, z, training=False):
        """Value: ``CE − λ_t·CE_adv``; gradient: the gradient-reversal one (module doc)."""
        labels = _labels(y, "label", self.method_name)
        private = _labels(y, "private", self.method_name)
        ce = cross_entropy(labels, logits)
        lam = self.current_lambda()
        adv_logits = self.adversary(self.reversal(ops.cast(z, "float32"), scale=lam),
                                    training=training)
        adv_ce = cross_entropy(private, adv_logits)
        objective = ce - lam * adv_ce
        surrogate = ce + adv_ce  # its gradient: encoder ∇CE − λ_t∇CE_adv, adversary ∇CE_adv
        total = surrogate + ops.stop_gradient(objective - surrogate)
        hit = ops.equal(ops.argmax(adv_logits, axis=-1), ops.cast(private, "int64"))
        return total, {"ce_loss": ce, "adv_ce": adv_ce,
                       "adv_accuracy": ops.mean(ops.cast(hit, "float32")), "adv_weight": lam}

    # ------------------------------------------------------------------ steps
    def _apply(self, optimizer, grads, variables, factor):
        grads = add_coupled_weight_decay(grads, variables, self.weight_decay, scale=factor)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    def adversary_step(self, z_fixed, private, factor):
        """One adversary-only step on a fixed bottleneck -> its CE."""
        with tf.GradientTape() as tape:
            adv_ce = cross_entropy(private, self.adversary(z_fixed, training=True))
            scaled = adv_ce * ops.cast(factor, adv_ce.dtype)
        variables = self.adversary_variables
        self._apply(self.adversary_optimizer, tape.gradient(scaled, variables), variables, factor)
        return adv_ce

    def train_step(self, data):
        x, y = self._unpack(data)
        private = _labels(y, "private", self.method_name)
        enc_vars = self.trainable_for_step()
        adv_vars = self.adversary_variables
        f_factor = BiasedBranchModel.loss_factor(self.optimizer)
        a_factor = BiasedBranchModel.loss_factor(self.adversary_optimizer)
        with tf.GradientTape(persistent=True) as tape:
            logits, z = self.backbone(x, training=True)
            if self.adv_steps > 1:
                with tape.stop_recording():
                    z_fixed = ops.stop_gradient(ops.cast(z, "float32"))
                    for _ in range(self.adv_steps - 1):
                        self.adversary_step(z_fixed, private, a_factor)
            total, parts = self.compute_total_loss(x, y, logits, z, training=True)
            f_scaled = total * ops.cast(f_factor, total.dtype)
            a_scaled = parts["adv_ce"] * ops.cast(a_factor, parts["adv_ce"].dtype)
        self._apply(self.optimizer, tape.gradient(f_scaled, enc_vars), enc_vars, f_factor)
        self._apply(self.adversary_optimizer, tape.gradient(a_scaled, adv_vars), adv_vars,
                    a_factor)
        del tape
        return self.update_trackers(y, logits, total, parts)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", adversary_optimizer=None, **kwargs):
        """``compile(optimizer=..., adversary_optimizer=...)``; the adversary's defaults to a clone.

        The clone has the main optimizer's class and config (same learning-rate
        schedule, its own step counter); each optimizer is built on its own
        player's variables only.
        """
        super().compile(optimizer=optimizer, **kwargs)
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_for_step())
        self.adversary_optimizer = second_optimizer(
            self.optimizer, adversary_optimizer, self.adversary_variables, passed=optimizer,
            what="adversary_optimizer", other="the main one")

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.adversary_optimizer is not None:
            config = dict(config)
            config["adversary_optimizer"] = keras.saving.serialize_keras_object(
                self.adversary_optimizer)
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {**super().get_config(), "num_private": self.num_private,
                "adv_lambda": self.adv_lambda, "adv_warmup_epochs": self.adv_warmup_epochs,
                "adv_steps": self.adv_steps, "adv_hidden": self.adv_hidden,
                "steps_per_epoch": self.steps_per_epoch}
