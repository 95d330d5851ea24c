"""The container images (``Dockerfile``, ``Dockerfile.gpu``), checked without a Docker daemon.

- each installs the package with the README's own install command, on setup.cfg's pinned
  TensorFlow (the GPU one as ``tensorflow[and-cuda]`` at the same pin) and Python;
- the extras installed hold what a KFP task needs (the spec's executor imports kfp, and
  the components are built with ``install_kfp_package=False``);
- the image's ``ENTRYPOINT`` + ``CMD`` runs here, from an unrelated folder (the installed
  package, not the checkout's working directory), as does the KFP executor module;
- ``.dockerignore`` keeps runs and VCS metadata out of the build context but not the source.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
INSTALL = re.compile(r"pip install (?:-e )?'\.\[[A-Za-z0-9_,-]+\]'")


def _instructions(name: str):
    """``[(INSTRUCTION, arguments)]`` of a Dockerfile (continuations joined, comments dropped)."""
    text = (REPO / name).read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, args = line.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _pins() -> dict:
    reqs = _setup_cfg()["options"]["install_requires"].split()
    return dict(r.split("==") for r in reqs)


def _readme_install() -> str:
    found = INSTALL.findall((REPO / "README.md").read_text())
    assert found, "README.md has no `pip install [-e] '.[extras]'` command"
    return found[0]  # the first one: "The two commands"


def _extras(command: str) -> list:
    return re.search(r"\[([^\]]+)\]", command).group(1).split(",")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_image_installs_the_package_as_the_readme_does(name):
    runs = [args for instr, args in _instructions(name) if instr == "RUN"]
    package_installs = [c for r in runs for c in re.split(r"&&|;", r)
                        if "pip install" in c and re.search(r"\s'?\.(\[|'|\s|$)", c)]
    assert len(package_installs) == 1, package_installs
    assert _readme_install() in package_installs[0], (package_installs, _readme_install())
    copies = [args for instr, args in _instructions(name) if instr == "COPY"]
    assert copies and copies[0].split()[0] == ".", copies  # the repo itself, no host paths


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_image_is_on_the_pinned_tensorflow_and_python(name):
    pins = _pins()
    froms = [args for instr, args in _instructions(name) if instr == "FROM"]
    classifiers = _setup_cfg()["metadata"]["classifiers"]
    python = re.search(r"Python :: (3\.\d+)", classifiers).group(1)
    assert froms == [f"python:{python}-slim"], froms
    runs = " ".join(args for instr, args in _instructions(name) if instr == "RUN")
    for extra, version in re.findall(r"tensorflow(\[[a-z-]+\])?==([0-9.]+)", runs):
        assert version == pins["tensorflow"], (extra, version)
    if name.endswith(".gpu"):
        assert f"'tensorflow[and-cuda]=={pins['tensorflow']}'" in runs
        # the extra exists in that TensorFlow (this environment has the pinned one)
        assert importlib.metadata.version("tensorflow") == pins["tensorflow"]
        assert "and-cuda" in importlib.metadata.metadata("tensorflow").get_all("Provides-Extra")
    else:
        assert "and-cuda" not in runs


def test_the_installed_extras_hold_what_a_kfp_task_runs():
    from pipelines import kfp_pipeline

    options = _setup_cfg()["options.extras_require"]
    wanted = set()
    for extra in _extras(_readme_install()):
        wanted |= {r.split("==")[0] for r in options[extra].split()}
    assert "kfp" in wanted
    command = " ".join(kfp_pipeline.train_op.component_spec.implementation.container.command)
    assert "kfp.dsl.executor_main" in command and "pip install" not in command


def _entry_argv(name: str) -> list:
    instr = dict(_instructions(name))
    argv = json.loads(instr["ENTRYPOINT"]) + json.loads(instr.get("CMD", "[]"))
    assert argv[:3] == ["python", "-m", "pipelines.run"], argv
    return [sys.executable, *argv[1:]]


def test_the_image_entry_point_and_the_kfp_executor_run_from_the_installed_package(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    argv = _entry_argv("Dockerfile")
    assert argv == _entry_argv("Dockerfile.gpu")
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--runner", "--image", "--accelerator", "--data_dir"):
        assert flag in proc.stdout, flag
    proc = subprocess.run([sys.executable, "-m", "kfp.dsl.executor_main", "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--function_to_execute" in proc.stdout, proc.stderr[-2000:]


def test_dockerignore_keeps_runs_and_vcs_out_but_not_the_source():
    entries = {ln.strip().rstrip("/") for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".git", "runs", "*.egg-info"} <= entries
    needed = {"README.md", "setup.cfg", "pyproject.toml", "bridging_tf", "components",
              "pipelines"}
    assert not entries & needed


def test_the_tfjob_manifest_launches_pipelines_run_on_every_worker():
    """deploy/tfjob.yaml (README: --strategy): a TFJob of 2 workers, each running
    ``pipelines.run --strategy=multiworker`` in the repo's image, on TFJob's port, with flags
    the CLI accepts and a folder of its own."""
    import yaml

    from pipelines.run import FLAGS

    job = yaml.safe_load((REPO / "deploy" / "tfjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"
    assert container["command"] == ["python", "-m", "pipelines.run"]
    assert "--strategy=multiworker" in container["args"]
    assert {"containerPort": 2222, "name": "tfjob-port"} in container["ports"]
    for arg in container["args"]:
        name = arg[2:].split("=", 1)[0]
        assert name in FLAGS, arg
    mounts = {m["name"] for m in container["volumeMounts"]}
    vols = {v["name"]: v for v in worker["template"]["spec"]["volumes"]}
    assert mounts <= set(vols) and "emptyDir" in vols["workdir"]   # a folder per pod
