"""Shift conditions: what an evaluation or an adaptation applies to an env. A :data:`Condition` is a tuple of
``(kind, severity)`` shifts applied together, in order; the clean env is :data:`CLEAN` ``()``, which is a suite's
``none:0`` condition (:func:`suite_condition`). ``dreamshift adapt --target`` and ``continual --stages`` name them
as ``KIND:SEVERITY[,KIND:SEVERITY...]`` (:func:`parse_target`); :func:`condition_name` writes that name back
(``clean`` for :data:`CLEAN`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium

import envs
from envs.errors import ConfigError
from shifts.base import ShiftWrapper, kinds, make_shift, supports

#: One evaluation/training condition: the shifts applied together, ``()`` for the clean env.
Condition = tuple[tuple[str, int], ...]
CLEAN: Condition = ()


def suite_condition(kind: str, severity: int) -> Condition:
    """The condition of a suite's ``(kind, severity)``: :data:`CLEAN` for ``none`` (severity 0), else one shift."""
    return CLEAN if kind == "none" else ((kind, severity),)


def parse_target(text: str, env_name: str | None = None) -> Condition:
    """``"color:5"`` or ``"color:5,gaussian_noise:3"`` (applied together, in order) -> a :data:`Condition`.

    Args:
        env_name: if given, every kind must apply to this env (pixel kinds apply to every env).

    Raises:
        ConfigError: empty text, an item that is not ``KIND:SEVERITY``, an unknown kind (the message lists the
            registered ones), a severity outside 1-5, a kind given twice or one that does not apply to the env.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError("--target is empty; expected KIND:SEVERITY[,KIND:SEVERITY...], e.g. color:5")
    registered = kinds()
    out: list[tuple[str, int]] = []
    for item in items:
        kind, sep, sev = item.partition(":")
        kind = kind.strip()
        if kind not in registered:
            raise ConfigError(f"unknown shift kind {kind!r} in {text!r}; kinds: {', '.join(registered)}")
        try:
            severity = int(sev)
        except ValueError:
            raise ConfigError(f"bad shift {item!r}; expected KIND:SEVERITY with severity 1-5, e.g. {kind}:5") from None
        if not sep or not 1 <= severity <= 5:
            raise ConfigError(f"severity of {item!r} must be 1-5 (0 is the clean env)")
        if any(k == kind for k, _ in out):
            raise ConfigError(f"shift kind {kind!r} given twice in {text!r}")
        if env_name is not None and not supports(kind, env_name):
            raise ConfigError(f"shift kind {kind!r} does not apply to {env_name}; pixel-level kinds apply to "
                              f"every env")
        out.append((kind, severity))
    return tuple(out)


def condition_name(cond: Condition) -> str:
    """``()`` -> ``"clean"``; ``(("color", 5),)`` -> ``"color:5"``; several shifts joined by ``,``."""
    return ",".join(f"{k}:{s}" for k, s in cond) if cond else "clean"


def as_condition(value: Any) -> Condition:
    """A condition from JSON (list of ``[kind, severity]``)."""
    return tuple((str(k), int(s)) for k, s in value)


def other_levels(cond: Condition) -> list[Condition]:
    """The target at the other severities 1-5 of its kind(s): every shift of ``cond`` set to level ``l`` for each
    ``l`` not already the severity of all of them (for one kind: the other four levels)."""
    if not cond:
        return []
    current = {s for _, s in cond}
    return [tuple((k, lvl) for k, _ in cond) for lvl in range(1, 6) if {lvl} != current]


def shifted_env(name: str, conditions: Condition, shift_seed: int, **kwargs: Any) -> gymnasium.Env:
    """``envs.make_env(name, **kwargs)`` wrapped by :class:`~shifts.base.ShiftWrapper` with the shifts of
    ``conditions`` (``make_shift(kind, severity, shift_seed)``); the clean env for ``()``. Module-level so that
    vector-env workers can pickle it."""
    env = envs.make_env(name, **kwargs)
    return condition_wrapper(conditions, shift_seed)(env) if conditions else env


def condition_wrapper(conditions: Condition, shift_seed: int) -> Callable[[gymnasium.Env], gymnasium.Env]:
    """A function wrapping an env with the shifts of ``conditions`` (the ``wrap`` of
    :func:`mbrl.runs.evaluate.run_episodes`)."""
    def wrap(env: gymnasium.Env) -> gymnasium.Env:
        return ShiftWrapper(env, [make_shift(k, s, shift_seed) for k, s in conditions])

    return wrap
