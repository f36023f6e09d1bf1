"""Named evaluation suites: lists of ``(kind, severity)`` conditions, always led by the clean reference
``("none", 0)``.

- ``standard``: every registered kind (scene-level first, then pixel-level, each alphabetical) at severities
  1-5.
- ``paper``: analogues of the shifts of Jones, Zhou & Pattinson 2025 ("Pre-trained Visual Representations
  Generalize Where it Matters in Model-Based RL", arXiv 2509.12531), where ID is the clean env and each OOD
  family has a weak and a strong level:

  ==========================================================  ===============================
  paper                                                       here
  ==========================================================  ===============================
  ID: CARLA clear noon / ManiSkill training objects            ``none:0`` (clean)
  ManiSkill "hard": dark-wood table texture (a surface swap)   ``texture:2`` (weak), ``texture:5``
                                                              (strong: floor/skybox replaced)
  CARLA weak weather (soft_high_light, soft_noisy_low_light:   ``lighting:2``, ``fog:2``
  light cloud/fog, low sun)
  CARLA strong weather (hard_low_light, hard_noisy_low_light:  ``lighting:5``, ``fog:5``
  night, fog 100, heavy rain)
  ==========================================================  ===============================

  The paper's drop is ``100 (ID - OOD) / ID``, as :mod:`mbrl.runs.evaluate` reports. (The paper's ManiSkill OOD
  objects -- held-out YCB objects -- have no DMC analogue.)
- ``quick``: a small suite for CI and smoke tests: one scene kind and one pixel kind at severities 1 and 5.

Besides a suite name, :func:`parse_suite` accepts an ad-hoc list ``KIND[:SEVERITIES],...`` where SEVERITIES is
``3``, ``1-5`` or ``1+3+5`` (a bare kind means 1-5), e.g. ``gaussian_noise:1+5,fog:3``.

Kinds are resolved when a suite is used, not at import: a suite naming a kind that is not registered (e.g. a
scene kind on an install without :mod:`shifts.scene`) raises :class:`~shifts.base.ShiftError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from shifts.base import SEVERITIES, ShiftError, kinds, supports

Condition = tuple[str, int]
CLEAN: Condition = ("none", 0)
LEVELS = ("scene", "pixel")


def ordered_kinds() -> list[str]:
    """Registered kinds, scene-level first, each level alphabetical."""
    out = [k for level in LEVELS for k in kinds(level)]
    return out + [k for k in kinds() if k not in out]


def _standard() -> list[Condition]:
    return [(k, s) for k in ordered_kinds() for s in SEVERITIES if s > 0]


_SUITES: dict[str, tuple[str, Callable[[], list[Condition]]]] = {
    "standard": ("every registered kind x severities 1-5", _standard),
    "paper": ("Jones et al. 2025 analogues: texture, lighting and fog, weak (2) and strong (5)",
              lambda: [("texture", 2), ("texture", 5), ("lighting", 2), ("lighting", 5), ("fog", 2), ("fog", 5)]),
    "grid": ("the first-answer grid: 3 scene-level (color, texture, background) and 3 pixel-level (gaussian_noise, "
             "fog, motion_blur) kinds at severities 1, 3, 5",
             lambda: [(k, sev) for k in ("color", "texture", "background", "gaussian_noise", "fog", "motion_blur")
                      for sev in (1, 3, 5)]),
    "quick": ("CI smoke suite: color and gaussian_noise at severities 1 and 5",
              lambda: [("color", 1), ("color", 5), ("gaussian_noise", 1), ("gaussian_noise", 5)]),
}


def suite_names() -> list[str]:
    return sorted(_SUITES)


def describe(name: str) -> str:
    """One-line description of a named suite."""
    return _SUITES[name][0]


def suite_kinds(name: str) -> list[str]:
    """The kinds a named suite uses, in order, without checking that they are registered."""
    out: list[str] = []
    for kind, _ in _SUITES[name][1]():
        if kind not in out:
            out.append(kind)
    return out


def missing_kinds(name: str) -> list[str]:
    """Kinds of a named suite that are not registered."""
    available = set(kinds())
    return [k for k in suite_kinds(name) if k not in available]


def _check(conditions: list[Condition], what: str) -> list[Condition]:
    available = set(kinds())
    missing = [k for k, _ in conditions if k not in available]
    if missing:
        missing = list(dict.fromkeys(missing))
        raise ShiftError(f"{what} needs shift kind(s) that are not available: {', '.join(missing)} "
                         f"(registered kinds: {', '.join(ordered_kinds()) or 'none'})")
    return [CLEAN] + [c for c in conditions if c != CLEAN]


def get_suite(name: str) -> list[Condition]:
    """``[("none", 0), (kind, severity), ...]`` of a named suite.

    Raises:
        ShiftError: unknown suite (the message lists the suites) or a kind of the suite that is not registered.
    """
    if name not in _SUITES:
        raise ShiftError(f"unknown suite {name!r}; suites: {', '.join(suite_names())}")
    return _check(_SUITES[name][1](), f"suite {name!r}")


_SEVERITY = re.compile(r"^(\d)(?:-(\d))?$|^\d(?:\+\d)+$")


def _severities(kind: str, text: str) -> list[int]:
    m = _SEVERITY.match(text)
    if m is None:
        raise ShiftError(f"bad severities {text!r} for {kind!r}; expected e.g. 3, 1-5 or 1+3+5 (severities 1-5)")
    if "+" in text:
        values = [int(t) for t in text.split("+")]
    elif m.group(2):
        values = list(range(int(m.group(1)), int(m.group(2)) + 1))
    else:
        values = [int(m.group(1))]
    if not values or any(v < 1 or v > 5 for v in values):
        raise ShiftError(f"bad severities {text!r} for {kind!r}: severities are 1-5 (0 is the clean reference, "
                         "always included)")
    return values


def parse_suite(text: str) -> tuple[str, list[Condition]]:
    """A suite name or an ad-hoc list ``KIND[:SEVERITIES],...`` -> ``(name, conditions)``.

    The name of an ad-hoc list is the list itself with spaces removed.

    Raises:
        ShiftError: unknown suite or kind (the message lists both), bad severities, unregistered kinds.
    """
    text = text.strip()
    if text in _SUITES:
        return text, get_suite(text)
    registered = ordered_kinds()
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ShiftError(f"empty suite; suites: {', '.join(suite_names())}")
    conditions: list[Condition] = []
    for item in items:
        kind, sep, sev = item.partition(":")
        if kind not in registered:
            what = "suite or shift kind" if not sep and len(items) == 1 else "shift kind"
            raise ShiftError(f"unknown {what} {kind!r}; suites: {', '.join(suite_names())}; "
                             f"kinds: {', '.join(registered)} (as KIND[:SEVERITIES],..., e.g. fog:1+5,contrast:3)")
        for s in _severities(kind, sev) if sep else [1, 2, 3, 4, 5]:
            if (kind, s) not in conditions:
                conditions.append((kind, s))
    return ",".join(items).replace(" ", ""), _check(conditions, "suite")


def for_env(name: str, conditions: list[Condition], env_name: str) -> list[Condition]:
    """Keep the conditions whose kind applies to ``env_name``; the ``standard`` suite silently drops the others,
    any other suite or list raises.

    Raises:
        ShiftError: a kind of a non-``standard`` suite does not apply to the env (the message names it).
    """
    bad = sorted({k for k, _ in conditions if not supports(k, env_name)})
    if bad and name != "standard":
        raise ShiftError(f"shift kind(s) {', '.join(bad)} do not apply to {env_name}; "
                         f"choose kinds that do (pixel-level kinds apply to every env)")
    return [c for c in conditions if c[0] not in bad]
