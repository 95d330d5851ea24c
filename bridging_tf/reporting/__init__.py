"""Tables and figures from finished runs (paper Tables 2–4, Fig. 3–6, 8).

- :func:`build_report` — everything for a folder of runs, under ``<runs>/report``;
- :mod:`~bridging_tf.reporting.tables` — per-run rows, mean ± 95 % CI over
  seeds, Markdown / CSV / JSON with the sound and paper attack protocols side
  by side;
- :mod:`~bridging_tf.reporting.figures` — headless matplotlib figures, each
  with the CSV behind it.

Example::

    from bridging_tf.reporting import build_report
    build_report("sweeps/mnist")   # -> sweeps/mnist/report/tables.md, fig*.png, ...
"""

from bridging_tf.reporting.report import build_report
from bridging_tf.reporting.runs import Run, find_runs
from bridging_tf.reporting.tables import aggregate, markdown_tables, run_row

__all__ = ["Run", "aggregate", "build_report", "find_runs", "markdown_tables", "run_row"]
