"""An exclusive lock on a run folder, so two runs never share (and clobber) one ``--output_dir``.

The lock is ``fcntl.flock`` on ``<output_dir>/.lock``, whose body records the
holder as JSON (``{"pid", "host", "start"}``). The kernel drops a flock when
its process dies, however it dies, so a run killed with ``kill -9`` never
leaves the folder locked: the next run takes the lock over and says so in one
line. A second run while the first is alive is refused with a
:class:`~bridging_tf.errors.UserError` naming the holder (exit 2 from the CLI).

Where the file system has no ``flock`` (some network/FUSE mounts) the body is
the lock: a holder whose PID is alive on this host (or that ran on another
host) is respected, a dead one is taken over.

Example::

    with OutputLock(Path("runs/x")):
        ...  # run the pipeline; a second OutputLock on runs/x raises UserError

    lock = OutputLock.acquire("runs/x")   # or without a with-block
    ...
    lock.release()
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
from pathlib import Path
from typing import Optional

from bridging_tf.errors import UserError

LOCK_FILE = ".lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def describe(holder: Optional[dict]) -> str:
    """``PID 123 on host h, started 2025-01-01T00:00:00+00:00`` (or what is known of it)."""
    if not holder:
        return "an unknown process (the lock file has no readable owner record)"
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('start', '?')}")


def read_holder(path) -> Optional[dict]:
    """The owner record in lock file ``path`` (``None`` when absent, empty or torn)."""
    try:
        body = Path(path).read_text()
    except OSError:
        return None
    try:
        holder = json.loads(body)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


class OutputLock:
    """Exclusive lock on ``folder`` (see module doc); ``acquire`` raises ``UserError`` when held."""

    def __init__(self, folder, *, flag: str = "--output_dir"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.flag = flag
        self.fd: Optional[int] = None
        self.took_over: Optional[dict] = None  # the stale holder's record, when taken over

    @classmethod
    def acquire(cls, folder, **kw) -> "OutputLock":
        lock = cls(folder, **kw)
        lock.lock()
        return lock

    def __enter__(self):
        self.lock()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def _refuse(self, holder: Optional[dict]):
        raise UserError(f"{self.flag}={self.folder} is in use by another run ({describe(holder)}); "
                        f"wait for it to finish or choose another {self.flag}")

    def lock(self) -> None:
        import fcntl

        if self.fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # retried only when the file was replaced under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserError(f"{self.flag}={self.folder}: cannot create the lock file "
                                f"{self.path} ({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(read_holder(self.path))
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise UserError(f"{self.flag}={self.folder}: cannot lock {self.path} "
                                    f"({err.strerror or err})") from None
                self._check_record_only(fd)
            # The holder we raced with may have released (and unlinked) the file between our
            # open and our flock: then we locked an orphan inode; start over on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
            self._write_record()
            return
        raise UserError(f"{self.flag}={self.folder}: the lock file {self.path} keeps changing; "
                        "is another run starting there?")

    def _check_record_only(self, fd: int) -> None:
        """No flock on this file system: respect a live holder named in the record."""
        holder = read_holder(self.path)
        if holder and holder.get("pid") != os.getpid():
            live_here = holder.get("host") == socket.gethostname() and _pid_alive(
                int(holder.get("pid") or 0))
            if live_here or holder.get("host") != socket.gethostname():
                os.close(fd)
                self._refuse(holder)

    def _write_record(self) -> None:
        old = read_holder(self.path)
        if old and old.get("pid") != os.getpid():
            self.took_over = old
            dead = (" is no longer running" if old.get("host") == socket.gethostname()
                    and not _pid_alive(int(old.get("pid") or 0)) else " no longer holds it")
            print(f"[lock] taking over the stale lock of {describe(old)}, which{dead}: "
                  f"{self.path}", flush=True)
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": _now()})
        # Written in place (a lock file must keep its inode): readers tolerate a torn body.
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, body.encode() + b"\n", 0)
        os.fsync(self.fd)

    def release(self) -> None:
        """Unlock and remove the lock file (only if it is still ours)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass  # the folder was removed (a failed run cleaning up), nothing to unlink
        finally:
            os.close(fd)  # drops the flock


__all__ = ["LOCK_FILE", "OutputLock", "describe", "read_holder"]
