"""tf.distribute helpers: strategies, global-batch gathering, precision/XLA defaults.

Batch regularisers (EnD's Gram terms) are defined on the **global** batch:
inside a replica context with more than one replica, :func:`gather_global`
all-gathers ``z``/labels across replicas (``ReplicaContext.all_gather`` is
differentiable: its gradient all-reduces and slices back the local part).
Every replica then computes the same global penalty; ``DebiasModel`` divides
each replica's loss by the replica count before the optimizer sums the
gradients, so 1 and N replicas give the same loss and update for the same
global batch. BatchNorm statistics stay per replica, as in Keras. Keras
under ``MirroredStrategy`` needs even per-replica shards, so with several
replicas the train component drops each epoch's last partial batch and needs
``batch_size`` divisible by the replica count.

Example::

    strategy = get_strategy("mirrored")
    with strategy.scope():
        model = build(...); model.compile(...)
    model.fit(ds)
"""

from __future__ import annotations

import tensorflow as tf

from bridging_tf.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
PRECISIONS = ("auto", "off", "float32", "mixed_float16", "mixed_bfloat16")


def accelerators() -> dict:
    return {"GPU": len(tf.config.list_physical_devices("GPU")),
            "TPU": len(tf.config.list_logical_devices("TPU"))}


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (local GPUs/CPUs), ``multiworker``
    (TF_CONFIG) or ``tpu``."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as err:
            raise UserError(f"--strategy=tpu: no TPU found ({str(err).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"--strategy={name!r}: choose one of {', '.join(STRATEGIES)}")


def resolve_mixed_precision(value: str = "auto") -> str:
    """Keras dtype policy: ``auto`` -> ``mixed_bfloat16`` with a GPU/TPU, ``float32`` on CPU."""
    if value in (None, "", "auto"):
        acc = accelerators()
        return "mixed_bfloat16" if (acc["GPU"] or acc["TPU"]) else "float32"
    if value in ("off", "float32", "false", "False", False):
        return "float32"
    if value in ("mixed_float16", "mixed_bfloat16"):
        return value
    raise UserError(f"--mixed_precision={value!r}: choose one of {', '.join(PRECISIONS)}")


def resolve_jit(value="auto") -> bool:
    """XLA: ``auto`` -> on with a GPU/TPU, off on CPU."""
    if value in (None, "", "auto"):
        acc = accelerators()
        return bool(acc["GPU"] or acc["TPU"])
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "on", "yes"):
        return True
    if str(value).lower() in ("0", "false", "off", "no"):
        return False
    raise UserError(f"--jit_compile={value!r}: choose auto, true or false")


def num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return ctx.num_replicas_in_sync


def gather_global(*tensors):
    """All-gather ``tensors`` along axis 0 over replicas (identity with one replica)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensors
    return tuple(ctx.all_gather(t, axis=0) for t in tensors)


__all__ = ["PRECISIONS", "STRATEGIES", "accelerators", "gather_global", "get_strategy",
           "num_replicas", "resolve_jit", "resolve_mixed_precision"]
