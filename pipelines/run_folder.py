"""The run folder: its default name, its recorded configuration, its ``run_metadata.json``.

- :func:`default_output_dir` names a run by what tells runs apart at a glance:
  dataset, method, ρ (Biased-MNIST only), target/private/split (faces), scale
  and seed — ``runs/biased_mnist_end_rho0.997_cpu_seed0``,
  ``runs/celeba_end_Blond_Hair-Male_paper_seed0``.
- :func:`check_recorded_config` refuses a folder whose recorded configuration
  differs from this run's in any flag that changes a result, naming the flags
  (``--overwrite`` lets the run take the folder over: the steps whose inputs
  changed are redone). Two runs never share a folder silently, whatever name
  was chosen.
- :func:`start_metadata` writes ``run_metadata.json`` before anything runs, with
  the resolved values (``status: running``); :func:`finish_metadata` completes
  it (``status: finished``, split sizes, plan, wall time, artifacts).

Example::

    out = default_output_dir(p)
    check_recorded_config(out, p)          # UserError naming the differing flags
    start_metadata(out, p)
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import sys
from pathlib import Path
from typing import Optional

from bridging_tf.errors import UserError

METADATA = "run_metadata.json"
#: Flags that change how a run is executed or shown, never what it computes.
NOT_RESULT_FLAGS = frozenset({"verbose", "runner", "compile", "output_dir", "overwrite",
                              "hash_data", "model_name", "image", "accelerator"})


def default_output_dir(p: dict) -> Path:
    """``runs/<dataset>_<method>[_rho<rho> | _<target>-<private>[_<split>]]_<scale>_seed<seed>``."""
    parts = [p["dataset"], p["method"]]
    if p["dataset"] == "biased_mnist":
        parts.append(f"rho{p.get('rho')}")
    else:
        task = "-".join(str(p[k]) for k in ("target", "private") if p.get(k))
        if task:
            parts.append(task)
        if p.get("split"):
            parts.append(str(p["split"]))
    parts += [str(p.get("scale", "paper")), f"seed{p['seed']}"]
    return Path("runs") / "_".join(parts)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_metadata(out: Path) -> Optional[dict]:
    path = Path(out) / METADATA
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; move the folder away or pass --overwrite") \
            from None


def _comparable(p: dict) -> dict:
    out = {}
    for k, v in p.items():
        if k in NOT_RESULT_FLAGS:
            continue
        if k == "data_dir" and v:
            v = str(Path(v).expanduser().resolve())
        out[k] = v
    return out


def differing_flags(recorded: dict, p: dict) -> list:
    """``[(flag, recorded value, this run's value)]`` for every result-changing flag that differs.

    A flag the folder's record does not have (written by an older version) is
    compared only if this run sets it to something other than nothing.
    """
    old, new = _comparable(recorded), _comparable(p)
    diffs = []
    for k in sorted(new):
        if k not in old:
            continue
        a, b = old[k], new[k]
        if a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float))
                           and float(a) == float(b)):
            diffs.append((k, a, b))
    return diffs


def check_recorded_config(out: Path, p: dict) -> None:
    """Refuse ``out`` when it holds another run (or something else) unless ``--overwrite``."""
    out = Path(out)
    if p.get("overwrite") or not out.exists():
        return
    meta = read_metadata(out)
    if meta is None:
        others = [c.name for c in out.iterdir() if not c.name.startswith(".")]
        if others:
            raise UserError(f"--output_dir={out} is not empty and holds no {METADATA} (not a "
                            f"run folder: {', '.join(sorted(others)[:3])}...); choose another "
                            "folder or pass --overwrite")
        return
    diffs = differing_flags(meta.get("flags", {}), p)
    if diffs:
        shown = ", ".join(f"--{k} (recorded {a!r}, now {b!r})" for k, a, b in diffs[:6])
        more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
        raise UserError(f"--output_dir={out} holds a run with other settings: {shown}{more}; "
                        "choose another --output_dir (or drop --output_dir for the default "
                        "name) or pass --overwrite to redo it with these settings")


def resolved_values(p: dict) -> dict:
    """The job's settings with every default and preset filled in (no ``None``).

    Dataset options the chosen dataset does not take are left out; sizes that
    mean "all of it" read ``"all"`` until the data is loaded (then
    :func:`finish_metadata` records the counts).
    """
    from bridging_tf import datasets, distribute, options
    from bridging_tf.methods import all_hparams
    from pipelines.pipeline import DATASET_OPTIONS, hparams_of

    loader = datasets.get_loader(p["dataset"])
    sig = inspect.signature(loader).parameters
    out = {}
    for k, v in p.items():
        if k in DATASET_OPTIONS and k not in sig:
            continue  # an option of other datasets
        if v is None and k in sig and sig[k].default is not inspect.Parameter.empty:
            v = sig[k].default
        out[k] = v
    for k in all_hparams():
        out.pop(k, None)
    out["hparams"] = hparams_of(p)
    out["backbone"] = p.get("backbone") or options.default_backbone(p["dataset"])
    out["mixed_precision"] = distribute.resolve_mixed_precision(p.get("mixed_precision"))
    out["jit_compile"] = distribute.resolve_jit(p.get("jit_compile"))
    for k in ("train_size", "test_size", "attack_size"):
        if k in out and out[k] is None:
            out[k] = "all"
    if "data_dir" in out and not out["data_dir"]:
        out["data_dir"] = "the loader's cache or download"
    defaults = {"weights": "none (from scratch)", "compile": "none", "model_name":
                f"{p['dataset']}_{p['method']}", "target": "none", "private": "none",
                "split": "none", "image_size": "the dataset's own", "image": "none (not a KFP run)",
                "accelerator": "none"}
    for k, v in defaults.items():
        if k in out and out[k] is None:
            out[k] = v
    for k, v in out.items():  # any option added later without a resolved default
        if v is None:
            out[k] = "unset"
    return out


def start_metadata(out: Path, p: dict) -> dict:
    """Write ``run_metadata.json`` before the run starts (``status: running``)."""
    from bridging_tf import distribute
    from components.base import package_versions, write_json
    meta = {"status": "running", "started": _now(), "flags": p, "scale": p.get("scale"),
            "resolved": resolved_values(p), "seed": p["seed"],
            "versions": package_versions(), "argv": sys.argv,
            "devices": distribute.accelerators()}
    write_json(Path(out) / METADATA, meta)
    return meta


def finish_metadata(out: Path, meta: dict, *, artifacts: dict, step_metrics: dict,
                    wall: float) -> dict:
    """Complete ``run_metadata.json`` (``status: finished``, measured sizes, plan, wall time)."""
    from components.base import write_json
    from components.train import train_info
    info = train_info(artifacts["model"])
    meta = dict(meta)
    resolved = dict(meta.get("resolved", {}))
    sizes = info.get("split_sizes") or {}
    for flag, split in (("train_size", "train"), ("attack_size", "attack_train")):
        if resolved.get(flag) == "all" and split in sizes:
            resolved[flag] = sizes[split]
    if resolved.get("test_size") == "all" and info.get("primary_eval") in sizes:
        resolved["test_size"] = sizes[info["primary_eval"]]
    meta.update({"status": "finished", "finished": _now(), "resolved": resolved,
                 "wall_time_s": round(wall, 2),
                 "dataset_metadata": info.get("dataset_metadata"),
                 "train_info": {k: v for k, v in info.items() if k != "dataset_metadata"},
                 "plan": info.get("plan"), "artifacts": artifacts,
                 "step_metrics": step_metrics})
    write_json(Path(out) / METADATA, meta)
    return meta


def plan_note(p: dict) -> Optional[str]:
    """One line for the plan when the chosen scale does not suit the machine."""
    from bridging_tf import distribute
    acc = distribute.accelerators()
    if p.get("scale", "paper") == "paper" and not (acc["GPU"] or acc["TPU"]):
        return ("no GPU/TPU here: --scale=paper is the published recipe and takes many hours "
                "on a CPU (the projection follows after the first steps); --scale=cpu is the "
                "CPU recipe")
    return None
