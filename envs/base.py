"""The one env base class: everything the suites share, so that a suite implements only its simulator.

:class:`BaseEnv` (a ``gymnasium.Env``) owns the whole agent-facing contract:

* argument checks (``size``, ``action_repeat``, ``time_limit``, ``seed``, ``fast_render``, ``obs`` in the
  constructor; ``camera`` through :meth:`BaseEnv._resolve_camera`), all :class:`envs.EnvError`;
* the spaces: ``action_space`` ``Box(-1, 1, (A,), float32)`` and ``observation_space`` a ``spaces.Dict`` with
  ``"image"`` ``(H, W, 3) uint8`` and/or ``"state"`` ``(D,) float32`` per ``obs`` (``"pixels"``, ``"state"``,
  ``"pixels+state"``); ``obs="state"`` never renders;
* actions: checked (shape, finite; ``ValueError``), clipped to ``[-1, 1]`` and by default rescaled linearly to
  the simulator's bounds;
* action repeat with summed rewards and the env-step time limit: one :meth:`BaseEnv.step` is ``action_repeat``
  env steps, fewer only for the last agent step (it repeats the action for the remaining env steps, so episodes
  are exactly ``time_limit`` env steps unless they end earlier); ``terminated`` only for a real terminal state
  (``info["discount"] == 0``), ``truncated`` at the time limit (or when the simulator itself cuts the episode);
* ``info`` from ``reset`` and ``step``: ``"discount"`` (1.0; 0.0 on a terminating step), ``"env_steps"`` (env
  steps so far in the episode) plus the suite's own keys (e.g. Meta-World's ``"success"``);
* seeding: ``reset(seed=s)`` hands ``s`` to the simulator, so the episode is bit-identical across runs and
  instances; the constructor's ``seed`` seeds the first episode the same way; ``reset()`` continues the stream;
* ``step`` before ``reset`` or after the episode ended, and any use after :meth:`BaseEnv.close`:
  ``RuntimeError``;
* rendering: ``render_hooks`` (scene edits, run by the suite's renderer between its scene update and its draw)
  and ``image_hooks`` (``hook(image) -> image`` on every frame, in list order) through one path,
  :meth:`BaseEnv._render_frame`, used by observations and :meth:`BaseEnv.render` alike.

Primitives a suite implements (see :class:`BaseEnv` for the exact contracts): ``_action_bounds``,
``_reset_sim``, ``_step_sim``, ``_render_rgb`` (pixel suites), ``_state_vector`` (state suites), ``_close_sim``;
optionally ``_sim_action``, ``_reset_info``, ``_merge_step_info``, ``_prepare_renderer``; and, for the name
registry, the class attributes ``suite``/``has_state``/``default_time_limit`` and the classmethods
``task_names``/``parse_task``/``from_task``. :class:`MujocoEnv` adds the dm_control-Camera renderer shared by
the MuJoCo suites (``render_hooks`` are ``hook(model, data, scene)``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.errors import EnvError
from envs.rendering import check_renders
from envs.validation import check_int, check_obs, check_seed, check_size

__all__ = ["BaseEnv", "ImageHook", "MujocoEnv", "Obs", "RenderHook"]

Obs = dict[str, np.ndarray]
#: ``hook(model, data, scene)`` for :class:`MujocoEnv` suites: the raw ``mujoco.MjModel``, ``mujoco.MjData`` and
#: ``mujoco.MjvScene``, called after ``mjv_updateScene`` and before the GL render of every frame (RGB and
#: segmentation). Must not change physics fields.
RenderHook = Callable[..., None]
#: ``hook(image) -> image``: maps every rendered ``(H, W, 3) uint8`` RGB frame (a fresh copy), in list order.
ImageHook = Callable[[np.ndarray], np.ndarray]

# Fast headless MuJoCo rendering settings (``fast_render``).
_FAST_SHADOWSIZE = 512
_FAST_OFFSAMPLES = 0


class BaseEnv(gymnasium.Env):
    """Shared agent-facing behaviour of every suite (see the module docstring); subclasses supply a simulator.

    Subclass contract:

    * class attributes: ``suite`` (the name prefix, e.g. ``"dmc"``), ``has_state`` (whether ``obs["state"]``
      exists), ``default_time_limit`` (env steps; :func:`envs.make_env` uses it for ``time_limit=None``),
      ``supports_render_hooks`` (whether the renderer runs ``render_hooks``; if not, a non-empty list makes
      rendering raise ``EnvError`` instead of being ignored), ``action_doc`` (appended to the action shape in
      errors, e.g. ``" (steer, throttle_brake)"``);
    * ``__init__``: call ``super().__init__(env_name, size=..., action_repeat=..., time_limit=..., seed=...,
      fast_render=..., obs=...)`` first (validates them), build the simulator (camera via
      :meth:`_resolve_camera`), then call :meth:`_setup_spaces`;
    * ``_action_bounds() -> (low, high)``: the simulator's action bounds, float arrays of the action shape;
    * ``_sim_action(action) -> Any``: the clipped ``(A,) float64`` action in ``[-1, 1]`` as the simulator takes
      it (default: rescaled linearly to ``_action_bounds()``); computed once per agent step;
    * ``_reset_sim(seed) -> None``: start a new episode; ``seed`` (int) reseeds the simulator's random stream
      first, ``None`` continues it;
    * ``_step_sim(sim_action) -> (reward, terminated, truncated, info)``: one env step; ``terminated``: a real
      terminal state; ``truncated``: the simulator itself cut the episode (the time limit is the base's);
      ``info``: the suite's info keys for this env step (merged over the repeat by ``_merge_step_info``);
    * ``_render_rgb() -> (H, W, 3) uint8``: a fresh frame of the current state with ``render_hooks`` applied
      (suites with a scene stage run :meth:`_run_render_hooks` there), before ``image_hooks``;
    * ``_state_vector() -> (D,)``: the state observation of the current state (state suites only);
    * ``_close_sim() -> None``: free the simulator; idempotent, also after a failed ``__init__``;
    * optional: ``_reset_info()`` (suite info keys at reset, default none), ``_merge_step_info(infos)`` (one
      agent step's info from its env steps' infos, default the last), ``_prepare_renderer()`` (called at
      construction when pixels are asked for, to fail early).
    """

    suite: ClassVar[str] = ""
    has_state: ClassVar[bool] = False
    default_time_limit: ClassVar[int] = 1000
    supports_render_hooks: ClassVar[bool] = False
    action_doc: ClassVar[str] = ""
    # Replaced per instance in _setup_spaces (render_fps depends on the env step and action_repeat).
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012

    def __init__(
        self,
        env_name: str,
        *,
        size: int | tuple[int, int],
        action_repeat: int,
        time_limit: int,
        seed: int | None,
        fast_render: bool,
        obs: str,
    ) -> None:
        self._closed = False
        self.env_name = env_name
        self._pixels, self._state = check_obs(obs)
        if self._state and not self.has_state:
            raise EnvError(f"obs={obs!r} is not available for {env_name}: {type(self).__name__} has no state vector")
        self.obs = obs
        self.size: tuple[int, int] = check_size(size)
        self.action_repeat = check_int("action_repeat", action_repeat, minimum=1)
        self.time_limit = check_int("time_limit", time_limit, minimum=1)
        self._first_seed = check_seed(seed)
        if not isinstance(fast_render, bool):
            raise EnvError(f"fast_render must be a bool, got {fast_render!r}")
        self.fast_render = fast_render
        self.render_mode = "rgb_array"
        self.render_hooks: list[RenderHook] = []
        self.image_hooks: list[ImageHook] = []
        self._env_steps = 0
        self._needs_reset = True
        self._started = False

    # ------------------------------------------------------- name registry
    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        """The ``<task>`` parts of this suite's ``"<suite>:<task>"`` names (for :func:`envs.list_envs`); empty
        when the suite's optional package is missing."""
        return ()

    @classmethod
    def parse_task(cls, name: str, task: str) -> tuple[str, str]:
        """``(domain, task)`` of the full env name ``name`` whose part after ``:`` is ``task`` (as
        :func:`envs.registry.parse_env_name` returns them).

        Raises:
            EnvError: unknown task (the message lists the known ones).
        """
        tasks = cls.task_names()
        if task in tasks:
            return cls.suite, task
        raise EnvError(f"unknown env {name!r}; known {cls.suite} tasks: "
                       f"{', '.join(f'{cls.suite}:{t}' for t in tasks)}")

    @classmethod
    def from_task(cls, domain: str, task: str, **kwargs: Any) -> BaseEnv:
        """Build the env of parsed name ``(domain, task)`` (see :meth:`parse_task`); default ``cls(task, ...)``."""
        del domain
        return cls(task, **kwargs)  # type: ignore[call-arg]

    # ------------------------------------------------------ construction
    def _resolve_camera(self, camera: object, *, default: int | str, count: int,
                        names: Sequence[str] | None = None) -> int:
        """Camera id of ``camera`` (``None`` = ``default``; an int id, or a name when ``names`` are given).

        Raises:
            EnvError: not an int >= 0 (or a known name), or an id out of range (message lists the cameras).
        """
        if camera is None:
            camera = default
        if isinstance(camera, str) and names is not None:
            if camera not in names:
                raise EnvError(f"unknown camera {camera!r} for {self.env_name}; cameras: "
                               f"{', '.join(f'{n} ({i})' for i, n in enumerate(names))}")
            return list(names).index(camera)
        camera = check_int("camera", camera, minimum=0)
        if camera >= count:
            if count == 1:
                raise EnvError(f"camera must be None or 0 for {self.env_name} (one camera), got {camera!r}")
            listing = f": {', '.join(names)}" if names is not None else ""
            raise EnvError(f"camera {camera} out of range for {self.env_name}: it has {count} cameras "
                           f"(ids 0..{count - 1}{listing})")
        return camera

    def _setup_spaces(self, *, env_dt: float, state_dim: int | None = None) -> None:
        """Build ``action_space`` (from :meth:`_action_bounds`), ``observation_space`` (per ``obs``) and
        ``metadata`` (``env_dt``: seconds per env step), then prepare the renderer if pixels are asked for."""
        low, high = self._action_bounds()
        self._act_low = np.asarray(low, dtype=np.float64)
        self._act_high = np.asarray(high, dtype=np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, self._act_low.shape, dtype=np.float32)
        height, width = self.size
        obs_spaces: dict[str, spaces.Space] = {}
        if self._pixels:
            obs_spaces["image"] = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        if self._state:
            assert state_dim is not None, "a state suite must give state_dim"
            obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (state_dim,), dtype=np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": round(1.0 / (env_dt * self.action_repeat))}
        if self._pixels:
            self._prepare_renderer()

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Start a new episode.

        Args:
            seed: reseed the simulator's random stream first (the episode is then bit-identical across runs and
                instances); ``None``: the constructor's seed for the first episode, else continue the stream.
            options: unused (gymnasium compatibility).

        Returns:
            ``(obs, info)``: ``obs["image"]`` ``(H, W, 3) uint8`` and/or ``obs["state"]`` ``(D,) float32`` (per
            ``obs``); ``info`` has ``"discount": 1.0``, ``"env_steps": 0`` and the suite's keys.

        Raises:
            EnvError: invalid ``seed``.
            RuntimeError: the env is closed.
        """
        del options
        self._check_open()
        seed = check_seed(seed)
        if seed is None and not self._started:
            seed = self._first_seed
        super().reset(seed=seed)
        self._started = True
        self._needs_reset = True  # until the simulator reset succeeded
        self._reset_sim(seed)
        self._env_steps = 0
        self._needs_reset = False
        info = {"discount": 1.0, "env_steps": 0, **self._reset_info()}
        return self._observation(), info

    def step(self, action: Any) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for ``action_repeat`` env steps (fewer at the time limit or when the episode ends).

        Args:
            action: array-like ``(A,)`` in ``[-1, 1]`` (clipped).

        Returns:
            ``(obs, reward, terminated, truncated, info)``: ``obs`` after the last env step taken, ``reward`` the
            sum over those env steps; see the module docstring for the rest.

        Raises:
            ValueError: action of the wrong shape or not finite.
            RuntimeError: called before ``reset()``, after the episode ended, or after ``close()``.
        """
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset() first")
        act = np.asarray(action, dtype=np.float64)
        if act.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}{self.action_doc} for "
                             f"{self.env_name}, got shape {act.shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"action must be finite, got {act.tolist()}")
        sim_action = self._sim_action(np.clip(act, -1.0, 1.0))
        reward = 0.0
        terminated = cut = False
        infos: list[dict[str, Any]] = []
        for _ in range(min(self.action_repeat, self.time_limit - self._env_steps)):
            r, terminated, cut, info = self._step_sim(sim_action)
            self._env_steps += 1
            reward += float(r)
            infos.append(info)
            if terminated or cut:
                break
        terminated = bool(terminated)
        truncated = not terminated and (bool(cut) or self._env_steps >= self.time_limit)
        self._needs_reset = terminated or truncated
        info = {"discount": 0.0 if terminated else 1.0, "env_steps": self._env_steps,
                **self._merge_step_info(infos)}
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The current frame ``(H, W, 3) uint8`` (render_mode ``"rgb_array"``; render and image hooks applied);
        equal to the last ``obs["image"]``. Works with ``obs="state"`` too."""
        self._check_open()
        return self._render_frame()

    def close(self) -> None:
        """Free the simulator and the renderer. Idempotent."""
        self._closed = True
        self._close_sim()

    # ------------------------------------------------------- shared internals
    def _check_open(self) -> None:
        if getattr(self, "_closed", True):
            raise RuntimeError(f"this {type(self).__name__} is closed")

    def _observation(self) -> Obs:
        """The observation dict of the current state (renders only when pixels are asked for)."""
        obs: Obs = {}
        if self._pixels:
            obs["image"] = self._render_frame()
        if self._state:
            obs["state"] = np.asarray(self._state_vector(), dtype=np.float32)
        return obs

    def _render_frame(self) -> np.ndarray:
        """The one render path: the suite's frame (``render_hooks`` applied at its scene stage), then
        ``image_hooks`` in list order."""
        if self.render_hooks and not self.supports_render_hooks:
            raise EnvError(f"{self.env_name} has no scene render stage, so render_hooks cannot run; "
                           "use image_hooks (or the suite's own scene controls)")
        image = self._render_rgb()
        for hook in self.image_hooks:
            image = hook(image)
        return image

    def _run_render_hooks(self, *args: Any) -> None:
        """Run every ``render_hooks`` entry with the renderer's scene arguments (called by ``_render_rgb``)."""
        for hook in self.render_hooks:
            hook(*args)

    # ------------------------------------------------------------ primitives
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _sim_action(self, action: np.ndarray) -> Any:
        return self._act_low + (action + 1.0) * 0.5 * (self._act_high - self._act_low)

    def _reset_sim(self, seed: int | None) -> None:
        raise NotImplementedError

    def _step_sim(self, sim_action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        raise NotImplementedError

    def _render_rgb(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} renders no images")

    def _state_vector(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no state observation")

    def _close_sim(self) -> None:
        raise NotImplementedError

    def _reset_info(self) -> dict[str, Any]:
        return {}

    def _merge_step_info(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        return infos[-1]

    def _prepare_renderer(self) -> None:
        pass


class MujocoEnv(BaseEnv):
    """:class:`BaseEnv` rendering with a persistent dm_control ``engine.Camera`` on ``self.physics`` (a
    ``dm_control.mujoco.Physics``) from camera ``self.camera_id``; ``render_hooks`` are
    :data:`RenderHook` ``hook(model, data, scene)``.

    Subclasses provide the ``physics`` property and ``camera_id``, and free the camera in ``_close_sim`` with
    :meth:`_free_camera`. The camera is (re)built on first use and whenever ``physics.model`` is a new object
    (a wrapper reloaded the model). ``fast_render``: no shadows, no reflections, no multisampling, 512 px
    shadow map (~10x faster on software EGL; frames differ slightly, so train and evaluate alike).
    """

    supports_render_hooks: ClassVar[bool] = True
    camera_id: int
    _camera: Any = None
    _camera_model: Any = None

    @property
    def physics(self) -> Any:
        raise NotImplementedError

    def render_segmentation(self) -> np.ndarray:
        """Segmentation of the current frame (render hooks applied, image hooks not).

        Returns:
            ``(H, W, 2) int32``: per pixel ``(object id, mujoco.mjtObj type)`` as dm_control's
            ``Camera.render(segmentation=True)``; model geoms are ``(geom id, mjOBJ_GEOM)``, the skybox/empty
            background ``(-1, -1)``. Costs one extra render.
        """
        self._check_open()
        return np.ascontiguousarray(self._ensure_camera().render(segmentation=True))

    def _prepare_renderer(self) -> None:
        check_renders(self, self.env_name)  # fail at construction, not at the first reset

    def _render_rgb(self) -> np.ndarray:
        # Camera.render returns a flipped *view* of a reused buffer: copy it.
        return np.ascontiguousarray(self._ensure_camera().render())

    def _ensure_camera(self) -> Any:
        """Return the persistent ``dm_control`` Camera, (re)building it if needed."""
        physics = self.physics
        model = physics.model
        if self._camera is not None and self._camera_model is model:
            return self._camera
        import mujoco  # lazy: MUJOCO_GL must be set first
        from dm_control.mujoco import engine

        self._free_camera()
        height, width = self.size
        # These affect the GL context, so set them before it is created.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        if self.fast_render:
            model.vis.quality.shadowsize = _FAST_SHADOWSIZE
            model.vis.quality.offsamples = _FAST_OFFSAMPLES
        camera = engine.Camera(physics, height=height, width=width, camera_id=self.camera_id,
                               scene_callback=_SceneCallback(self))
        if self.fast_render:
            camera.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            camera.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._camera = camera
        self._camera_model = model
        return camera

    def _free_camera(self) -> None:
        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
            self._camera_model = None


class _SceneCallback:
    """dm_control ``scene_callback`` running the env's ``render_hooks`` as ``hook(model, data, scene)``; holds
    the env weakly (no env <-> camera reference cycle, so an unclosed env is still freed promptly)."""

    def __init__(self, env: BaseEnv) -> None:
        self._env = weakref.ref(env)

    def __call__(self, physics: Any, scene: Any) -> None:
        env = self._env()
        if env is not None:
            env._run_render_hooks(physics.model.ptr, physics.data.ptr, scene.ptr)
