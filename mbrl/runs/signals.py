"""Stopping a training loop from outside like Ctrl-C: ``SIGTERM`` (``kill``, a scheduler's end of job) and
``SIGUSR2`` (e.g. Slurm's ``--signal=USR2@...`` warning before the time limit).

:func:`stop_requests` installs a handler for both signals for the duration of a ``with`` block; the handler only
records the signal. The loop calls :func:`check` between steps (after a whole collection step and its updates),
which raises :class:`Terminated`, a ``KeyboardInterrupt``: the loop's Ctrl-C path then saves a checkpoint and
raises :class:`mbrl.runs.train.TrainingInterrupted` with the signal, and the CLI prints one line naming the run and its
``--resume`` command and exits with ``128 + signal number`` (143 for ``SIGTERM``). Nothing is interrupted in the
middle of an update or a checkpoint write.

Ctrl-C (``SIGINT``) itself raises ``KeyboardInterrupt`` wherever the code is; :func:`deferred_interrupts` holds
it back for a block that must not be cut in half (writing a checkpoint, the save and cleanup after a first
Ctrl-C): a second Ctrl-C pressed while a run saves its checkpoint waits for the save.

Handlers can only be installed from the main thread; elsewhere the block installs nothing (the signals keep
their previous disposition) and :func:`check` never raises.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

_received: list[int] = []  # signal numbers recorded by the handler (the first one is reported)
_depth = 0  # nesting of stop_requests blocks (an adaptation inside a command that also trains)


class Terminated(KeyboardInterrupt):
    """A stop requested by ``signum`` (``SIGTERM`` or ``SIGUSR2``); a ``KeyboardInterrupt`` so that every
    Ctrl-C path (checkpoint, then the one-line ``--resume`` message) handles it the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


def _record(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal handler signature
    _received.append(signum)


@contextmanager
def stop_requests() -> Iterator[None]:
    """Record ``SIGTERM``/``SIGUSR2`` instead of dying while the block runs (:func:`check` turns a recorded
    signal into :class:`Terminated`); the previous handlers are restored on exit. Nested blocks share the
    outer block's handlers."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    if _depth == 0:
        _received.clear()
        previous = {s: signal.signal(s, _record) for s in SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s, handler in previous.items():
            signal.signal(s, handler)


def requested() -> int | None:
    """The first signal recorded in the current :func:`stop_requests` block, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise :class:`Terminated` when a stop was requested (call between whole steps of a loop)."""
    signum = requested()
    if signum is not None:
        raise Terminated(signum)


_interrupts: list[int] = []  # SIGINTs received inside a deferred_interrupts block
_deferring = False


def _hold(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal handler signature
    _interrupts.append(signum)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (``SIGINT``) back until the end of the block: a Ctrl-C received in it raises
    ``KeyboardInterrupt`` when the block ends (or joins the exception already leaving the block, e.g. the
    :class:`mbrl.runs.train.TrainingInterrupted` of a first Ctrl-C). Nested blocks are the outer block. Only from the
    main thread, and only while ``SIGINT`` has Python's default handler (an ignored ``SIGINT`` or a program's own
    handler is left alone)."""
    global _deferring
    if (_deferring or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    _interrupts.clear()
    previous = signal.signal(signal.SIGINT, _hold)
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        signal.signal(signal.SIGINT, previous)
    if _interrupts:
        _interrupts.clear()
        raise KeyboardInterrupt
