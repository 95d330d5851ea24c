"""``export``: model artifact -> serving artifact (TF Serving layout).

See :mod:`bridging_tf.export` for the signatures.

Output: ``<serving>/<model_name>/<version>/`` + ``<serving>/models.config`` +
``serving.json`` (model name, version, signatures, input dtype/shape).
``models.config`` holds ``base_path: "/models/<model_name>"`` (no path of this
machine): mount ``<serving>`` at ``/models`` in the ``tensorflow/serving``
container (recipe in :mod:`bridging_tf.export`).

Example::

    export.run({"model": Path("runs/x/model")}, {"serving": Path("runs/x/serving")},
               model_name="biased_mnist_end")
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from components.base import ArtifactWriter, write_json
from components.train import load_model, train_info


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *,
        model_name: Optional[str] = None, version: int = 1) -> dict:
    from bridging_tf.export import CONFIG_BASE_PATH, SIGNATURES, export_encoder

    info = train_info(inputs["model"])
    model_name = model_name or f"{info['dataset']}_{info['method']}"
    params = {"model_name": model_name, "version": int(version)}
    with ArtifactWriter("export", "ServingModel", outputs["serving"], params=params,
                        inputs=inputs) as art:
        if art.skipped:
            return art.metrics
        model = load_model(inputs["model"])
        vdir = export_encoder(model.original_model, art.path, model_name, mean=info["mean"],
                              std=info["std"], version=version,
                              image_shape=info["image_shape"])
        write_json(art.path / "serving.json", {
            "model_name": model_name, "version": int(version), "signatures": list(SIGNATURES),
            "input": {"name": "image", "dtype": "uint8", "shape": [None, *info["image_shape"]]},
            "outputs": {"bottleneck": "float32", "logits": "float32"},
            "path": f"{model_name}/{int(version)}",  # relative to this artifact
            "rest": f"/v1/models/{model_name}:predict",
            "models_config_base_path": f"{CONFIG_BASE_PATH}/{model_name}"})
        size = sum(f.stat().st_size for f in vdir.rglob("*") if f.is_file())
        art.metrics = {"saved_model_bytes": size}
    return art.metrics
