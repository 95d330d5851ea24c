"""tf.data input pipeline for Biased-MNIST, and where to colour the digits.

Two ways to store Biased-MNIST and feed ``(normalised float32 [B,28,28,3],
{"label", "private"})`` batches:

- ``build_time`` (what ``bridging_tf.datasets.biased_mnist`` does): colour
  every split once in numpy at build time and store uint8 ``[N,28,28,3]``;
  the pipeline is ``ArraySplit.dataset`` (shuffle → batch → vectorised
  normalise → prefetch);
- ``in_pipeline``: store the grayscale uint8 digits ``[N,28,28]`` and the
  colour label only, and render each *batch* in the pipeline with
  ``tf.gather`` + ``tf.where`` straight into normalised float32 (the 11
  possible normalised values are precomputed with the same arithmetic as
  ``normalize_images``, so the output is bit-identical).

Both produce the same batches for the same seed (checked: ``identical``).
Memory is measured in a subprocess (``python -m benchmarks.pipeline rss
--mode=...``): peak RSS (``ru_maxrss``) after building the full-size bundle
(55k train + 5k val + two 55k attack sets + 5k attack_val + three 10k test
sets), minus the peak after the imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional

import numpy as np

from benchmarks.timing import median, peak_rss_mb


class GreySplit:
    """Grayscale digits + colour labels; colour is rendered per batch in tf.data."""

    def __init__(self, name, digits, labels, bias, mean, std):
        self.name = name
        self.digits = np.ascontiguousarray(digits, dtype=np.uint8)
        self._labels = np.asarray(labels, np.int32)
        self._private = np.asarray(bias, np.int32)
        self.size = len(self.digits)
        self.mean, self.std = tuple(mean), tuple(std)

    def labels(self):
        return self._labels

    def private(self):
        return self._private

    def dataset(
        self,
        batch_size,
        *,
        shuffle=False,
        seed=0,
        repeat=False,
        drop_remainder=False,
        normalize=True,
        **unused,
    ):
        import tensorflow as tf

        from bridging_tf.datasets.base import normalize_images
        from bridging_tf.datasets.biased_mnist import COLOUR_MAP

        palette = tf.constant(COLOUR_MAP)  # [10, 3] uint8
        # Normalised background colours and the normalised white, computed with
        # exactly the pipeline's arithmetic so the batches are bit-identical.
        palette_n = normalize_images(palette, self.mean, self.std)  # [10, 3] f32
        white_n = normalize_images(tf.constant([[255, 255, 255]], tf.uint8), self.mean, self.std)
        ds = tf.data.Dataset.from_tensor_slices(
            (self.digits, {"label": self._labels, "private": self._private})
        )
        if shuffle:
            ds = ds.shuffle(self.size, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

        def render(d, y):
            fg = tf.not_equal(d, 0)[..., None]  # [B,28,28,1]
            if normalize:
                bg = tf.gather(palette_n, y["private"])[:, None, None, :]  # [B,1,1,3]
                return tf.where(fg, white_n[0], bg), y
            bg = tf.gather(palette, y["private"])[:, None, None, :]
            return tf.where(fg, tf.constant(255, tf.uint8), bg), y

        return ds.map(render, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
            tf.data.AUTOTUNE
        )


def load_bundle(mode: str, data_dir, **options):
    """The Biased-MNIST bundle with ``build_time`` colouring (as shipped) or ``in_pipeline``.

    ``in_pipeline`` runs the shipped builder with its split constructor swapped
    for :class:`GreySplit` (same RNG streams, so the same colour labels).
    """
    from bridging_tf.datasets import biased_mnist as bm

    if mode == "build_time":
        return bm.load_biased_mnist(data_dir, allow_download=False, **options)
    if mode != "in_pipeline":
        raise ValueError(f"mode must be build_time or in_pipeline, got {mode!r}")

    def grey_split(name, digits, labels, rho, rng):
        return GreySplit(name, digits, labels, bm.assign_colours(labels, rho, rng), bm.MEAN, bm.STD)

    original = bm._split
    bm._split = grey_split
    try:
        return bm.load_biased_mnist(data_dir, allow_download=False, **options)
    finally:
        bm._split = original


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_child(mode: str, data_dir: str, train_size: Optional[int]) -> Dict[str, float]:
    """Body of the ``rss`` subprocess: peak RSS of building the bundle, imports excluded.

    The peak is ``VmHWM`` reset to the current RSS right after the imports
    (``/proc/self/clear_refs``), so neither TensorFlow's import peak nor the
    parent's peak counts: on Linux ``ru_maxrss`` is inherited across
    fork/exec, so in a child of a big process it only shows the parent's peak
    (it is still recorded, as ``ru_maxrss_mb``).
    """
    import tensorflow as tf  # noqa: F401  (count the import in the baseline)

    import bridging_tf.datasets.biased_mnist  # noqa: F401

    reset = _reset_peak()
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    seen = set()
    bundle = load_bundle(mode, data_dir, train_size=train_size)
    build_s = time.perf_counter() - t0
    after = _status_mb("VmHWM") if reset else peak_rss_mb()
    unique = 0
    for split in bundle.splits.values():  # attack_train aliases one of the two
        if id(split) in seen:
            continue
        seen.add(id(split))
        arr = getattr(split, "images", None)
        arr = arr if arr is not None else getattr(split, "digits")
        unique += arr.nbytes
    return {
        "mode": mode,
        "rss_after_imports_mb": base,
        "peak_rss_during_build_mb": after,
        "bundle_peak_rss_mb": after - base,
        "rss_after_build_mb": _status_mb("VmRSS"),
        "bundle_rss_mb": _status_mb("VmRSS") - base,
        "ru_maxrss_mb": peak_rss_mb(),
        "peak_method": "VmHWM reset after imports" if reset else "ru_maxrss",
        "image_bytes_mb": unique / 2**20,
        "build_s": build_s,
        "examples": int(sum(s.size for k, s in bundle.splits.items() if k != "attack_train")),
    }


def measure_rss(
    mode: str, data_dir, train_size: Optional[int] = None, timeout: float = 600
) -> Dict[str, float]:
    """Run :func:`rss_child` in a fresh interpreter (so peaks don't mix) and parse its JSON."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.pipeline",
        "rss",
        f"--mode={mode}",
        f"--data_dir={data_dir}",
    ]
    if train_size:
        cmd.append(f"--train_size={train_size}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(
        f"rss subprocess failed (rc={proc.returncode}): "
        f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    )


def pipeline_rates(
    bundles: Dict[str, object], *, batch: int, batches_per_window: int, rounds: int, log=print
) -> Dict[str, Dict[str, float]]:
    """Images/s of each bundle's shuffled train pipeline, interleaved round-robin."""
    iters = {}
    for name, bundle in bundles.items():
        ds = bundle["train"].dataset(batch, shuffle=True, seed=0, repeat=True, drop_remainder=True)
        it = iter(ds)
        for _ in range(3):  # warm-up: autotune, first shuffle buffer fill
            next(it)
        iters[name] = it
    times = {name: [] for name in bundles}
    for r in range(rounds):
        for name, it in iters.items():
            t0 = time.perf_counter()
            for _ in range(batches_per_window):
                x, _ = next(it)
            _ = x.shape
            times[name].append(time.perf_counter() - t0)
        log(
            f"  pipeline round {r + 1}/{rounds}: "
            + " ".join(
                f"{n}={batch * batches_per_window / t[-1]:.0f} img/s" for n, t in times.items()
            )
        )
    out = {
        name: {
            "images_per_s_median": median([batch * batches_per_window / t for t in ts]),
            "seconds": [round(t, 4) for t in ts],
        }
        for name, ts in times.items()
    }
    names = list(times)
    if len(names) == 2:  # speed of the second storage relative to the first, per round
        a, b = (times[n] for n in names)
        out[names[1]][f"speed_vs_{names[0]}"] = median([ta / tb for ta, tb in zip(a, b)])
    return out


def check_identical(bundles: Dict[str, object], batch: int = 64, n_batches: int = 3) -> bool:
    """Whether both storages give bit-identical shuffled batches (images, labels, private)."""
    streams = [iter(b["train"].dataset(batch, shuffle=True, seed=3)) for b in bundles.values()]
    for _ in range(n_batches):
        outs = [next(s) for s in streams]
        a, b = outs[0], outs[1]
        if not np.array_equal(a[0].numpy(), b[0].numpy()):
            return False
        for k in ("label", "private"):
            if not np.array_equal(a[1][k].numpy(), b[1][k].numpy()):
                return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline")
    parser.add_argument("command", choices=["rss"])
    parser.add_argument("--mode", choices=["build_time", "in_pipeline"], required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--train_size", type=int, default=None)
    args = parser.parse_args(argv)
    print(json.dumps(rss_child(args.mode, args.data_dir, args.train_size)), flush=True)


if __name__ == "__main__":
    main()
