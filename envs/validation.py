"""Argument checks shared by :class:`envs.DMCEnv`, :func:`envs.make_env` and
:func:`envs.make_vector_env`. Every check raises :class:`envs.EnvError` with a
one-line message naming the argument, the bad value and what is allowed."""

from __future__ import annotations

import numbers

from envs.errors import EnvError

__all__ = ["MAX_SEED", "OBS_MODES", "check_int", "check_obs", "check_seed", "check_size"]

#: Largest seed accepted (dm_control seeds a ``numpy.random.RandomState``).
MAX_SEED = 2**32 - 1
#: Allowed ``obs`` values: which observation keys an env returns (``"image"``, ``"state"`` or both).
OBS_MODES: tuple[str, ...] = ("pixels", "state", "pixels+state")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as ``int``.

    Raises:
        EnvError: if ``value`` is not an integer (bools rejected) or is < ``minimum``.
    """
    if not _is_int(value) or int(value) < minimum:  # type: ignore[call-overload]
        raise EnvError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_size(size: object) -> tuple[int, int]:
    """Normalise an image size to ``(height, width)`` in pixels.

    Accepts a positive int ``s`` (meaning ``(s, s)``) or a pair of positive ints
    ``(height, width)``.

    Raises:
        EnvError: for anything else (zero/negative, floats, wrong length, ...).
    """
    if _is_int(size) and int(size) > 0:  # type: ignore[call-overload]
        return int(size), int(size)  # type: ignore[call-overload]
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(_is_int(s) and int(s) > 0 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise EnvError(
        f"size must be a positive int or a (height, width) pair of positive ints, got {size!r}"
    )


def check_seed(seed: object) -> int | None:
    """Return ``seed`` as ``int`` (or ``None`` for an OS-entropy seed).

    Raises:
        EnvError: if ``seed`` is not ``None`` or an int in ``[0, 2**32 - 1]``.
    """
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= int(seed) <= MAX_SEED:  # type: ignore[call-overload]
        raise EnvError(
            f"seed must be None or an integer in [0, {MAX_SEED}], got {seed!r}"
        )
    return int(seed)  # type: ignore[call-overload]


def check_obs(obs: object) -> tuple[bool, bool]:
    """Validate an ``obs`` mode and return ``(pixels, state)``: whether ``obs["image"]`` / ``obs["state"]`` are
    returned. Whether a suite has a state vector is the registry's to say (:func:`envs.registry.check_state_obs`).

    Args:
        obs: ``"pixels"``, ``"state"`` or ``"pixels+state"`` (see :data:`OBS_MODES`).

    Raises:
        EnvError: ``obs`` is not one of :data:`OBS_MODES` (message lists them).
    """
    if not isinstance(obs, str) or obs not in OBS_MODES:
        raise EnvError(f"obs must be one of {', '.join(repr(m) for m in OBS_MODES)}, got {obs!r}")
    return obs != "state", obs != "pixels"
