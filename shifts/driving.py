"""Shifts for the driving envs: graded CARLA weather (Jones et al. 2025 presets) and the appearance analogues of
the scene kinds for the server-free ``driving:carracing`` env.

``weather`` (CARLA, ``env.set_weather``): severity 1-4 are the presets of Jones et al. 2025 in the order of the
paper (weak: ``soft_high_light``, ``soft_noisy_low_light``; strong: ``hard_low_light``,
``hard_noisy_low_light``); severity 5 is ``hard_noisy_low_light`` with full wetness and fog falloff 0.5
(ClearNoon: 0.1). On ``driving:carracing`` the same grading is a low-light-and-haze look: brightness
``1 - 0.14 * s``, a blue tint, and a grey haze blended in with alpha ``0.1 * s`` (image hook).

Scene kinds on ``driving:carracing`` (through ``env.set_appearance``, see :func:`carracing_appearance`):

| kind | severity s |
|---|---|
| ``color`` | road, field and grass RGB moved by ``25 * s`` in a per-episode random direction |
| ``texture`` | grass/field checkerboard contrast: the two colours pushed apart by ``18 * s`` |
| ``lighting`` | brightness ``1 +/- 0.12 * s`` (per-episode sign) and a per-episode tint of strength ``0.06 * s`` |
| ``camera`` | zoom ``2.7 * (1 +/- 0.1 * s)`` (per-episode sign) |
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from envs.carla import weather_parameters
from envs.driving import Appearance
from shifts.base import Shift, ShiftError, register

CARLA_LEVELS = {1: "soft_high_light", 2: "soft_noisy_low_light", 3: "hard_low_light", 4: "hard_noisy_low_light"}


def carla_weather(severity: int) -> str | dict[str, float]:
    """The CARLA weather of a severity: a preset name (0: ``default``, 1-4 Jones et al.) or, for 5, a dict."""
    if severity == 0:
        return "default"
    if severity in CARLA_LEVELS:
        return CARLA_LEVELS[severity]
    return {**weather_parameters("hard_noisy_low_light"), "wetness": 100.0, "fog_falloff": 0.5}


def _move(rgb: tuple[int, ...], direction: np.ndarray, amount: float, high: int) -> tuple[int, int, int]:
    out = np.clip(np.asarray(rgb, float) + direction * amount, 0, high)
    return tuple(int(round(v)) for v in out)  # type: ignore[return-value]


def carracing_appearance(kind: str, severity: int, rng: np.random.Generator, base: Any) -> Any:
    """The :class:`envs.driving.Appearance` of scene kind ``kind`` at ``severity`` (table in the module doc).

    Raises:
        ShiftError: a kind without a driving analogue (distractors, background).
    """
    s = severity
    if kind == "color":
        d = rng.normal(size=(3, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return dataclasses.replace(base, road_color=_move(base.road_color, d[0], 25 * s, 249),
                                   bg_color=_move(base.bg_color, d[1], 25 * s, 255),
                                   grass_color=_move(base.grass_color, d[2], 25 * s, 255))
    if kind == "texture":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        return dataclasses.replace(base, bg_color=_move(base.bg_color, -d, 18 * s, 255),
                                   grass_color=_move(base.grass_color, d, 18 * s, 255))
    if kind == "lighting":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        tint = 1.0 + 0.06 * s * rng.uniform(-1, 1, size=3)
        return dataclasses.replace(base, brightness=max(0.05, 1.0 + sign * 0.12 * s), tint=tuple(tint))
    if kind == "camera":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return dataclasses.replace(base, zoom=base.zoom * (1.0 + sign * 0.1 * s))
    if kind == "weather":
        return dataclasses.replace(base, brightness=1.0 - 0.14 * s, tint=(0.9, 0.95, 1.1))
    raise ShiftError(f"shift {kind!r} has no analogue on the driving env; use color, texture, lighting, camera, "
                     f"weather or a pixel-level kind")


@register
class Weather(Shift):
    """Graded weather: CARLA presets of Jones et al. 2025; low light and haze on ``driving:carracing``."""

    kind: ClassVar[str] = "weather"
    level: ClassVar[str] = "scene"
    env_suites: ClassVar[tuple[str, ...] | None] = ("carla", "driving")

    def on_reset(self, env: Any, rng: np.random.Generator) -> None:
        if hasattr(env, "set_weather"):
            env.set_weather(carla_weather(self.severity))
        elif hasattr(env, "set_appearance"):
            self._base = getattr(self, "_base", None) or Appearance()
            env.set_appearance(carracing_appearance("weather", self.severity, rng, self._base), now=True)
            if self._haze not in env.image_hooks:
                env.image_hooks.append(self._haze)
        else:
            raise ShiftError(f"shift 'weather' applies to carla:* and driving:* envs, not {type(env).__name__}")

    def _haze(self, image: np.ndarray) -> np.ndarray:
        alpha = 0.1 * self.severity
        return (image.astype(np.float32) * (1 - alpha) + 128.0 * alpha).astype(np.uint8)

    def remove(self, env: Any) -> None:
        if hasattr(env, "set_weather"):
            env.set_weather("default")
        elif hasattr(env, "set_appearance"):
            env.set_appearance(Appearance(), now=True)
            while self._haze in getattr(env, "image_hooks", []):
                env.image_hooks.remove(self._haze)
