"""Server-free driving: gymnasium's Box2D ``CarRacing-v3`` as a pixel env (name ``driving:carracing``).

A :class:`envs.base.BaseEnv` like :class:`envs.DMCEnv` (constructor keywords ``size``, ``action_repeat``,
``camera``, ``seed``, ``time_limit``, ``fast_render``, ``obs`` (``"pixels"`` only); ``obs == {"image": (H, W,
3) uint8}``; ``info`` keys ``"discount"`` and ``"env_steps"``; ``image_hooks``), so the trainer, the vector env
and pixel-level shifts work unchanged.

Step units: one **env step** = one CarRacing physics step (1/50 s); one **agent step** = one
:meth:`CarRacingEnv.step` call = ``action_repeat`` env steps. ``time_limit`` (default 1000, CarRacing-v3's
standard episode) and ``info["env_steps"]`` count env steps.

Action: ``(2,) float32`` in ``[-1, 1]`` -- ``(steer, throttle_brake)``, the same layout as
:class:`envs.carla.CarlaEnv`: ``steer`` -1 = full left, +1 = full right; ``throttle_brake > 0`` is gas
(``gas = max(a, 0)``), ``< 0`` is brake (``brake = max(-a, 0)``), so gas and brake are never pressed
together. (CarRacing's own 3-D action ``(steer, gas, brake)`` is what this maps to.)

Reward: CarRacing's (``-0.1`` per env step, ``+1000/N`` per newly visited track tile, ``-100`` for leaving
the playfield), summed over the repeated env steps. ``terminated`` (``discount`` 0) when the lap is
completed or the car leaves the playfield; ``truncated`` at ``time_limit``.

Pixels: the 1000x800 CarRacing canvas (including the HUD bar at the bottom) is scaled straight to
``size`` with ``pygame.transform.smoothscale`` -- at ``size=96`` exactly CarRacing's 96x96 state, at
other sizes one resample (no 96 -> size double resampling). Only the frame returned to the agent is
rendered, once after the action repeat (CarRacing itself renders inside every physics step; that is
skipped), which roughly halves the cost at ``action_repeat=2`` without changing any pixel, and
polygons far off-screen are culled with one numpy test before CarRacing's own per-polygon Python test
(~3x faster; frames stay bit-identical to CarRacing's, which the tests check at size 96). This overrides
CarRacing's private ``_render``/``_render_road``/``_create_image_array`` (gymnasium 1.x).

Appearance (for graded visual shifts): :class:`Appearance` -- background/grass/road colours, global
brightness and RGB tint, camera zoom. ``env.appearance = Appearance(...)`` takes effect at the next
``reset()``; ``env.set_appearance(a, now=True)`` also applies it to the episode in progress (what a
scene-level shift whose ``on_reset`` runs after the reset needs). Appearance never changes physics or
reward. Zoom is per instance: CarRacing reads the module constants ``ZOOM`` and ``MAX_SHAPE_DIM`` at
render time, so :meth:`_CarRacing._render` sets both to the instance's values under a process-wide lock
and restores them in ``finally`` (safe for several envs in one process, threads included; other
processes have their own module).

Headless: the module sets ``SDL_VIDEODRIVER=dummy`` / ``SDL_AUDIODRIVER=dummy`` (if unset) before pygame
is imported (lazily, at the first env construction); no display or window is ever opened.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from typing import Any, ClassVar

import gymnasium
import numpy as np

from envs.base import BaseEnv
from envs.errors import EnvError
from envs.registry import DRIVING_TASKS

__all__ = ["DEFAULT_APPEARANCE", "Appearance", "CarRacingEnv"]

FPS = 50  # CarRacing physics steps per second
_INSTALL_HINT = 'install it with `pip install "gymnasium[box2d]"` (Box2D wheel + pygame-ce)'

# Module constants of gymnasium.envs.box2d.car_racing patched per render (see the module doc).
_RENDER_LOCK = threading.RLock()


def _rgb(name: str, value: Any, high: int) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in value)
        ok = len(rgb) == 3 and all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or not all(0 <= c <= high for c in rgb):
        raise EnvError(f"Appearance.{name} must be 3 integers in [0, {high}], got {value!r}")
    return rgb  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Appearance:
    """What the CarRacing camera sees; none of it touches physics or reward.

    Attributes:
        road_color: RGB of the road tiles, each channel in ``[0, 249]`` (CarRacing adds up to +5 per
            tile for its stripe pattern and pygame needs <= 255).
        bg_color: RGB of the field between the grass patches.
        grass_color: RGB of the grass patches (the checkerboard on the field).
        brightness: global gain on the rendered frame (>= 0; 1 = unchanged, < 1 darker).
        tint: per-channel RGB gain applied with ``brightness`` (>= 0 each; ``(1, 1, 1)`` = unchanged).
            The frame is ``clip(round(image * brightness * tint), 0, 255)`` (HUD included).
        zoom: camera zoom (CarRacing's ``ZOOM``, default 2.7; larger = closer), in ``(0, 20]``.

    Defaults are CarRacing-v3's non-randomised look, so ``Appearance()`` renders the standard frames.
    Use :func:`dataclasses.replace` to vary one field.

    Raises:
        EnvError: a field out of range.
    """

    road_color: tuple[int, int, int] = (102, 102, 102)
    bg_color: tuple[int, int, int] = (102, 204, 102)
    grass_color: tuple[int, int, int] = (102, 230, 102)
    brightness: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    zoom: float = 2.7

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("road_color", _rgb("road_color", self.road_color, 249))
        set_("bg_color", _rgb("bg_color", self.bg_color, 255))
        set_("grass_color", _rgb("grass_color", self.grass_color, 255))
        try:
            brightness = float(self.brightness)
            tint = tuple(float(t) for t in self.tint)
            zoom = float(self.zoom)
        except (TypeError, ValueError):
            raise EnvError(f"bad Appearance {self!r}: brightness/zoom must be numbers, tint 3 numbers") from None
        if not (math.isfinite(brightness) and brightness >= 0):
            raise EnvError(f"Appearance.brightness must be a finite number >= 0, got {self.brightness!r}")
        if len(tint) != 3 or not all(math.isfinite(t) and t >= 0 for t in tint):
            raise EnvError(f"Appearance.tint must be 3 finite numbers >= 0, got {self.tint!r}")
        if not (math.isfinite(zoom) and 0 < zoom <= 20):
            raise EnvError(f"Appearance.zoom must be a number in (0, 20], got {self.zoom!r}")
        set_("brightness", brightness)
        set_("tint", tint)
        set_("zoom", zoom)

    @property
    def gain(self) -> np.ndarray | None:
        """Per-channel gain ``brightness * tint`` as ``(3,) float32``, or ``None`` when it is exactly 1."""
        if self.brightness == 1.0 and self.tint == (1.0, 1.0, 1.0):
            return None
        return np.asarray(self.tint, dtype=np.float32) * np.float32(self.brightness)


DEFAULT_APPEARANCE = Appearance()


def _car_racing_module() -> Any:
    """Import ``gymnasium.envs.box2d.car_racing`` headlessly; EnvError naming the install if missing."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        from gymnasium.envs.box2d import car_racing
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        raise EnvError(f"driving:carracing needs Box2D and pygame ({exc}); {_INSTALL_HINT}") from exc
    return car_racing


@functools.lru_cache(maxsize=1)
def _car_racing_class() -> type:
    """The CarRacing subclass used here (built lazily: importing it imports Box2D and pygame)."""
    cr = _car_racing_module()
    base_dim = max(cr.GRASS_DIM, cr.TRACK_WIDTH, cr.TRACK_DETAIL_STEP) * math.sqrt(2) * cr.SCALE
    g = cr.GRASS_DIM  # the grass patches exactly as CarRacing._render_road builds them, in its order
    grass = [[(g * x + g, g * y + 0), (g * x + 0, g * y + 0), (g * x + 0, g * y + g), (g * x + g, g * y + g)]
             for x in range(-20, 20, 2) for y in range(-20, 20, 2)]
    grass_pts = np.asarray(grass, dtype=np.float64)

    class _CarRacing(cr.CarRacing):
        """CarRacing with a per-instance zoom and frame size, and rendering only on demand."""

        def __init__(self, frame_size: tuple[int, int], **kwargs: Any) -> None:
            self.frame_size = frame_size  # (width, height) for pygame
            self.zoom = cr.ZOOM
            self.render_frames = False  # CarRacing.step renders every physics step: skip unless asked
            super().__init__(render_mode=None, **kwargs)

        def _render(self, mode: str) -> Any:
            if mode == "state_pixels" and not self.render_frames:
                return None
            with _RENDER_LOCK:
                saved = cr.ZOOM, cr.MAX_SHAPE_DIM
                cr.ZOOM, cr.MAX_SHAPE_DIM = self.zoom, base_dim * self.zoom
                try:
                    return super()._render(mode)
                finally:
                    cr.ZOOM, cr.MAX_SHAPE_DIM = saved

        def _render_road(self, zoom: float, translation: Any, angle: float) -> None:
            """CarRacing's ``_render_road`` (same polygons, colours and order, drawn by its own
            ``_draw_colored_polygon``), but the ~90% of polygons far off-screen are dropped first by one
            vectorised test with a 2 px wider margin than CarRacing's own (so exactly the polygons it
            draws are drawn: the frames are identical, ~3x faster)."""
            bounds = cr.PLAYFIELD
            field = [(bounds, bounds), (bounds, -bounds), (-bounds, -bounds), (-bounds, bounds)]
            draw = self._draw_colored_polygon
            draw(self.surf, field, self.bg_color, zoom, translation, angle, clip=False)
            for k in np.flatnonzero(self._near_screen(grass_pts, zoom, translation, angle)):
                draw(self.surf, grass[k], self.grass_color, zoom, translation, angle)
            cache = getattr(self, "_road_cache", None)
            if cache is None or cache[0] is not self.road_poly or cache[1] != len(self.road_poly):
                pts = np.asarray([poly for poly, _ in self.road_poly], dtype=np.float64).reshape(-1, 4, 2)
                cache = self._road_cache = (self.road_poly, len(self.road_poly), pts)
            for k in np.flatnonzero(self._near_screen(cache[2], zoom, translation, angle)):
                poly, color = self.road_poly[k]
                draw(self.surf, [(p[0], p[1]) for p in poly], [int(c) for c in color], zoom, translation, angle)

        @staticmethod
        def _near_screen(pts: np.ndarray, zoom: float, translation: Any, angle: float) -> np.ndarray:
            """``(N,)`` bool: some vertex of polygon ``pts[i]`` (``(N, 4, 2)`` world coords) is within the
            window grown by ``MAX_SHAPE_DIM + 2`` px (CarRacing's clip test, conservatively)."""
            if len(pts) == 0:
                return np.zeros(0, dtype=bool)
            cos, sin = math.cos(angle), math.sin(angle)
            x = (pts[..., 0] * cos - pts[..., 1] * sin) * zoom + translation[0]
            y = (pts[..., 0] * sin + pts[..., 1] * cos) * zoom + translation[1]
            m = cr.MAX_SHAPE_DIM + 2.0
            inside = (x >= -m) & (x <= cr.WINDOW_W + m) & (y >= -m) & (y <= cr.WINDOW_H + m)
            return inside.any(axis=1)

        def _create_image_array(self, screen: Any, size: tuple[int, int]) -> np.ndarray:
            if tuple(size) == (cr.STATE_W, cr.STATE_H):
                size = self.frame_size
            return np.ascontiguousarray(super()._create_image_array(screen, size))

    return _CarRacing


class CarRacingEnv(BaseEnv):
    """gymnasium ``CarRacing-v3`` with ``{"image": (H, W, 3) uint8}`` observations and a 2-D action.

    The agent-facing behaviour (action clipping, action repeat, time limit, ``info`` basics, seeding, errors,
    ``image_hooks``) is :class:`envs.base.BaseEnv`'s; see the module docstring for units, the action mapping,
    reward, termination and appearance.

    ``info`` (reset and step): ``"discount"`` (1.0; 0.0 on the terminating step), ``"env_steps"`` (env
    steps in this episode), ``"tiles_visited"`` (int) and ``"lap_finished"`` (bool).

    Seeding: the track is generated from the episode seed: ``reset(seed=s)`` gives the same track,
    the same pixels and the same rewards for the same actions, across runs and instances (with the
    same appearance). ``seed`` in the constructor seeds the first episode; ``reset()`` without a seed
    continues the env's random stream.

    ``image_hooks``: ``hook(image) -> image`` callables run on every returned frame (after the
    appearance's brightness/tint), as in :class:`envs.DMCEnv`. ``render_hooks`` are not supported (2-D
    pygame drawing has no scene stage; rendering raises ``EnvError`` if any are installed): scene-level
    changes go through :attr:`appearance`.

    Args:
        size: image size, ``s`` or ``(height, width)``.
        action_repeat: env steps per agent step (>= 1); rewards are summed.
        camera: ``None`` or ``0`` (CarRacing has one top-down chase camera).
        seed: seed of the first episode (``None`` = OS entropy), in ``[0, 2**32)``.
        time_limit: episode length in env steps (>= 1); default 1000.
        fast_render: accepted for interface compatibility; no effect (rendering is 2-D pygame).
        obs: ``"pixels"`` only (CarRacing has no state vector).
        appearance: initial :class:`Appearance` (default: CarRacing's standard look).
        lap_complete_percent: fraction of tiles to visit before crossing the start ends the lap.

    Raises:
        EnvError: invalid argument, or Box2D/pygame missing (message names the pip install).
    """

    suite: ClassVar[str] = "driving"
    default_time_limit: ClassVar[int] = 1000
    action_doc: ClassVar[str] = " (steer, throttle_brake)"

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 64,
        action_repeat: int = 2,
        camera: int | None = None,
        seed: int | None = None,
        time_limit: int = 1000,
        fast_render: bool = True,
        obs: str = "pixels",
        appearance: Appearance | None = None,
        lap_complete_percent: float = 0.95,
    ) -> None:
        super().__init__("driving:carracing", size=size, action_repeat=action_repeat, time_limit=time_limit,
                         seed=seed, fast_render=fast_render, obs=obs)
        self._env: Any = None
        self.camera = self._resolve_camera(camera, default=0, count=1)
        appearance = DEFAULT_APPEARANCE if appearance is None else appearance
        if not isinstance(appearance, Appearance):
            raise EnvError(f"appearance must be an envs.driving.Appearance, got {type(appearance).__name__}")
        if not (isinstance(lap_complete_percent, (int, float)) and 0 < lap_complete_percent <= 1):
            raise EnvError(f"lap_complete_percent must be in (0, 1], got {lap_complete_percent!r}")
        height, width = self.size
        self._appearance = appearance  # applies from the next reset
        self._active = appearance  # what frames are drawn with now
        self._env = _car_racing_class()(
            (width, height), lap_complete_percent=float(lap_complete_percent), continuous=True
        )
        self._apply_appearance(appearance, live=False)
        self._setup_spaces(env_dt=1.0 / FPS)

    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        return DRIVING_TASKS

    @classmethod
    def parse_task(cls, name: str, task: str) -> tuple[str, str]:
        return "box2d", super().parse_task(name, task)[1]

    @classmethod
    def from_task(cls, domain: str, task: str, **kwargs: Any) -> CarRacingEnv:
        return cls(**kwargs)

    # ------------------------------------------------------------ appearance
    @property
    def appearance(self) -> Appearance:
        """The appearance of the next episode; assigning one takes effect at the next ``reset()``."""
        return self._appearance

    @appearance.setter
    def appearance(self, value: Appearance) -> None:
        self.set_appearance(value)

    @property
    def active_appearance(self) -> Appearance:
        """The appearance the current episode's frames are drawn with."""
        return self._active

    def set_appearance(self, appearance: Appearance, *, now: bool = False) -> None:
        """Set the appearance from the next reset on; with ``now=True`` also for the current episode
        (road tiles are recoloured in place; the next frame and :meth:`render` show it).

        Raises:
            EnvError: ``appearance`` is not an :class:`Appearance`.
        """
        if not isinstance(appearance, Appearance):
            raise EnvError(f"appearance must be an envs.driving.Appearance, got {type(appearance).__name__}")
        self._appearance = appearance
        if now:
            self._apply_appearance(appearance, live=self._started)

    def _apply_appearance(self, appearance: Appearance, *, live: bool) -> None:
        self._check_open()
        env = self._env
        old_road = np.asarray(env.road_color, dtype=np.float64)
        env.road_color = np.array(appearance.road_color)
        env.bg_color = np.array(appearance.bg_color)
        env.grass_color = np.array(appearance.grass_color)
        env.zoom = appearance.zoom
        if live and env.road:
            # Tile colours are baked at track creation (road_color + stripe offset) and shared with
            # road_poly; shift them by the colour difference, keeping each tile's offset.
            delta = env.road_color - old_road
            for tile in env.road:
                tile.color[:] = tile.color + delta
        self._active = appearance

    @property
    def car_racing(self) -> Any:
        """The underlying gymnasium ``CarRacing`` instance (for inspection; do not step it directly)."""
        self._check_open()
        return self._env

    # ------------------------------------------------------------ primitives
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(2), np.ones(2)

    def _sim_action(self, action: np.ndarray) -> np.ndarray:
        steer, pedal = action
        return np.array([steer, max(pedal, 0.0), max(-pedal, 0.0)], dtype=np.float64)  # (steer, gas, brake)

    def _reset_sim(self, seed: int | None) -> None:
        self._apply_appearance(self._appearance, live=False)
        self._env.reset(seed=seed)  # generates the track (from its np_random) and takes one no-action step

    def _step_sim(self, sim_action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        # CarRacing renders inside step unless render_frames: skipped, the obs frame is rendered once after
        _, reward, terminated, _, _ = self._env.step(sim_action)
        return float(reward), bool(terminated), False, self._track_info()

    def _reset_info(self) -> dict[str, Any]:
        return self._track_info()

    def _track_info(self) -> dict[str, Any]:
        env = self._env
        return {"tiles_visited": int(env.tile_visited_count),
                "lap_finished": bool(env.new_lap or env.tile_visited_count == len(env.track))}

    def _render_rgb(self) -> np.ndarray:
        """Render the current state as CarRacing's step does (its HUD score is drawn before the step's -0.1 is
        subtracted, so add it back while rendering), with the active brightness/tint."""
        if not self._started:
            raise RuntimeError("render() called before reset()")
        env = self._env
        env.render_frames = True
        saved = env.reward
        if self._env_steps > 0:
            env.reward = saved + 0.1
        try:
            image = env._render("state_pixels")
        finally:
            env.render_frames = False
            env.reward = saved
        gain = self._active.gain
        if gain is not None:
            image = np.clip(np.rint(image.astype(np.float32) * gain), 0, 255).astype(np.uint8)
        return image

    def _close_sim(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
