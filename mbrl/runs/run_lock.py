"""One writer per run directory: ``RUN/.lock``, an ``fcntl.flock`` held by the process that trains (``train``,
``train --resume``, a batch of seeds, ``adapt``) while it writes the run, with the holder's pid in the file.

A second process that would write the same run gets one :class:`RunLockedError` line naming the holder's pid
(:func:`check_free` before any work, :func:`hold` again when taking it). The kernel releases a flock when its
process dies, so the lock of a killed run (``kill -9``, a crash) is simply taken by the next writer; the file is
removed when the holder releases it. Readers (``evaluate``, ``plot``, ``leaderboard``) never take it.

On systems without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from envs.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

_held: dict[str, int] = {}  # resolved run directory -> nesting depth of hold() in this process


class RunLockedError(ConfigError):
    """Another live process holds the run directory's lock (it is training or adapting that run)."""


def _message(run_dir: Path, pid: str) -> str:
    who = f"pid {pid}" if pid else "a process whose pid is not written yet"
    return (f"run directory {str(run_dir)!r} is in use by another dreamshift process ({who}); one process writes "
            f"a run at a time: wait for it to finish, stop it (kill -TERM {pid or 'PID'}: it saves a checkpoint), "
            f"or choose another run_dir")


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def check_free(run_dir: Path | str) -> None:
    """Raise :class:`RunLockedError` if another process holds ``run_dir``'s lock; writes nothing (call it before
    any work, so the refusal comes first)."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or str(Path(run_dir).resolve()) in _held:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or unreadable: hold() will say)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(_message(Path(run_dir), _holder(fd))) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def hold(run_dir: Path | str) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the block (creating ``run_dir`` and ``RUN/.lock`` with this process's pid);
    the lock file is removed on exit. Nested blocks of one process on the same directory share the lock.

    Raises:
        RunLockedError: another live process holds it.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if fcntl is None or key in _held:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield run_dir
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = _acquire(run_dir, path)
    _held[key] = 1
    try:
        yield run_dir
    finally:
        del _held[key]
        try:
            os.unlink(path)  # while still locked: a waiting opener then finds another inode and retries
        except OSError:
            pass
        os.close(fd)


def _acquire(run_dir: Path, path: Path) -> int:
    """Lock ``path`` (created if missing) and write this pid into it; retries when the file it locked was
    removed by its previous holder in between (so two processes never hold different inodes of one path)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise RunLockedError(_message(run_dir, pid)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
