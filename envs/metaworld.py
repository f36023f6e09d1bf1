"""Gymnasium wrapper around one Meta-World v3 MT1 task (``metaworld:<task>``) with pixel and/or state observations.

Observations (``obs`` argument, as :class:`envs.DMCEnv`): ``"pixels"`` (default) gives ``{"image": (H, W, 3)
uint8}``, ``"state"`` gives ``{"state": (39,) float32}`` (Meta-World's own observation vector) without any
rendering (no GL context, no camera), ``"pixels+state"`` gives both.

Needs the optional ``metaworld`` package (``pip install metaworld==3.1.1``; it pins mujoco 3.3.0). Nothing here
imports metaworld, mujoco or dm_control at module import time.

Step units as in :mod:`envs.dmc`: an **env step** is one Meta-World ``step`` (5 MuJoCo substeps of 2.5 ms =
12.5 ms simulated, 80 Hz); ``time_limit`` and ``info["env_steps"]`` count env steps; one **agent step** (one
:meth:`MetaWorldEnv.step` call) is ``action_repeat`` env steps. Meta-World's standard episode is 500 env steps
(= 250 agent steps at ``action_repeat=2``).

Goals (MT1): the MT1 benchmark defines 50 goal/object configurations ("tasks") per Meta-World env. The set used
here is ``metaworld.MT1(f"{task}-v3", seed=MT1_SEED).train_tasks``, generated once per process and task (~1-2 s)
and identical in every process, so training and evaluation envs share it. Every reset draws one of the 50 from
the env's seeded random stream: ``reset(seed=s)`` always gives the same goal (and bit-identical pixels for the
same actions), different seeds give different goals (distinct for most seed pairs: 50 goals), and ``reset()``
without a seed continues the stream, as :class:`envs.DMCEnv` does with its initial states. Given its goal an
episode is deterministic (Meta-World v3 adds no other reset noise). The goal index of the current episode is
:attr:`MetaWorldEnv.task_index`. ``goal=k`` pins MT1 goal ``k`` for every episode instead (a single-goal task).

Goal visibility: from ``corner2`` the goal marker of e.g. ``reach`` (a 2 cm site) covers only ~5 pixels at 64 px
(~1 at 32 px); ``corner4`` (the same view, moved closer) shows the table larger.

Rendering uses dm_control's ``engine.Camera`` on a ``dm_control.mujoco.Physics`` that *shares* Meta-World's
``mujoco.MjModel``/``mujoco.MjData`` (no copy), so the visual-shift API of :class:`envs.DMCEnv` works unchanged:
``physics`` (``physics.model.ptr is`` the Meta-World model, ``physics.contexts`` is the GL context of the frames),
``render_hooks``, ``image_hooks`` and :meth:`MetaWorldEnv.render_segmentation`.

Camera orientation: Meta-World's ``corner``/``corner2``/``corner3``/``corner4`` cameras are defined with their image
"up" pointing downward in the world, so their frames come out upside down. When the chosen camera is a fixed
world camera whose up vector points downward, it is rolled 180 degrees about its optical axis in the env's own
model (``cam_quat``), i.e. the image is rotated by 180 degrees (not mirrored). RGB, segmentation and every render
hook then see the same, right-side-up view.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from envs.base import MujocoEnv
from envs.errors import EnvError
from envs.registry import metaworld_available, metaworld_tasks, parse_metaworld_task
from envs.rendering import select_gl_backend
from envs.validation import check_int

__all__ = ["DEFAULT_CAMERA", "DEFAULT_TIME_LIMIT", "MT1_SEED", "MetaWorldEnv", "mt1_tasks"]

#: Camera used when ``camera=None``.
DEFAULT_CAMERA = "corner2"
#: Meta-World's episode length (``max_path_length``) in env steps.
DEFAULT_TIME_LIMIT = 500
#: Seed of the MT1 goal set (the same 50 goals in every process).
MT1_SEED = 0
#: Size of Meta-World's state observation (hand, gripper, objects, previous frame, goal).
STATE_DIM = 39


@functools.cache
def mt1_tasks(task: str) -> tuple[Any, ...]:
    """The 50 MT1 goal configurations (``metaworld.Task``) of a Meta-World ``task`` (no ``-v3``); cached."""
    import metaworld

    return tuple(metaworld.MT1(f"{task}-v3", seed=MT1_SEED).train_tasks)


class MetaWorldEnv(MujocoEnv):
    """Meta-World v3 MT1 task with RGB image and/or state observations and actions in ``[-1, 1]^4``.

    The agent-facing behaviour (obs modes, action clipping, action repeat, time limit, ``info``, seeding,
    errors, hooks) is :class:`envs.base.BaseEnv`'s; this class only drives Meta-World.

    Observation (``observation_space`` is a ``spaces.Dict`` with exactly these keys): ``"image": (H, W, 3)
    uint8`` rendered from a fixed camera after every (re)set/step when ``obs`` is ``"pixels"`` or
    ``"pixels+state"``; ``"state": (39,) float32`` when ``obs`` is ``"state"`` or ``"pixels+state"``: Meta-World's
    observation (metres; hand xyz (3), gripper opening (1), two objects' xyz + quaternion (14), the same 18 of the
    previous env step, goal xyz in the last 3 entries). With ``obs="state"`` ``reset``/``step`` render nothing and
    no GL context or camera is created; :meth:`render` still works (creates the renderer on its first call).
    Action: ``(4,) float32`` in ``[-1, 1]`` (clipped): end-effector xyz displacement (1 cm per
    env step at 1.0) and gripper effort, as Meta-World.

    Reward: the sum of Meta-World's rewards (its default ``reward_function_version="v2"``, each in ``[0, 10]``)
    over the env steps taken.

    Episode end (``time_limit`` counts **env steps**): ``truncated=True`` once ``time_limit`` env steps have been
    taken (the last agent step repeats the action only for the remaining env steps); ``terminated`` is always
    ``False`` (Meta-World never terminates, also not on success).

    ``info`` (from both ``reset`` and ``step``): ``"discount"`` (always 1.0), ``"env_steps"`` (int, env steps so
    far in this episode; 0 at reset) and ``"success"`` (float 0.0/1.0: 1.0 if Meta-World reported success on any
    env step of this agent step; 0.0 at reset).

    Seeding (see the module docstring): ``reset(seed=s)`` reseeds the goal stream, so the episode is
    bit-identical across runs and env instances; ``seed`` in the constructor seeds the first episode the same
    way; ``reset()`` without a seed continues the stream (next goal).

    Calling :meth:`step` before :meth:`reset` or after the episode ended raises ``RuntimeError``.

    Rendering hooks, :meth:`render_segmentation` and :attr:`physics`: as :class:`envs.DMCEnv`.

    Args:
        task: Meta-World MT1 task name without ``-v3``, e.g. ``"reach"``, ``"pick-place"`` (see
            :func:`envs.registry.metaworld_tasks`).
        size: image size in pixels, ``s`` or ``(height, width)``; sizes beyond the model's offscreen buffer
            (640x480) grow it automatically.
        action_repeat: env steps per agent step (>= 1); rewards are summed.
        camera: camera name or id; ``None`` = ``"corner2"``. Meta-World cameras: ``topview``, ``corner``,
            ``corner2``, ``corner3``, ``corner4``, ``behindGripper``, ``gripperPOV`` (ids 0-6).
        seed: seed of the first episode (``None`` = OS entropy), in ``[0, 2**32)``.
        time_limit: episode length in **env steps** (>= 1); default 500 as Meta-World.
        fast_render: no shadows, no reflections, no multisampling, 512 px shadow map (as :class:`envs.DMCEnv`).
            Meta-World's own settings (4096 px shadow map, 4x multisampling) render ~20x slower on software EGL.
        obs: ``"pixels"``, ``"state"`` or ``"pixels+state"`` (see above).
        goal: ``None`` (default): each episode's MT1 goal is drawn from the seeded stream; an int in
            ``[0, 50)``: always MT1 goal ``goal``.

    Raises:
        EnvError: metaworld not installed (message names the pip command), unknown task (message lists the
            tasks), invalid argument (e.g. ``obs`` not one of the three modes), unknown camera (message lists the
            cameras) or no working OpenGL backend (only checked when pixels are asked for).
    """

    suite: ClassVar[str] = "metaworld"
    has_state: ClassVar[bool] = True
    default_time_limit: ClassVar[int] = DEFAULT_TIME_LIMIT

    def __init__(
        self,
        task: str,
        *,
        size: int | tuple[int, int] = 64,
        action_repeat: int = 2,
        camera: int | str | None = None,
        seed: int | None = None,
        time_limit: int = DEFAULT_TIME_LIMIT,
        fast_render: bool = True,
        obs: str = "pixels",
        goal: int | None = None,
    ) -> None:
        super().__init__(f"metaworld:{task}", size=size, action_repeat=action_repeat, time_limit=time_limit,
                         seed=seed, fast_render=fast_render, obs=obs)
        self._mw: Any = None
        self._physics: Any = None
        tasks = metaworld_tasks()  # EnvError naming the pip command if metaworld is missing
        if task not in tasks:
            raise EnvError(f"unknown metaworld task {task!r}; known tasks: {', '.join(tasks)}")
        self.task = task
        if camera is not None and not isinstance(camera, str):
            check_int("camera", camera, minimum=0)
        if goal is not None:
            goal = check_int("goal", goal, minimum=0)
        self.goal = goal
        self.task_index = -1  # goal index (into mt1_tasks(task)) of the current episode

        if self._pixels:
            select_gl_backend()  # raises EnvError if no headless backend works
        from dm_control.mujoco import engine, wrapper  # lazy: MUJOCO_GL must be set first
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self._goals = mt1_tasks(task)
        if goal is not None and goal >= len(self._goals):
            raise EnvError(f"goal must be None or an MT1 goal index in [0, {len(self._goals)}), got {goal}")
        self._mw = ALL_V3_ENVIRONMENTS[f"{task}-v3"]()
        self._mw.max_path_length = self.time_limit  # Meta-World refuses to step past it
        self._mw.set_task(self._goals[0])  # goal-observable state, as MT1
        model, data = self._mw.model, self._mw.data
        names = [model.camera(i).name for i in range(model.ncam)]
        try:
            self.camera_id = self._resolve_camera(camera, default=DEFAULT_CAMERA, count=model.ncam, names=names)
        except EnvError:
            self.close()
            raise
        self.camera = names[self.camera_id]
        self.camera_rolled = _make_camera_upright(model, data, self.camera_id)
        # dm_control Physics sharing Meta-World's MjModel/MjData (wrapper.MjData wraps, does not copy)
        self._physics = engine.Physics(wrapper.MjData(data))
        assert self._physics.model.ptr is model and self._physics.data.ptr is data
        self._mw_state: Any = None
        self._setup_spaces(env_dt=float(self._mw.dt), state_dim=STATE_DIM)

    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        return metaworld_tasks() if metaworld_available() else ()

    @classmethod
    def parse_task(cls, name: str, task: str) -> tuple[str, str]:
        return "mt1", parse_metaworld_task(name, task)

    @property
    def physics(self) -> Any:
        """A ``dm_control.mujoco.Physics`` sharing Meta-World's model and data (for visual-shift wrappers):
        ``physics.model.ptr`` / ``physics.data.ptr`` are the live ``mujoco.MjModel`` / ``mujoco.MjData``,
        ``physics.contexts`` the GL context frames are rendered in. Do not step or reset it directly."""
        self._check_open()
        return self._physics

    @property
    def metaworld_env(self) -> Any:
        """The underlying Meta-World ``SawyerXYZEnv`` (e.g. for scripted policies); do not step it directly."""
        self._check_open()
        return self._mw

    # ------------------------------------------------------------ primitives
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(4), np.ones(4)

    def _sim_action(self, action: np.ndarray) -> np.ndarray:
        return action  # Meta-World's own action space is [-1, 1]^4

    def _reset_sim(self, seed: int | None) -> None:
        del seed  # np_random is already reseeded by BaseEnv.reset
        index = self.np_random.integers(len(self._goals))  # drawn even for a pinned goal: same stream
        self.task_index = int(index) if self.goal is None else self.goal
        self._mw.set_task(self._goals[self.task_index])
        self._mw_state, _ = self._mw.reset()

    def _step_sim(self, sim_action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        self._mw_state, reward, _, _, info = self._mw.step(sim_action)
        return float(reward), False, False, {"success": float(info["success"])}

    def _reset_info(self) -> dict[str, Any]:
        return {"success": 0.0}

    def _merge_step_info(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        return {"success": max([0.0] + [info["success"] for info in infos])}

    def _state_vector(self) -> np.ndarray:
        return self._mw_state

    def _close_sim(self) -> None:
        self._free_camera()
        if getattr(self, "_physics", None) is not None:
            self._physics.free()
            self._physics = None
        if getattr(self, "_mw", None) is not None:
            self._mw.close()
            self._mw = None


def _make_camera_upright(model: Any, data: Any, camera_id: int) -> bool:
    """Roll a fixed world camera whose image up vector points downward by 180 degrees about its optical axis
    (``cam_quat`` times the quaternion of 180 degrees about the camera z axis); returns whether it was rolled."""
    import mujoco

    fixed = int(model.cam_mode[camera_id]) == int(mujoco.mjtCamLight.mjCAMLIGHT_FIXED)
    up = np.asarray(data.cam_xmat[camera_id]).reshape(3, 3)[:, 1]  # camera y axis in the world
    if not (fixed and int(model.cam_bodyid[camera_id]) == 0 and up[2] < 0):
        return False
    quat = np.empty(4)
    mujoco.mju_mulQuat(quat, np.asarray(model.cam_quat[camera_id], np.float64), np.array([0.0, 0.0, 0.0, 1.0]))
    model.cam_quat[camera_id] = quat
    mujoco.mj_camlight(model, data)  # cam_xpos/cam_xmat from the (already computed) body poses
    return True
