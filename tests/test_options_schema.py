"""The option schema (``bridging_tf.options``) is the one place an option is defaulted.

- an AST scan of ``bridging_tf/``, ``components/`` and ``pipelines/`` fails on a function
  parameter or a dict entry named like an option with a literal default (presets in
  ``pipelines/configs/`` are values, not defaults);
- every flag of ``pipelines.run`` and ``pipelines.sweep`` has the schema's default, choices
  and bounds; ``--help`` lists the choices; ``--helpfull`` prints absl's full help;
- the library's constructors and loaders take their defaults from the schema.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from pathlib import Path

import pytest

from bridging_tf import options
from bridging_tf.errors import UserError

REPO = Path(__file__).resolve().parents[1]
#: (file, function, parameter/key) that share an option's name but are not that option.
NOT_OPTIONS = {
    # a model's own coupled L2 (none) when built directly; the job's is TrainOptions'
    *{(f"bridging_tf/methods/{m}.py", "__init__", "weight_decay")
      for m in ("base", "biased", "end", "adversarial", "hsic_private", "learned_mixin",
                "rebias", "rubi")},
    ("bridging_tf/methods/__init__.py", "build_method", "weight_decay"),
    ("bridging_tf/methods/adversarial.py", "compile", "optimizer"),  # Keras's compile default
    ("bridging_tf/methods/adversarial.py", "__init__", "scale"),  # gradient-reversal scale
    ("bridging_tf/methods/adversarial.py", "gradient_reversal", "scale"),
    ("bridging_tf/methods/base.py", "add_coupled_weight_decay", "scale"),
    ("components/attack.py", "split_images", "batch_size"),  # inference batches
    ("components/extract_bottleneck.py", "embed_split", "batch_size"),
    ("components/extract_bottleneck.py", "run", "batch_size"),
    # the labels run_metadata.json shows where a default applied ("none", "the dataset's own")
    *{("pipelines/run_folder.py", "resolved_values", k)
      for k in ("weights", "target", "private", "split", "image_size", "compile", "image",
                "accelerator")},
    # Keras's verbosity of a method's own pre-training (a library call)
    ("bridging_tf/methods/base.py", "prepare", "verbose"),
    ("bridging_tf/methods/learned_mixin.py", "prepare", "verbose"),
}


def _scanned_files(repo: Path = REPO):
    """Where job options are passed on: the pipelines, the components, the methods, and the
    dataset loaders / preparers. Other library helpers (probes, nets, reporting) have
    parameters of their own that may share a name (a probe's ``lr``, a net's ``width``)."""
    for root in ("pipelines", "components", "bridging_tf/methods", "bridging_tf/datasets",
                 "bridging_tf/training.py"):
        base = repo / root
        for path in sorted(base.rglob("*.py")) if base.is_dir() else [base] * base.exists():
            rel = path.relative_to(repo).as_posix()
            if not rel.startswith("pipelines/configs/"):
                yield rel, path


def _literal(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is not None


def _entry_point(rel: str, func: str) -> bool:
    """In bridging_tf/datasets only the loaders and preparers take job options."""
    return not rel.startswith("bridging_tf/datasets/") or func.startswith(("load_", "prepare_"))


def literal_defaults(repo: Path = REPO):
    names = set(options.all_fields())
    found = []
    for rel, path in _scanned_files(repo):
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            a = func.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg in names and _literal(default) and _entry_point(rel, func.name):
                    found.append((rel, func.name, arg.arg, func.lineno))
            if rel.startswith(("pipelines/", "components/")):
                for node in ast.walk(func):
                    if isinstance(node, ast.Dict):
                        for k, v in zip(node.keys, node.values):
                            if _literal(k) and k.value in names and _literal(v):
                                found.append((rel, func.name, k.value, k.lineno))
        if rel.startswith(("pipelines/", "components/")):  # module-level tables
            for node in tree.body:
                for d in [n for n in ast.walk(node) if isinstance(n, ast.Dict)] \
                        if isinstance(node, (ast.Assign, ast.AnnAssign)) else []:
                    for k, v in zip(d.keys, d.values):
                        if _literal(k) and k.value in names and _literal(v):
                            found.append((rel, "<module>", k.value, k.lineno))
    return [f for f in found if f[:3] not in NOT_OPTIONS]


def test_no_option_default_is_written_outside_the_schema():
    found = literal_defaults()
    assert not found, "option defaults outside bridging_tf/options.py (take them from the " \
        "schema, e.g. alpha: float = EnDHparams.alpha):\n" + "\n".join(
            f"  {rel}:{line} {func}({name}=...)" for rel, func, name, line in found)


def test_the_scan_finds_a_literal_default(tmp_path):
    """The scan itself works: a parameter named like an option with a literal is found."""
    (tmp_path / "components").mkdir()
    (tmp_path / "pipelines" / "configs").mkdir(parents=True)
    (tmp_path / "components" / "probe.py").write_text(
        "def run(inputs, *, alpha=1.0, lr=None):\n    return {'rho': 0.5}\n")
    (tmp_path / "pipelines" / "configs" / "preset.py").write_text("DEFAULTS = {'lr': 0.1}\n")
    found = {(rel, f, n) for rel, f, n, _line in literal_defaults(tmp_path)}
    assert found == {("components/probe.py", "run", "alpha"), ("components/probe.py", "run",
                                                                "rho")}


# ------------------------------------------------------------------ flags
@pytest.fixture(scope="module")
def run_flags():
    from absl import flags

    import pipelines.run  # noqa: F401  (defines the flags)
    return flags.FLAGS


def _check_flag(flag, f):
    kind = f.metadata["kind"]
    assert flag.default == f.default, f.name
    assert flag.help.endswith(f.metadata["help"]), f.name
    if kind == "enum":
        assert list(flag.parser.enum_values) == list(options.choices_of(f)), f.name
    elif kind in ("int", "float"):
        assert flag.parser.lower_bound == f.metadata.get("lower"), f.name
        assert flag.parser.upper_bound == f.metadata.get("upper"), f.name
    assert flag.boolean == (kind == "bool"), f.name


def test_every_flag_has_the_schema_default_choices_and_bounds(run_flags):
    for name, f in options.all_fields().items():
        assert name in run_flags, f"--{name} is not a pipelines.run flag"
        _check_flag(run_flags[name], f)


def test_the_sweep_reads_the_same_flags():
    from pipelines import sweep
    for name, f in options.all_fields().items():
        if name != "output_dir":  # the sweep folder
            _check_flag(sweep.FLAGS[name], f)


def test_help_lists_every_choice_and_helpfull_is_absls_full_help(capsys):
    from absl import flags

    from pipelines import run
    assert run.main(["pipelines.run", "--help"]) == 0
    short = capsys.readouterr().out
    for name, f in options.all_fields().items():
        assert f"--{name}" in short or f"--[no]{name}" in short, name
        for choice in options.choices_of(f) or ():
            assert str(choice) in short, (name, choice)
    for known in ("EB1", "EB2", "age", "gender", "Blond_Hair", "Male"):
        assert known in short, known  # target / private / split, where they are known
    for name in ("end", "learned_mixin", "celeba", "siim", "densenet121", "resnet18"):
        assert name in short
    assert run.main(["pipelines.run", "--helpfull"]) == 0
    full = capsys.readouterr().out
    assert full.strip().endswith(flags.FLAGS.get_help().strip())
    assert len(full) > len(short) and "absl.logging" in full


# ------------------------------------------------------------------ the schema's checks
def test_every_float_option_refuses_non_finite_values_and_converts_strings():
    for name, f in options.all_fields().items():
        if f.metadata["kind"] == "float":
            for bad in ("nan", "inf", float("-inf")):
                with pytest.raises(UserError, match=f"--{name}=.* must be a finite number"):
                    options.check_value(name, bad)
            if f.default is not None:
                assert options.check_value(name, str(f.default)) == f.default
        if f.metadata["kind"] == "int" and f.default is not None:
            assert options.check_value(name, str(f.default)) == f.default
    with pytest.raises(UserError, match="--epochs=2.5 is not an integer"):
        options.TrainOptions(epochs=2.5)
    with pytest.raises(UserError, match="--alpha=-1.0 must be >= 0"):
        options.EnDHparams(alpha="-1")
    assert options.TrainOptions(jit_compile=True).jit_compile == "true"


def test_rho_is_a_biased_mnist_option_only():
    assert options.BiasedMnistData.rho == options.DataOptions.rho
    for cls in (options.CelebaData, options.EbFacesData, options.SiimData):
        assert "rho" not in cls.names()
    from pipelines.run import default_output_dir, resolve_params
    assert "rho" not in default_output_dir(resolve_params({"dataset": "celeba"})).name


# ------------------------------------------------------------------ the library reads it
def test_methods_take_their_defaults_from_their_hparams_dataclass():
    from bridging_tf.methods import available, get_method_class
    for name in available():
        cls = get_method_class(name)
        assert dataclasses.is_dataclass(cls.HPARAMS) and issubclass(cls.HPARAMS, options.Schema)
        params = inspect.signature(cls.__init__).parameters
        for f in dataclasses.fields(cls.HPARAMS):
            assert params[f.name].default == f.default, (name, f.name)
    from bridging_tf.methods.end import EnDRegularizer
    sig = inspect.signature(EnDRegularizer.__init__).parameters
    assert (sig["alpha"].default, sig["beta"].default, sig["pairs"].default) == (
        options.EnDHparams.alpha, options.EnDHparams.beta, options.EnDHparams.pairs)


def test_loaders_and_the_train_component_take_their_defaults_from_the_schema():
    from bridging_tf import datasets
    from components import train
    for name in datasets.available():
        cls = options.DATASETS[name]
        sig = inspect.signature(datasets.get_loader(name)).parameters
        for f in dataclasses.fields(cls):
            if f.name in sig:
                assert sig[f.name].default == f.default, (name, f.name)
    sig = inspect.signature(train.run).parameters
    for f in dataclasses.fields(options.TrainOptions):
        if f.name in sig and f.name != "method":  # the one required argument
            assert sig[f.name].default == f.default, f.name
    assert not math.isnan(options.TrainOptions().lr)
