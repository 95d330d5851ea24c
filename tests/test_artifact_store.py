"""The artifact store never serves stale or torn work: output lock, file records, data digests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from bridging_tf.errors import UserError
from components import base
from components.base import ARTIFACT_FILE, ArtifactWriter, read_artifact
from components.lock import LOCK_FILE, OutputLock, read_holder
from tests.conftest import REPO


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------- the lock
HOLD = ("import sys, time\nfrom components.lock import OutputLock\n"
        "lock = OutputLock.acquire(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock on ``tmp_path / 'run'``."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_second_run_on_a_locked_output_dir_exits_2_naming_the_holder(holder, capsys):
    from absl import flags

    from pipelines import run
    out, proc = holder
    flags.FLAGS.unparse_flags()
    code = run.main(["pipelines.run", f"--output_dir={out}", "--epochs=1"])
    flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"PID {proc.pid} on host {socket.gethostname()}, started 20" in err
    assert f"--output_dir={out} is in use by another run" in err
    assert out.is_dir() and (out / LOCK_FILE).exists()  # the holder's folder is left alone


def test_lock_of_a_killed_run_is_released_and_taken_over(holder, capsys):
    out, proc = holder
    with pytest.raises(UserError, match=f"PID {proc.pid}"):
        OutputLock.acquire(out)
    proc.kill()
    proc.wait(timeout=30)
    with OutputLock(out) as lock:
        assert lock.took_over["pid"] == proc.pid
        assert read_holder(out / LOCK_FILE)["pid"] == os.getpid()
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[lock] taking over the stale lock of PID {proc.pid}")
    assert "is no longer running" in line and len(line.splitlines()) == 1


def test_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    pid = _dead_pid()
    (tmp_path / LOCK_FILE).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "start": "2020-01-01T00:00:00+00:00"}))
    lock = OutputLock.acquire(tmp_path)
    try:
        assert lock.took_over["pid"] == pid
        assert f"PID {pid}" in capsys.readouterr().out
    finally:
        lock.release()
    assert not (tmp_path / LOCK_FILE).exists()  # a finished run leaves no lock behind


def test_lock_is_exclusive_within_one_process_and_free_again_after_release(tmp_path):
    first = OutputLock.acquire(tmp_path)
    with pytest.raises(UserError, match=f"PID {os.getpid()}"):
        OutputLock.acquire(tmp_path)
    first.release()
    OutputLock.acquire(tmp_path).release()


@pytest.mark.parametrize("alive", [True, False])
def test_without_flock_the_owner_record_decides(tmp_path, monkeypatch, alive):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    pid = os.getppid() if alive else _dead_pid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                  "start": "x"}))
    if alive:
        with pytest.raises(UserError, match=f"PID {pid}"):
            OutputLock.acquire(tmp_path)
    else:
        OutputLock.acquire(tmp_path).release()


# ---------------------------------------------------------------------- file records
def _produce(out, params=None, inputs=None, payload="x", verify=None):
    with ArtifactWriter("demo", "Demo", out, params=params or {}, inputs=inputs or {},
                        verify=verify) as art:
        if art.skipped:
            return False
        (art.path / "payload.txt").write_text(payload)
        (art.path / "sub").mkdir()
        (art.path / "sub" / "more.bin").write_bytes(b"\0" * 10)
    return True


def test_artifact_json_records_every_file_with_size_and_sha256(tmp_path):
    import hashlib
    _produce(tmp_path / "a", payload="hello")
    meta = read_artifact(tmp_path / "a")
    assert set(meta["files"]) == {"payload.txt", "sub/more.bin"}
    rec = meta["files"]["payload.txt"]
    assert rec["size"] == 5 and rec["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert rec["mtime_ns"] == (tmp_path / "a" / "payload.txt").stat().st_mtime_ns
    assert meta["content"] == base.content_digest(meta["files"])


def test_a_missing_file_makes_the_step_run_again(tmp_path, capsys):
    _produce(tmp_path / "a")
    (tmp_path / "a" / "sub" / "more.bin").unlink()
    assert _produce(tmp_path / "a")
    assert "not intact (sub/more.bin is missing); running the step again" in \
        capsys.readouterr().out
    assert (tmp_path / "a" / "sub" / "more.bin").exists()
    assert not _produce(tmp_path / "a")  # intact again: skipped


def test_a_same_size_edit_of_a_small_file_is_caught_by_its_hash(tmp_path):
    _produce(tmp_path / "a", payload="aaaa")
    f = tmp_path / "a" / "payload.txt"
    st = f.stat()
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime
    assert _produce(tmp_path / "a", payload="aaaa")
    assert f.read_text() == "aaaa"


def test_big_files_are_checked_by_size_and_mtime_and_fully_on_request(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "HASH_ALWAYS_BYTES", 0)  # every file counts as big
    _produce(tmp_path / "a", payload="aaaa")
    f = tmp_path / "a" / "payload.txt"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    assert not _produce(tmp_path / "a", payload="aaaa")      # re-hashed: unchanged
    f.write_text("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not _produce(tmp_path / "a", payload="aaaa")      # size + mtime only: not seen
    assert _produce(tmp_path / "a", payload="aaaa", verify="full")
    monkeypatch.setenv(base.VERIFY_ENV, "full")
    f.write_text("cccc")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _produce(tmp_path / "a", payload="aaaa")


def test_a_bad_verify_mode_is_a_one_line_user_error(tmp_path, monkeypatch):
    _produce(tmp_path / "a")
    monkeypatch.setenv(base.VERIFY_ENV, "paranoid")
    with pytest.raises(UserError, match="BRIDGING_TF_VERIFY='paranoid'"):
        _produce(tmp_path / "a")


def test_an_artifact_without_a_file_record_is_produced_again(tmp_path):
    _produce(tmp_path / "a")
    meta = read_artifact(tmp_path / "a")
    del meta["files"], meta["content"]
    (tmp_path / "a" / ARTIFACT_FILE).write_text(json.dumps(meta))
    assert _produce(tmp_path / "a")
    assert "files" in read_artifact(tmp_path / "a")


def test_downstream_runs_again_when_its_input_is_reproduced_with_other_bytes(tmp_path):
    up, down = tmp_path / "up", tmp_path / "down"
    _produce(up, payload="v1")
    _produce(down, inputs={"up": up})
    (up / "payload.txt").unlink()
    assert _produce(up, payload="v2")  # same parameters, other bytes
    assert _produce(down, inputs={"up": up})


def test_downstream_is_skipped_when_its_input_is_reproduced_byte_for_byte(tmp_path):
    up, down = tmp_path / "up", tmp_path / "down"
    _produce(up, payload="v1")
    _produce(down, inputs={"up": up})
    (up / "payload.txt").unlink()
    assert _produce(up, payload="v1")
    assert not _produce(down, inputs={"up": up})


def test_an_incomplete_input_artifact_is_a_one_line_user_error(tmp_path):
    _produce(tmp_path / "up")
    (tmp_path / "up" / "payload.txt").unlink()
    with pytest.raises(UserError, match=r"input artifact 'up' .* incomplete \(payload.txt is "
                                        r"missing\); run the step that produces it again"):
        _produce(tmp_path / "down", inputs={"up": tmp_path / "up"})


def test_old_dir_of_a_killed_swap_is_cleaned(tmp_path):
    stale = tmp_path / f"a.old-{_dead_pid()}"
    stale.mkdir()
    _produce(tmp_path / "a")
    assert not stale.exists()


def test_write_text_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    f = tmp_path / "state.json"
    base.write_text(f, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        base.write_text(f, "new")
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


# ------------------------------------------------------------------ ingest fingerprint
@pytest.fixture
def siim_like(tmp_path, monkeypatch):
    """A SIIM-shaped raw folder and a fake preparer counting its calls."""
    from bridging_tf import datasets
    raw = tmp_path / "raw"
    (raw / "train" / "s1" / "r1").mkdir(parents=True)
    (raw / "train_study_level.csv").write_text("id,Negative,Typical\ns1_study,1,0\ns2_study,0,1\n")
    for name in ("a", "b"):
        (raw / "train" / "s1" / "r1" / f"{name}.dcm").write_bytes(b"DICM" * 8)
    calls = []

    def prepare(data_dir, output_dir, **options):
        calls.append(data_dir)
        output_dir.mkdir(parents=True)
        (output_dir / "shard-0.tfrecord").write_bytes(b"")
        return {}

    monkeypatch.setattr(datasets, "get_preparer", lambda name: prepare)
    return raw, calls


def _ingest(tmp_path, raw, dataset="siim", **kw):
    from components import ingest
    ingest.run({}, {"data": tmp_path / "data"}, dataset=dataset,
               options={"data_dir": str(raw), "seed": 0}, **kw)
    return read_artifact(tmp_path / "data")["fingerprint"]


def _rewrite(path, text):
    """Rewrite ``path``; make sure its mtime moves (coarse-clock file systems)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before, before + 10**7))


def test_ingest_is_skipped_while_the_data_is_unchanged(tmp_path, siim_like):
    raw, calls = siim_like
    assert _ingest(tmp_path, raw) == _ingest(tmp_path, raw) and len(calls) == 1


def test_a_relabelled_csv_row_reingests(tmp_path, siim_like, capsys):
    raw, calls = siim_like
    first = _ingest(tmp_path, raw)
    csv = raw / "train_study_level.csv"
    _rewrite(csv, csv.read_text().replace("s1_study,1,0", "s1_study,0,1"))  # same size
    assert _ingest(tmp_path, raw) != first and len(calls) == 2
    assert "changed since it was ingested" in capsys.readouterr().out


def test_a_deleted_dicom_reingests(tmp_path, siim_like):
    raw, calls = siim_like
    first = _ingest(tmp_path, raw)
    (raw / "train" / "s1" / "r1" / "b.dcm").unlink()
    assert _ingest(tmp_path, raw) != first and len(calls) == 2
    assert read_artifact(tmp_path / "data")["parameters"]["source"]["files"] == 2


def test_a_touched_mnist_npz_reingests(tmp_path):
    raw = tmp_path / "mnist"
    raw.mkdir()
    (raw / "mnist.npz").write_bytes(b"npz")
    first = _ingest(tmp_path, raw, dataset="biased_mnist")
    st = (raw / "mnist.npz").stat()
    os.utime(raw / "mnist.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _ingest(tmp_path, raw, dataset="biased_mnist") != first


def test_a_data_dir_naming_one_file_fingerprints_that_file(tmp_path):
    npz = tmp_path / "my_mnist.npz"
    npz.write_bytes(b"npz")
    first = _ingest(tmp_path, npz, dataset="biased_mnist")
    _rewrite(npz, "npz2")
    assert _ingest(tmp_path, npz, dataset="biased_mnist") != first


def test_hash_data_ignores_a_touch_and_sees_an_edit_that_kept_size_and_mtime(tmp_path,
                                                                            siim_like):
    raw, calls = siim_like
    dcm = raw / "train" / "s1" / "r1" / "a.dcm"
    first = _ingest(tmp_path, raw, hash_data=True)
    st = dcm.stat()
    os.utime(dcm, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _ingest(tmp_path, raw, hash_data=True) == first and len(calls) == 1
    dcm.write_bytes(b"XXXX" * 8)
    os.utime(dcm, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _ingest(tmp_path, raw, hash_data=False) != first  # mode switch: ingested once
    again = _ingest(tmp_path, raw, hash_data=False)
    dcm.write_bytes(b"YYYY" * 8)
    os.utime(dcm, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _ingest(tmp_path, raw, hash_data=False) == again  # the documented blind spot
    assert _ingest(tmp_path, raw, hash_data=True) != first


def test_a_run_folder_inside_the_data_folder_is_not_part_of_the_data(tmp_path, siim_like):
    from components import ingest
    raw, calls = siim_like
    run_dir = raw / "runs" / "x"
    for _ in range(2):
        ingest.run({}, {"data": run_dir / "data"}, dataset="siim", options={"data_dir": str(raw)})
        (run_dir / "results.json").write_text(str(len(calls)))  # the run's own files change
    assert len(calls) == 1


def test_data_dir_that_is_the_run_folder_is_a_one_line_user_error(tmp_path, siim_like):
    from components import ingest
    raw, _ = siim_like
    with pytest.raises(UserError, match="is also the run folder"):
        ingest.run({}, {"data": raw / "data"}, dataset="siim", options={"data_dir": str(raw)})
    assert not (raw / "data").exists()


def test_hash_data_flag_reaches_the_ingest_step(tmp_path):
    from absl import flags

    import pipelines.run  # noqa: F401  (defines the flags)
    from pipelines.pipeline import build
    from pipelines.run import resolve_params
    assert flags.FLAGS["hash_data"].default is False
    steps = build(resolve_params({"hash_data": True}), tmp_path)
    assert steps[0].name == "ingest" and steps[0].params["hash_data"] is True
    assert build(resolve_params({}), tmp_path)[0].params["hash_data"] is False


# ----------------------------------------------------- a finished tiny run, then damage
TINY = {"method": "end", "train_size": 300, "val_size": 200, "test_size": 200,
        "attack_size": 300, "epochs": 1, "batch_size": 64, "width": 0.125, "verbose": 0}
STEPS = ("ingest", "train", "export", "extract_bottleneck", "attack", "report")


@pytest.fixture(scope="module")
def finished(mnist_dir, tmp_path_factory):
    from pipelines.run import run_job
    out = tmp_path_factory.mktemp("store") / "run"
    run_job({**TINY, "data_dir": str(mnist_dir)}, out)
    return out


def _rerun(finished, tmp_path, mnist_dir, capsys, damage):
    from pipelines.run import run_job
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    damage(out)
    capsys.readouterr()
    results = run_job({**TINY, "data_dir": str(mnist_dir)}, out)
    log = capsys.readouterr().out
    ran = [s for s in STEPS if f"[{s}] wrote" in log]
    skipped = [s for s in STEPS if f"[{s}] up to date, skipped" in log]
    assert sorted(ran + skipped) == sorted(STEPS), log
    return out, results, ran


@pytest.mark.realdata
def test_deleted_model_keras_reruns_train_and_what_depends_on_it(finished, tmp_path, mnist_dir,
                                                                capsys):
    out, results, ran = _rerun(finished, tmp_path, mnist_dir, capsys,
                               lambda out: (out / "model" / "model.keras").unlink())
    assert ran == ["train", "export", "extract_bottleneck", "attack", "report"]
    assert (out / "model" / "model.keras").exists()
    assert results == json.loads((finished / "results.json").read_text())
    assert not (out / LOCK_FILE).exists()


@pytest.mark.realdata
def test_deleted_embeddings_npz_reruns_only_the_extraction(finished, tmp_path, mnist_dir,
                                                         capsys):
    npz = "embeddings/unbiased.npz"
    out, results, ran = _rerun(finished, tmp_path, mnist_dir, capsys,
                               lambda out: (out / npz).unlink())
    # Re-extracted byte for byte (deterministic inference, fixed zip dates), so the attack's
    # input fingerprint is unchanged and it and the report stay valid.
    assert ran == ["extract_bottleneck"]
    assert (out / npz).read_bytes() == (finished / npz).read_bytes()
    assert results == json.loads((finished / "results.json").read_text())
