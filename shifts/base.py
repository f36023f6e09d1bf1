"""The ``Shift`` abstraction: a visual perturbation of an env's observations with a kind, a severity 0-5 and a
seed, applied by :class:`ShiftWrapper`.

Contract (tested for every kind):

- severity 0 is exactly the clean env (no hook is installed, pixels are bit-identical);
- deterministic: the same (kind, severity, seed, episode seed) gives the same pixels;
- shifts change what the camera sees, never the physics or the reward.

Two levels:

- ``scene``: edits the simulator's model/scene (MuJoCo colours, textures, lights, camera, extra visual-only
  geoms, background compositing): ``on_reset`` after every reset edits the model and installs the env's
  per-frame hooks (``DMCEnv.render_hooks`` edit the ``mjvScene`` before each render, ``DMCEnv.image_hooks``
  map the rendered image); ``remove`` restores the model and removes the hooks.
- ``pixel``: a function of the rendered ``(H, W, 3) uint8`` image (ImageNet-C-style corruptions); works on any
  env.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

import gymnasium
import numpy as np

from envs.errors import DreamshiftError

SEVERITIES = (0, 1, 2, 3, 4, 5)


class ShiftError(DreamshiftError, ValueError):
    """Unknown shift kind, severity outside 0-5, or a shift that does not apply to the env.

    A :class:`ValueError` too, so that library callers can catch it as such."""


class Shift:
    """Base class of shifts.

    Args:
        severity: 0 (clean) to 5 (strongest).
        seed: seed of the shift's own randomness; per episode the RNG is seeded with
            ``(seed, episode_seed, kind)`` so episodes differ but are reproducible.

    Raises:
        ShiftError: severity outside 0-5.
    """

    kind: ClassVar[str] = ""
    level: ClassVar[str] = "pixel"  # scene | pixel
    #: env suites (``dmc``, ``metaworld``, ``driving``, ``carla``) the kind applies to; None = every env
    env_suites: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def supports(cls, env_name: str) -> bool:
        """Whether the kind applies to the env ``suite:task`` (pixel kinds apply to every env)."""
        return cls.env_suites is None or env_name.split(":", 1)[0] in cls.env_suites

    def __init__(self, severity: int, seed: int = 0) -> None:
        if severity not in SEVERITIES or isinstance(severity, bool):
            raise ShiftError(f"severity {severity!r} for shift {self.kind!r} is not allowed; allowed: 0-5")
        self.severity = int(severity)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def episode_rng(self, episode_seed: int | None) -> np.random.Generator:
        """RNG for one episode: seeded by ``(seed, episode_seed, crc32(kind))``."""
        if episode_seed is None:  # unseeded reset: a fresh draw from the shift's own stream
            episode_seed = int(self.rng.integers(2**32))
        return np.random.default_rng([self.seed, int(episode_seed) % 2**32, zlib.crc32(self.kind.encode())])

    # Hooks. Scene-level shifts override on_reset/before_render/after_render; pixel-level ones apply().
    def on_reset(self, env: Any, rng: np.random.Generator) -> None:
        """Called after every env reset with the episode's RNG; scene shifts edit the scene here (the wrapper
        renders the first frame again afterwards), pixel shifts may draw per-episode parameters."""

    def remove(self, env: Any) -> None:
        """Undo what :meth:`on_reset` did to ``env`` (restore model arrays, remove hooks)."""

    def apply(self, image: np.ndarray, step: int) -> np.ndarray:
        """Transform a rendered ``(H, W, 3) uint8`` frame (``step`` = agent steps since reset)."""
        return image

    def __repr__(self) -> str:
        return f"{self.kind}:{self.severity}"


_REGISTRY: dict[str, type[Shift]] = {}


def register(cls: type[Shift]) -> type[Shift]:
    """Class decorator registering a :class:`Shift` subclass under ``cls.kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def kinds(level: str | None = None) -> list[str]:
    """Registered kinds (optionally of one level), sorted."""
    _load()
    return sorted(k for k, c in _REGISTRY.items() if level is None or c.level == level)


def make_shift(kind: str, severity: int, seed: int = 0) -> Shift:
    """Build a shift by kind name.

    Raises:
        ShiftError: unknown kind (the message lists the registered kinds) or severity outside 0-5.
    """
    _load()
    if kind not in _REGISTRY:
        raise ShiftError(f"unknown shift kind {kind!r}; allowed: {', '.join(kinds())}")
    return _REGISTRY[kind](severity, seed)


def supports(kind: str, env_name: str) -> bool:
    """Whether registered ``kind`` applies to env ``env_name`` (``none`` applies everywhere)."""
    _load()
    return kind == "none" or (kind in _REGISTRY and _REGISTRY[kind].supports(env_name))


class ShiftWrapper(gymnasium.Wrapper):
    """Apply shifts to an env's ``obs["image"]``; every other key (e.g. ``obs["state"]``) passes through unchanged.

    Every shift gets ``on_reset(env.unwrapped, rng)`` after every reset (if any is scene-level, the first frame
    is rendered again with the edits); pixel-level shifts map every frame. Severity-0 shifts are dropped.
    With an env without images (``make_env(..., obs="state")``) nothing is rendered: scene shifts still edit
    the (visual-only) model and install their hooks, which only affect explicit :meth:`render` calls, and
    observations are returned as they are.

    Args:
        env: a gymnasium env from :func:`envs.make_env`.
        shifts: the shifts, applied in order.
    """

    def __init__(self, env: gymnasium.Env, shifts: list[Shift]) -> None:
        super().__init__(env)
        self.shifts = [s for s in shifts if s.severity > 0]
        self.scene = [s for s in self.shifts if s.level == "scene"]
        self.pixel = [s for s in self.shifts if s.level == "pixel"]
        self._step = 0

    def _apply(self, obs: dict[str, Any]) -> dict[str, Any]:
        if "image" not in obs:  # obs="state": nothing to shift
            return obs
        image = obs["image"]
        for shift in self.pixel:
            image = shift.apply(image, self._step)
        return {**obs, "image": image}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # noqa: ANN201
        obs, info = self.env.reset(seed=seed, options=options)
        self._step = 0
        for shift in self.shifts:
            shift.on_reset(self.env.unwrapped, shift.episode_rng(seed))
        if self.scene and "image" in obs:  # the first frame predates the edits: render it again (once per episode)
            obs = {**obs, "image": self.env.unwrapped.render()}
        return self._apply(obs), info

    def step(self, action: Any):  # noqa: ANN201
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._step += 1
        return self._apply(obs), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        return self._apply({"image": self.env.render()})["image"]

    def remove_shifts(self) -> None:
        """Undo the shifts' edits of the wrapped env (scene changes), leaving the env open for reuse."""
        for shift in self.shifts:
            shift.remove(self.env.unwrapped)

    def close(self) -> None:
        self.remove_shifts()
        super().close()


def _load() -> None:
    """Import the modules that register kinds."""
    import importlib

    for module in ("shifts.scene", "shifts.pixel", "shifts.driving"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
