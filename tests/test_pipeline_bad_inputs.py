"""``python -m pipelines.run`` refuses every bad input before anything runs: one line, exit 2.

Each case below used to end in a traceback (``--seed=-1``, ``--dataset=siim --width=0.125``
after the whole ingestion) or was silently accepted (``--lr=nan``, ``--image_size=3`` on
Biased-MNIST, ``--width=1e-6``, ``--attack_size=1``, ...). In-process and fast: nothing
is ingested or trained, and the run folder is never created.
"""

from __future__ import annotations

import pytest

from tests._synthetic_dicom import write_synthetic_competition


@pytest.fixture
def cli(capsys):
    from absl import flags

    from pipelines import run

    def call(*args):
        flags.FLAGS.unparse_flags()
        code = run.main(["pipelines.run", *args])
        flags.FLAGS.unparse_flags()
        return code, capsys.readouterr().err.strip()

    return call


@pytest.fixture(scope="module")
def siim_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("siim") / "raw"
    write_synthetic_competition(raw, n_studies=6, image_shape=(40, 40))
    return raw


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Any existing folder, for the datasets whose data are never read in these cases."""
    return tmp_path_factory.mktemp("data")


# (arguments, text the one-line error must contain); {folder} / {siim} are filled in
CASES = [
    # tracebacks before
    (["--seed=-1"], "--seed=-1 must be an integer in [0, 4294967295]"),
    (["--seed=4294967296"], "--seed=4294967296 must be an integer"),
    (["--dataset=siim", "--data_dir={siim}", "--width=0.125"],
     "--width=0.125: DenseNet-121 (--backbone=densenet121, here for --dataset=siim) has "
     "fixed widths"),
    (["--dataset=siim"], "--dataset=siim needs --data_dir"),
    (["--backbone=densenet121"], "--dataset=biased_mnist (28x28 images) is too small for "
                                 "--backbone=densenet121"),
    (["--dataset=siim", "--data_dir={siim}", "--image_size=16"],
     "--image_size=16 is too small for --backbone=densenet121"),
    (["--backbone=vgg"], "--backbone='vgg' is not known"),
    (["--method=rebias", "--rebias_sigma=0"], "--rebias_sigma=0.0 must be > 0"),
    # silently accepted before: an option the dataset does not read
    (["--image_size=3"], "--image_size=3 is not used by --dataset=biased_mnist"),
    (["--target=Smiling"], "--target=Smiling is not used by --dataset=biased_mnist"),
    (["--dataset=celeba", "--data_dir={folder}", "--split=EB2"],
     "--split=EB2 is not used by --dataset=celeba"),
    (["--dataset=celeba", "--data_dir={folder}", "--rho=0.5"],
     "--rho=0.5 is not used by --dataset=celeba"),
    (["--dataset=utkface", "--data_dir={folder}", "--attack_protocol=paper"],
     "--attack_protocol=paper is not used by --dataset=utkface"),
    (["--dataset=siim", "--data_dir={siim}", "--val_size=100"],
     "--val_size=100 is not used by --dataset=siim"),
    # silently accepted before: degenerate sizes
    (["--width=1e-6"], "--width=1e-06 leaves simple_conv a 0-d bottleneck; use --width >= "
                       "0.0625"),
    (["--method=rubi", "--dataset=celeba", "--data_dir={folder}", "--width=0.02"],
     "leaves rubi's biased net g (local_convnet) a 5-d bottleneck; use --width >= 0.03125"),
    (["--width=64"], "--width=64 is above 8"),
    (["--attack_size=1"], "--attack_size=1 is too small: an attacker needs at least 20"),
    (["--dataset=imdb", "--data_dir={folder}", "--image_size=5"],
     "--image_size=5 must be in [8, 4096]"),
    (["--dataset=siim", "--data_dir={siim}", "--image_size=0"], "--image_size=0 must be in"),
    (["--plateau_patience=-1"], "--plateau_patience=-1 must be >= 0"),
    (["--min_lr=-0.1"], "--min_lr=-0.1 must be >= 0"),
    (["--alpha=-1"], "--alpha=-1.0 must be >= 0"),
    (["--lm_pretrain_epochs=-2"], "--lm_pretrain_epochs=-2 must be >= 0"),
    (["--verbose=5"], "--verbose=5: choose 0, 1 or 2"),
    (["--dataset=celeba", "--data_dir={folder}", "--weights=/no/such/r18.weights.h5"],
     "--weights=/no/such/r18.weights.h5: no such file"),
    (["--weights={folder}"], "--weights: backbone 'simple_conv' does not load pretrained"),
    # non-finite floats
    (["--lr=nan"], "--lr=nan must be a finite number"),
    (["--lr=inf"], "--lr=inf must be a finite number"),
    (["--weight_decay=inf"], "--weight_decay=inf must be a finite number"),
    (["--weight_decay=nan"], "--weight_decay=nan must be a finite number"),
    (["--width=nan"], "--width=nan must be a finite number"),
    (["--width=inf"], "--width=inf must be a finite number"),
    (["--rho=nan"], "--rho=nan must be a finite number"),
    (["--min_lr=nan"], "--min_lr=nan must be a finite number"),
    (["--alpha=nan"], "--alpha=nan must be a finite number"),
    (["--beta=-inf"], "--beta=-inf must be a finite number"),
    (["--rubi_weight=nan"], "--rubi_weight=nan must be a finite number"),
    (["--rebias_lambda_f=inf"], "--rebias_lambda_f=inf must be a finite number"),
]


@pytest.mark.parametrize("args, needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, siim_raw, folder,
                                                          args, needle):
    out = tmp_path / "run"
    args = [a.format(siim=siim_raw, folder=folder) for a in args]
    code, err = cli(f"--output_dir={out}", *args)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err
    assert "Traceback" not in err and not out.exists()


def test_siim_width_is_refused_before_the_ingestion_runs(cli, tmp_path, siim_raw, monkeypatch):
    """The combination is checked first: the DICOM ingestion must not even start."""
    from bridging_tf.datasets import siim

    def boom(*a, **k):
        raise AssertionError("prepare_siim ran before the flags were validated")

    monkeypatch.setattr(siim, "prepare_siim", boom)
    code, err = cli(f"--output_dir={tmp_path / 'run'}", "--dataset=siim",
                    f"--data_dir={siim_raw}", "--width=0.5")
    assert code == 2 and "use --width=1.0" in err


def test_option_equal_to_the_dataset_default_is_accepted_by_validation():
    """Only an option that would change something is refused: ``--rho=0.997`` (the generic
    default) on CelebA changes nothing, so validation lets it through."""
    from bridging_tf.errors import UserError
    from pipelines.run import resolve_params, validate

    p = resolve_params({"dataset": "celeba", "rho": 0.997, "data_dir": "."})
    validate(p)
    with pytest.raises(UserError, match="--rho=0.5 is not used"):
        validate(resolve_params({"dataset": "celeba", "rho": 0.5, "data_dir": "."}))


def test_python_callers_get_the_same_checks_for_strings():
    """``run_job`` / ``validate`` from Python: a non-number is a UserError, not ValueError."""
    from bridging_tf.errors import UserError
    from pipelines.run import resolve_params, validate

    with pytest.raises(UserError, match="--lr='fast' is not a number"):
        validate(resolve_params({"lr": "fast"}))
    with pytest.raises(UserError, match="--epochs=2.5 is not an integer"):
        validate(resolve_params({"epochs": 2.5}))
    p = resolve_params({"lr": "0.01", "epochs": "3"})
    validate(p)
    assert p["lr"] == 0.01 and p["epochs"] == 3


def test_valid_small_jobs_still_pass_validation():
    from pipelines.run import resolve_params, validate

    for params in ({"width": 0.125, "attack_size": 300},
                   {"dataset": "celeba", "data_dir": ".", "image_size": 32, "width": 0.125},
                   {"dataset": "siim", "data_dir": ".", "image_size": 32},
                   {"method": "rubi", "dataset": "utkface", "data_dir": ".", "width": 0.25}):
        validate(resolve_params(params))
