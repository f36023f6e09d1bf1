"""Error types of dreamshift. Every user-facing failure is a :class:`DreamshiftError`: the CLI prints its
message on one line and exits non-zero.

:class:`DreamshiftError` itself lives in the lowest layer, :mod:`envs.errors` (``envs.EnvError`` and
``shifts.base.ShiftError`` derive from it too); it is re-exported here.
"""

from envs.errors import DreamshiftError

__all__ = ["CheckpointError", "ConfigError", "DreamshiftError"]


class ConfigError(DreamshiftError, ValueError):
    """Bad configuration: unknown key, wrong type, invalid value or incompatible resume."""


class CheckpointError(DreamshiftError):
    """A missing, unreadable or incompatible checkpoint."""
