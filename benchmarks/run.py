"""``python -m benchmarks.run [--quick|--tiny] [--out=FILE.json]``: the performance harness.

Prints a table and writes JSON (default ``benchmarks/results.json``) with:

- ``machine``: CPU model, cores, TF / Keras versions, oneDNN on/off, load;
- ``steps``: per method (vanilla, end, rubi, learned_mixin, rebias — those that
  exist) at the paper's SimpleConvNet (7×7, batch 256, 28×28×3, width 1.0):
  warm train-step images/s (median of round-robin windows), analytic FLOPs
  per step, achieved GFLOP/s, the in-process float32 matmul GFLOP/s, their
  ratio, and the time relative to Vanilla (medians of per-round ratios);
- ``pipeline``: Biased-MNIST tf.data images/s (uint8 storage → normalised
  batches) for colour-at-build-time vs colour-in-pipeline, bit-identity,
  and the ratio to Vanilla's step consumption; ``memory``: peak RSS of the
  full-size bundle built in a subprocess, for both storages;
- ``attacks``: linear probe (50 epochs, 10k × 128) and MLP probe seconds;
- ``dicom``: SIIM ingestion images/s with 1 and 2 workers;
- ``gpu``: the step table with mixed precision + XLA (only with a GPU);
- ``targets``: each target of issue 8 with the measured ratio and pass/fail.

Modes: ``--tiny`` (smoke test: toy sizes, seconds), ``--quick`` (the real
sizes, 3 rounds, a few minutes on 2 cores), default (5 rounds × 2 steps, the
diagnostics, 3 attack repeats; < 30 minutes on 2 cores).
A piece that cannot run here (no GPU, no MNIST, a method that fails to build) is
skipped with the reason printed and recorded — never a made-up number. The baseline
the docs quote is ``benchmarks/baseline.json`` (``render_table`` prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List

from bridging_tf.fileio import write_text
from bridging_tf.markdown import markdown_table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("BRIDGING_TF_SHARED_DATA", REPO.parent / "shared" / "data"))

MODES = {
    "tiny": dict(
        batch=8,
        width=0.125,
        rounds=1,
        steps_per_window=1,
        matmul_n=256,
        methods=("vanilla", "end"),
        diagnostics=False,
        train_size=2000,
        pipe_options=dict(val_size=500, test_size=500),
        pipe_batches=5,
        pipe_rounds=1,
        attack_n=500,
        attack_dim=16,
        linear_epochs=2,
        mlp_max_epochs=2,
        attack_repeats=1,
        rss=False,
        dicom=None,
    ),
    "quick": dict(
        batch=256,
        width=1.0,
        rounds=3,
        steps_per_window=1,
        matmul_n=4096,
        methods=("vanilla", "end", "rubi", "learned_mixin", "rebias"),
        diagnostics=False,
        train_size=None,
        pipe_batches=40,
        pipe_rounds=3,
        attack_n=10_000,
        attack_dim=128,
        linear_epochs=50,
        mlp_max_epochs=200,
        attack_repeats=1,
        rss=True,
        dicom=dict(n_studies=48, image_shape=(512, 512), image_size=256),
    ),
    "full": dict(
        batch=256,
        width=1.0,
        rounds=5,
        steps_per_window=1,
        matmul_n=4096,
        methods=("vanilla", "end", "rubi", "learned_mixin", "rebias"),
        diagnostics=True,
        train_size=None,
        pipe_batches=100,
        pipe_rounds=5,
        attack_n=10_000,
        attack_dim=128,
        linear_epochs=50,
        mlp_max_epochs=200,
        attack_repeats=3,
        rss=True,
        dicom=dict(n_studies=64, image_shape=(1024, 1024), image_size=448),
    ),
}

MEMORY_TARGETS = {
    "default_job_peak_gib": ("peak RSS of the default job (55k digits, width 1), GiB", "<=", 2.0),
    "default_80_vs_2_epochs": ("peak RSS, 80 epochs ÷ 2 epochs (default job)", "<=", 1.05),
    "small_growth_per_epoch_mib": ("RSS growth per epoch over 80 epochs, MiB", "<=", 1.0),
    "face_growth_per_epoch_mib": ("UTKFace 224 px RSS growth per epoch, MiB", "<=", 5.0),
}

TARGETS = {
    "vanilla_vs_matmul": ("Vanilla step FLOP/s ÷ matmul FLOP/s", ">=", 0.90),
    "end_vs_matmul": ("EnD step FLOP/s ÷ matmul FLOP/s", ">=", 0.90),
    "end_overhead": ("EnD step time ÷ Vanilla", "<=", 1.05),
    "rebias_overhead": ("ReBias step time ÷ Vanilla", "<=", 1.30),
    "rubi_overhead": ("RUBi step time ÷ Vanilla", "<=", 1.15),
    "learned_mixin_overhead": ("LearnedMixin step time ÷ Vanilla", "<=", 1.15),
    "pipeline_vs_step": (
        "input pipeline (build-time colouring) images/s ÷ Vanilla step images/s",
        ">=",
        20.0,
    ),
    "linear_probe_s": ("linear probe seconds (50 epochs, 10k × 128)", "<=", 10.0),
}


class Skip(RuntimeError):
    """A section that cannot run here (no GPU, no data, tiny mode): reason only."""


def log(msg: str) -> None:
    print(msg, flush=True)


def _section(name: str, fn, results: Dict, skipped: Dict) -> None:
    log(f"\n== {name} ==")
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Skip as err:
        skipped[name] = str(err)
        log(f"  SKIPPED {name}: {err}")
    except Exception as err:  # noqa: BLE001 — one broken piece must not lose the others
        reason = f"{type(err).__name__}: {err}"
        skipped[name] = reason
        log(f"  SKIPPED {name}: {reason}")
        traceback.print_exc(limit=3)
    log(f"  ({name}: {time.perf_counter() - t0:.1f}s)")


# ----------------------------------------------------------------------------- sections


def section_steps(cfg, args, skipped) -> Dict:
    from benchmarks import steps

    cases = [steps.matmul_case(cfg["matmul_n"]), steps.numpy_matmul_case(cfg["matmul_n"])]
    for method in cfg["methods"]:
        t0 = time.perf_counter()
        try:
            cases.append(steps.method_case(method, batch=cfg["batch"], width=cfg["width"]))
            log(f"  built + traced {method} in {time.perf_counter() - t0:.1f}s")
        except Exception as err:  # noqa: BLE001
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            skipped[f"steps.{method}"] = reason
            log(f"  SKIPPED method {method}: {reason}")
    if cfg["diagnostics"]:
        diag = [
            ("raw_conv", lambda: steps.raw_conv_cases(batch=cfg["batch"], width=cfg["width"])),
            ("vanilla_fwd", lambda: [steps.forward_case(batch=cfg["batch"], width=cfg["width"])]),
            (
                "vanilla_fusedbn",
                lambda: [steps.bn_variant_case("fusedbn", batch=cfg["batch"], width=cfg["width"])],
            ),
            (
                "vanilla_nobn",
                lambda: [steps.bn_variant_case("nobn", batch=cfg["batch"], width=cfg["width"])],
            ),
            (
                "biased",
                lambda: [
                    steps.method_case(
                        "biased", batch=cfg["batch"], width=cfg["width"], name="g_only"
                    )
                ],
            ),
        ]
        if args.xla:
            diag.append(
                (
                    "vanilla_xla",
                    lambda: [
                        steps.method_case(
                            "vanilla",
                            batch=cfg["batch"],
                            width=cfg["width"],
                            jit_compile=True,
                            name="vanilla_xla",
                        )
                    ],
                )
            )
        wanted = cfg["diagnostics"]
        if isinstance(wanted, str) and wanted != "all":
            keep = {w.strip() for w in wanted.split(",")}
            diag = [d for d in diag if d[0] in keep]
        for name, build in diag:
            try:
                cases += build()
            except Exception as err:  # noqa: BLE001
                skipped[f"steps.{name}"] = f"{type(err).__name__}: {err}"
                log(f"  SKIPPED diagnostic {name}: {err}")
    steps.run_rounds(cases, cfg["rounds"], cfg["steps_per_window"], log=log)
    return {
        "batch": cfg["batch"],
        "width": cfg["width"],
        "rounds": cfg["rounds"],
        "steps_per_window": cfg["steps_per_window"],
        "matmul_n": cfg["matmul_n"],
        "cases": steps.summarise(cases),
    }


def section_gpu(cfg, args, skipped) -> Dict:
    import keras
    import tensorflow as tf

    from benchmarks import steps

    if not tf.config.list_physical_devices("GPU"):
        raise Skip("no GPU visible (the mixed-precision + XLA table needs one)")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        cases = [
            steps.matmul_case(cfg["matmul_n"], reps=5),
            steps.matmul_case(cfg["matmul_n"], reps=5, dtype="float16", name="matmul_f16"),
        ]
        for method in cfg["methods"]:
            try:
                cases.append(
                    steps.method_case(
                        method,
                        batch=cfg["batch"],
                        width=cfg["width"],
                        jit_compile=True,
                        steps_per_execution=10,
                    )
                )
            except Exception as err:  # noqa: BLE001
                skipped[f"gpu.{method}"] = f"{type(err).__name__}: {err}"
        steps.run_rounds(cases, cfg["rounds"], cfg["steps_per_window"], log=log)
        return {
            "policy": "mixed_float16",
            "jit_compile": True,
            "steps_per_execution": 10,
            "cases": steps.summarise(cases, reference="matmul_f16"),
        }
    finally:
        keras.config.set_dtype_policy(previous)


def section_pipeline(cfg, args, skipped) -> Dict:
    from benchmarks import pipeline

    data_dir = Path(args.data_dir) / "mnist"
    if not data_dir.exists():
        raise Skip(f"MNIST not found at {data_dir} (--data_dir)")
    bundles = {}
    out = {"batch": 256, "train_size": cfg["train_size"]}
    for mode in ("build_time", "in_pipeline"):
        t0 = time.perf_counter()
        bundles[mode] = pipeline.load_bundle(
            mode, str(data_dir), train_size=cfg["train_size"], **cfg.get("pipe_options", {})
        )
        out[f"{mode}_build_s"] = time.perf_counter() - t0
    out["train_examples"] = bundles["build_time"]["train"].size
    out["identical"] = pipeline.check_identical(bundles)
    out["rates"] = pipeline.pipeline_rates(
        bundles,
        batch=256,
        batches_per_window=cfg["pipe_batches"],
        rounds=cfg["pipe_rounds"],
        log=log,
    )
    if cfg["rss"]:
        out["memory"] = {}
        for mode in ("build_time", "in_pipeline"):
            try:
                out["memory"][mode] = pipeline.measure_rss(mode, str(data_dir), cfg["train_size"])
                log(
                    f"  {mode}: bundle peak RSS {out['memory'][mode]['bundle_peak_rss_mb']:.0f} MiB"
                )
            except Exception as err:  # noqa: BLE001
                skipped[f"memory.{mode}"] = f"{type(err).__name__}: {err}"
    else:
        skipped["memory"] = "tiny mode (peak RSS needs a fresh interpreter per storage)"
    return out


def section_attacks(cfg, args, skipped) -> Dict:
    from benchmarks.attacks import bench_attacks

    return bench_attacks(
        n=cfg["attack_n"],
        dim=cfg["attack_dim"],
        linear_epochs=cfg["linear_epochs"],
        mlp_max_epochs=cfg["mlp_max_epochs"],
        repeats=cfg["attack_repeats"],
        log=log,
    )


def section_dicom(cfg, args, skipped) -> Dict:
    from benchmarks.dicom import bench_dicom

    if cfg["dicom"] is None:
        raise Skip("tiny mode (ingest spawns worker processes)")
    res = bench_dicom(**cfg["dicom"], log=log)
    if "skipped" in res:
        raise Skip(res["skipped"])
    return res


# ----------------------------------------------------------------------------- report


def section_memory(cfg, args, skipped) -> Dict:
    if args.tiny:
        raise Skip("whole-job memory cases need the real data sizes (quick or full mode)")
    from benchmarks import memory

    mode = "quick" if args.quick else "full"
    return memory.section(mode, Path(args.data_dir), only=args.memory_cases)


def evaluate_targets(results: Dict) -> Dict:
    st = results.get("steps", {})
    if st and (st.get("batch") != 256 or st.get("width") != 1.0) and "memory" not in results:
        return {
            "note": "targets apply to the paper's size (batch 256, width 1.0); "
            "not evaluated in this mode"
        }
    cases = st.get("cases", {})
    measured = {}
    for m in ("vanilla", "end"):
        if m in cases:
            measured[f"{m}_vs_matmul"] = cases[m].get("ratio_to_matmul")
    for m in ("end", "rebias", "rubi", "learned_mixin"):
        if m in cases and "time_vs_vanilla" in cases[m]:
            measured[f"{m}_overhead"] = cases[m]["time_vs_vanilla"]
    pipe = results.get("pipeline", {}).get("rates", {})
    if pipe and "vanilla" in cases:
        best = pipe["build_time"]["images_per_s_median"]  # the storage that ships
        measured["pipeline_vs_step"] = best / cases["vanilla"]["images_per_s_median"]
    att = results.get("attacks", {})
    if att.get("n_train") == 10_000 and att.get("linear_epochs") == 50:
        measured["linear_probe_s"] = att["linear_suite_s_median"]
    mem = results.get("memory", {}).get("derived", {})
    measured.update({k: mem[k] for k in MEMORY_TARGETS if mem.get(k) is not None})
    out = {}
    for key, (what, op, bound) in {**TARGETS, **MEMORY_TARGETS}.items():
        v = measured.get(key)
        if v is None:
            out[key] = {"what": what, "target": f"{op} {bound}", "measured": None, "met": None}
        else:
            met = v >= bound if op == ">=" else v <= bound
            out[key] = {"what": what, "target": f"{op} {bound}", "measured": v, "met": bool(met)}
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None or v != v else fmt.format(v)


def render_table(results: Dict) -> str:
    lines = []
    st = results.get("steps")
    if st:
        mm = st["cases"].get("matmul", {})
        npm = st["cases"].get("matmul_numpy", {})
        lines.append(
            f"Train step (SimpleConvNet 7x7, batch {st['batch']}, width {st['width']}; "
            f"matmul {st['matmul_n']}² float32: TF {_f(mm.get('gflops_per_s_median'), '{:.1f}')}"
            f", numpy {_f(npm.get('gflops_per_s_median'), '{:.1f}')} GFLOP/s; medians of "
            f"{st['rounds']} rounds)"
        )
        lines += markdown_table(
            ["case", "img/s", "s/step", "GFLOP/step", "GFLOP/s", "÷ TF matmul", "÷ best matmul",
             "× vanilla", "trace s"],
            [[name, _f(r.get("images_per_s_median"), "{:.1f}"), _f(r["seconds_per_step_median"]),
              _f(r["gflops_per_step"], "{:.1f}"), _f(r["gflops_per_s_median"], "{:.1f}"),
              _f(r.get("ratio_to_matmul")), _f(r.get("ratio_to_best_matmul")),
              _f(r.get("time_vs_vanilla")), _f(r["trace_and_first_step_s"], "{:.1f}")]
             for name, r in st["cases"].items() if not name.startswith("matmul")],
            align="l" + "r" * 8).splitlines()
    pipe = results.get("pipeline")
    if pipe:
        lines.append("")
        rel = pipe["rates"].get("in_pipeline", {}).get("speed_vs_build_time")
        lines.append(
            f"Input pipeline (Biased-MNIST train, {pipe['train_examples']} images, batch 256; "
            f"identical batches: {pipe['identical']}; in_pipeline speed ÷ build_time, "
            f"median per round: {_f(rel)})"
        )
        mem = pipe.get("memory", {})
        lines += markdown_table(
            ["storage", "img/s", "build s", "bundle peak RSS MiB", "bundle RSS after MiB",
             "image bytes MiB"],
            [[mode, _f(r["images_per_s_median"], "{:.0f}"), _f(pipe.get(mode + "_build_s"))]
             + [_f(mem.get(mode, {}).get(k), "{:.0f}")
                for k in ("bundle_peak_rss_mb", "bundle_rss_mb", "image_bytes_mb")]
             for mode, r in pipe["rates"].items()],
            align="l" + "r" * 5).splitlines()
    att = results.get("attacks")
    if att:
        lines.append("")
        lines.append(
            f"Attacks ({att['n_train']} × {att['dim']}): linear fit "
            f"{_f(att['linear_fit_s_median'])} s, linear suite "
            f"{_f(att['linear_suite_s_median'])} s ({att['linear_epochs']} epochs), "
            f"MLP suite {_f(att['mlp_suite_s_median'])} s (epochs run {att['mlp_epochs_run']})"
        )
    dc = results.get("dicom")
    if dc:
        lines.append("")
        lines.append(
            f"DICOM ingest ({dc['n_studies']} synthetic {dc['image_shape']} → "
            f"{dc['image_size']}): 1 worker {_f(dc.get('images_per_s_workers_1'), '{:.1f}')} "
            f"img/s, 2 workers {_f(dc.get('images_per_s_workers_2'), '{:.1f}')} img/s"
        )
    tg = results.get("targets")
    if tg and "note" in tg:
        lines.append("")
        lines.append("Targets: " + tg["note"])
    elif tg:
        lines.append("")
        lines += markdown_table(
            ["target", "bound", "measured", "met"],
            [[t["what"], t["target"], _f(t["measured"]),
              "-" if t["met"] is None else ("yes" if t["met"] else "NO")] for t in tg.values()],
            align="llrl").splitlines()
    sk = results.get("skipped")
    if sk:
        lines.append("")
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in sk.items()))
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="real sizes, 3 rounds (a few minutes)")
    group.add_argument("--tiny", action="store_true", help="toy sizes for the smoke test (seconds)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    parser.add_argument(
        "--data_dir",
        default=str(DEFAULT_DATA),
        help="shared data folder holding mnist/ (default ../shared/data)",
    )
    parser.add_argument(
        "--sections",
        default="steps,gpu,pipeline,attacks,dicom",
        help="comma list of sections to run",
    )
    parser.add_argument("--methods", default=None, help="comma list overriding the mode's methods")
    parser.add_argument(
        "--memory_cases",
        default=None,
        help="memory section: comma list of default_2ep,default_80ep,small_80ep,face_6ep",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--diagnostics",
        nargs="?",
        const="all",
        default=None,
        help="add raw-conv / forward-only / fused-BN / no-BN / g-only cases "
        "to the step table (on by default in the full run); optionally a "
        "comma list of raw_conv,vanilla_fwd,vanilla_fusedbn,vanilla_nobn,biased",
    )
    parser.add_argument(
        "--inter_op",
        type=int,
        default=None,
        help="tf.config.threading inter-op threads (default: TF's choice)",
    )
    parser.add_argument(
        "--intra_op",
        type=int,
        default=None,
        help="tf.config.threading intra-op threads (default: TF's choice)",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="add Vanilla with jit_compile=True (XLA) to the diagnostics",
    )
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.methods:
        cfg["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.rounds:
        cfg["rounds"] = args.rounds
    if args.diagnostics:
        cfg["diagnostics"] = args.diagnostics
    if args.inter_op is not None or args.intra_op is not None:
        import tensorflow as tf

        if args.inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
        if args.intra_op is not None:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)

    from benchmarks.timing import load_average, machine_info

    t_start = time.perf_counter()
    results: Dict = {
        "mode": mode,
        "command": " ".join(
            ["python -m benchmarks.run", *sys.argv[1:]]
            if argv is None
            else ["python -m benchmarks.run", *argv]
        ),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
    }
    skipped: Dict[str, str] = {}
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    table = {
        "steps": section_steps,
        "gpu": section_gpu,
        "pipeline": section_pipeline,
        "attacks": section_attacks,
        "dicom": section_dicom,
        "memory": section_memory,
    }
    for name in sections:
        if name not in table:
            parser.error(f"unknown section {name!r}; choose from {', '.join(table)}")
        _section(name, lambda fn=table[name]: fn(cfg, args, skipped), results, skipped)
    results["targets"] = evaluate_targets(results)
    results["skipped"] = skipped
    results["machine"]["load_average_at_end"] = load_average()
    results["wall_s"] = time.perf_counter() - t_start
    text = render_table(results)
    log("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(results, indent=2, default=str))
    log(f"\nwrote {out} ({results['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
