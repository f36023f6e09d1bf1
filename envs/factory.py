"""``make_env``: build a single environment from a ``"suite:task"`` name."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import gymnasium

from envs.dmc import DMCEnv
from envs.errors import EnvError
from envs.metaworld import DEFAULT_TIME_LIMIT as _METAWORLD_TIME_LIMIT
from envs.metaworld import MetaWorldEnv
from envs.registry import parse_env_name
from envs.validation import check_obs

__all__ = ["make_env"]


def make_env(
    name: str,
    *,
    size: int | tuple[int, int] = 64,
    action_repeat: int = 2,
    camera: int | str | None = None,
    seed: int | None = None,
    time_limit: int | None = None,
    fast_render: bool = True,
    options: Mapping[str, Any] | None = None,
    obs: str = "pixels",
) -> gymnasium.Env:
    """Create one environment, e.g. ``make_env("dmc:walker_walk", seed=0)``, ``make_env("metaworld:reach")``,
    ``make_env("dmc:cartpole_swingup", obs="state")``.

    Observations are a dict with ``"image"`` ``(H, W, 3) uint8`` when pixels are asked for and ``"state"``
    ``(D,) float32`` when state is asked for (``observation_space`` is a ``spaces.Dict`` with exactly those
    keys). ``obs="state"`` never renders (no GL context, no camera: the fast CPU path). ``D``: dmc = dm_control's
    observation dict flattened in key order (e.g. cartpole_swingup 5, reacher_easy 6, finger_spin 9,
    walker_stand 24; see :mod:`envs.dmc`), metaworld = 39.

    Args:
        name: ``"suite:task"``; see :func:`envs.list_envs`.
        size: image size in pixels, ``s`` or ``(height, width)``; obs["image"]
            is ``(H, W, 3) uint8``.
        action_repeat: env steps per agent step (>= 1); rewards are summed.
        camera: camera id (metaworld: also a camera name), ``None`` for the suite's default (dmc: the
            DreamerV3 default of the domain; metaworld: ``"corner2"``).
        seed: seed of the first episode, ``None`` or an int in ``[0, 2**32)``.
        time_limit: episode length in **env steps** (>= 1), not agent steps; ``None``: the suite's
            standard episode (metaworld: 500, every other suite: 1000).
        fast_render: cheaper rendering without shadows/reflections/MSAA.
        options: extra keyword arguments of the suite's env class, e.g.
            ``{"port": 2002, "weather": "hard_low_light"}`` for ``carla:`` or
            ``{"appearance": Appearance(zoom=4.0)}`` for ``driving:``
            (:class:`envs.carla.CarlaEnv`, :class:`envs.driving.CarRacingEnv`), or
            ``{"goal": 3}`` for ``metaworld:`` (:class:`envs.metaworld.MetaWorldEnv`).
        obs: ``"pixels"`` (default), ``"state"`` or ``"pixels+state"``. State observations exist for the
            ``dmc`` and ``metaworld`` suites only.

    Returns:
        A gymnasium env (:class:`envs.DMCEnv` for ``dmc:``, :class:`envs.metaworld.MetaWorldEnv`,
        :class:`envs.driving.CarRacingEnv`, :class:`envs.carla.CarlaEnv`); see it for obs/action/info details.

    Raises:
        EnvError: unknown suite or task (message lists the allowed ones), invalid
            argument (message says what is allowed; e.g. ``obs`` not one of the three modes, or a state mode
            for ``driving:``/``carla:``, which have no state vector), or no working renderer (only when pixels
            are asked for). ``obs`` is checked before anything is built.
    """
    check_obs(obs)  # the mode itself first: cheap, no simulator import
    suite, domain, task = parse_env_name(name)
    check_obs(obs, name)  # a state mode for a suite without a state vector
    if time_limit is None:
        time_limit = _METAWORLD_TIME_LIMIT if suite == "metaworld" else 1000
    if suite == "metaworld":
        extra = dict(options or {})
        if "state" in extra:
            raise EnvError(f"option 'state' of {name} was replaced by make_env(..., obs='pixels+state') "
                           "(or obs='state' without images)")
        unknown = sorted(set(extra) - {"goal"})
        if unknown:
            raise EnvError(f"unknown option(s) {', '.join(map(str, unknown))} for {name}; allowed: goal")
        return MetaWorldEnv(task, size=size, action_repeat=action_repeat, camera=camera, seed=seed,
                            time_limit=time_limit, fast_render=fast_render, obs=obs, **extra)
    if suite in ("driving", "carla"):
        return _make_driving_env(suite, task, dict(
            size=size, action_repeat=action_repeat, camera=camera, seed=seed,
            time_limit=time_limit, fast_render=fast_render), options)
    if options:
        raise EnvError(f"options are not supported for {suite}: envs, got {dict(options)!r}")
    assert suite == "dmc", suite  # parse_env_name only accepts known suites
    return DMCEnv(
        domain,
        task,
        size=size,
        action_repeat=action_repeat,
        camera=camera,
        seed=seed,
        time_limit=time_limit,
        fast_render=fast_render,
        obs=obs,
    )


def _make_driving_env(suite: str, task: str, kwargs: dict[str, Any],
                      options: Mapping[str, Any] | None) -> gymnasium.Env:
    """Build a ``driving:`` or ``carla:`` env (imported lazily: Box2D/pygame, carla)."""
    if suite == "driving":
        from envs.driving import CarRacingEnv as cls
    else:
        from envs.carla import CarlaEnv as cls
    options = dict(options or {})
    allowed = [p for p in inspect.signature(cls).parameters if p not in kwargs and p != "town"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise EnvError(f"unknown option(s) {', '.join(map(str, unknown))} for {suite}:{task}; "
                       f"allowed: {', '.join(allowed)}")
    if suite == "carla":
        return cls(task, **kwargs, **options)
    return cls(**kwargs, **options)
