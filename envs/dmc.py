"""Gymnasium wrapper around one dm_control suite task with pixel and/or state observations.

Observations (``obs`` argument): ``"pixels"`` (default) gives ``{"image": (H, W, 3) uint8}``, ``"state"`` gives
``{"state": (D,) float32}`` without any rendering (no GL context, no camera: the fast path for learning from
proprioception on a CPU), ``"pixels+state"`` gives both. ``state`` is DreamerV3's ``dmc_proprio`` observation:
dm_control's ``TimeStep.observation`` dict (e.g. ``position``, ``velocity``, ``orientations``, ``height``, ...,
in the task's own units: metres, radians, m/s, ...) with every entry flattened (scalars become length 1) and
concatenated in the dict's key order. ``D`` per task (measured), e.g.:

=====================  ===  ==========================================================
task                   D    entries (size)
=====================  ===  ==========================================================
``cartpole_swingup``   5    position (3: cart x, cos/sin pole angle), velocity (2)
``reacher_easy``       6    position (2), to_target (2), velocity (2)
``finger_spin``        9    position (4), velocity (3), touch (2)
``walker_stand``       24   orientations (14), height (1), velocity (9)
``walker_walk``        24   as walker_stand
``cheetah_run``        17   position (8), velocity (9)
=====================  ===  ==========================================================

Step units (used everywhere in this package):

* **env step** = one dm_control control step (``physics`` advanced by one
  ``control_timestep``). dm_control's standard episode is 1000 env steps.
  ``time_limit`` and ``info["env_steps"]`` count env steps; so should every
  training budget ("1M env steps").
* **agent step** = one call to :meth:`DMCEnv.step` = ``action_repeat`` env
  steps (fewer only for the last step of an episode, see ``time_limit``).
  With ``action_repeat=2`` a 1000-env-step episode is 500 agent steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from envs.base import ImageHook, MujocoEnv, RenderHook
from envs.compat import patch_dm_control
from envs.errors import EnvError
from envs.registry import default_camera, dmc_domains, dmc_task_names, parse_dmc_task
from envs.rendering import select_gl_backend
from envs.validation import check_int

__all__ = ["DMCEnv", "ImageHook", "RenderHook", "flatten_observation"]


def flatten_observation(observation: Any) -> np.ndarray:
    """dm_control ``TimeStep.observation`` (an ``OrderedDict`` of arrays) as one ``(D,) float32`` vector: every
    entry flattened (scalars become length 1), concatenated in the dict's key order (DreamerV3 ``dmc_proprio``)."""
    parts = [np.asarray(value, dtype=np.float32).ravel() for value in observation.values()]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class DMCEnv(MujocoEnv):
    """dm_control task with RGB image and/or state observations and actions in ``[-1, 1]``.

    The agent-facing behaviour (obs modes, action clipping, action repeat, time limit, ``info``, seeding,
    errors, hooks) is :class:`envs.base.BaseEnv`'s; this class only drives dm_control.

    Observation (``observation_space`` is a ``spaces.Dict`` with exactly these keys):

    * ``"image"``: ``(H, W, 3) uint8`` rendered from a fixed camera after every
      (re)set/step, when ``obs`` is ``"pixels"`` or ``"pixels+state"``;
    * ``"state"``: ``(D,) float32``, dm_control's physics observation dict
      flattened in key order (:func:`flatten_observation`; ``D`` per task in the
      module docstring), when ``obs`` is ``"state"`` or ``"pixels+state"``.

    With ``obs="state"`` nothing is rendered by ``reset``/``step`` and no GL
    context or camera is created (no OpenGL needed); :meth:`render` still works
    and creates the renderer on its first call.

    Action: ``(A,) float32`` in ``[-1, 1]``, clipped to
    that range and rescaled linearly to dm_control's action-spec bounds.

    Episode end (``time_limit`` counts **env steps**, not agent steps):

    * ``truncated=True`` once ``time_limit`` env steps have been taken in the
      episode (or dm_control itself ends the episode with a non-zero discount).
      If ``time_limit`` is not a multiple of ``action_repeat`` the last agent
      step repeats the action only for the remaining env steps, so episodes are
      always exactly ``time_limit`` env steps long.
    * ``terminated=True`` only if dm_control ends the episode with discount 0
      (never happens for the standard suite tasks).

    ``info`` (from both ``reset`` and ``step``): ``"discount"`` (float, dm_control's
    discount of the last env step; 1.0 at reset) and ``"env_steps"`` (int, env
    steps taken so far in this episode; 0 at reset).

    Seeding: ``reset(seed=s)`` reseeds the task's ``RandomState`` with ``s``, so the
    episode (initial state, images, rewards for a given action sequence) is
    bit-identical across runs and across env instances. ``seed`` in the
    constructor seeds the first episode the same way; ``reset()`` without a seed
    continues the env's random stream.

    Calling :meth:`step` before :meth:`reset` or after the episode ended raises
    ``RuntimeError``.

    Rendering hooks (used by visual shifts; both lists are empty by default, so
    frames are then exactly the plain render):

    * ``render_hooks``: :data:`RenderHook` callables ``hook(model, data, scene)``
      run after the scene update and before the GL render of every frame; they
      may edit the ``mujoco.MjvScene`` (camera, lights, extra geoms). They must
      not change ``model``/``data`` physics fields.
    * ``image_hooks``: :data:`ImageHook` callables ``hook(image) -> image`` run
      on every RGB frame (a fresh copy) in list order.

    :meth:`render_segmentation` renders the segmentation of the current frame
    (render hooks applied). ``physics.contexts`` is the GL context the frames
    are rendered in (e.g. to upload an edited texture with
    ``mujoco.mjr_uploadTexture``); reading it creates the GL context.

    Args:
        domain: dm_control domain, e.g. ``"walker"``, ``"ball_in_cup"``.
        task: dm_control task of that domain, e.g. ``"walk"``, ``"catch"``.
        size: image size in pixels, int ``s`` for ``(s, s)`` or ``(height, width)``.
            224 works (ViT encoders); sizes beyond the model's offscreen buffer
            (640x480 by default) grow the buffer automatically.
        action_repeat: env steps per agent step (>= 1). Rewards are summed.
        camera: camera id; ``None`` = DreamerV3 default (quadruped 2, else 0).
        seed: seed for the first episode (``None`` = OS entropy), in ``[0, 2**32)``.
        time_limit: episode length in **env steps** (>= 1); default 1000 as in
            dm_control (= 500 agent steps at ``action_repeat=2``).
        fast_render: cheaper headless rendering: no shadows, no reflections,
            no multisampling (``offsamples=0``), 512 px shadow map. About 10x
            faster on software EGL; images look slightly different (no
            shadows), so use the same setting for training and evaluation.
        obs: ``"pixels"``, ``"state"`` or ``"pixels+state"``: which of
            ``obs["image"]`` / ``obs["state"]`` are returned (see above).

    Raises:
        EnvError: unknown domain/task, invalid argument (e.g. ``obs`` not one of
            the three modes), camera id out of range, or no working OpenGL
            backend (message says what to install; only checked when pixels
            are asked for).
    """

    suite: ClassVar[str] = "dmc"
    has_state: ClassVar[bool] = True
    default_time_limit: ClassVar[int] = 1000

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        size: int | tuple[int, int] = 64,
        action_repeat: int = 2,
        camera: int | None = None,
        seed: int | None = None,
        time_limit: int = 1000,
        fast_render: bool = True,
        obs: str = "pixels",
    ) -> None:
        super().__init__(f"dmc:{domain}_{task}", size=size, action_repeat=action_repeat, time_limit=time_limit,
                         seed=seed, fast_render=fast_render, obs=obs)  # before the (slow) dm_control import
        self._env: Any = None
        domains = dmc_domains()
        if domain not in domains:
            raise EnvError(f"unknown dmc domain {domain!r}; known domains: {', '.join(domains)}")
        if task not in domains[domain]:
            raise EnvError(f"unknown task {task!r} for dmc domain {domain!r}; "
                           f"known tasks: {', '.join(domains[domain])}")
        self.domain = domain
        self.task = task
        if camera is not None:
            check_int("camera", camera, minimum=0)  # type errors before the slow load
        if self._pixels:
            select_gl_backend()  # raises EnvError if no headless backend works
        from dm_control import suite  # lazy: MUJOCO_GL must be set first

        patch_dm_control()
        # dm_control's own time limit is disabled; ``time_limit`` is ours.
        self._env = suite.load(domain, task, task_kwargs={"random": self._first_seed, "time_limit": float("inf")})
        self._timestep: Any = None
        try:
            self.camera = self.camera_id = self._resolve_camera(
                camera, default=default_camera(domain), count=self._env.physics.model.ncam)
        except EnvError:
            self.close()
            raise
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self._setup_spaces(env_dt=float(self._env.control_timestep()), state_dim=dim)

    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        return dmc_task_names()

    @classmethod
    def parse_task(cls, name: str, task: str) -> tuple[str, str]:
        return parse_dmc_task(name, task)

    @classmethod
    def from_task(cls, domain: str, task: str, **kwargs: Any) -> DMCEnv:
        return cls(domain, task, **kwargs)

    @property
    def physics(self) -> Any:
        """The live ``dm_control.mujoco.Physics`` (for visual-shift wrappers).

        If a wrapper reloads the model (new ``physics.model`` object), the
        renderer is rebuilt automatically at the next frame.
        """
        self._check_open()
        return self._env.physics

    # ------------------------------------------------------------ primitives
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        spec = self._env.action_spec()
        return (np.broadcast_to(np.asarray(spec.minimum, dtype=np.float64), spec.shape),
                np.broadcast_to(np.asarray(spec.maximum, dtype=np.float64), spec.shape))

    def _reset_sim(self, seed: int | None) -> None:
        if seed is not None:
            self._env.task.random.seed(seed)
        self._timestep = self._env.reset()

    def _step_sim(self, sim_action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        ts = self._timestep = self._env.step(sim_action)
        discount = 1.0 if ts.discount is None else float(ts.discount)
        last = ts.last()
        return float(ts.reward or 0.0), last and discount == 0.0, last and discount != 0.0, {"discount": discount}

    def _state_vector(self) -> np.ndarray:
        return flatten_observation(self._timestep.observation)

    def _close_sim(self) -> None:
        self._free_camera()
        if self._env is not None:
            self._env.physics.free()
            self._env = None
