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
    EnvError                                     # ValueError subclass

Observations: a dict with ``"image"`` ``(H, W, 3) uint8`` for ``obs="pixels"``,
``"state"`` ``(D,) float32`` for ``obs="state"`` (no rendering at all; dmc and
metaworld only) and both for ``obs="pixels+state"``.

Units: ``time_limit`` and ``info["env_steps"]`` count **env steps** (dm_control
control steps, Meta-World steps); one agent step (one ``step()`` call) =
``action_repeat`` env steps.

Importing this package selects the headless OpenGL backend (sets
``MUJOCO_GL`` if unset, see :mod:`envs.rendering`). dm_control reads
``MUJOCO_GL`` only when it is first imported, so import ``envs`` before
anything that imports ``dm_control``. No module here imports dm_control,
metaworld or mujoco at import time.
"""

from __future__ import annotations

from envs.dmc import DMCEnv
from envs.errors import EnvError
from envs.factory import make_env
from envs.registry import list_envs
from envs.rendering import select_gl_backend
from envs.vector import make_vector_env

__all__ = ["DMCEnv", "EnvError", "list_envs", "make_env", "make_vector_env"]

try:
    select_gl_backend()
except EnvError:
    # Importing must not fail on machines without GL (e.g. to list env names);
    # the cached error is raised again when an environment is created.
    pass
