"""Vanilla: plain cross-entropy training (the baseline every method is compared to)."""

from __future__ import annotations

import keras

from bridging_tf.methods.base import DebiasModel


@keras.saving.register_keras_serializable(package="bridging_tf")
class VanillaModel(DebiasModel):
    """Cross-entropy only; history keys ``loss``, ``ce_loss``, ``accuracy``.

    Example::

        model = VanillaModel(simple_convnet(), weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(train_ds, epochs=1)
    """

    method_name = "vanilla"
