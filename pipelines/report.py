"""``python -m pipelines.report --runs=DIR``: tables and figures for a folder of runs.

Reads every ``DIR/**/results.json`` (and the attack results saved next to
them) and writes under ``DIR/report/`` (or ``--output_dir``): ``tables.md``
(paper layout, mean ± 95 % CI over seeds, the worst-case leakage over the
sound attackers as the headline, sound and paper protocols side by side),
``tables.csv`` / ``tables.json`` / ``runs.csv``, and the figures (Fig. 3
sample grid, Fig. 4 polar, Fig. 5 scatter — each for the sound and paper
linear probe and the worst case —, Fig. 6 reconstructions, Fig. 8 Gaussians
on PC1, Fig. 9 the privacy–utility frontier: target accuracy vs worst-case
and linear-probe private accuracy, one curve per method, Pareto front,
chance), each PNG with the CSV behind it.

Examples::

    python -m pipelines.report --runs=sweeps/mnist
    python -m pipelines.report --runs=sweeps/mnist --data_dir=../shared/data/mnist
"""

from __future__ import annotations

import sys

from absl import flags

from bridging_tf.errors import UserError
from pipelines._cli import parse_flags

# A private flag set: other pipeline modules (pipelines.run) own the global FLAGS.
FLAGS = flags.FlagValues()
flags.DEFINE_string("runs", None, "Folder holding run folders (each with results.json).",
                    flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write the report (default <runs>/report).",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "MNIST folder for the Fig. 3 sample grid (default: the "
                    "runs' --data_dir from run_metadata.json).", flag_values=FLAGS)


def main(argv=None) -> int:
    """Parse flags, build the report; user errors -> one line on stderr, exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print("\n".join(f"  --{n}: {FLAGS[n].help}" for n in ("runs", "output_dir", "data_dir")))
        return 0
    status = parse_flags(FLAGS, argv)
    if status is not None:
        return status
    if not FLAGS.runs:
        print("error: --runs=DIR is required (a folder of run folders with results.json)",
              file=sys.stderr)
        return 2
    from bridging_tf.reporting import build_report

    try:
        out = build_report(FLAGS.runs, FLAGS.output_dir, FLAGS.data_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Report of {out['runs']} run(s) written to {out['out_dir']}:")
    for f in out["files"]:
        print(f"  {f}")
    for n in out["notes"]:
        print(f"note: {n}")
    return 0


def entry_point() -> None:
    """Console script entry."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
