"""The error types of the lowest layer: the base of every dreamshift error, and the one raised by ``envs``.

The house is one-way (``envs`` -> ``shifts`` -> ``encoders`` -> ``mbrl``), so the common base lives here,
in the lowest package that raises it; ``envs.errors`` re-exports it.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DreamshiftError", "EnvError"]


class DreamshiftError(Exception):
    """Base class of every user-facing dreamshift error: the CLI prints its message on one line and exits 2."""


class EnvError(DreamshiftError, ValueError):
    """Invalid environment name/argument, or no usable headless renderer.

    Subclasses :class:`ValueError` so callers that already catch ``ValueError``
    keep working. The message is always one line saying what was wrong and what
    is allowed instead.
    """


class ConfigError(DreamshiftError, ValueError):
    """Bad configuration: unknown key, wrong type, invalid value or incompatible resume."""


class CheckpointError(DreamshiftError):
    """A missing, unreadable or incompatible checkpoint."""
