"""``make_env``: build a single environment from a ``"suite:task"`` name (any suite of
:data:`envs.registry.SUITE_CLASSES`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import gymnasium

from envs.errors import EnvError
from envs.registry import check_state_obs, parse_env_name, suite_class
from envs.validation import check_obs

__all__ = ["COMMON_KWARGS", "make_env"]

#: Keywords every suite's env class takes (the arguments of :func:`make_env` other than ``name``/``options``).
COMMON_KWARGS: tuple[str, ...] = ("size", "action_repeat", "camera", "seed", "time_limit", "fast_render", "obs")


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
            standard episode (its class's ``default_time_limit``: metaworld 500, every other suite 1000).
        fast_render: cheaper rendering without shadows/reflections/MSAA.
        options: extra keyword arguments of the suite's env class (its keyword-only parameters beyond the
            common ones), e.g. ``{"port": 2002, "weather": "hard_low_light"}`` for ``carla:`` or
            ``{"appearance": Appearance(zoom=4.0)}`` for ``driving:``
            (:class:`envs.carla.CarlaEnv`, :class:`envs.driving.CarRacingEnv`), or
            ``{"goal": 3}`` for ``metaworld:`` (:class:`envs.metaworld.MetaWorldEnv`).
        obs: ``"pixels"`` (default), ``"state"`` or ``"pixels+state"``. State observations exist for the
            ``dmc`` and ``metaworld`` suites only.

    Returns:
        A gymnasium env (:class:`envs.DMCEnv` for ``dmc:``, :class:`envs.metaworld.MetaWorldEnv`,
        :class:`envs.driving.CarRacingEnv`, :class:`envs.carla.CarlaEnv`; all :class:`envs.base.BaseEnv`); see it
        for obs/action/info details.

    Raises:
        EnvError: unknown suite or task (message lists the allowed ones), invalid
            argument (message says what is allowed; e.g. ``obs`` not one of the three modes, or a state mode
            for ``driving:``/``carla:``, which have no state vector), or no working renderer (only when pixels
            are asked for). ``obs`` is checked before anything is built.
    """
    check_obs(obs)  # the mode itself first: cheap, no simulator import
    suite, domain, task = parse_env_name(name)
    check_state_obs(obs, name)  # a state mode for a suite without a state vector
    cls = suite_class(suite)
    extra = dict(options or {})
    allowed = [p.name for p in inspect.signature(cls).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_KWARGS]
    if "state" in extra and cls.has_state and "state" not in allowed:
        raise EnvError(f"option 'state' of {name} was replaced by make_env(..., obs='pixels+state') "
                       "(or obs='state' without images)")
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise EnvError(f"unknown option(s) {', '.join(map(str, unknown))} for {name}; "
                       f"allowed: {', '.join(allowed) or 'none'}")
    if time_limit is None:
        time_limit = cls.default_time_limit
    return cls.from_task(domain, task, size=size, action_repeat=action_repeat, camera=camera, seed=seed,
                         time_limit=time_limit, fast_render=fast_render, obs=obs, **extra)
