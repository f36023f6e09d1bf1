"""Gymnasium environments (dm_control, Meta-World, CarRacing, CARLA) with pixel and/or state observations.

Public API::

    make_env(name, *, size=64, action_repeat=2, camera=None, seed=None,
             time_limit=None, fast_render=True, options=None, obs="pixels") -> gymnasium.Env
    make_vector_env(name, num_envs, *, asynchronous=None, seed=0, **env_kwargs)
        -> gymnasium.vector.VectorEnv            # SAME_STEP autoreset
    list_envs() -> list[str]                     # ["dmc:acrobot_swingup", ..., "metaworld:reach", ...]
    DMCEnv(domain, task, *, ...)                 # gymnasium.Env
    envs.metaworld.MetaWorldEnv(task, *, ...)    # gymnasium.Env (needs `pip install metaworld==3.1.1`)
    envs.driving.CarRacingEnv(*, ...)            # driving:carracing (`pip install "gymnasium[box2d]"`)
    envs.carla.CarlaEnv(town, *, ...)            # carla:<Town> (`pip install carla==0.9.16` + a server)
    envs.base.BaseEnv                            # the base class of all four
    EnvError                                     # ValueError subclass

Observations: a dict with ``"image"`` ``(H, W, 3) uint8`` for ``obs="pixels"``,
``"state"`` ``(D,) float32`` for ``obs="state"`` (no rendering at all; dmc and
metaworld only) and both for ``obs="pixels+state"``.

Units: ``time_limit`` and ``info["env_steps"]`` count **env steps** (dm_control
control steps, Meta-World steps); one agent step (one ``step()`` call) =
``action_repeat`` env steps.

Every env class is an :class:`envs.base.BaseEnv` subclass. The base owns the agent-facing contract: argument
checks, the spaces and the ``obs`` modes, action clipping to ``[-1, 1]`` and rescaling, action repeat with
summed rewards, the env-step time limit (the last agent step repeats only the remaining env steps; ``terminated``
only for real terminal states), ``info["discount"]``/``info["env_steps"]``, ``reset(seed=)`` seeding
(bit-identical episodes per seed, ``reset()`` continues the stream), the ``RuntimeError`` for ``step`` before
``reset``/after the end/after ``close``, and one render path: ``render_hooks`` (scene edits) then
``image_hooks`` (pixel edits) for observations and ``render()`` alike.

Adding a suite = one module with a ``BaseEnv`` subclass + one line in :data:`envs.registry.SUITE_CLASSES`
(``"suite": "envs.module:Class"``); :func:`make_env`, :func:`make_vector_env`, :func:`list_envs` and the
``options``/``obs``/``time_limit`` handling then work for it. The subclass calls
``super().__init__(name, size=, action_repeat=, time_limit=, seed=, fast_render=, obs=)``, builds its simulator
(camera via ``self._resolve_camera``), calls ``self._setup_spaces(env_dt=, state_dim=)``, and implements:

====================================  ==================================================================
``_action_bounds() -> (low, high)``   simulator action bounds (their shape is the action shape)
``_reset_sim(seed) -> None``          new episode; an int ``seed`` reseeds the simulator, ``None`` continues
``_step_sim(a)``                      one env step -> ``(reward, terminated, truncated, info)``; terminated:
                                      a real terminal state; truncated: the simulator cut the episode
                                      (the time limit is the base's); info: the suite's keys for this step
``_render_rgb() -> (H, W, 3) uint8``  fresh frame, ``render_hooks`` run at its scene stage (pixel suites)
``_state_vector() -> (D,)``           the state observation (``has_state`` suites)
``_close_sim() -> None``              free everything; idempotent
optional                              ``_sim_action`` (default: rescale to the bounds), ``_reset_info``,
                                      ``_merge_step_info`` (default: the last env step's), ``_prepare_renderer``
class attributes / classmethods       ``suite``, ``has_state``, ``default_time_limit``,
                                      ``supports_render_hooks``; ``task_names``, ``parse_task``, ``from_task``
====================================  ==================================================================

MuJoCo suites derive from :class:`envs.base.MujocoEnv` instead, which implements ``_render_rgb`` (a dm_control
Camera on ``self.physics``, ``render_hooks`` as ``hook(model, data, scene)``) and ``render_segmentation``.

Importing this package selects the headless OpenGL backend (sets
``MUJOCO_GL`` if unset, see :mod:`envs.rendering`). dm_control reads
``MUJOCO_GL`` only when it is first imported, so import ``envs`` before
anything that imports ``dm_control``. No module here imports dm_control,
metaworld or mujoco at import time.
"""

from __future__ import annotations

from envs.base import BaseEnv
from envs.dmc import DMCEnv
from envs.errors import EnvError
from envs.factory import make_env
from envs.registry import list_envs
from envs.rendering import select_gl_backend
from envs.vector import make_vector_env

__all__ = ["BaseEnv", "DMCEnv", "EnvError", "list_envs", "make_env", "make_vector_env"]

try:
    select_gl_backend()
except EnvError:
    # Importing must not fail on machines without GL (e.g. to list env names);
    # the cached error is raised again when an environment is created.
    pass
