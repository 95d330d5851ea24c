"""The biased network g: the "Biased" baseline and the two-network base class.

ReBias, RUBi and LearnedMixin pair the target network f with a *biased*
network g that can only see the bias (on Biased-MNIST: the SimpleConvNet with
1×1 kernels, which sees per-pixel colour only; METHODS.md §2, §6).

- :class:`BiasedModel` (``--method=biased``) trains g alone with
  cross-entropy: the "Biased" row of the paper's Table 1 (≈10% unbiased
  accuracy). Its backbone *is* g, so ``encoder()`` / ``embed()`` give g's
  bottleneck and that is what gets exported and attacked.
- :class:`BiasedBranchModel` is the shared machinery of the three
  two-network methods: it owns ``biased_backbone`` (g), serialises it,
  gives g its own optimizer (``compile(optimizer=..., g_optimizer=...)``; by
  default a clone of f's optimizer config, so plain
  ``compile(optimizer=...)`` keeps working for notebooks and the generic
  training component) and persists both optimizers through ``.keras``.
  ``call``/``embed``/``encoder`` stay f's: g is training machinery only and
  is never part of the serving export.

Example::

    g = build_biased_backbone("simple_conv", width=0.25)
    model = BiasedModel(g, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train_ds, epochs=1)    # history: loss, ce_loss, accuracy
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.methods.base import DebiasModel, add_coupled_weight_decay


def clone_optimizer(optimizer):
    """A fresh optimizer with the same class and config (learning-rate schedule included)."""
    optimizer = keras.optimizers.get(optimizer)
    return optimizer.__class__.from_config(optimizer.get_config())


def second_optimizer(main, given, variables, *, passed=None, what: str, other: str):
    """The second player's optimizer, built on its ``variables``.

    ``given``, or a clone of ``main`` (call it after ``compile``, so a mixed-precision
    loss-scale wrapper is cloned too); loss-scaled whenever ``main`` is. ``passed`` is the
    object given for ``main`` (before Keras wraps it): the two must be different objects.
    """
    opt = clone_optimizer(main) if given is None else keras.optimizers.get(given)
    if opt is main or opt is passed:
        raise ValueError(f"{what} must be a different optimizer object from {other}")
    if (isinstance(main, keras.optimizers.LossScaleOptimizer)
            and not isinstance(opt, keras.optimizers.LossScaleOptimizer)):
        opt = keras.optimizers.LossScaleOptimizer(opt)
    if not opt.built:
        opt.build(variables)
    return opt


@keras.saving.register_keras_serializable(package="bridging_tf")
class BiasedModel(DebiasModel):
    """g alone, trained with cross-entropy on the target (the "Biased" baseline).

    ``build_method("biased", backbone=f, biased_backbone=g, ...)`` keeps only
    g (``needs_biased_backbone`` makes the component build it); constructed
    directly, the single ``backbone`` argument is taken as g.
    """

    method_name = "biased"
    needs_biased_backbone = True

    def __init__(self, backbone, biased_backbone=None, weight_decay: float = 0.0, **kwargs):
        super().__init__(biased_backbone if biased_backbone is not None else backbone,
                         weight_decay=weight_decay, **kwargs)


@keras.saving.register_keras_serializable(package="bridging_tf")
class BiasedBranchModel(DebiasModel):
    """Base for methods with a target network f (``backbone``) and a biased network g.

    Subclasses decide how g is trained. ``g_trained_in_fit`` says whether
    ``fit`` steps g's optimizer (RUBi, ReBias) or not (LearnedMixin, whose g
    is pre-trained in :meth:`prepare` and then frozen).
    """

    needs_biased_backbone = True
    #: whether train_step updates g with ``self.g_optimizer``.
    g_trained_in_fit = True

    def __init__(self, backbone, biased_backbone, weight_decay: float = 0.0, **kwargs):
        super().__init__(backbone, weight_decay=weight_decay, **kwargs)
        if biased_backbone is None:
            raise ValueError(f"{self.method_name} needs a biased backbone g "
                             "(e.g. bridging_tf.models.build_biased_backbone('simple_conv'))")
        self.biased_backbone = biased_backbone
        self.g_optimizer = None

    # ---------------------------------------------------------------- helpers
    @property
    def f_variables(self):
        """f's trainable variables (not g's)."""
        return list(self.backbone.trainable_variables)

    @property
    def g_variables(self):
        return list(self.biased_backbone.trainable_variables)

    def extra_f_variables(self):
        """Trainable variables other than f's that f's optimizer steps (heads, gates)."""
        return []

    def trainable_for_step(self):
        return self.f_variables + list(self.extra_f_variables())

    @staticmethod
    def _bottleneck_dim(net) -> int:
        return int(net.outputs[1].shape[-1])

    @staticmethod
    def loss_factor(optimizer):
        """``1/replicas`` times the optimizer's loss scale, as in ``DebiasModel.train_step``.

        Multiply a player's loss by it (inside its tape) before differentiating.
        """
        return optimizer.scale_loss(
            tf.constant(1.0 / tf.distribute.get_strategy().num_replicas_in_sync))

    def apply_player_step(self, optimizer, tape, scaled_loss, variables, factor):
        """Gradient of ``scaled_loss`` + coupled weight decay, then one ``optimizer`` step."""
        grads = tape.gradient(scaled_loss, variables)
        grads = add_coupled_weight_decay(grads, variables, self.weight_decay, scale=factor)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    @staticmethod
    def scaled(loss, factor):
        return loss * ops.cast(factor, loss.dtype)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=None, f_optimizer=None, g_optimizer=None, **kwargs):
        """``compile(optimizer=...)`` or ``compile(f_optimizer=..., g_optimizer=...)``.

        ``optimizer`` and ``f_optimizer`` are synonyms (f's optimizer); when
        ``g_optimizer`` is omitted, g gets a fresh optimizer with the same
        class and config (same learning-rate schedule, own step counter).
        Each optimizer is built on its own player's variables only.
        """
        if optimizer is not None and f_optimizer is not None:
            raise ValueError("pass either optimizer= or f_optimizer=, not both")
        f_opt = optimizer if f_optimizer is None else f_optimizer
        super().compile(optimizer="rmsprop" if f_opt is None else f_opt, **kwargs)
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_for_step())
        if self.g_trained_in_fit:
            self.g_optimizer = second_optimizer(self.optimizer, g_optimizer, self.g_variables,
                                                passed=f_opt, what="g_optimizer", other="f's")

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.g_optimizer is not None:
            config = dict(config)
            config["g_optimizer"] = keras.saving.serialize_keras_object(self.g_optimizer)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        return {**super().get_config(),
                "biased_backbone": keras.saving.serialize_keras_object(self.biased_backbone)}
