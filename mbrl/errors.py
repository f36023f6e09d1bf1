"""Error types of dreamshift. Every user-facing failure is one of these: the CLI prints its message on one line
and exits non-zero."""


class DreamshiftError(Exception):
    """Base class of the errors the CLI reports as a single line."""


class ConfigError(DreamshiftError, ValueError):
    """Bad configuration: unknown key, wrong type, invalid value or incompatible resume."""


class CheckpointError(DreamshiftError):
    """A missing, unreadable or incompatible checkpoint."""
