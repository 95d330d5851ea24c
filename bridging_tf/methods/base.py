"""The wrapper every debiasing method is built on.

A method is a ``keras.Model`` around a backbone that returns
``(logits, bottleneck)``. It fills in one hook, :meth:`DebiasModel.compute_total_loss`,
which returns the total loss and its named parts; ``train_step`` and
``test_step`` mirror each other and feed the same trackers, so
``model.fit(ds)`` just works and ``history`` has stable keys (``loss``,
``ce_loss``, the method's own terms, ``accuracy``).

Data is ``(image, {"label": y, "private": p})`` (see ``bridging_tf.datasets``).

Weight decay is *coupled* L2 as in PyTorch's ``Adam(weight_decay=...)``:
``wd * w`` is added to every trainable variable's gradient (BN and biases
included) before the optimizer step, so any optimizer can be used.

Example::

    backbone = simple_convnet(kernel_size=7)
    model = VanillaModel(backbone, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(bundle["train"].dataset(256, shuffle=True), epochs=2)
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import keras
import tensorflow as tf
from keras import ops

from bridging_tf.options import NoHparams


def _labels(y, key: str, method: str):
    if isinstance(y, dict):
        if key not in y:
            raise ValueError(f"{method}: the dataset's targets have no {key!r} entry "
                             f"(got keys {sorted(y)}); "
                             "yield (image, {'label': ..., 'private': ...})")
        return y[key]
    if key == "label":
        return y
    raise ValueError(f"{method} needs the private label: "
                     "yield (image, {'label': ..., 'private': ...})")


def cross_entropy(labels, logits):
    """Mean sparse categorical cross-entropy on raw logits (computed in float32)."""
    logits = ops.cast(logits, "float32")
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def _multi_worker(strategy) -> bool:
    """The test Keras 3's TF trainer makes before its multi-worker reductions."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()


def add_coupled_weight_decay(grads, variables, weight_decay: float, scale=1.0):
    """``g + scale * wd * w`` for every (g, w): PyTorch's coupled L2 weight decay.

    ``scale`` is the factor the loss was multiplied by before differentiating
    (``1/replicas`` under tf.distribute, times the loss scale in mixed_float16).
    """
    if not weight_decay:
        return list(grads)
    return [None if g is None else
            g + ops.cast(scale, g.dtype) * ops.cast(weight_decay, g.dtype) * ops.cast(v, g.dtype)
            for g, v in zip(grads, variables)]


@keras.saving.register_keras_serializable(package="bridging_tf")
class DebiasModel(keras.Model):
    """Base wrapper: a backbone returning ``(logits, bottleneck)`` plus a loss.

    Subclasses set ``method_name`` and ``loss_term_names`` and override
    :meth:`compute_total_loss` (and :meth:`get_config` for new arguments).
    The base class alone is plain cross-entropy training (Vanilla).
    """

    method_name = "vanilla"
    #: names of the extra loss terms this method reports (history keys).
    loss_term_names: Sequence[str] = ()
    #: whether the private label is used during training.
    uses_private_label = False
    #: the method's hyper-parameters: a :mod:`bridging_tf.options` dataclass (one CLI flag per
    #: field); ``build_method`` passes the resolved values as keyword arguments.
    HPARAMS: type = NoHparams
    #: whether the method needs a second, "biased" backbone g (RUBi, LearnedMixin, ReBias).
    needs_biased_backbone = False

    def __init__(self, backbone: keras.Model, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.weight_decay = float(weight_decay)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.term_trackers = {n: keras.metrics.Mean(name=n) for n in self.loss_term_names}
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # The functional backbone already owns all weights: the wrapper is built
        # (so .keras loading also restores optimizer state for resuming).
        self.built = True

    # ------------------------------------------------------------------ model
    @property
    def original_model(self) -> keras.Model:
        """The wrapped backbone (``image -> (logits, bottleneck)``)."""
        return self.backbone

    def call(self, x, training=False):
        logits, _ = self.backbone(x, training=training)
        return logits

    def embed(self, x, training=False):
        """Bottleneck features for ``x`` (inference mode by default)."""
        _, z = self.backbone(x, training=training)
        return z

    def encoder(self) -> keras.Model:
        """A functional model ``image -> bottleneck`` sharing the backbone's weights."""
        return keras.Model(self.backbone.inputs, self.backbone.outputs[1], name="encoder")

    def build(self, input_shape=None):
        # The backbone is already built (functional); nothing else to create.
        self.built = True

    # ------------------------------------------------------------------- loss
    def compute_total_loss(self, x, y, logits, z, training: bool = False
                           ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """Return ``(total, {"ce_loss": ..., <term>: ...})``. Vanilla: CE only."""
        ce = cross_entropy(_labels(y, "label", self.method_name), logits)
        return ce, {"ce_loss": ce}

    def prepare(self, train_dataset, *, verbose: int = 1) -> None:
        """Hook run once before ``fit`` (e.g. LearnedMixin pre-trains its g here).

        The components call it; notebook users call it themselves. Default: nothing.
        """

    def trainable_for_step(self):
        """Variables the main optimizer updates (all trainable ones by default)."""
        return self.trainable_variables

    # ------------------------------------------------------------ train/test
    @staticmethod
    def _unpack(data):
        x, y = data[0], data[1]
        return x, y

    def train_step(self, data):
        x, y = self._unpack(data)
        variables = self.trainable_for_step()
        with tf.GradientTape() as tape:
            logits, z = self.backbone(x, training=True)
            total, parts = self.compute_total_loss(x, y, logits, z, training=True)
            # Under tf.distribute the optimizer sums replica gradients, so each
            # replica's loss is divided by the replica count; mixed_float16 adds
            # the optimizer's loss scale. The decay term gets the same factor.
            factor = self.optimizer.scale_loss(
                tf.constant(1.0 / tf.distribute.get_strategy().num_replicas_in_sync))
            scaled = total * ops.cast(factor, total.dtype)
        grads = tape.gradient(scaled, variables)
        grads = add_coupled_weight_decay(grads, variables, self.weight_decay, scale=factor)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return self.update_trackers(y, logits, total, parts)

    def test_step(self, data):
        x, y = self._unpack(data)
        logits, z = self.backbone(x, training=False)
        total, parts = self.compute_total_loss(x, y, logits, z, training=False)
        return self.update_trackers(y, logits, total, parts)

    def update_trackers(self, y, logits, total, parts):
        """Update every tracker and the metrics passed to ``compile`` -> the step's logs."""
        self.loss_tracker.update_state(total)
        self.ce_tracker.update_state(parts["ce_loss"])
        for name, tracker in self.term_trackers.items():
            if name in parts:
                tracker.update_state(parts[name])
        self.accuracy_tracker.update_state(_labels(y, "label", self.method_name), logits)
        logs = self.compute_metrics(None, y, logits)
        if _multi_worker(self._distribute_strategy):
            # keras-team/keras#20585: under MultiWorkerMirroredStrategy Keras 3 reduces each
            # log with strategy.reduce("MEAN", v, axis=0), which needs a batch axis: give the
            # (already synchronised) scalars one, so the reduction is their mean.
            logs = {k: ops.reshape(v, (1,)) for k, v in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds state from a first batch; under MultiWorkerMirroredStrategy its
        ``strategy.reduce`` of that distributed batch fails in eager mode
        (keras-team/keras#20585), so this replica's own share is used (only its shapes
        matter)."""
        strategy = self._distribute_strategy
        if not (_multi_worker(strategy) and iterator is not None):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """``compile(metrics=...)`` metrics see the target label, not the whole ``y`` dict."""
        return super().compute_metrics(x, _labels(y, "label", self.method_name), y_pred,
                                       sample_weight)

    @property
    def metrics(self):
        """Every tracker (so ``fit`` resets them each epoch), then ``compile``'s metrics."""
        compiled = getattr(self, "_compile_metrics", None)
        return [self.loss_tracker, self.ce_tracker, *self.term_trackers.values(),
                self.accuracy_tracker, *([] if compiled is None else [compiled])]

    # --------------------------------------------------------- serialization
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in [k for k in config if k.endswith("backbone")]:
            if isinstance(config[key], dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        return cls(**config)
