"""Export the encoder for TF Serving (SavedModel) — the inference graph only.

Layout (what ``tensorflow_model_server --model_config_file`` expects)::

    <base>/models.config
    <base>/<model_name>/<version>/saved_model.pb, variables/

``models.config`` names ``base_path: "/models/<model_name>"``, never this
machine's path: the ``tensorflow/serving`` image serves from ``/models``, so
mount ``<base>`` there (``config_base_path`` changes it for other layouts)::

    docker run --rm -p 8500:8500 -p 8501:8501 \\
        -v "$PWD/runs/x/serving:/models" tensorflow/serving:2.21.0 \\
        --model_config_file=/models/models.config
    # or, one model without the config: -v "$PWD/runs/x/serving:/models" -e MODEL_NAME=<model_name>
    # REST: http://localhost:8501/v1/models/<model_name>:predict   gRPC: localhost:8500

Signatures, each with a single input ``image`` (``uint8 [None, H, W, C]``):

- ``serving_default``: ``image -> {"bottleneck": float32 [None, D], "logits": float32 [None, K]}``
- ``bottleneck``: ``image -> {"bottleneck": ...}``

Normalisation ``(x/255 - mean)/std`` runs inside the graph
(:func:`bridging_tf.datasets.normalize_images`), so clients send raw uint8
pixels. Only the backbone's variables are saved: no optimizer state, no
labels, no private attribute.

Example::

    path = export_encoder(model.original_model, "serving", "biased_mnist_end",
                          mean=bundle.mean, std=bundle.std)
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](image=tf.zeros([1, 28, 28, 3], tf.uint8))
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import keras
import tensorflow as tf

from bridging_tf.datasets.base import normalize_images

SIGNATURES = ("serving_default", "bottleneck")
INPUT_NAME = "image"
CONFIG_BASE_PATH = "/models"  # where the tensorflow/serving image expects the export mounted


def models_config(entries) -> str:
    """A ``models.config`` (text protobuf) for ``tensorflow_model_server``.

    ``entries`` are ``(name, base_path)`` pairs.
    """
    lines = ["model_config_list {"]
    for name, base_path in entries:
        lines += ["  config {", f'    name: "{name}"', f'    base_path: "{base_path}"',
                  '    model_platform: "tensorflow"', "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def export_encoder(backbone: keras.Model, base_dir, model_name: str, *, mean: Sequence[float],
                   std: Sequence[float], version: int = 1, image_shape=None,
                   config_base_path: str = CONFIG_BASE_PATH) -> Path:
    """Write ``<base_dir>/<model_name>/<version>/`` + ``<base_dir>/models.config``.

    Returns the version directory.

    ``backbone`` is ``image -> (logits, bottleneck)`` (a method's ``original_model``).
    ``models.config`` points at ``<config_base_path>/<model_name>``: where the server sees
    ``<base_dir>`` (``/models`` when it is mounted there), not where it was written.
    """
    base_dir = Path(base_dir)
    image_shape = tuple(image_shape or backbone.inputs[0].shape[1:])
    spec = tf.TensorSpec([None, *image_shape], tf.uint8, name=INPUT_NAME)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def outputs(image):
        x = normalize_images(image, mean, std)
        logits, z = backbone(x, training=False)
        return {"bottleneck": tf.cast(z, tf.float32), "logits": tf.cast(logits, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.add_endpoint("serving_default", outputs, input_signature=[spec])
    archive.add_endpoint("bottleneck", lambda image: {"bottleneck": outputs(image)["bottleneck"]},
                         input_signature=[spec])
    version_dir = base_dir / model_name / str(int(version))
    tmp = version_dir.with_name(f".{version_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(tmp), verbose=False)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    os.replace(tmp, version_dir)
    (base_dir / "models.config").write_text(
        models_config([(model_name, f"{config_base_path.rstrip('/')}/{model_name}")]))
    return version_dir


__all__ = ["CONFIG_BASE_PATH", "INPUT_NAME", "SIGNATURES", "export_encoder", "models_config"]
