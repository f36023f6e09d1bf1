"""``make_env``: build a single environment from a ``"suite:task"`` name."""

from __future__ import annotations

from envs.dmc import DMCEnv
from envs.registry import parse_env_name

__all__ = ["make_env"]


def make_env(
    name: str,
    *,
    size: int | tuple[int, int] = 64,
    action_repeat: int = 2,
    camera: int | None = None,
    seed: int | None = None,
    time_limit: int = 1000,
    fast_render: bool = True,
) -> DMCEnv:
    """Create one pixel environment, e.g. ``make_env("dmc:walker_walk", seed=0)``.

    Args:
        name: ``"suite:task"``; see :func:`envs.list_envs`.
        size: image size in pixels, ``s`` or ``(height, width)``; obs["image"]
            is ``(H, W, 3) uint8``.
        action_repeat: env steps per agent step (>= 1); rewards are summed.
        camera: camera id, ``None`` for the DreamerV3 default of the domain.
        seed: seed of the first episode, ``None`` or an int in ``[0, 2**32)``.
        time_limit: episode length in **env steps** (>= 1), not agent steps.
        fast_render: cheaper rendering without shadows/reflections/MSAA.

    Returns:
        A gymnasium env (:class:`envs.DMCEnv`); see it for obs/action/info details.

    Raises:
        EnvError: unknown suite or task (message lists the allowed ones), invalid
            argument (message says what is allowed), or no working renderer.
    """
    suite, domain, task = parse_env_name(name)
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
    )
