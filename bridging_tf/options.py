"""Every option of a job, declared once: type, default, help, choices, bounds and check.

:class:`RunOptions`, :class:`DataOptions` (``None``: the dataset's own default, from
:class:`BiasedMnistData` / :class:`CelebaData` / :class:`EbFacesData` / :class:`SiimData`),
:class:`TrainOptions` and one ``*Hparams`` class per method (its ``HPARAMS``). A field's
``metadata`` holds ``help``, ``kind``, ``choices`` and bounds; constructing a class checks
and converts every value (strings from Python too; non-finite floats refused), raising a
one-line :class:`UserError` naming ``--flag``. Library defaults read the classes
(``alpha: float = EnDHparams.alpha``); ``pipelines/_cli.py`` makes the absl flags.

Example::

    TrainOptions(lr="0.01").lr                  # 0.01
    EnDHparams(alpha=-1)                        # UserError: --alpha=-1.0 must be >= 0
    check_value("rho", 2)                       # UserError: --rho=2.0 is outside [0, 1]
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

from bridging_tf.errors import UserError

SCALES = ("paper", "cpu", "smoke")
#: ``--image_size`` range (checked with the dataset: Biased-MNIST has no such option)
IMAGE_SIZE_RANGE = (8, 4096)
#: ``--width`` lower end of any net (each net's own minimum is checked with the backbone)
MAX_WIDTH = 8.0


def _field(default, help, kind, **meta):
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind, **meta})


def integer(default, help, **meta):
    return _field(default, help, "int", **meta)


def real(default, help, **meta):
    return _field(default, help, "float", **meta)


def text(default, help, **meta):
    return _field(default, help, "str", **meta)


def boolean(default, help, **meta):
    return _field(default, help, "bool", **meta)


def enum(default, help, choices, **meta):
    """``choices``: a tuple, or a function returning one (a registry: methods, datasets)."""
    return _field(default, help, "enum", choices=choices, **meta)


def choices_of(f: dataclasses.Field) -> Optional[tuple]:
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


def _registry(package: str):  # the names registered now (methods, datasets, backbones)
    import importlib
    return lambda: importlib.import_module(f"bridging_tf.{package}").available()


def _check_seed(value):
    from bridging_tf.datasets.checks import check_seed
    return check_seed(value)


def _check_attack_size(value):
    from bridging_tf.datasets.checks import check_attack_size
    check_attack_size(value)
    return value


def _check_attacks(value):
    from bridging_tf.attacks import AttackType
    for a in str(value).split(","):
        if a.strip():
            AttackType.parse(a.strip())
    return value


_POSITIVE = "{flag}={value} must be a positive number of examples"


def _rho():  # a Biased-MNIST option; the job-level flag has the same default and checks
    return real(0.997, "Biased-MNIST: colour/digit correlation of the training set, in [0, 1].",
                lower=0.0, upper=1.0)


def _attack_protocol():
    return enum("sound", "sound (independent rho=0.1 attacker set) | paper (fresh rho=0.999 "
                "set).", ("sound", "paper"))


def _seed():
    return integer(0, "Seed for data, initialisation and attacks.", lower=0,
                   upper=2 ** 32 - 1, check=_check_seed)


class Schema:
    """Mixin: constructing checks and converts every field (``__post_init__``)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check(f, getattr(self, f.name)))

    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def values(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ data (per dataset)
@dataclasses.dataclass
class BiasedMnistData(Schema):
    """Biased-MNIST's own defaults (``bridging_tf.datasets.biased_mnist``)."""

    backbone: ClassVar[str] = "simple_conv"
    rho: float = _rho()
    val_size: int = integer(5000, "Digits held out from training for model selection.",
                            lower=0, message=_POSITIVE)
    attack_protocol: str = _attack_protocol()


@dataclasses.dataclass
class CelebaData(Schema):
    """CelebA's own defaults (``bridging_tf.datasets.celeba``)."""

    backbone: ClassVar[str] = "resnet18"
    target: str = text("Blond_Hair", "CelebA target attribute (any of its 40).")
    private: str = text("Male", "CelebA private attribute (any of its 40; Male is inverted).")


@dataclasses.dataclass
class EbFacesData(Schema):
    """IMDB-faces' and UTKFace's own defaults (``bridging_tf.datasets.imdb`` / ``utkface``)."""

    backbone: ClassVar[str] = "resnet18"
    split: str = text("EB1", "Training split: EB1 (women 0-29 + men 40+) | EB2.")
    target: str = text("age", "age (private gender) | gender (private age bin).")


@dataclasses.dataclass
class SiimData(Schema):
    """SIIM-FISABIO-RSNA (``bridging_tf.datasets.siim``): DenseNet-121 by default."""

    backbone: ClassVar[str] = "densenet121"


@dataclasses.dataclass
class SiimPrepareOptions(Schema):
    """SIIM's DICOM -> TFRecord conversion (``prepare_siim``, ``components.ingest_siim``)."""

    image_size: int = integer(448, "Output side in pixels (448 in the paper; 0 keeps the size).")
    bit_depth: int = integer(8, "PNG bit depth: 8 or 16.")
    voi: bool = boolean(True, "Apply the VOI LUT / window before min-max.")
    seed: int = integer(0, "Patient split seed.")
    examples_per_shard: int = integer(256, "Records per TFRecord shard (>= 1).")


DATASETS = {"biased_mnist": BiasedMnistData, "celeba": CelebaData, "imdb": EbFacesData,
            "utkface": EbFacesData, "siim": SiimData}


def default_backbone(dataset: str) -> str:
    """The backbone a dataset trains by default (``--backbone`` unset)."""
    return DATASETS.get(dataset, BiasedMnistData).backbone


@dataclasses.dataclass
class DataOptions(Schema):
    """The ingest step's options; ``None``: the dataset's own default (classes above)."""

    data_dir: Optional[str] = text(None, "Folder with the dataset's files (MNIST: mnist.npz or "
                                         "the IDX files).")
    seed: int = _seed()
    rho: float = _rho()
    train_size: Optional[int] = integer(None, "Subsample the training set (quick runs).",
                                        lower=1, message=_POSITIVE)
    val_size: Optional[int] = integer(None, "Size of the validation split (model selection).",
                                      lower=0, message=_POSITIVE)
    test_size: Optional[int] = integer(None, "Subsample the test sets (quick runs).", lower=1,
                                       message=_POSITIVE)
    attack_size: Optional[int] = integer(None, "Attacker training examples.", lower=1,
                                         message=_POSITIVE, check=_check_attack_size)
    attack_protocol: str = _attack_protocol()
    target: Optional[str] = text(None, "Target attribute: CelebA any of its 40 attributes "
                                       "(default Blond_Hair); IMDB / UTKFace age | gender "
                                       "(default age).")
    private: Optional[str] = text(None, "Private attribute: CelebA any of its 40 attributes "
                                        "(default Male); IMDB / UTKFace the other of age | "
                                        "gender.")
    split: Optional[str] = text(None, "IMDB / UTKFace training split: EB1 | EB2 (default EB1).")
    image_size: Optional[int] = integer(None, "Input image size (faces, SIIM; in [8, 4096]).")


# ------------------------------------------------------------------ training
@dataclasses.dataclass
class TrainOptions(Schema):
    """The train step's options (``components.train.run``)."""

    method: str = enum("end", "Debiasing method.", _registry("methods"), known=True)
    backbone: Optional[str] = enum(None, "Backbone override (default per dataset: simple_conv, "
                                         "faces resnet18, SIIM densenet121).", _registry("models"),
                                   known=True)
    width: float = real(1.0, "Backbone channel multiplier (1.0 = the paper).", lower=0.0,
                        open_lower=True, upper=MAX_WIDTH,
                        upper_message="{flag}={value:g} is above 8 (64x the paper's "
                                      "convolution weights)")
    epochs: int = integer(80, "Training epochs.", lower=1)
    batch_size: int = integer(256, "Training batch size.", lower=1)
    lr: float = real(1e-3, "Initial learning rate.", lower=0.0, open_lower=True)
    weight_decay: float = real(1e-4, "Coupled L2 weight decay.", lower=0.0)
    optimizer: str = enum("adam", "adam | sgd (momentum 0.9).", ("adam", "sgd"))
    lr_schedule: str = enum("step", "step (StepLR every --lr_step_epochs x0.1) | plateau (val "
                                    "loss; stop below --min_lr) | constant.",
                            ("step", "plateau", "constant"))
    lr_step_epochs: int = integer(20, "step schedule: divide the lr by 10 every this many "
                                      "epochs.", lower=1)
    plateau_patience: int = integer(5, "plateau: epochs without val-loss improvement before "
                                       "lr/10.", lower=0)
    min_lr: float = real(1e-3, "plateau: stop training once the lr falls below this.",
                         lower=0.0)
    strategy: str = enum("default", "tf.distribute strategy.",
                         ("default", "mirrored", "multiworker", "tpu"))
    mixed_precision: str = enum("auto", "auto (bf16 on GPU/TPU, off on CPU) | off | "
                                        "mixed_float16 | mixed_bfloat16.",
                                ("auto", "off", "mixed_float16", "mixed_bfloat16"))
    jit_compile: str = enum("auto", "XLA: auto (on with GPU/TPU) | true | false.",
                            ("auto", "true", "false"))
    weights: Optional[str] = text(None, "Pretrained backbone weights file (ResNet-18: "
                                        ".weights.h5 or a torchvision state_dict .npz; "
                                        "DenseNet-121: a keras weights file). Default: from "
                                        "scratch.")
    backbone_variant: str = enum("auto", "auto (EnD's tanh + L2-normalised bottleneck for "
                                         "--method=end, plain otherwise) | vanilla | end. The "
                                         "paper's face Vanilla models use 'end'.",
                                 ("auto", "vanilla", "end"))


# ------------------------------------------------------------------ the rest of a run
@dataclasses.dataclass
class RunOptions(Schema):
    """What the command runs and where (``pipelines.run``)."""

    dataset: str = enum("biased_mnist", "Dataset.", _registry("datasets"), known=True)
    scale: str = enum("paper", "Recipe size: paper (the published recipe; GPU work) | cpu (the "
                               "smallest recipe that reaches the paper's regime on 2 CPU cores) "
                               "| smoke (seconds; tests). Explicit flags override it; see "
                               "pipelines/configs/<dataset>.py.", SCALES)
    output_dir: Optional[str] = text(None, "Run folder (default ./runs/<dataset>_<method>_"
                                           "rho<rho>_seed<seed>).")
    attacks: str = text("linear", "Comma list of attacks: linear[,mlp,decoder].",
                        check=_check_attacks)
    runner: str = enum("local", "local (in-process) | kfp (compile with --compile) | "
                                "kfp-local (kfp.local).", ("local", "kfp", "kfp-local"))
    compile: Optional[str] = text(None, "With --runner=kfp: write the KFP pipeline spec (YAML) "
                                        "here.")
    image: Optional[str] = text(None, "With --runner=kfp: the container image every task runs "
                                      "in, built from the repo's Dockerfile / Dockerfile.gpu "
                                      "and pushed (e.g. REGISTRY/bridging-tf:TAG; default "
                                      "$BRIDGING_TF_IMAGE, else bridging-tf:latest).")
    accelerator: Optional[str] = text(None, "With --runner=kfp: accelerator request of the "
                                            "train task, TYPE[:COUNT] (Vertex AI: "
                                            "NVIDIA_TESLA_T4; Kubeflow: nvidia.com/gpu). "
                                            "Default: none.")
    model_name: Optional[str] = text(None, "Served model name (default <dataset>_<method>).")
    verbose: int = integer(1, "Keras verbosity (1 = progress bars).", choices=(0, 1, 2),
                           lower=0, upper=2)
    deterministic: bool = boolean(False, "tf.config.experimental.enable_op_determinism().")
    hash_data: bool = boolean(False, "Fingerprint the data by each file's sha256, not its name, "
                                     "size and mtime (slower; a touched but unchanged file is "
                                     "then not a change).")
    overwrite: bool = boolean(False, "Reuse an --output_dir whose recorded configuration "
                                     "differs (its finished steps are redone where their "
                                     "inputs changed).")


# ------------------------------------------------------------------ method hyper-parameters
@dataclasses.dataclass
class NoHparams(Schema):
    """A method without hyper-parameters (vanilla, biased)."""


@dataclasses.dataclass
class EnDHparams(Schema):
    alpha: float = real(1.0, "EnD: weight of the disentangling term R_orth (same private "
                             "label).", lower=0.0)
    beta: float = real(1.0, "EnD: weight of the entangling term R_par (same target, other "
                            "private).", lower=0.0)
    pairs: str = enum("all", "EnD: R_par pairs, 'all' or 'reference' (the authors' half-pairs "
                             "quirk).", ("all", "reference"))


@dataclasses.dataclass
class AdversarialHparams(Schema):
    adv_lambda: float = real(1.0, "Adversarial: gradient-reversal strength lambda (the encoder "
                                  "minimises CE - lambda * CE_adversary).", lower=0.0)
    adv_warmup_epochs: float = real(0.0, "Adversarial: epochs of linear warm-up of lambda from "
                                         "0 (0 = none).", lower=0.0)
    adv_steps: int = integer(1, "Adversarial: adversary optimizer steps per encoder step.",
                             lower=0)
    adv_hidden: int = integer(256, "Adversarial: units in each of the adversary MLP's 2 hidden "
                                   "layers.", lower=0)


@dataclasses.dataclass
class HSICPrivateHparams(Schema):
    hsic_lambda: float = real(100.0, "HSIC-private: weight of HSIC(bottleneck, private "
                                     "label).", lower=0.0)
    hsic_sigma_mode: str = enum("median", "HSIC-private: RBF bandwidth on the bottleneck, "
                                          "'median' (per-batch median heuristic) or 'fixed' "
                                          "(--hsic_sigma).", ("median", "fixed"))
    hsic_sigma: float = real(1.0, "HSIC-private: RBF kernel width in 'fixed' mode.", lower=0.0)


@dataclasses.dataclass
class LearnedMixinHparams(Schema):
    lm_entropy_weight: float = real(0.36, "LearnedMixin: weight w_H of the entropy penalty.",
                                    lower=0.0)
    lm_pretrain_epochs: int = integer(5, "LearnedMixin: epochs of bias-only (g) pre-training "
                                         "before f.", lower=0)
    reference_untrained_gate: bool = boolean(False, "LearnedMixin: never train the gate, as "
                                                    "the reference code (bug) does.")
    reference_g_bn_drift: bool = boolean(False, "LearnedMixin: keep frozen g's BatchNorm in "
                                                "train mode (statistics drift), as the "
                                                "reference does.")


@dataclasses.dataclass
class ReBiasHparams(Schema):
    rebias_lambda_f: float = real(1.0, "ReBias: weight of HSIC(h_f, h_g) in f's loss.",
                                  lower=0.0)
    rebias_lambda_g: float = real(1.0, "ReBias: weight of -HSIC(h_g, h_f) in g's loss.",
                                  lower=0.0)
    rebias_sigma: float = real(1.0, "ReBias: RBF kernel width sigma (fixed mode).", lower=0.0,
                               open_lower=True, suffix=" (an RBF kernel width)")
    rebias_kernel_sigma_mode: str = enum("fixed", "ReBias: 'fixed' (use --rebias_sigma) or "
                                                  "'median' (per-batch median heuristic).",
                                         ("fixed", "median"))


@dataclasses.dataclass
class RUBiHparams(Schema):
    rubi_weight: float = real(1.0, "RUBi: weight of the question loss CE(bias-head logits, y).",
                              lower=0.0)
    reference_untrained_head: bool = boolean(False, "RUBi: never train the bias head, as the "
                                                    "reference code (bug) does; use to compare "
                                                    "with the paper's RUBi numbers.")


#: The job-level groups (flags), in the order they are checked; method hyper-parameters follow.
GROUPS = (TrainOptions, RunOptions, DataOptions)


def job_fields() -> dict:
    """``{flag name: dataclasses.Field}`` of every job option (:data:`GROUPS`)."""
    return {f.name: f for cls in GROUPS for f in dataclasses.fields(cls)}


def all_fields() -> dict:
    """:func:`job_fields` and every registered method's hyper-parameters (each name once)."""
    from bridging_tf.methods import all_hparams
    out = job_fields()
    for name, f in all_hparams().items():
        if name in out:
            raise ValueError(f"method hyper-parameter {name!r} clashes with a job option")
        out[name] = f
    return out


def hparams_of(method: str, values: dict) -> dict:
    """Method ``method``'s hyper-parameters: the value in ``values``, else its default."""
    from bridging_tf.methods import get_method_class
    cls = get_method_class(method).HPARAMS
    return cls(**{k: values[k] for k in cls.names() if values.get(k) is not None}).values()


def check_value(name: str, value, flag: Optional[str] = None):
    """``value`` of option ``name`` checked and converted (``UserError`` naming ``--name``)."""
    fields = job_fields()
    return _check((fields if name in fields else all_fields())[name], value, flag)


def check_values(values: dict) -> dict:
    """Check and convert, in place, every known option in ``values`` that is not ``None``."""
    fields = all_fields()
    for name, f in fields.items():
        if values.get(name) is not None:
            values[name] = _check(f, values[name])
    return values


def _check(f: dataclasses.Field, value, flag: Optional[str] = None):
    if value is None:
        return None
    m, flag = f.metadata, flag or f"--{f.name}"
    kind = m.get("kind")
    if kind == "float":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{flag}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise UserError(f"{flag}={value} must be a finite number")
        value = number
    elif kind == "int":
        if m.get("check") is _check_seed:
            return _check_seed(value)
        try:
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{flag}={value!r} is not an integer") from None
    elif kind == "bool" and not isinstance(value, bool):
        if str(value).lower() not in ("true", "false", "1", "0"):
            raise UserError(f"{flag}={value!r}: choose true or false")
        value = str(value).lower() in ("true", "1")
    elif kind == "enum":
        if isinstance(value, bool):  # jit_compile=True from Python
            value = "true" if value else "false"
        choices = choices_of(f)
        if str(value) not in choices:
            if m.get("known"):
                raise UserError(f"{flag}={value!r} is not known; choose one of "
                                f"{', '.join(choices)}")
            raise UserError(f"{flag}={value!r}: choose one of {', '.join(choices)}")
        value = str(value)
    if kind == "int" and m.get("choices") and value not in m["choices"]:
        *head, last = [str(c) for c in m["choices"]]
        raise UserError(f"{flag}={value}: choose {', '.join(head)} or {last}")
    lo, hi = m.get("lower"), m.get("upper")
    if m.get("message") and lo is not None and value < lo:
        raise UserError(m["message"].format(flag=flag, value=value))
    if lo is not None and hi is not None and kind == "float" and not lo <= value <= hi \
            and not m.get("upper_message"):
        raise UserError(f"{flag}={value} is outside [{lo:g}, {hi:g}]")
    if lo is not None and m.get("open_lower") and value <= lo:
        raise UserError(f"{flag}={value} must be > {lo:g}{m.get('suffix', '')}")
    if lo is not None and value < lo:
        raise UserError(f"{flag}={value} must be at least {lo}" if lo > 0 else
                        f"{flag}={value} must be >= {lo:g}")
    if hi is not None and value > hi and m.get("upper_message"):
        raise UserError(m["upper_message"].format(flag=flag, value=value))
    check = m.get("check")
    return check(value) if check else value

