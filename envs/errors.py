"""The single exception type raised by the ``envs`` package for bad user input."""

from __future__ import annotations

__all__ = ["EnvError"]


class EnvError(ValueError):
    """Invalid environment name/argument, or no usable headless renderer.

    Subclasses :class:`ValueError` so callers that already catch ``ValueError``
    keep working. The message is always one line saying what was wrong and what
    is allowed instead.
    """
