"""``make_vector_env``: several seeded copies of one env as a gymnasium VectorEnv.

Autoreset convention: ``gymnasium.vector.AutoresetMode.SAME_STEP``
--------------------------------------------------------------------
For ``obs, reward, terminated, truncated, info = venv.step(actions)`` and each
sub-env ``i``:

* ``reward[i]``, ``terminated[i]``, ``truncated[i]`` always describe the
  transition just taken by sub-env ``i`` (``reward`` float64, flags bool,
  all shape ``(num_envs,)``).
* If ``terminated[i] or truncated[i]`` (the episode **ended on this step**), the
  sub-env has already been reset inside the same ``step`` call:

  - ``obs[key][i]`` is the **first observation of the new episode**;
  - the **last observation of the finished episode** is
    ``info["final_obs"][i]`` -- a dict with the same keys as one sub-env's
    observation (``{"image": (H, W, 3) uint8}`` for ``obs="pixels"``,
    ``{"state": (D,) float32}`` for ``obs="state"``, both for
    ``obs="pixels+state"``).
    ``info["final_obs"]`` is a numpy object array of length ``num_envs``
    (``None`` for sub-envs that did not finish; mask ``info["_final_obs"]``);
    the key is absent when no sub-env finished on this step;
  - the finished episode's step info is ``info["final_info"]`` (a dict of
    arrays: ``info["final_info"]["env_steps"][i]`` = episode length in env
    steps, ``info["final_info"]["discount"][i]``), while the top-level
    ``info["env_steps"][i]`` / ``info["discount"][i]`` are the reset info of
    the new episode (``0`` / ``1.0``).

* The next action given for sub-env ``i`` is applied to the new episode; there
  is no dummy/no-op step (unlike gymnasium's default ``NEXT_STEP`` mode).

So a training loop stores ``(obs_prev[i], action[i], reward[i], next_obs)`` with
``next_obs = info["final_obs"][i]`` if the episode ended else ``obs[i]``, and
treats ``obs[i]`` after an ended episode as the ``is_first`` observation.
Only ``terminated`` (never set by the standard dmc tasks) means "no bootstrap";
``truncated`` is a time-limit cut.

Seeding: sub-env ``i`` is constructed with seed ``seed + i``, so a plain
``venv.reset()`` already gives distinct, reproducible episodes.
``venv.reset(seed=s)`` reseeds sub-env ``i`` with ``s + i``.

Asynchronous mode uses ``multiprocessing`` with the ``"spawn"`` start method
(forking a process that holds an EGL context is unsafe). The workers inherit
``MUJOCO_GL`` from ``os.environ`` (set by :mod:`envs.rendering`), so they
render headlessly without probing again. As with any spawn-based
multiprocessing, scripts must create the vector env under
``if __name__ == "__main__":``. Always ``close()`` the vector env.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import gymnasium
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from envs.errors import EnvError
from envs.factory import make_env
from envs.registry import check_state_obs, parse_env_name
from envs.validation import MAX_SEED, check_int, check_obs, check_seed

__all__ = ["AUTORESET_MODE", "make_vector_env"]

#: Autoreset mode of every vector env built here (see module docstring).
AUTORESET_MODE = AutoresetMode.SAME_STEP

_MP_CONTEXT = "spawn"


def make_vector_env(
    name: str,
    num_envs: int,
    *,
    asynchronous: bool | None = None,
    seed: int | None = 0,
    **env_kwargs: Any,
) -> gymnasium.vector.VectorEnv:
    """Create ``num_envs`` copies of ``make_env(name, **env_kwargs)`` as one VectorEnv.

    Batched observation: ``obs["image"]`` is ``(num_envs, H, W, 3) uint8`` and/or
    ``obs["state"]`` ``(num_envs, D) float32`` (per ``obs``, see :func:`envs.make_env`);
    actions are ``(num_envs, A) float32`` in ``[-1, 1]``. Autoreset mode is
    ``SAME_STEP``; see the module docstring for exactly where the final
    observation and the episode boundaries are reported.

    Args:
        name: ``"suite:task"`` env name, see :func:`envs.list_envs`.
        num_envs: number of sub-envs (>= 1).
        asynchronous: ``None`` (default): one subprocess per sub-env
            (``AsyncVectorEnv``) when ``num_envs > 1``, else in-process
            (``SyncVectorEnv``); ``True``/``False`` force async/sync.
        seed: sub-env ``i`` gets seed ``seed + i``; ``None`` seeds every
            sub-env from OS entropy.
        **env_kwargs: forwarded to :func:`envs.make_env` (``size``,
            ``action_repeat``, ``camera``, ``time_limit``, ``fast_render``,
            ``options``, ``obs``: ``"pixels"`` (default), ``"state"`` or
            ``"pixels+state"``).

    Raises:
        EnvError: unknown env name, bad ``num_envs``/``seed``/``asynchronous``,
            an unknown keyword in ``env_kwargs``, a bad ``obs`` (checked before
            any sub-env is built), or an invalid env argument (checked by
            building the first sub-env in this process).
    """
    if "obs" in env_kwargs:
        check_obs(env_kwargs["obs"])  # the mode itself first: cheap, no simulator import
    parse_env_name(name)
    num_envs = check_int("num_envs", num_envs, minimum=1)
    if asynchronous is not None and not isinstance(asynchronous, bool):
        raise EnvError(
            f"asynchronous must be None, True or False, got {asynchronous!r}"
        )
    allowed = [
        p for p in inspect.signature(make_env).parameters if p not in ("name", "seed")
    ]
    unknown = sorted(set(env_kwargs) - set(allowed))
    if unknown:
        raise EnvError(
            f"unknown env keyword(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}, "
            "and seed/asynchronous for make_vector_env"
        )
    if "obs" in env_kwargs:
        check_state_obs(env_kwargs["obs"], name)  # a state mode for a suite without a state vector
    seed = check_seed(seed)
    if seed is not None and seed + num_envs - 1 > MAX_SEED:
        raise EnvError(
            f"seed + num_envs - 1 must be <= {MAX_SEED}, got seed={seed}, num_envs={num_envs}"
        )

    env_fns = [
        functools.partial(
            make_env, name, seed=None if seed is None else seed + i, **env_kwargs
        )
        for i in range(num_envs)
    ]
    use_async = num_envs > 1 if asynchronous is None else asynchronous
    if use_async:
        # AsyncVectorEnv builds env_fns[0]() in this process to read the spaces,
        # so invalid arguments raise EnvError here rather than in a worker.
        return AsyncVectorEnv(
            env_fns, context=_MP_CONTEXT, autoreset_mode=AUTORESET_MODE
        )
    return SyncVectorEnv(env_fns, autoreset_mode=AUTORESET_MODE)
