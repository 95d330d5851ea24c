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

``multiworker`` reads ``TF_CONFIG`` (:func:`tf_config` checks it; Kubeflow's
``TFJob`` sets it) and must be created before the process runs any TF op:
:func:`multiworker_strategy` creates it once and ``get_strategy`` returns that
instance. Tested with two CPU worker processes on 127.0.0.1 (gRPC, ring
collectives; ``tests/test_multiworker.py``): EnD's loss, ``end_orth`` and
``end_par`` match one process on the same global batch.

Example::

    strategy = get_strategy("mirrored")
    with strategy.scope():
        model = build(...); model.compile(...)
    model.fit(ds)
"""

from __future__ import annotations

import json
import os

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
        return multiworker_strategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as err:
            raise UserError(f"--strategy=tpu: no TPU found ({str(err).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"--strategy={name!r}: choose one of {', '.join(STRATEGIES)}")


_MULTIWORKER = None


def tf_config() -> dict:
    """``TF_CONFIG`` parsed and checked (``cluster`` with ``worker`` addresses, ``task``)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError("--strategy=multiworker needs TF_CONFIG (JSON: cluster.worker = every "
                        "worker's host:port, task = this process's type and index; Kubeflow's "
                        "TFJob sets it)")
    try:
        cfg = json.loads(raw)
    except ValueError as err:
        raise UserError(f"TF_CONFIG is not JSON ({err})") from None
    workers = (cfg.get("cluster") or {}).get("worker") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not workers or not isinstance(task, dict) or "index" not in task:
        raise UserError("TF_CONFIG needs cluster.worker (a list of host:port) and task "
                        "{type, index}")
    return cfg


def multiworker_strategy(communication: str = "auto") -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, created once per process.

    TensorFlow allows it only before the process's first TF op ("Collective ops must
    be configured at program startup"): a launcher calls this first, and the train
    step's ``get_strategy("multiworker")`` then gets the same instance.
    ``communication``: ``auto`` (ring on CPU, NCCL on GPUs), ``ring`` or ``nccl``.
    """
    global _MULTIWORKER
    if _MULTIWORKER is not None:
        return _MULTIWORKER
    tf_config()
    impl = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}.get(communication)
    if impl is None:
        raise UserError(f"communication={communication!r}: choose auto, ring or nccl")
    try:
        _MULTIWORKER = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=impl))
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise UserError("--strategy=multiworker: TensorFlow ran an op before the strategy was "
                        "created; create it first (bridging_tf.distribute.multiworker_strategy() "
                        "at the start of the program)") from None
    return _MULTIWORKER


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
    # A tensor that enters the replica function unchanged (a tf.function argument, e.g.
    # the labels) has no device, and MultiWorkerMirroredStrategy's all_gather needs one
    # ("destinations can not be empty"): tf.identity places it on the replica's device.
    return tuple(ctx.all_gather(t if getattr(t, "device", "") else tf.identity(t), axis=0)
                 for t in tensors)


__all__ = ["PRECISIONS", "STRATEGIES", "accelerators", "gather_global", "get_strategy",
           "multiworker_strategy", "num_replicas", "resolve_jit", "resolve_mixed_precision",
           "tf_config"]
