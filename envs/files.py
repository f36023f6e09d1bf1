"""Atomic file writes: write a temp file in the target directory, fsync, then ``os.replace``, so readers and
resumes never see a half-written result or checkpoint. Files are created with the mode ``open()`` would give
(``0o666`` less the process umask), so collaborators sharing a results directory can read them.

Path checks (:func:`check_output_dir`, :func:`check_output_file`, :func:`check_run_dir`): every command that
writes calls one of them before doing any work, so an unwritable directory, a path that is a file where a
directory is wanted (or the reverse), or a parent that is a file is one :class:`OutputPathError` line, not a
traceback after minutes of computation; a run directory that is a file is a :class:`CheckpointError` saying so.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from envs.errors import CheckpointError, ConfigError


class OutputPathError(ConfigError):
    """An output path that cannot be written, or a run directory that is not a directory."""


def _read_umask() -> int:
    """The process umask, read without changing it where /proc allows (no window in which another thread
    creates files with umask 0); otherwise with the set-and-restore idiom, once, at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


UMASK = _read_umask()


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path`` and rename it over ``path``; returns ``path``.

    The file gets mode ``0o666 & ~umask`` (``tempfile.mkstemp`` alone would leave it ``0o600``). On any error
    the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# the temp files of atomic_write: ".<target name>.<8 random characters of tempfile.mkstemp>.tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def is_temp_file(name: str) -> bool:
    """Whether ``name`` is the name of an :func:`atomic_write` temp file (``.<name>.<8 characters>.tmp``)."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_temp_files(directory: Path | str) -> list[Path]:
    """Remove the temp files that interrupted :func:`atomic_write` calls (a killed process) left in
    ``directory`` (not its subdirectories); returns them. Only files named as :func:`atomic_write` names them are
    touched. Call it only while no other process can be writing there (e.g. holding the run's lock)."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in sorted(directory.iterdir()):
        if is_temp_file(entry.name) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed


def write_json(path: Path | str, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


# --- output-path checks -------------------------------------------------------------------------------------

def _writable_dir(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest ancestor of ``path`` that exists (``path`` itself does not); it must be a writable directory.

    Raises:
        OutputPathError: the ancestor is a file, a directory this process cannot write to, a loop of symbolic
            links or a symbolic link to nothing.
    """
    parent = path.parent
    while parent != parent.parent:
        problem = _path_problem(parent)
        if problem is not None:
            raise OutputPathError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} {problem}")
        try:
            if parent.exists():
                break
        except OSError as exc:  # e.g. a name too long
            raise OutputPathError(f"{what} {str(path)!r} cannot be created: {exc.strerror or exc}") from None
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a directory")
    if not _writable_dir(parent):
        raise OutputPathError(f"{what} {str(path)!r} cannot be created: directory {str(parent)!r} is not "
                              f"writable; choose a path in a directory you can write to")
    return parent


def _path_problem(path: Path) -> str | None:
    """Why ``path`` can be neither used nor created (a loop of symbolic links; a symbolic link whose target does
    not exist, on which ``mkdir`` fails), as the end of a sentence; None when it exists or can be created."""
    try:
        os.stat(path)
        return None
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links; remove the link or give another path"
        return None  # reported by the caller's own check (e.g. a name too long)
    if not os.path.islink(path):
        return None
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"is a symbolic link to {target!r}, which does not exist; create its target or give another path"


def _exists(path: Path, what: str) -> bool:
    problem = _path_problem(path)
    if problem is not None:
        raise OutputPathError(f"{what} {str(path)!r} {problem}")
    try:
        return path.exists()
    except OSError as exc:  # a name too long, ...
        raise OutputPathError(f"{what} {str(path)!r} is not a usable path: {exc.strerror or exc}") from None


def check_output_dir(path: Path | str, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be used as an output directory: it is a writable directory, or
    it does not exist and its nearest existing ancestor is a writable directory (missing parents are created
    when writing). Nothing is created. Returns ``Path(path)``.

    Args:
        what: how the message names the path (the option or key that gave it: ``--out``, ``run_dir``, ...).

    Raises:
        OutputPathError: ``path`` is a file, an ancestor is a file, or the directory is not writable.
    """
    path = Path(path)
    if _exists(path, what):
        if not path.is_dir():
            raise OutputPathError(f"{what} {str(path)!r} is a file, not a directory")
        if not _writable_dir(path):
            raise OutputPathError(f"{what} {str(path)!r} is not writable; choose a directory you can write to")
        return path
    _existing_ancestor(path, what)
    return path


def check_output_file(path: Path | str, what: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written atomically: it is not a directory, and its
    directory is writable (or does not exist and its nearest existing ancestor is a writable directory).
    Nothing is created. Returns ``Path(path)``.

    Raises:
        OutputPathError: ``path`` is a directory, an ancestor is a file, or the directory is not writable.
    """
    path = Path(path)
    if _exists(path, what) and path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a directory; give a file name")
    if _exists(path.parent, what):
        if not path.parent.is_dir():
            raise OutputPathError(f"{what} {str(path)!r} cannot be created: {str(path.parent)!r} is a file, not a "
                                  f"directory")
        if not _writable_dir(path.parent):
            raise OutputPathError(f"{what} {str(path)!r} cannot be written: directory {str(path.parent)!r} is not "
                                  f"writable; choose a path in a directory you can write to")
        return path
    _existing_ancestor(path.parent, what)
    return path


def check_run_dir(path: Path | str, what: str = "run directory", writable: bool = False) -> Path:
    """Check that ``path`` is an existing directory (a run to read, or with ``writable`` also to write into,
    e.g. its ``eval/`` results or a resumed checkpoint). Returns ``Path(path)``.

    Raises:
        CheckpointError: ``path`` does not exist or is a file.
        OutputPathError: ``writable`` and the directory is not writable.
    """
    path = Path(path)
    if not _exists(path, what):
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a file, not a run directory")
    if writable and not _writable_dir(path):
        raise OutputPathError(f"{what} {str(path)!r} is not writable (results are written into it)")
    return path
