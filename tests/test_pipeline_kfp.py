"""KFP v2 adapter: compile the pipeline spec; run it with kfp.local.SubprocessRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("kfp",
    reason="needs kfp: the [test] and [kfp] extras install it")

STEPS = ("ingest-op", "train-op", "export-op", "extract-bottleneck-op", "attack-op", "report-op")


def test_compile_writes_a_kfp_v2_spec_with_every_step_and_the_job(tmp_path):
    import yaml

    from pipelines.kfp_pipeline import compile_pipeline
    from pipelines.run import resolve_params

    params = resolve_params({"method": "vanilla", "epochs": 2, "width": 0.25})
    path = compile_pipeline(params, tmp_path / "pipeline.yaml")
    spec = yaml.safe_load(path.read_text())
    assert spec["pipelineInfo"]["name"] == "bridging-tf"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(STEPS) == set(tasks)
    assert tasks["train-op"]["dependentTasks"] == ["ingest-op"]
    job = _defaults(spec)
    assert job["train"]["method"] == "vanilla" and job["train"]["epochs"] == 2
    assert job["report"]["run_info"]["method"] == "vanilla"


def _defaults(spec) -> dict:
    """``{step: the JSON default of its <step>_params pipeline parameter}``."""
    params = spec["root"]["inputDefinitions"]["parameters"]
    return {name[:-len("_params")]: json.loads(v["defaultValue"]) for name, v in params.items()}


def test_compile_into_a_missing_folder_is_a_user_error(tmp_path):
    from bridging_tf.errors import UserError
    from pipelines.kfp_pipeline import compile_pipeline
    from pipelines.run import resolve_params

    with pytest.raises(UserError, match="--compile"):
        compile_pipeline(resolve_params({}), tmp_path / "nope" / "p.yaml")


@pytest.mark.realdata
@pytest.mark.slow
def test_kfp_local_runner_runs_the_tiny_pipeline(mnist_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipelines.run", "--runner=kfp-local", "--method=vanilla",
           f"--data_dir={mnist_dir}", f"--output_dir={out}", "--train_size=200",
           "--val_size=100", "--test_size=100", "--attack_size=200", "--epochs=1",
           "--batch_size=100", "--width=0.125", "--verbose=0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "vanilla" and 0 <= res["private_accuracy"] <= 1
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["flags"]["runner"] == "kfp-local"
    for name in ("data", "model", "serving", "embeddings", "attack", "report"):
        assert "kfp_root" in meta["artifacts"][name]
        assert os.path.exists(os.path.join(meta["artifacts"][name], "artifact.json")), name


IMAGE = "europe-docker.pkg.dev/my-project/ml/bridging-tf:0.1.0"


def _compile_cli(tmp_path, *flags):
    out = tmp_path / "pipeline.yaml"
    cmd = [sys.executable, "-m", "pipelines.run", "--runner=kfp", f"--compile={out}", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("BRIDGING_TF_IMAGE", None)
    # run from an unrelated folder: the spec must not depend on (or name) the current one
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, out


def test_compiled_spec_is_runnable_on_a_cluster(tmp_path):
    """--image, per-step CPU / memory, the train accelerator, gs:// data, KFP artifacts, no
    path of this machine, and each task fed only its own parameters."""
    import yaml

    proc, out = _compile_cli(tmp_path, "--method=end", "--epochs=3", f"--image={IMAGE}",
                             "--accelerator=NVIDIA_TESLA_T4", "--data_dir=gs://my-bucket/mnist")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    spec = yaml.safe_load(text)
    executors = spec["deploymentSpec"]["executors"]
    assert {f"exec-{s}" for s in STEPS} == set(executors)
    res = {}
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == IMAGE, name
        r = container["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest",
                    "resourceMemoryLimit"):
            assert r.get(key), (name, key)
        assert float(r["resourceCpuRequest"]) <= float(r["resourceCpuLimit"]), name
        assert r["memoryRequest"] <= r["memoryLimit"], name
        res[name[len("exec-"):]] = r
    # sized per step: training is the heavy one, the report the lightest
    assert res["train-op"]["memoryRequest"] > res["export-op"]["memoryRequest"]
    assert float(res["train-op"]["resourceCpuLimit"]) > float(res["report-op"]["resourceCpuLimit"])
    assert res["train-op"]["accelerator"]["resourceType"] == "NVIDIA_TESLA_T4"
    assert res["train-op"]["accelerator"]["resourceCount"] == "1"
    assert all("accelerator" not in r for s, r in res.items() if s != "train-op")

    # artifacts pass between tasks as KFP artifacts of the right types
    tasks = spec["root"]["dag"]["tasks"]
    data_in = tasks["train-op"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]
    assert data_in == {"outputArtifactKey": "data", "producerTask": "ingest-op"}
    model_in = tasks["export-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model_in == {"outputArtifactKey": "model", "producerTask": "train-op"}
    comps = spec["components"]
    assert comps["comp-ingest-op"]["outputDefinitions"]["artifacts"]["data"][
        "artifactType"]["schemaTitle"] == "system.Dataset"
    assert comps["comp-train-op"]["outputDefinitions"]["artifacts"]["model"][
        "artifactType"]["schemaTitle"] == "system.Model"

    # each task gets its own parameters only
    for step in STEPS:
        binding = tasks[step]["inputs"]["parameters"]["params_json"]
        assert binding["componentInputParameter"] == step[:-3].replace("-", "_") + "_params"
    job = _defaults(spec)
    assert job["ingest"]["options"]["data_dir"] == "gs://my-bucket/mnist"  # verbatim, a URI
    assert job["train"]["epochs"] == 3 and "data_dir" not in job["train"]
    assert "epochs" not in job["ingest"] and "options" not in job["train"]

    # nothing of the compiling machine: no output folder, repo, home, cwd or temp path
    for local in {str(REPO), str(REPO.parent), os.path.expanduser("~"), str(tmp_path),
                  os.getcwd()}:
        assert local not in text, local
    assert "output_dir" not in text and "kfp_root" not in text

    # without --accelerator no task asks for one
    proc, out = _compile_cli(tmp_path, "--method=end", f"--image={IMAGE}",
                             "--data_dir=gs://my-bucket/mnist")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerator" not in out.read_text()


@pytest.mark.parametrize("flags, message", [
    (["--data_dir=."], "a path on this machine"),
    (["--data_dir=data/mnist"], "a path on this machine"),
    (["--accelerator=nvidia tesla"], "--accelerator"),
    (["--image=bad image"], "--image"),
    (["--weights=w.h5"], "--weights"),
])
def test_compile_refuses_what_a_pod_cannot_use(tmp_path, flags, message):
    from bridging_tf.errors import UserError
    from pipelines.run import run_job

    with pytest.raises(UserError, match=message):
        run_job({"runner": "kfp", "compile": str(tmp_path / "p.yaml"), **dict(
            f[2:].split("=", 1) for f in flags)})
    assert not (tmp_path / "p.yaml").exists()


def test_image_and_accelerator_need_the_kfp_runner(tmp_path):
    from bridging_tf.errors import UserError
    from pipelines.run import run_job

    for name in ("image", "accelerator"):
        with pytest.raises(UserError, match=f"--{name} is used only with --runner=kfp"):
            run_job({name: "x", "output_dir": str(tmp_path / name)})
        assert not (tmp_path / name).exists()


def _fake_mnist() -> bytes:
    import numpy as np

    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.zeros(10000, np.uint8)}
    arrays["x_train"][:, 3, 4] = 7
    buf = __import__("io").BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_ingest_reads_a_data_uri_through_tf_io_gfile(tmp_path, layout):
    """ram:// (TF's in-memory file system) stands in for gs://: the ingest step copies the
    data into its artifact, and later steps find it there wherever the artifact is mounted."""
    import shutil

    import tensorflow as tf

    from bridging_tf.datasets.mnist_source import load_mnist
    from components import ingest
    from components.base import dataset_spec

    root = f"ram://bucket-{layout}-{os.getpid()}/mnist"
    tf.io.gfile.makedirs(root)
    with tf.io.gfile.GFile(f"{root}/mnist.npz", "wb") as f:
        f.write(_fake_mnist())
    uri = f"{root}/mnist.npz" if layout == "file" else root
    data = tmp_path / "run" / "data"
    metrics = ingest.run({}, {"data": data}, dataset="biased_mnist",
                         options={"data_dir": uri, "seed": 0})
    assert isinstance(metrics, dict)
    meta = json.loads((data / "artifact.json").read_text())
    assert meta["parameters"]["source"]["path"] == uri
    assert meta["parameters"]["source"]["files"] == 1
    moved = tmp_path / "elsewhere" / "data"  # another pod mounts the artifact somewhere else
    shutil.copytree(data, moved)
    shutil.rmtree(data)
    spec = dataset_spec(moved)
    assert spec["options"]["data_dir"].startswith(str(moved.resolve()))
    (x_train, _), (x_test, _) = load_mnist(spec["options"]["data_dir"])
    assert x_train.shape == (60000, 28, 28) and x_train[5, 3, 4] == 7
    # the same data again: skipped (same fingerprint); a changed file: ingested again
    assert ingest.run({}, {"data": moved}, dataset="biased_mnist",
                      options={"data_dir": uri, "seed": 0}) == metrics
    before = json.loads((moved / "artifact.json").read_text())["fingerprint"]
    if layout == "folder":  # a file added to the folder
        with tf.io.gfile.GFile(f"{root}/extra.txt", "wb") as f:
            f.write(b"new")
        ingest.run({}, {"data": moved}, dataset="biased_mnist", options={"data_dir": uri,
                                                                          "seed": 0})
        after = json.loads((moved / "artifact.json").read_text())
        # re-ingested: a new fingerprint over two files (timestamps may share a second)
        assert after["fingerprint"] != before and after["parameters"]["source"]["files"] == 2


def test_a_missing_or_unsupported_data_uri_is_one_data_error(tmp_path):
    from bridging_tf.errors import DataError
    from components import ingest

    for uri, message in (("ram://nowhere/mnist", "no such file or folder"),
                         ("s3://bucket/mnist", "cannot read it through tf.io.gfile")):
        with pytest.raises(DataError, match=message):
            ingest.run({}, {"data": tmp_path / uri[:2] / "data"}, dataset="biased_mnist",
                       options={"data_dir": uri})
        assert not (tmp_path / uri[:2] / "data").exists()


@pytest.mark.parametrize("attacks", ["linear", "linear,mlp,decoder"])
def test_the_compiled_graph_is_the_one_build_returns(tmp_path, attacks):
    """One graph: every step of ``build()`` is one KFP task, fed each input artifact by the
    step that outputs it (and nothing else), with that step's own parameters as default."""
    import yaml

    from pipelines.kfp_pipeline import compile_pipeline, task_name
    from pipelines.pipeline import build
    from pipelines.run import resolve_params

    params = resolve_params({"method": "end", "epochs": 2, "attacks": attacks})
    spec = yaml.safe_load(compile_pipeline(params, tmp_path / "p.yaml").read_text())
    steps = build(params, tmp_path / "unused")
    writer = {name: task_name(s) for s in steps for name in s.outputs}
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {task_name(s) for s in steps}
    job = _defaults(spec)
    for step in steps:
        edges = {name: (a["taskOutputArtifact"]["producerTask"],
                        a["taskOutputArtifact"]["outputArtifactKey"])
                 for name, a in tasks[task_name(step)]["inputs"].get("artifacts", {}).items()}
        assert edges == {name: (writer[name], name) for name in step.inputs}, step.name
        assert set(tasks[task_name(step)].get("dependentTasks", [])) == {
            writer[name] for name in step.inputs}, step.name
        assert job[step.name] == json.loads(json.dumps(step.params, default=str)), step.name
    # the decoder needs the images: that edge exists exactly when the decoder runs
    assert ("data" in tasks["attack-op"]["inputs"]["artifacts"]) == ("decoder" in attacks)
