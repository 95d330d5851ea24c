"""Peak RSS of whole ``pipelines.run`` jobs, sampled per epoch (issue 11).

Each case runs the CLI in a subprocess and samples the job's resident memory
(``/proc/<pid>/status``: ``VmRSS`` every 0.25 s, ``VmHWM`` = the kernel's own
peak) and the RSS at every epoch end (Keras' one-line-per-epoch output,
``--verbose=2``). A case may be time-boxed (``limit_s``): the job is stopped
then and the JSON says so — used for the paper-scale job, whose 80 epochs take
12-15 hours on 2 CPU cores but whose input pipeline for all 80 epochs is built
before the first step (the old per-epoch copies showed up within 80 s).

Cases (``quick``/``full`` modes of ``python -m benchmarks.run --sections=memory``):

- ``default_2ep`` / ``default_80ep``: the README's default job at the paper's scale
  (55,000 digits, width 1, batch 256), 2 vs 80 epochs, time-boxed;
- ``small_80ep``: 80 real epochs (train_size 5,000, width 0.25) to see any growth
  per epoch (RSS after epoch 2 vs after epoch 80);
- ``face_6ep``: UTKFace at 224 px (width 0.25), 6 epochs: RSS per epoch.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - \d+s - ")


def _status_kib(pid: int, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_case(args: List[str], *, limit_s: Optional[float] = None, label: str = "") -> Dict:
    """Run ``python -m pipelines.run ARGS`` and measure it (see the module doc)."""
    cmd = [sys.executable, "-m", "pipelines.run", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    samples = {"peak_kib": 0, "hwm_kib": 0}
    epochs: List[Dict] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = _status_kib(proc.pid, "VmRSS")
            hwm = _status_kib(proc.pid, "VmHWM")
            if rss:
                samples["peak_kib"] = max(samples["peak_kib"], rss)
            if hwm:
                samples["hwm_kib"] = max(samples["hwm_kib"], hwm)
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    killed = False
    timer = None
    if limit_s:
        def kill():
            nonlocal killed
            killed = True
            proc.terminate()
        timer = threading.Timer(limit_s, kill)
        timer.start()
    tail: List[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if EPOCH_LINE.match(line):
            rss = _status_kib(proc.pid, "VmRSS") or 0
            epochs.append({"epoch": len(epochs) + 1, "rss_mib": round(rss / 1024, 1),
                           "t_s": round(time.perf_counter() - t0, 1)})
    rc = proc.wait()
    if timer:
        timer.cancel()
    stop.set()
    sampler.join()
    peak = max(samples["peak_kib"], samples["hwm_kib"])
    out = {"label": label, "command": "python -m pipelines.run " + " ".join(args),
           "peak_rss_mib": round(peak / 1024, 1), "peak_rss_gib": round(peak / 2 ** 20, 3),
           "epochs_seen": epochs, "wall_s": round(time.perf_counter() - t0, 1),
           "returncode": rc, "time_boxed_s": limit_s if killed else None}
    if rc != 0 and not killed:
        out["tail"] = tail
    return out


def cases(mode: str, data_dir: Path, work: Path) -> List[tuple]:
    mnist = data_dir / "mnist"
    utk = data_dir / "utkface"
    base = [f"--data_dir={mnist}", "--method=end", "--attacks=linear", "--verbose=2"]
    box = 240 if mode == "quick" else 600
    return [
        ("default_2ep", base + ["--epochs=2", f"--output_dir={work}/d2"], box),
        ("default_80ep", base + ["--epochs=80", f"--output_dir={work}/d80"], box),
        ("small_80ep", base + ["--epochs=80", "--train_size=5000", "--width=0.25",
                               "--val_size=1000", "--test_size=1000",
                               f"--output_dir={work}/s80"], None),
        ("face_6ep", [f"--data_dir={utk}", "--dataset=utkface", "--method=end",
                      "--attacks=linear", "--verbose=2", "--epochs=6", "--width=0.25",
                      "--batch_size=64", f"--output_dir={work}/f3"], None),
    ]


def section(mode: str, data_dir: Path, only: Optional[str] = None) -> Dict:
    """All cases (or the comma list ``only``) and the issue-11 numbers derived from them."""
    out: Dict = {}
    with tempfile.TemporaryDirectory(prefix="bridging-mem-") as tmp:
        for name, args, limit in cases(mode, Path(data_dir), Path(tmp)):
            if only and name not in only.split(","):
                continue
            print(f"  memory case {name}: {' '.join(args)}"
                  + (f" (time-boxed to {limit} s)" if limit else ""), flush=True)
            out[name] = run_case(args, limit_s=limit, label=name)
            print(f"    peak RSS {out[name]['peak_rss_mib']:.0f} MiB, "
                  f"{len(out[name]['epochs_seen'])} epoch(s) seen, rc {out[name]['returncode']}",
                  flush=True)
    derived = {}
    if "default_2ep" in out and "default_80ep" in out:
        a, b = out["default_2ep"]["peak_rss_mib"], out["default_80ep"]["peak_rss_mib"]
        derived["default_job_peak_gib"] = round(max(a, b) / 1024, 3)
        derived["default_80_vs_2_epochs"] = round(b / a, 4) if a else None
    if "small_80ep" in out and len(out["small_80ep"]["epochs_seen"]) >= 3:
        e = out["small_80ep"]["epochs_seen"]
        derived["small_rss_epoch2_mib"] = e[1]["rss_mib"]
        derived["small_rss_last_epoch_mib"] = e[-1]["rss_mib"]
        derived["small_growth_per_epoch_mib"] = round(
            (e[-1]["rss_mib"] - e[1]["rss_mib"]) / max(1, len(e) - 2), 2)
    if "face_6ep" in out and len(out["face_6ep"]["epochs_seen"]) >= 3:
        e = out["face_6ep"]["epochs_seen"]
        derived["face_rss_by_epoch_mib"] = [r["rss_mib"] for r in e]
        # from epoch 2 on, like small_80ep: the first epoch also warms up TF's kernels and pools
        derived["face_growth_per_epoch_mib"] = round(
            (e[-1]["rss_mib"] - e[1]["rss_mib"]) / max(1, len(e) - 2), 2)
    out["derived"] = derived
    return out
