"""``ingest``: dataset name + options -> a data artifact.

When the dataset registers a preparer (``bridging_tf.datasets.get_preparer``,
e.g. SIIM DICOM -> TFRecord shards) it runs once into ``<data>/data`` and the
loader is later pointed there; otherwise the artifact only records the
dataset config (``dataset.json``) that the other steps load the bundle from.

Example::

    ingest.run({}, {"data": Path("runs/x/data")}, dataset="biased_mnist",
               options={"rho": 0.997, "data_dir": "../shared/data/mnist", "seed": 0})
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from bridging_tf import datasets
from components.base import ArtifactWriter, write_json


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *, dataset: str,
        options: dict) -> dict:
    datasets.get_loader(dataset)  # unknown name -> UserError before anything is written
    options = dict(options)
    with ArtifactWriter("ingest", "Dataset", outputs["data"], params={"dataset": dataset,
                        "options": options}, inputs=inputs, seed=options.get("seed")) as art:
        if art.skipped:
            return art.metrics
        preparer = datasets.get_preparer(dataset)
        load_options = dict(options)
        if preparer is not None:
            rest = {k: v for k, v in options.items() if k != "data_dir"}
            info = preparer(options.get("data_dir"), art.path / "data", **rest) or {}
            load_options["data_dir"] = str(Path(outputs["data"]).resolve() / "data")
            art.metrics = {k: v for k, v in info.items() if isinstance(v, (int, float))}
            art.extra = {"prepared": info}
        write_json(art.path / "dataset.json", {"name": dataset, "options": load_options,
                                               "prepared": preparer is not None})
    return art.metrics
