"""Find finished runs (``results.json``) and the attack results saved next to them.

A run folder holds ``results.json`` at its top (written by
``pipelines.run``); its attack artifact keeps :class:`AttackResults` in
sub-folders (``attack/main`` for the run's own protocol,
``attack/protocol_<name>`` for the other one). A ``results.json`` nested
inside another run folder (e.g. the report artifact's copy) is not a
separate run.

Example::

    runs = find_runs("sweeps/mnist")
    runs[0].results["private_accuracy"], runs[0].attacks["sound"].summary()
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional

from bridging_tf.attacks import AttackResults
from bridging_tf.attacks.results import JSON_NAME
from bridging_tf.errors import UserError

RESULTS_NAME = "results.json"
REPORT_DIR = "report"


@dataclasses.dataclass
class Run:
    """One finished run: its folder, ``results.json`` and saved attacks by protocol."""

    path: Path
    results: dict
    attacks: Dict[str, AttackResults] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def protocol(self) -> str:
        return str(self.results.get("attack_protocol") or "sound")

    def main_attacks(self) -> Optional[AttackResults]:
        """Attack results of the run's own protocol (the one with every attack)."""
        return self.attacks.get(self.protocol) or next(iter(self.attacks.values()), None)


def _protocol_of(folder: Path, run_protocol: str) -> str:
    name = folder.name
    if name.startswith("protocol_"):
        return name[len("protocol_"):]
    for p in ("sound", "paper"):
        if p in name:
            return p
    return run_protocol


def find_runs(root, load_attacks: bool = True) -> List[Run]:
    """Every run under ``root`` (sorted by path); UserError when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--runs={root}: no such folder")
    candidates = sorted((p for p in root.rglob(RESULTS_NAME)
                         if REPORT_DIR not in p.relative_to(root).parts[:1]),
                        key=lambda p: (len(p.parts), str(p)))  # parents before nested copies
    run_dirs: List[Path] = []
    for p in candidates:
        d = p.parent
        if any(d != r and r in d.parents for r in run_dirs):
            continue  # a copy inside an earlier run (e.g. <run>/report/results.json)
        run_dirs.append(d)
    runs = []
    for d in run_dirs:
        try:
            results = json.loads((d / RESULTS_NAME).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{d / RESULTS_NAME}: not readable JSON ({err})") from None
        if not isinstance(results, dict):
            raise UserError(f"{d / RESULTS_NAME}: expected a JSON object")
        run = Run(d, results)
        if load_attacks:
            protocol = run.protocol
            for j in sorted(d.rglob(JSON_NAME)):
                key = _protocol_of(j.parent, protocol)
                if key not in run.attacks:
                    run.attacks[key] = AttackResults.load(j.parent)
        runs.append(run)
    runs.sort(key=lambda r: str(r.path))
    if not runs:
        raise UserError(f"--runs={root}: no results.json found under it (run pipelines.run "
                        "or pipelines.sweep first)")
    return runs
