"""Kubeflow Pipelines v2 adapter: the same component functions as KFP components.

Each KFP component is a thin lightweight-Python wrapper that calls
:func:`pipelines.pipeline.run_step`, which runs ``components.<step>.run`` on the KFP artifact
paths with the parameters :func:`pipelines.pipeline.build` derives from the
resolved job flags (passed as one ``params_json`` pipeline parameter). So the
CLI, the local runner and KFP share one pipeline definition.

- ``python -m pipelines.run --runner=kfp --compile=pipeline.yaml`` writes the
  spec for Kubeflow / Vertex AI Pipelines (the container image is
  ``$BRIDGING_TF_IMAGE``, default ``bridging-tf:latest``: an image with this
  package installed, e.g. ``pip install '.[kfp]'`` on a TF 2.21 base);
- ``--runner=kfp-local`` runs it on this machine with
  ``kfp.local.SubprocessRunner(use_venv=False)`` (the current environment).

Example::

    from pipelines.kfp_pipeline import compile_pipeline
    compile_pipeline(params, "pipeline.yaml")
"""


import json
import os
from pathlib import Path

from kfp import compiler, dsl

BASE_IMAGE = os.environ.get("BRIDGING_TF_IMAGE", "bridging-tf:latest")
PIPELINE_NAME = "bridging-tf"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_op(params_json: str, data: dsl.Output[dsl.Dataset]) -> str:
    from pipelines.pipeline import run_step
    return run_step("ingest", params_json, {}, {"data": data.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_op(params_json: str, data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> str:
    from pipelines.pipeline import run_step
    return run_step("train", params_json, {"data": data.path}, {"model": model.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_op(params_json: str, model: dsl.Input[dsl.Model],
              serving: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_step
    return run_step("export", params_json, {"model": model.path}, {"serving": serving.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def extract_bottleneck_op(params_json: str, model: dsl.Input[dsl.Model],
                          data: dsl.Input[dsl.Dataset],
                          embeddings: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_step
    return run_step("extract_bottleneck", params_json, {"model": model.path, "data": data.path},
                    {"embeddings": embeddings.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def attack_op(params_json: str, embeddings: dsl.Input[dsl.Artifact],
              data: dsl.Input[dsl.Dataset], attack: dsl.Output[dsl.Artifact]) -> str:
    import json as _json

    from pipelines.pipeline import attack_list, run_step
    inputs = {"embeddings": embeddings.path}
    if "decoder" in attack_list(_json.loads(params_json)):
        inputs["data"] = data.path
    return run_step("attack", params_json, inputs, {"attack": attack.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report_op(params_json: str, model: dsl.Input[dsl.Model],
              embeddings: dsl.Input[dsl.Artifact], attack: dsl.Input[dsl.Artifact],
              report: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_step
    return run_step("report", params_json, {"model": model.path, "embeddings": embeddings.path,
                                            "attack": attack.path}, {"report": report.path})


@dsl.pipeline(name=PIPELINE_NAME,
              description="Train a debiasing method, export the encoder, attack its bottleneck.")
def bridging_pipeline(params_json: str = "{}") -> dsl.Artifact:
    ingest = ingest_op(params_json=params_json)
    train = train_op(params_json=params_json, data=ingest.outputs["data"])
    export_op(params_json=params_json, model=train.outputs["model"])
    extract = extract_bottleneck_op(params_json=params_json, model=train.outputs["model"],
                                    data=ingest.outputs["data"])
    attack = attack_op(params_json=params_json, embeddings=extract.outputs["embeddings"],
                       data=ingest.outputs["data"])
    report = report_op(params_json=params_json, model=train.outputs["model"],
                       embeddings=extract.outputs["embeddings"], attack=attack.outputs["attack"])
    return report.outputs["report"]


def _params_json(params: dict) -> str:
    from components.base import to_jsonable
    return json.dumps(to_jsonable(params), sort_keys=True)


def compile_pipeline(params: dict, package_path) -> Path:
    """Write the KFP v2 pipeline spec (YAML) with ``params`` as the default job."""
    package_path = Path(package_path)
    if package_path.parent and not package_path.parent.exists():
        from bridging_tf.errors import UserError
        raise UserError(f"--compile={package_path}: folder {package_path.parent} does not exist")
    compiler.Compiler().compile(pipeline_func=bridging_pipeline, package_path=str(package_path),
                                pipeline_parameters={"params_json": _params_json(params)})
    return package_path


def run_kfp_local(params: dict, output_dir):
    """Run the pipeline with ``kfp.local.SubprocessRunner(use_venv=False)``.

    Returns ``(artifacts, step_metrics)``: artifact paths (under
    ``<output_dir>/kfp_root``) and each step's metrics.
    """
    from kfp import local

    root = Path(output_dir).resolve() / "kfp_root"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)
    task = bridging_pipeline(params_json=_params_json(params))
    report = Path(task.output.path)
    run_dir = report.parents[1]
    artifacts, metrics = {}, {}
    names = {"ingest-op": "data", "train-op": "model", "export-op": "serving",
             "extract-bottleneck-op": "embeddings", "attack-op": "attack",
             "report-op": "report"}
    for task_dir, name in names.items():
        path = run_dir / task_dir / name
        artifacts[name] = str(path)
        meta = path / "artifact.json"
        if meta.exists():
            metrics[name] = json.loads(meta.read_text()).get("metrics", {})
    return artifacts, metrics
