"""What an attacker sees: frozen embeddings and private labels per split."""

from __future__ import annotations

import dataclasses
import enum
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from bridging_tf.errors import UserError


class AttackType(str, enum.Enum):
    """Which attacker to run (the value is what flags and files use)."""

    LINEAR = "linear"    # the paper's probe: one Dense layer, SGD (METHODS §7.4)
    MLP = "mlp"          # 2 hidden layers, early stopping: a stronger adversary
    DECODER = "decoder"  # reconstruction of the input image (paper Fig. 2c, 6)

    @classmethod
    def parse(cls, value) -> "AttackType":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise UserError(f"unknown attack type {value!r}; choose from "
                            f"{', '.join(t.value for t in cls)}") from None


def _embeddings(name, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"attack data: {name} must be 2-D [N, D], got shape {x.shape}")
    if len(x) == 0:
        raise UserError(f"attack data: {name} is empty")
    if not np.all(np.isfinite(x)):
        raise UserError(f"attack data: {name} contains NaN or infinite values")
    return x.astype(np.float32, copy=False)


def _labels(name, y, n, num_private) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"attack data: {name} must be 1-D with {n} labels (one per embedding), "
                        f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise UserError(f"attack data: {name} must hold integer class ids")
    y = y.astype(np.int32)
    if y.min() < 0 or y.max() >= num_private:
        raise UserError(f"attack data: {name} has labels outside [0, {num_private}) "
                        f"(num_private={num_private})")
    return y


def _images(name, x, n) -> Optional[np.ndarray]:
    if x is None:
        return None
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise UserError(f"attack data: {name} must be uint8 [N, H, W, C], got {x.dtype} {x.shape}")
    if len(x) != n:
        raise UserError(f"attack data: {name} has {len(x)} images but {n} embeddings")
    return x


@dataclasses.dataclass
class AttackInputData:
    """Embeddings (frozen bottleneck) and private labels for the attacker.

    ``train_*`` fits the attacker, ``val_*`` (optional) is used only for early
    stopping, and every entry of ``eval_embeddings`` is a reported split (the
    first key is the primary one, e.g. ``"unbiased"``). Images (uint8 NHWC)
    are needed only by the decoder attack.

    Example::

        data = AttackInputData(
            train_embeddings=z_tr, train_private=c_tr,
            eval_embeddings={"unbiased": z_te}, eval_private={"unbiased": c_te},
            num_private=10)
    """

    train_embeddings: np.ndarray
    train_private: np.ndarray
    val_embeddings: Optional[np.ndarray] = None
    val_private: Optional[np.ndarray] = None
    eval_embeddings: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    eval_private: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_private: Optional[int] = None
    private_names: Optional[Sequence[str]] = None
    train_images: Optional[np.ndarray] = None
    val_images: Optional[np.ndarray] = None
    eval_images: Optional[Mapping[str, np.ndarray]] = None

    def __post_init__(self):
        self.train_embeddings = _embeddings("train_embeddings", self.train_embeddings)
        dim = self.train_embeddings.shape[1]
        if not self.eval_embeddings:
            raise UserError("attack data: eval_embeddings is empty; give at least one split")
        if set(self.eval_embeddings) != set(self.eval_private or {}):
            raise UserError(f"attack data: eval_embeddings splits {sorted(self.eval_embeddings)} "
                            f"differ from eval_private splits {sorted(self.eval_private or {})}")
        if self.num_private is None:
            every = [self.train_private] + list(self.eval_private.values())
            self.num_private = int(max(int(np.max(y)) for y in every)) + 1
        self.num_private = int(self.num_private)
        if self.num_private < 2:
            raise UserError(f"attack data: num_private={self.num_private}; a private attribute "
                            "needs at least 2 classes")
        self.train_private = _labels("train_private", self.train_private,
                                     len(self.train_embeddings), self.num_private)
        if (self.val_embeddings is None) != (self.val_private is None):
            raise UserError("attack data: give both val_embeddings and val_private, or neither")
        if self.val_embeddings is not None:
            self.val_embeddings = _embeddings("val_embeddings", self.val_embeddings)
            self.val_private = _labels("val_private", self.val_private,
                                       len(self.val_embeddings), self.num_private)
        ev, ep = {}, {}
        for split in self.eval_embeddings:
            ev[split] = _embeddings(f"eval_embeddings[{split!r}]", self.eval_embeddings[split])
            ep[split] = _labels(f"eval_private[{split!r}]", self.eval_private[split],
                                len(ev[split]), self.num_private)
        self.eval_embeddings, self.eval_private = ev, ep
        for name, x in [("val_embeddings", self.val_embeddings)] + [
                (f"eval_embeddings[{k!r}]", v) for k, v in ev.items()]:
            if x is not None and x.shape[1] != dim:
                raise UserError(f"attack data: {name} has dimension {x.shape[1]}, "
                                f"train_embeddings has {dim}")
        if self.private_names is not None and len(self.private_names) != self.num_private:
            raise UserError(f"attack data: {len(self.private_names)} private_names for "
                            f"num_private={self.num_private}")
        self.train_images = _images("train_images", self.train_images, len(self.train_embeddings))
        if self.val_embeddings is not None:
            self.val_images = _images("val_images", self.val_images, len(self.val_embeddings))
        elif self.val_images is not None:
            raise UserError("attack data: val_images given without val_embeddings")
        if self.eval_images is not None:
            unknown = set(self.eval_images) - set(ev)
            if unknown:
                raise UserError(f"attack data: eval_images has splits {sorted(unknown)} "
                                "without embeddings")
            self.eval_images = {k: _images(f"eval_images[{k!r}]", v, len(ev[k]))
                                for k, v in self.eval_images.items()}

    @property
    def splits(self) -> list:
        """Eval split names in order; the first is the primary one."""
        return list(self.eval_embeddings)

    @property
    def dim(self) -> int:
        return int(self.train_embeddings.shape[1])

    def describe(self) -> Dict[str, object]:
        """JSON-ready sizes of every split."""
        out = {"train": len(self.train_embeddings), "dim": self.dim,
               "num_private": self.num_private}
        if self.val_embeddings is not None:
            out["val"] = len(self.val_embeddings)
        out.update({f"eval:{k}": len(v) for k, v in self.eval_embeddings.items()})
        return out
