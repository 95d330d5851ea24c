"""Smoke test of the benchmark harness in its tiniest mode (no timing assertions).

Speed targets live in ``python -m benchmarks.run``, not in tests: this only
checks that the harness runs end to end and writes well-formed JSON.
"""

from __future__ import annotations

import json

from benchmarks import run as bench_run
from benchmarks.flops import model_flops
from tests.conftest import SHARED_DATA


def test_simple_convnet_flops_formula():
    from bridging_tf.models.simple_conv import simple_convnet

    fl = model_flops(simple_convnet(kernel_size=7, width=1.0))
    convs = [
        2 * 28 * 28 * 7 * 7 * cin * cout for cin, cout in ((3, 16), (16, 32), (32, 64), (64, 128))
    ]
    assert fl["forward"] == sum(convs) + 2 * 128 * 10
    # forward + weight grad + input grad, except conv1 (its input needs no gradient)
    assert fl["train"] == 3 * fl["forward"] - convs[0]


def test_harness_tiny_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_run.main(["--tiny", f"--out={out}", f"--data_dir={SHARED_DATA}"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "tiny"
    assert {"cpu_model", "cores", "tensorflow", "onednn"} <= set(res["machine"])
    cases = res["steps"]["cases"]
    for name in ("matmul", "vanilla", "end"):
        assert name in cases, res.get("skipped")
        assert cases[name]["gflops_per_s_median"] > 0
    assert cases["vanilla"]["images_per_s_median"] > 0
    assert "ratio_to_matmul" in cases["vanilla"] and "time_vs_vanilla" in cases["end"]
    att = res["attacks"]
    assert att["linear_suite_s_median"] > 0 and att["mlp_suite_s_median"] > 0
    if (SHARED_DATA / "mnist").exists():
        pipe = res["pipeline"]
        assert pipe["identical"] is True
        assert set(pipe["rates"]) == {"build_time", "in_pipeline"}
    else:
        assert "pipeline" in res["skipped"]
    # every skipped piece says why; nothing is silently missing
    assert all(isinstance(v, str) and v for v in res["skipped"].values())
    assert "Train step" in capsys.readouterr().out
