"""Seeded env frames for the analyses, optionally with ground-truth foreground masks from MuJoCo segmentation.

Frames come from random-action rollouts (actions uniform in ``[-1, 1]`` from ``numpy.random.default_rng(seed)``,
episode ``i`` reset with seed ``seed + i``), one frame every ``stride`` agent steps starting at the reset frame,
so the same arguments always give the same pixels.

Foreground rule (the one :class:`shifts.scene.Background` uses): a pixel is foreground when the segmentation
render shows a model geom attached to a body other than MuJoCo's world body (body 0): the agent and the objects
it moves. The skybox, the floor and static scenery on the world body (e.g. cartpole's rails) are background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import envs
from envs.driver import Driver, Step
from envs.errors import ConfigError
from shifts.scene import foreground_mask as from_segmentation


@dataclass
class Frames:
    """Frames of one env.

    Attributes:
        env: env name (``suite:task``).
        images: ``(N, H, W, 3) uint8``.
        masks: ``(N, H, W) bool`` foreground masks, or ``None`` when segmentation was not asked for.
        episode: ``(N,) int`` episode index of each frame.
    """

    env: str
    images: np.ndarray
    masks: np.ndarray | None
    episode: np.ndarray


def _mujoco_model(env: Any) -> Any:
    """The raw ``mujoco.MjModel`` of a dm_control-style (``.physics``) or raw MuJoCo (``.model``) env."""
    physics = getattr(env, "physics", None)
    if physics is not None:
        return physics.model.ptr
    return getattr(env, "model", None)


def foreground_geoms(env: Any) -> np.ndarray:
    """``(ngeom,) bool``: geoms of bodies other than the world body (see the module docstring).

    Raises:
        ConfigError: ``env`` (unwrapped) is not a MuJoCo env.
    """
    model = _mujoco_model(env)
    if model is None or not hasattr(model, "geom_bodyid"):
        raise ConfigError(f"foreground masks need a MuJoCo env (dmc:, metaworld:), got {type(env).__name__}")
    return np.asarray(model.geom_bodyid) != 0


def foreground_mask(env: Any) -> np.ndarray:
    """``(H, W) bool`` foreground mask of the env's current frame (one extra segmentation render).

    Raises:
        ConfigError: the env cannot render segmentation (``render_segmentation``) or is not a MuJoCo env.
    """
    render = getattr(env, "render_segmentation", None)
    if not callable(render):
        raise ConfigError(f"ground-truth masks need an env with segmentation rendering (dmc:, metaworld:); "
                          f"{type(env).__name__} has none")
    return from_segmentation(render(), foreground_geoms(env))


def collect_frames(env_name: str, n: int, *, size: int = 64, seed: int = 0, stride: int = 5,
                   segmentation: bool = False, action_repeat: int = 2, camera: int | None = None) -> Frames:
    """``n`` frames of ``env_name`` from seeded random-action rollouts (see the module docstring).

    Args:
        env_name: e.g. ``dmc:walker_walk``.
        n: number of frames (>= 1).
        size: image side in pixels.
        stride: agent steps between kept frames (>= 1).
        segmentation: also render the foreground mask of every kept frame.

    Returns:
        :class:`Frames` with ``images`` ``(n, size, size, 3) uint8`` (and ``masks`` ``(n, size, size) bool``).

    Raises:
        ConfigError: ``n`` or ``stride`` < 1, or ``segmentation`` on an env without it.
        EnvError: unknown env.
    """
    if n < 1 or stride < 1:
        raise ConfigError(f"need at least one frame and stride >= 1, got frames={n}, stride={stride}")
    env = envs.make_env(env_name, size=size, seed=seed, action_repeat=action_repeat, camera=camera)
    images, masks, episodes = [], [], []
    episode = 0

    def keep(step: Step) -> None:  # before the env steps: the simulator shows this frame
        if step.t[0] % stride == 0:
            images.append(step.obs["image"][0])
            episodes.append(episode)
            if segmentation:
                masks.append(foreground_mask(env.unwrapped))

    # float64 actions: rng.uniform(-1, 1, A) per step, unrounded
    driver = Driver(env, rng=np.random.default_rng(seed), action_dtype=np.float64, on_step=[keep])
    try:
        while len(images) < n:
            driver.episode(seed + episode, until=lambda: len(images) >= n)
            episode += 1
    finally:
        driver.close()
    return Frames(env_name, np.stack(images), np.stack(masks) if segmentation else None,
                  np.asarray(episodes, dtype=np.int64))
