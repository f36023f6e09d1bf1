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

import weakref
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.compat import patch_dm_control
from envs.errors import EnvError
from envs.registry import default_camera, dmc_domains
from envs.rendering import check_renders, select_gl_backend
from envs.validation import check_int, check_obs, check_seed, check_size

__all__ = ["DMCEnv", "ImageHook", "RenderHook", "flatten_observation"]

Obs = dict[str, np.ndarray]
#: ``hook(model, data, scene)`` with the raw ``mujoco.MjModel``, ``mujoco.MjData`` and ``mujoco.MjvScene``:
#: called after ``mjv_updateScene`` and before the GL render of every frame (RGB and segmentation).
RenderHook = Callable[[Any, Any, Any], None]
#: ``hook(image) -> image``: maps every rendered ``(H, W, 3) uint8`` RGB frame (in list order).
ImageHook = Callable[[np.ndarray], np.ndarray]

# Fast headless rendering settings (see DMCEnv ``fast_render``).
_FAST_SHADOWSIZE = 512
_FAST_OFFSAMPLES = 0


def flatten_observation(observation: Any) -> np.ndarray:
    """dm_control ``TimeStep.observation`` (an ``OrderedDict`` of arrays) as one ``(D,) float32`` vector: every
    entry flattened (scalars become length 1), concatenated in the dict's key order (DreamerV3 ``dmc_proprio``)."""
    parts = [np.asarray(value, dtype=np.float32).ravel() for value in observation.values()]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class DMCEnv(gymnasium.Env):
    """dm_control task with RGB image and/or state observations and actions in ``[-1, 1]``.

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

    # Replaced per instance in __init__ (render_fps depends on the task and action_repeat).
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012

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
        self._pixels, self._state = check_obs(obs)  # before the (slow) dm_control import
        self.obs = obs
        domains = dmc_domains()
        if domain not in domains:
            raise EnvError(
                f"unknown dmc domain {domain!r}; known domains: {', '.join(domains)}"
            )
        if task not in domains[domain]:
            raise EnvError(
                f"unknown task {task!r} for dmc domain {domain!r}; "
                f"known tasks: {', '.join(domains[domain])}"
            )
        self.domain = domain
        self.task = task
        self.size: tuple[int, int] = check_size(size)
        self.action_repeat = check_int("action_repeat", action_repeat, minimum=1)
        self.time_limit = check_int("time_limit", time_limit, minimum=1)
        seed = check_seed(seed)
        self.camera = (
            default_camera(domain)
            if camera is None
            else check_int("camera", camera, minimum=0)
        )
        if not isinstance(fast_render, bool):
            raise EnvError(f"fast_render must be a bool, got {fast_render!r}")
        self.fast_render = fast_render
        self.render_mode = "rgb_array"

        if self._pixels:
            select_gl_backend()  # raises EnvError if no headless backend works
        from dm_control import suite  # lazy: MUJOCO_GL must be set first

        patch_dm_control()

        self._camera: Any = None
        self._camera_model: Any = None
        self.render_hooks: list[RenderHook] = []
        self.image_hooks: list[ImageHook] = []
        # dm_control's own time limit is disabled; ``time_limit`` is ours.
        self._env: Any = suite.load(
            domain, task, task_kwargs={"random": seed, "time_limit": float("inf")}
        )
        ncam = self._env.physics.model.ncam
        if self.camera >= ncam:
            self.close()
            raise EnvError(
                f"camera {self.camera} out of range for dmc domain {domain!r}: "
                f"it has {ncam} cameras (ids 0..{ncam - 1})"
            )

        spec = self._env.action_spec()
        self._act_low = np.asarray(spec.minimum, dtype=np.float64)
        self._act_high = np.asarray(spec.maximum, dtype=np.float64)
        height, width = self.size
        self.action_space = spaces.Box(-1.0, 1.0, spec.shape, dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {}
        if self._pixels:
            obs_spaces["image"] = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        if self._state:
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        control_dt = float(self._env.control_timestep())
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": round(1.0 / (control_dt * self.action_repeat)),
        }

        self._env_steps = 0
        self._needs_reset = True
        if self._pixels:
            check_renders(self, f"dmc:{domain}_{task}")  # fail here, not at the first reset

    # ------------------------------------------------------------------ API
    @property
    def physics(self) -> Any:
        """The live ``dm_control.mujoco.Physics`` (for visual-shift wrappers).

        If a wrapper reloads the model (new ``physics.model`` object), the
        renderer is rebuilt automatically at the next frame.
        """
        return self._dm_env().physics

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        """Start a new episode.

        Args:
            seed: if given, reseed the task RNG so the episode is deterministic.
            options: unused (accepted for gymnasium compatibility).

        Returns:
            ``(obs, info)`` with ``obs["image"]`` ``(H, W, 3) uint8`` and/or
            ``obs["state"]`` ``(D,) float32`` (per ``obs``) and
            ``info == {"discount": 1.0, "env_steps": 0}``.

        Raises:
            EnvError: invalid ``seed``.
        """
        del options
        env = self._dm_env()
        seed = check_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            env.task.random.seed(seed)
        ts = env.reset()
        self._env_steps = 0
        self._needs_reset = False
        return self._obs(ts), {"discount": 1.0, "env_steps": 0}

    def step(self, action: Any) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for ``action_repeat`` env steps.

        Args:
            action: array-like of shape ``(A,)`` in ``[-1, 1]`` (clipped).

        Returns:
            ``(obs, reward, terminated, truncated, info)``: ``obs`` after the last
            env step (``"image"`` ``(H, W, 3) uint8`` and/or ``"state"``
            ``(D,) float32``, per ``obs``); ``reward`` is the sum of
            the dm_control rewards of the env steps taken (float; each in
            ``[0, 1]`` for the standard tasks); see the class doc for
            ``terminated``/``truncated`` and ``info``.

        Raises:
            ValueError: action has the wrong shape or contains NaN/inf.
            RuntimeError: called before ``reset()`` or after the episode ended.
        """
        env = self._dm_env()
        if self._needs_reset:
            raise RuntimeError(
                "step() called before reset() or after the episode ended; call reset() first"
            )
        act = np.asarray(action, dtype=np.float64)
        if act.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} for dmc:"
                f"{self.domain}_{self.task}, got shape {act.shape}"
            )
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action must be finite, got {act.tolist()}")
        act = np.clip(act, -1.0, 1.0)
        scaled = self._act_low + (act + 1.0) * 0.5 * (self._act_high - self._act_low)

        reward = 0.0
        discount = 1.0
        dm_last = False
        for _ in range(min(self.action_repeat, self.time_limit - self._env_steps)):
            ts = env.step(scaled)
            self._env_steps += 1
            reward += float(ts.reward or 0.0)
            discount = 1.0 if ts.discount is None else float(ts.discount)
            if ts.last():
                dm_last = True
                break
        terminated = dm_last and discount == 0.0
        truncated = not terminated and (dm_last or self._env_steps >= self.time_limit)
        self._needs_reset = terminated or truncated
        info = {"discount": discount, "env_steps": self._env_steps}
        return self._obs(ts), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """Render the current state: ``(H, W, 3) uint8`` (render_mode ``"rgb_array"``; image hooks applied).

        Also works with ``obs="state"``: the renderer (GL context, camera) is then created on the first call.
        """
        self._dm_env()
        return self._render_image()

    def render_segmentation(self) -> np.ndarray:
        """Segmentation of the current frame (render hooks applied, image hooks not).

        Returns:
            ``(H, W, 2) int32``: per pixel ``(object id, mujoco.mjtObj type)`` as
            dm_control's ``Camera.render(segmentation=True)``; model geoms are
            ``(geom id, mjOBJ_GEOM)``, the skybox/empty background ``(-1, -1)``.
            Costs one extra render.
        """
        self._dm_env()
        return np.ascontiguousarray(self._ensure_camera().render(segmentation=True))

    def close(self) -> None:
        """Free the renderer and the physics (GL context). Idempotent."""
        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
        env = getattr(self, "_env", None)
        if env is not None:
            env.physics.free()
            self._env = None

    # ------------------------------------------------------------ internals
    def _dm_env(self) -> Any:
        if self._env is None:
            raise RuntimeError("this DMCEnv is closed")
        return self._env

    def _obs(self, ts: Any) -> Obs:
        """The observation dict of dm_control TimeStep ``ts`` (renders only if pixels are asked for)."""
        obs: Obs = {}
        if self._pixels:
            obs["image"] = self._render_image()
        if self._state:
            obs["state"] = flatten_observation(ts.observation)
        return obs

    def _ensure_camera(self) -> Any:
        """Return a persistent ``dm_control`` Camera, (re)building it if needed."""
        physics = self._env.physics
        model = physics.model
        if self._camera is not None and self._camera_model is model:
            return self._camera
        import mujoco  # lazy: MUJOCO_GL must be set first
        from dm_control.mujoco import engine

        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
        height, width = self.size
        # These affect the GL context, so set them before it is created.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        if self.fast_render:
            model.vis.quality.shadowsize = _FAST_SHADOWSIZE
            model.vis.quality.offsamples = _FAST_OFFSAMPLES
        camera = engine.Camera(
            physics,
            height=height,
            width=width,
            camera_id=self.camera,
            scene_callback=_HookCaller(self),
        )
        if self.fast_render:
            camera.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            camera.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._camera = camera
        self._camera_model = model
        return camera

    def _render_image(self) -> np.ndarray:
        # Camera.render returns a flipped *view* of a reused buffer: copy it.
        image = np.ascontiguousarray(self._ensure_camera().render())
        for hook in self.image_hooks:
            image = hook(image)
        return image


class _HookCaller:
    """dm_control ``scene_callback`` running ``env.render_hooks``; holds the env weakly (no env <-> camera
    reference cycle, so an unclosed env is still freed promptly)."""

    def __init__(self, env: Any) -> None:
        self._env = weakref.ref(env)

    def __call__(self, physics: Any, scene: Any) -> None:
        env = self._env()
        if env is not None:
            for hook in env.render_hooks:
                hook(physics.model.ptr, physics.data.ptr, scene.ptr)
