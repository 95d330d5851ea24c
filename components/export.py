"""``export``: model artifact -> serving artifact (TF Serving layout).

See :mod:`bridging_tf.export` for the signatures.

Output: ``<serving>/<model_name>/<version>/`` + ``<serving>/models.config`` +
``serving.json`` (model name, version, signatures, input dtype/shape).

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
    from bridging_tf.export import SIGNATURES, export_encoder, models_config

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
        final_base = Path(outputs["serving"]).resolve()
        # models.config must point at the final location, not the temp dir.
        (art.path / "models.config").write_text(
            models_config([(model_name, str(final_base / model_name))]))
        write_json(art.path / "serving.json", {
            "model_name": model_name, "version": int(version), "signatures": list(SIGNATURES),
            "input": {"name": "image", "dtype": "uint8", "shape": [None, *info["image_shape"]]},
            "outputs": {"bottleneck": "float32", "logits": "float32"},
            "path": str(final_base / model_name / str(int(version))),
            "rest": f"/v1/models/{model_name}:predict"})
        size = sum(f.stat().st_size for f in vdir.rglob("*") if f.is_file())
        art.metrics = {"saved_model_bytes": size}
    return art.metrics
