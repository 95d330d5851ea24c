"""The one Markdown table writer (reports, attack summaries, benchmarks).

Example::

    from bridging_tf.markdown import markdown_table
    markdown_table(["case", "img/s"], [["vanilla", "812.0"]], align="lr")
    # '| case | img/s |\n|---|---:|\n| vanilla | 812.0 |\n'
"""

from __future__ import annotations

from typing import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                   align: str = "") -> str:
    """A GitHub Markdown table, newline-terminated; ``align``: ``l``/``r`` per column (``l``)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
