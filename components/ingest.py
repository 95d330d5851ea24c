"""``ingest``: dataset name + options -> a data artifact.

When the dataset registers a preparer (``bridging_tf.datasets.get_preparer``,
e.g. SIIM DICOM -> TFRecord shards) it runs once into ``<data>/data`` and the
loader is later pointed there; otherwise the artifact only records the
dataset config (``dataset.json``) that the other steps load the bundle from.

The fingerprint covers what ``data_dir`` holds, not only its path
(:func:`components.base.data_signature`): the name, size and mtime of every
file under it (or of the one file it names), or with ``hash_data=True`` every
file's sha256 (slower; then a touched but unchanged file is not a change).
Relabel a CSV row, delete a DICOM or touch ``mnist.npz`` and the data is
ingested again, and every later step with it. A file rewritten with the same
size *and* its old mtime restored (``cp -p``, ``rsync -t``) is only seen with
``hash_data``; with ``data_dir`` unset (a loader's own cache or download) only
the options are fingerprinted.

Example::

    ingest.run({}, {"data": Path("runs/x/data")}, dataset="biased_mnist",
               options={"rho": 0.997, "data_dir": "../shared/data/mnist", "seed": 0})
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

from bridging_tf import datasets
from bridging_tf.errors import UserError
from bridging_tf.options import RunOptions
from components import remote_data
from components.base import ArtifactWriter, data_signature, read_artifact, write_json

STAGED = "source"  # where a --data_dir URI is copied inside the data artifact


def run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], *, dataset: str,
        options: dict, hash_data: bool = RunOptions.hash_data) -> dict:
    datasets.get_loader(dataset)  # unknown name -> UserError before anything is written
    options = dict(options)
    run_dir = Path(outputs["data"]).resolve().parent
    uri = remote_data.is_uri(options.get("data_dir"))  # gs://, s3://, ...: via tf.io.gfile
    if options.get("data_dir") and not uri and \
            Path(options["data_dir"]).expanduser().resolve() == run_dir:
        raise UserError(f"--data_dir={options['data_dir']} is also the run folder "
                        "(--output_dir); keep the run's outputs out of the data folder")
    # The run folder is left out of the listing should it lie inside the data folder.
    source = (remote_data.signature(options["data_dir"], hash_contents=bool(hash_data)) if uri
              else data_signature(options.get("data_dir"), hash_contents=bool(hash_data),
                                  exclude=[run_dir]))
    old = (read_artifact(outputs["data"]) or {}).get("parameters", {}).get("source")
    if source and old and old.get("path") == source["path"] and old.get("hashed") == source[
            "hashed"] and old.get("digest") != source["digest"]:
        print(f"[ingest] the data in {source['path']} changed since it was ingested "
              f"({old.get('files')} -> {source['files']} files); ingesting it again", flush=True)
    params = {"dataset": dataset, "options": options, "source": source}
    with ArtifactWriter("ingest", "Dataset", outputs["data"], params=params, inputs=inputs,
                        seed=options.get("seed")) as art:
        if art.skipped:
            return art.metrics
        preparer = datasets.get_preparer(dataset)
        load_options = dict(options)
        local_dir, in_artifact = options.get("data_dir"), None
        if uri:  # a local copy inside the artifact: later steps (other pods) read that
            local_dir = str(remote_data.stage(options["data_dir"], art.path / STAGED))
            in_artifact = Path(local_dir).relative_to(art.path).as_posix()
            load_options["data_dir"] = str(Path(outputs["data"]).resolve() / in_artifact)
        if preparer is not None:
            rest = {k: v for k, v in options.items() if k != "data_dir"}
            info = preparer(local_dir, art.path / "data", **rest) or {}
            load_options["data_dir"] = str(Path(outputs["data"]).resolve() / "data")
            in_artifact = "data"
            if uri:  # the prepared shards are what later steps read
                shutil.rmtree(art.path / STAGED, ignore_errors=True)
            art.metrics = {k: v for k, v in info.items() if isinstance(v, (int, float))}
            art.extra = {"prepared": info}
        spec = {"name": dataset, "options": load_options, "prepared": preparer is not None}
        if in_artifact:  # relative to the artifact, wherever a later step mounts it
            spec["data_dir_in_artifact"] = in_artifact
        write_json(art.path / "dataset.json", spec)
    return art.metrics
