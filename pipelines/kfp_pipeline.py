"""Kubeflow Pipelines v2 adapter: the same component functions as KFP components.

Each KFP component is a thin lightweight-Python wrapper that calls
:func:`pipelines.pipeline.run_component`, which runs ``components.<step>.run`` on
the KFP artifact paths with that step's own parameters (``Step.params`` from
:func:`pipelines.pipeline.build`, one JSON pipeline parameter per step:
``ingest_params``, ``train_params``, ...). So the CLI, the local runner and KFP
share one pipeline definition, and a task sees only its own parameters.

- ``python -m pipelines.run --runner=kfp --compile=pipeline.yaml
  --image=REGISTRY/bridging-tf:TAG [--accelerator=TYPE[:COUNT]]
  --data_dir=gs://BUCKET/mnist`` writes the spec for Kubeflow / Vertex AI
  Pipelines. Every task runs in ``--image`` (built from this repo's
  ``Dockerfile`` / ``Dockerfile.gpu``; default ``$BRIDGING_TF_IMAGE``, else
  ``bridging-tf:latest``), with the CPU / memory requests and limits of
  :data:`RESOURCES`; ``--accelerator`` adds an accelerator request to the train
  task (``NVIDIA_TESLA_T4`` on Vertex AI, ``nvidia.com/gpu`` on Kubeflow).
  Artifacts pass between tasks as KFP artifacts (``dsl.Input`` / ``dsl.Output``);
  ``--data_dir`` is a URI the ingest task reads through ``tf.io.gfile``
  (:mod:`components.remote_data`) and copies into its data artifact. The spec
  holds no path of the compiling machine (no output folder, no local data or
  weights path: :func:`check_params` refuses those).
- ``--runner=kfp-local`` runs it on this machine with
  ``kfp.local.SubprocessRunner(use_venv=False)`` (the current environment).

Example::

    from pipelines.kfp_pipeline import compile_pipeline
    compile_pipeline(params, "pipeline.yaml", image="europe-docker.pkg.dev/P/R/bridging-tf:0.1.0",
                     accelerator="NVIDIA_TESLA_T4")
"""


import inspect
import json
import os
import re
from pathlib import Path
from typing import Optional

from kfp import compiler, dsl

BASE_IMAGE = os.environ.get("BRIDGING_TF_IMAGE", "bridging-tf:latest")
PIPELINE_NAME = "bridging-tf"

# step -> (cpu request, cpu limit, memory request, memory limit), Kubernetes quantities.
# Sized for the paper-scale jobs: train holds the training set in memory as uint8 (Biased-MNIST
# 55,000 x 28 x 28 x 3 = 130 MB; faces at 224 px several GB) plus TF's working set; 8 CPUs and
# 30G fit an n1-standard-8 (Vertex AI's usual T4 host). ingest may decode DICOMs (SIIM);
# extract / attack run the encoder and the probes over all splits; export and report are light.
RESOURCES = {
    "ingest": ("2", "4", "4G", "8G"),
    "train": ("4", "8", "16G", "30G"),
    "export": ("1", "2", "4G", "8G"),
    "extract_bottleneck": ("2", "4", "8G", "16G"),
    "attack": ("2", "4", "8G", "16G"),
    "report": ("1", "2", "2G", "4G"),
}
_ACCELERATOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._/-]*)(?::([1-9][0-9]*))?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_op(params_json: str, data: dsl.Output[dsl.Dataset]) -> str:
    from pipelines.pipeline import run_component
    return run_component("ingest", params_json, {}, {"data": data.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_op(params_json: str, data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> str:
    from pipelines.pipeline import run_component
    return run_component("train", params_json, {"data": data.path}, {"model": model.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_op(params_json: str, model: dsl.Input[dsl.Model],
              serving: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_component
    return run_component("export", params_json, {"model": model.path}, {"serving": serving.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def extract_bottleneck_op(params_json: str, model: dsl.Input[dsl.Model],
                          data: dsl.Input[dsl.Dataset],
                          embeddings: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_component
    return run_component("extract_bottleneck", params_json,
                         {"model": model.path, "data": data.path},
                         {"embeddings": embeddings.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def attack_op(params_json: str, embeddings: dsl.Input[dsl.Artifact],
              attack: dsl.Output[dsl.Artifact], data: dsl.Input[dsl.Dataset] = None) -> str:
    from pipelines.pipeline import run_component
    inputs = {"embeddings": embeddings.path}
    if data is not None:  # connected only when the job runs the decoder attack
        inputs["data"] = data.path
    return run_component("attack", params_json, inputs, {"attack": attack.path})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report_op(params_json: str, model: dsl.Input[dsl.Model],
              embeddings: dsl.Input[dsl.Artifact], attack: dsl.Input[dsl.Artifact],
              report: dsl.Output[dsl.Artifact]) -> str:
    from pipelines.pipeline import run_component
    return run_component("report", params_json, {"model": model.path,
                                                 "embeddings": embeddings.path,
                                                 "attack": attack.path}, {"report": report.path})


#: component name (``Step.component``) -> its KFP component: the typed entry of
#: ``components.<name>.run`` (KFP needs the artifact types in a Python signature).
OPS = {"ingest": ingest_op, "train": train_op, "export": export_op,
       "extract_bottleneck": extract_bottleneck_op, "attack": attack_op, "report": report_op}


def task_name(step) -> str:
    """The KFP task (and task folder) name of a :class:`~pipelines.pipeline.Step`."""
    return OPS[step.component].component_spec.name.replace("_", "-")


def parse_accelerator(value: Optional[str]):
    """``"TYPE[:COUNT]"`` -> ``(TYPE, COUNT)``; ``None`` -> ``None``. Bad text: UserError."""
    if value in (None, ""):
        return None
    m = _ACCELERATOR.match(str(value))
    if not m:
        from bridging_tf.errors import UserError
        raise UserError(f"--accelerator={value!r}: give TYPE or TYPE:COUNT (e.g. NVIDIA_TESLA_T4 "
                        "on Vertex AI, nvidia.com/gpu on Kubeflow, nvidia.com/gpu:2)")
    return m.group(1), int(m.group(2) or 1)


def _configure(task, step: str, image: str, accelerator) -> None:
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[step]
    task.set_container_image(image)
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim)
    task.set_memory_request(mem_req).set_memory_limit(mem_lim)
    task.set_display_name(step)
    if step == "train" and accelerator:
        kind, count = accelerator
        task.set_accelerator_type(kind).set_accelerator_limit(count)


def make_pipeline(params: dict, image: Optional[str] = None, accelerator: Optional[str] = None):
    """The ``@dsl.pipeline`` of the job ``params``: it walks :func:`pipelines.pipeline.build`.

    One task per step, fed the artifacts its ``inputs`` name from the step that outputs them
    and only its own parameters (pipeline parameter ``<step>_params``); every task in
    ``image``; ``accelerator`` on train.
    """
    from pipelines.pipeline import build
    steps = build(params, "unused")
    image = image or BASE_IMAGE
    acc = parse_accelerator(accelerator)

    def bridging_pipeline(*step_params: str) -> dsl.Artifact:  # KFP passes them in order
        produced = {}  # artifact name -> the output of the task that writes it
        for step, step_json in zip(steps, step_params):
            task = OPS[step.component](params_json=step_json,
                                       **{name: produced[name] for name in step.inputs})
            produced.update({name: task.outputs[name] for name in step.outputs})
            _configure(task, step.name, image, acc)
        return produced["report"]

    # KFP reads the pipeline's parameters from the signature: one str per step
    bridging_pipeline.__signature__ = inspect.Signature(
        [inspect.Parameter(f"{s.name}_params", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           default="{}", annotation=str) for s in steps],
        return_annotation=dsl.Artifact)
    bridging_pipeline.__annotations__ = {**{f"{s.name}_params": str for s in steps},
                                         "return": dsl.Artifact}
    return dsl.pipeline(name=PIPELINE_NAME, description="Train a debiasing method, export "
                        "the encoder, attack its bottleneck.")(bridging_pipeline)


def step_parameters(params: dict) -> dict:
    """``{"<step>_params": JSON of that step's own parameters}`` for the resolved job."""
    from components.base import to_jsonable
    from pipelines.pipeline import build
    return {f"{s.name}_params": json.dumps(to_jsonable(s.params), sort_keys=True)
            for s in build(params, "unused")}


def check_params(p: dict) -> None:
    """``--runner=kfp``: refuse what a cluster pod could not use (UserError, one line).

    - ``--data_dir``: a URI (``gs://``, ``s3://`` ... read through ``tf.io.gfile``), or an
      absolute path that exists in the pods (a mounted volume) but not here; a folder of this
      machine or a relative path is refused.
    - ``--weights`` is refused (the train task reads a local file).
    - ``--image`` (no spaces) and ``--accelerator`` (TYPE[:COUNT]).
    """
    from bridging_tf.errors import UserError
    from components.remote_data import is_uri

    data_dir = p.get("data_dir")
    if data_dir and not is_uri(data_dir):
        local = Path(data_dir).expanduser()
        if not Path(data_dir).is_absolute() or local.exists():
            raise UserError(f"--data_dir={data_dir} is a path on this machine, which a cluster pod "
                            "cannot read: copy it to a bucket (gsutil -m cp -r "
                            f"{data_dir} gs://BUCKET/) and pass --data_dir=gs://BUCKET/"
                            f"{local.name or 'data'} (or an absolute path of a volume the pods "
                            "mount)")
    weights = p.get("weights")
    if weights and weights not in ("none", "None"):
        raise UserError(f"--weights={weights}: not supported with --runner=kfp (the train task "
                        "reads a local file, and this machine's paths stay out of the spec); "
                        "train from scratch or run with --runner=local")
    image = p.get("image")
    if image is not None and not _IMAGE.match(str(image)):
        raise UserError(f"--image={image!r}: give an image reference, e.g. "
                        "REGISTRY/bridging-tf:TAG")
    parse_accelerator(p.get("accelerator"))


def compile_pipeline(params: dict, package_path, image: Optional[str] = None,
                     accelerator: Optional[str] = None) -> Path:
    """Write the KFP v2 pipeline spec (YAML) with ``params`` as the default job.

    ``image`` / ``accelerator`` default to ``params["image"]`` / ``params["accelerator"]``.
    """
    package_path = Path(package_path)
    if package_path.parent and not package_path.parent.exists():
        from bridging_tf.errors import UserError
        raise UserError(f"--compile={package_path}: folder {package_path.parent} does not exist")
    image = image or params.get("image")
    accelerator = accelerator or params.get("accelerator")
    if not image:
        print(f"note: the tasks run in image {BASE_IMAGE}; build and push one from this repo "
              "(docker build -t REGISTRY/bridging-tf:TAG .) and pass --image=REGISTRY/"
              "bridging-tf:TAG", flush=True)
    if not params.get("data_dir"):
        print("note: no --data_dir: every task that loads the data downloads it (no network on "
              "many clusters); pass --data_dir=gs://BUCKET/mnist (read through tf.io.gfile)",
              flush=True)
    compiler.Compiler().compile(pipeline_func=make_pipeline(params, image, accelerator),
                                package_path=str(package_path),
                                pipeline_parameters=step_parameters(params))
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
    task = make_pipeline(params)(**step_parameters(params))
    run_dir = Path(task.output.path).parents[1]
    artifacts, metrics = {}, {}
    from pipelines.pipeline import build
    for step in build(params, "unused"):
        for name in step.outputs:
            path = run_dir / task_name(step) / name
            artifacts[name] = str(path)
            meta = path / "artifact.json"
            if meta.exists():
                metrics[name] = json.loads(meta.read_text()).get("metrics", {})
    return artifacts, metrics
