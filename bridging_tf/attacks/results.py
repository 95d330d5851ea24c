"""Attack results: per-split metrics, training history, arrays; JSON + ``.npz``.

``AttackResults.save(dir)`` writes ``attacks.json`` (everything but arrays)
and ``attacks.npz`` (predictions, probe weights, sample reconstructions, the
PCA view), loaded back with ``allow_pickle=False``. No pickle anywhere.

Example::

    results = run_attacks(data, [AttackType.LINEAR])
    print(results.summary())
    results.save("runs/end_rho0.997_seed0/attacks_sound")
    again = AttackResults.load("runs/end_rho0.997_seed0/attacks_sound")
    again.get(AttackType.LINEAR).per_split["unbiased"]["accuracy"]
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from bridging_tf.attacks.data import AttackType
from bridging_tf.attacks.gaussian import GaussianView
from bridging_tf.errors import UserError
from bridging_tf.fileio import atomic_write, write_text
from bridging_tf.markdown import markdown_table

JSON_NAME = "attacks.json"
NPZ_NAME = "attacks.npz"
FORMAT_VERSION = 1

#: attacker -> the name the summaries print.
ATTACKER_NAMES = {"linear": "Linear probe", "mlp": "MLP probe (2 hidden layers, early stopping)",
                  "decoder": "Decoder (reconstruction attack)"}
#: protocol -> its attacker set, as the summaries print it (Biased-MNIST's two protocols;
#: ``info["attacker_set"]`` overrides it for a data set whose attacker split differs).
PROTOCOL_ATTACKER_SETS = {"sound": "independent ρ=0.1 attacker set",
                          "paper": "ρ=0.999 attacker set, as the reference"}

# Columns of :meth:`AttackResults.to_table` (metric key, header).
TABLE_COLUMNS = (
    ("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."),
    ("chance_uniform", "chance 1/K"), ("chance_majority", "chance majority"),
    ("auc", "AUC"), ("advantage", "advantage"), ("mse", "MSE"), ("psnr", "PSNR dB"),
    ("baseline_mse", "mean-image MSE"), ("colour_accuracy", "colour acc. (recon.)"),
)


@dataclasses.dataclass
class AttackResult:
    """One attacker's outcome.

    ``per_split[split]`` holds the metrics on each eval split (probes:
    ``accuracy``, ``balanced_accuracy``, ``chance_uniform``,
    ``chance_majority``, ``n`` and, when binary, ``auc`` / ``advantage``;
    decoder: ``mse``, ``psnr``, ``baseline_mse``, ``baseline_psnr`` and, with
    a palette, ``colour_accuracy`` plus its chance levels).
    """

    attack_type: AttackType
    per_split: Dict[str, Dict[str, float]]
    train: Dict[str, float] = dataclasses.field(default_factory=dict)
    config: Dict[str, object] = dataclasses.field(default_factory=dict)
    history: Dict[str, List[float]] = dataclasses.field(default_factory=dict)
    arrays: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    wall_time_s: float = float("nan")

    def to_dict(self) -> Dict[str, object]:
        return {"attack_type": self.attack_type.value, "per_split": self.per_split,
                "train": self.train, "config": self.config, "history": self.history,
                "wall_time_s": self.wall_time_s}


class AttackResults:
    """All attackers of one :func:`run_attacks` call (plus the PCA view).

    ``info`` records the data sizes, seed and the primary split (the first
    eval split), used by :meth:`summary`.
    """

    def __init__(self, results: Dict[AttackType, AttackResult],
                 views: Optional[Dict[str, GaussianView]] = None,
                 info: Optional[Dict[str, object]] = None):
        self.results = dict(results)
        self.views = dict(views or {})
        self.info = dict(info or {})

    # --- access -----------------------------------------------------------
    def get(self, attack_type) -> AttackResult:
        key = AttackType.parse(attack_type)
        if key not in self.results:
            raise KeyError(f"no {key.value} attack in these results "
                           f"(have {', '.join(t.value for t in self.results) or 'none'})")
        return self.results[key]

    def __contains__(self, attack_type) -> bool:
        return AttackType.parse(attack_type) in self.results

    def __iter__(self) -> Iterator[AttackResult]:
        return iter(self.results.values())

    @property
    def primary_split(self) -> Optional[str]:
        if self.info.get("primary_split"):
            return str(self.info["primary_split"])
        for r in self.results.values():
            if r.per_split:
                return next(iter(r.per_split))
        return None

    # --- text -------------------------------------------------------------
    @property
    def protocol(self) -> Optional[str]:
        """The attacker set's protocol (``info["protocol"]``: ``sound``, ``paper``, or None)."""
        value = self.info.get("protocol")
        return None if value in (None, "") else str(value)

    def protocol_text(self) -> str:
        """``"sound protocol (independent ρ=0.1 attacker set)"``, ...; ``""`` if unrecorded."""
        protocol = self.protocol
        if protocol is None:
            return ""
        text = f"{protocol} protocol"
        attacker_set = self.info.get("attacker_set") or PROTOCOL_ATTACKER_SETS.get(protocol)
        return f"{text} ({attacker_set})" if attacker_set else text

    def summary(self) -> str:
        """One human sentence per attack, on the primary split, naming attacker and protocol."""
        lines = []
        protocol = self.protocol_text()
        for r in self.results.values():
            split = self.primary_split if self.primary_split in r.per_split else next(
                iter(r.per_split), None)
            if split is None:
                continue
            m = r.per_split[split]
            name = ATTACKER_NAMES[r.attack_type.value]
            if protocol:
                name = f"{name}, {protocol}"
            pct = lambda k: _pct(m.get(k))  # noqa: E731
            if r.attack_type is AttackType.DECODER:
                s = (f"{name}: MSE {_num(m.get('mse'))} (PSNR {_num(m.get('psnr'), digits=1)} dB) "
                     f"on '{split}' vs {_num(m.get('baseline_mse'))} "
                     f"({_num(m.get('baseline_psnr'), digits=1)} dB) for the mean training image")
                if "colour_accuracy" in m:
                    s += (f"; the background colour read back from the reconstruction is "
                          f"right for {pct('colour_accuracy')} of images (chance "
                          f"{pct('colour_chance_uniform')} uniform, "
                          f"{pct('colour_chance_majority')} majority)")
                lines.append(s + ".")
            else:
                s = (f"{name}: private accuracy {pct('accuracy')} on '{split}' "
                     f"(balanced {pct('balanced_accuracy')}; chance "
                     f"{pct('chance_uniform')} uniform, {pct('chance_majority')} majority)")
                if "auc" in m:
                    s += (f", AUC {_num(m.get('auc'), digits=3)}, attacker advantage "
                          f"{_num(m.get('advantage'), digits=3)}")
                if r.train.get("accuracy") is not None:
                    s += f"; {_pct(r.train['accuracy'])} on its own training data"
                    if r.train["accuracy"] < (r.train.get("chance_majority") or 0) + 0.02:
                        s += (" — it barely fit its training data, so this number says little "
                              "(too few SGD steps? more attacker data or epochs)")
                lines.append(s + ".")
        return "\n".join(lines)

    def rows(self) -> List[Dict[str, object]]:
        """Flat rows ``{attack, split, <metric>...}`` (for CSV / DataFrames)."""
        out = []
        for r in self.results.values():
            for split, m in r.per_split.items():
                out.append({"attack": r.attack_type.value, "split": split, **m})
        return out

    def to_table(self, fmt: str = "markdown") -> str:
        """Markdown (default) or CSV table: one row per (attack, split)."""
        rows = self.rows()
        cols = [(k, h) for k, h in TABLE_COLUMNS if any(k in r for r in rows)]
        if fmt == "csv":
            head = ["attack", "split"] + [k for k, _ in cols]
            lines = [",".join(head)]
            for r in rows:
                lines.append(",".join([r["attack"], r["split"]] +
                                      [_num(r.get(k), csv=True) for k, _ in cols]))
            return "\n".join(lines) + "\n"
        if fmt != "markdown":
            raise UserError(f"table format {fmt!r}: choose markdown or csv")
        return markdown_table(["attack", "split"] + [h for _, h in cols],
                              [[r["attack"], r["split"]] + [_num(r.get(k)) for k, _ in cols]
                               for r in rows])

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict (no arrays)."""
        return {"format_version": FORMAT_VERSION, "info": self.info,
                "attacks": {t.value: r.to_dict() for t, r in self.results.items()},
                "views": {k: v.to_dict() for k, v in self.views.items()}}

    # --- files ------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``attacks.json`` + ``attacks.npz`` into ``directory`` (atomically)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create attack results folder {directory}: {err}") from None
        doc = self.to_dict()
        arrays, index = {}, []
        for t, r in self.results.items():
            for name, arr in r.arrays.items():
                key = f"a{len(index)}"
                arrays[key] = np.asarray(arr)
                index.append({"owner": t.value, "name": name, "key": key})
        for split, view in self.views.items():
            for name, arr in view.arrays().items():
                key = f"a{len(index)}"
                arrays[key] = np.asarray(arr)
                index.append({"owner": f"view:{split}", "name": name, "key": key})
        doc["arrays"] = index
        atomic_write(directory / NPZ_NAME, lambda f: np.savez_compressed(f, **arrays), "wb")
        write_text(directory / JSON_NAME, json.dumps(_jsonable(doc), indent=2))
        return directory

    @classmethod
    def load(cls, directory) -> "AttackResults":
        """Read what :meth:`save` wrote."""
        directory = Path(directory)
        jpath = directory / JSON_NAME
        if not jpath.is_file():
            raise UserError(f"{jpath}: no saved attack results there")
        doc = json.loads(jpath.read_text())
        arrays: Dict[str, Dict[str, np.ndarray]] = {}
        npath = directory / NPZ_NAME
        if doc.get("arrays"):
            if not npath.is_file():
                raise UserError(f"{npath} is missing (it holds the arrays of {jpath})")
            with np.load(npath, allow_pickle=False) as npz:
                for item in doc["arrays"]:
                    arrays.setdefault(item["owner"], {})[item["name"]] = npz[item["key"]]
        results = {}
        for value, d in doc.get("attacks", {}).items():
            t = AttackType.parse(value)
            results[t] = AttackResult(
                attack_type=t, per_split=d.get("per_split", {}), train=d.get("train", {}),
                config=d.get("config", {}), history=d.get("history", {}),
                arrays=arrays.get(value, {}), wall_time_s=_float(d.get("wall_time_s")))
        views = {split: GaussianView.from_saved(info, arrays.get(f"view:{split}", {}))
                 for split, info in doc.get("views", {}).items()}
        return cls(results, views, doc.get("info", {}))


def _num(v, csv: bool = False, digits: int = 4) -> str:
    if v is None:
        return "" if csv else "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "" if csv else "–"
    return f"{v:.6g}" if csv else f"{v:.{digits}f}"


def _pct(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * float(v):.1f}%"


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _jsonable(obj):
    """Numpy scalars -> Python; NaN/inf -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, AttackType):
        return obj.value
    return obj
