"""Benchmark harness for bridging_tf (issue 8).

``python -m benchmarks.run [--quick] [--out=FILE.json]``.

Everything here measures; nothing here is imported by the library. The
targets are *ratios* measured in one process run (the machines are shared
and noisy), so the step benchmark interleaves every method with the matmul
reference in round-robin windows and reports medians of per-round ratios.

Modules:

- :mod:`benchmarks.timing` — machine facts, windows/medians, peak RSS;
- :mod:`benchmarks.flops` — analytic FLOPs of a functional Keras model;
- :mod:`benchmarks.steps` — train-step images/s per method, matmul rate,
  raw-conv and forward-only diagnostics;
- :mod:`benchmarks.pipeline` — tf.data Biased-MNIST input pipeline, and the
  colour-at-build-time vs colour-in-pipeline comparison (speed and memory);
- :mod:`benchmarks.attacks` — linear / MLP probe seconds;
- :mod:`benchmarks.dicom` — SIIM DICOM ingestion images/s (1 and 2 workers);
- :mod:`benchmarks.run` — the command line, the table and the JSON.
"""
