"""CARLA client env (names ``carla:<Town>``, e.g. ``carla:Town04``); needs a running CARLA 0.9.16 server.

A :class:`envs.base.BaseEnv` like :class:`envs.DMCEnv`: constructor keywords ``size``, ``action_repeat``,
``camera``, ``seed``, ``time_limit``, ``fast_render``, ``obs`` (``"pixels"`` only); ``obs == {"image": (H, W,
3) uint8}``; ``info`` has ``"discount"`` and ``"env_steps"``; ``image_hooks``.

Setup (the Python client is the PyPI wheel ``carla==0.9.16``, cp311 manylinux_2_31 x86_64; the server is
the CARLA 0.9.16 release, which needs a GPU)::

    ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000        # or, with docker:
    docker run --gpus all --net=host carlasim/carla:0.9.16 bash CarlaUE4.sh -RenderOffScreen

The server uses ``port`` and ``port + 1``. ``host``/``port`` default to ``$CARLA_HOST``/``$CARLA_PORT``
or ``localhost:2000``.

Simulation: synchronous mode with ``fixed_delta_seconds = 0.05`` (20 Hz); one **env step** = one
``world.tick()``; one agent step = ``action_repeat`` (default 2) env steps; ``time_limit`` (default
1000) counts env steps. Ego: ``vehicle.tesla.model3`` at a spawn point chosen by the episode's RNG;
sensors: a forward RGB camera (``size``, 60 degree FOV, 1.5 m ahead of the centre, 2.4 m up) and a
collision sensor. The world's original settings are restored and all actors destroyed on
:meth:`CarlaEnv.close` and when ``__init__``/``reset`` fail (``try``/``finally``).

Action: ``(2,) float32`` in ``[-1, 1]``: ``(steer, throttle_brake)``; ``throttle = max(a, 0)``,
``brake = max(-a, 0)``.

Reward (Jones et al. 2025), per env step (summed over the action repeat), :func:`carla_reward`::

    r = v * dt + throttle - 1e-4 * collision_intensity - |steer|,    dt = 0.05

with ``v`` the ego speed (m/s) after the tick and ``collision_intensity`` the summed ``|normal_impulse|``
of the collision events received since the previous tick.

Termination (:class:`TerminationTracker`, counts env steps): ``"stuck"`` when the speed is below
0.02 m/s at an env step that is a multiple of 100 (100, 200, ...); ``"collision"`` after 20 consecutive
colliding env steps. Both set ``terminated`` (``discount`` 0); ``time_limit`` sets ``truncated``.

Weather: :data:`WEATHER_PRESETS` (plain Python, no ``carla`` needed) and :func:`weather_parameters`;
``env.set_weather("hard_low_light")`` or ``env.set_weather({"fog_density": 50})`` (fields not given
keep CARLA's ``ClearNoon`` values).

Failures are one :class:`envs.EnvError` each, never a hang: missing ``carla`` package (names
``pip install carla==0.9.16``); nothing listening at ``host:port`` (TCP probe, fails at once, names the
address and how to start the server); a server that does not answer or stops answering (every RPC and
tick has ``timeout``; loading another town has ``load_timeout``).

Seeding: ``reset(seed=s)`` fixes the spawn point; CARLA's physics and rendering are not bit-exact
across runs, so only the episode set-up is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import socket
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from envs.base import BaseEnv
from envs.errors import EnvError
from envs.registry import CARLA_TOWNS
from envs.validation import check_int

__all__ = [
    "CARLA_PIN",
    "CLEAR_NOON",
    "DT",
    "PRESET_FIELDS",
    "WEATHER_PRESETS",
    "CarlaEnv",
    "TerminationTracker",
    "carla_reward",
    "start_hint",
    "weather_parameters",
]

#: The client package this env is written against.
CARLA_PIN = "carla==0.9.16"
#: Simulation step (``fixed_delta_seconds``), seconds.
DT = 0.05

#: Every ``carla.WeatherParameters`` field with its value in CARLA 0.9.16's ``ClearNoon`` preset.
CLEAR_NOON: dict[str, float] = {
    "cloudiness": 5.0,
    "precipitation": 0.0,
    "precipitation_deposits": 0.0,
    "wind_intensity": 10.0,
    "sun_azimuth_angle": -1.0,
    "sun_altitude_angle": 45.0,
    "fog_density": 2.0,
    "fog_distance": 0.75,
    "fog_falloff": 0.1,
    "wetness": 0.0,
    "scattering_intensity": 1.0,
    "mie_scattering_scale": 0.03,
    "rayleigh_scattering_scale": 0.0331,
    "dust_storm": 0.0,
}

#: Fields set by the presets, in the order of the preset tuples below.
PRESET_FIELDS: tuple[str, ...] = (
    "cloudiness",
    "precipitation",
    "precipitation_deposits",  # puddles
    "wind_intensity",
    "fog_density",
    "sun_altitude_angle",
)


def _preset(*values: float) -> dict[str, float]:
    return {k: float(v) for k, v in zip(PRESET_FIELDS, values, strict=True)}


#: Named weather conditions (Jones et al. 2025); every other field keeps its ``ClearNoon`` value.
WEATHER_PRESETS: dict[str, dict[str, float]] = {
    "default": {k: CLEAR_NOON[k] for k in PRESET_FIELDS},  # clear noon
    "soft_high_light": _preset(20, 0, 0, 0, 20, 10),
    "soft_noisy_low_light": _preset(80, 50, 50, 0, 30, 20),
    "hard_low_light": _preset(100, 0, 0, 0, 100, -90),
    "hard_noisy_low_light": _preset(100, 100, 100, 100, 100, -90),
}


def weather_parameters(weather: str | Mapping[str, float]) -> dict[str, float]:
    """Full ``carla.WeatherParameters`` keyword dict for a preset name or a dict of overrides.

    A name must be in :data:`WEATHER_PRESETS`; a dict may set any field of :data:`CLEAR_NOON` (the
    rest keep their ``ClearNoon`` values). ``carla.WeatherParameters(**weather_parameters(w))``.

    Raises:
        EnvError: unknown preset/field, or a value that is not a finite number.
    """
    if isinstance(weather, str):
        if weather not in WEATHER_PRESETS:
            raise EnvError(f"unknown weather preset {weather!r}; allowed: {', '.join(WEATHER_PRESETS)}")
        return {**CLEAR_NOON, **WEATHER_PRESETS[weather]}
    if not isinstance(weather, Mapping):
        raise EnvError(f"weather must be a preset name or a dict of WeatherParameters fields, got {weather!r}")
    unknown = sorted(set(weather) - set(CLEAR_NOON))
    if unknown:
        raise EnvError(f"unknown weather field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(CLEAR_NOON)}")
    out = dict(CLEAR_NOON)
    for key, value in weather.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EnvError(f"weather field {key!r} must be a finite number, got {value!r}")
        out[key] = float(value)
    return out


def carla_reward(speed: float, throttle: float, steer: float, collision_intensity: float, dt: float = DT) -> float:
    """Per-tick reward ``speed * dt + throttle - 1e-4 * collision_intensity - |steer|`` (Jones et al. 2025).

    Args:
        speed: ego speed in m/s after the tick.
        throttle: applied throttle in ``[0, 1]``.
        steer: applied steer in ``[-1, 1]``.
        collision_intensity: summed collision impulse magnitude (N*s) of the tick, >= 0.
        dt: tick length in seconds.
    """
    return float(speed) * dt + float(throttle) - 1e-4 * float(collision_intensity) - abs(float(steer))


@dataclasses.dataclass
class TerminationTracker:
    """Early-termination rules, fed once per env step (tick) with :meth:`update`.

    * ``"stuck"``: at env step ``n`` with ``n >= check_every`` and ``n % check_every == 0`` the speed is
      below ``stuck_speed`` (m/s);
    * ``"collision"``: ``max_collision_steps`` consecutive env steps with a collision.
    """

    stuck_speed: float = 0.02
    check_every: int = 100
    max_collision_steps: int = 20
    steps: int = 0
    collision_steps: int = 0

    def reset(self) -> None:
        """Start a new episode."""
        self.steps = 0
        self.collision_steps = 0

    def update(self, speed: float, colliding: bool) -> str | None:
        """Record one env step; returns ``"collision"``, ``"stuck"`` or ``None`` (keep going)."""
        self.steps += 1
        self.collision_steps = self.collision_steps + 1 if colliding else 0
        if self.collision_steps >= self.max_collision_steps:
            return "collision"
        if self.steps >= self.check_every and self.steps % self.check_every == 0 and speed < self.stuck_speed:
            return "stuck"
        return None


def start_hint(port: int) -> str:
    """How to start a CARLA server listening on ``port``."""
    return (f"start CARLA 0.9.16 first, e.g. `./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}` "
            f"(or `docker run --gpus all --net=host carlasim/carla:0.9.16 bash CarlaUE4.sh -RenderOffScreen "
            f"-carla-rpc-port={port}`), or pass host=/port= (env vars CARLA_HOST/CARLA_PORT)")


def _import_carla() -> Any:
    try:
        import carla
    except ImportError as exc:
        raise EnvError(f"the CARLA client is not installed ({exc}); `pip install {CARLA_PIN}` "
                       "(Python 3.8-3.12 wheels for x86_64 Linux/Windows)") from exc
    return carla


def _probe_tcp(host: str, port: int, timeout: float) -> None:
    """Fail fast (connection refused / unreachable) instead of waiting for the RPC timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EnvError(f"no CARLA server at {host}:{port} ({type(exc).__name__}: {exc}); {start_hint(port)}") from None


class CarlaEnv(BaseEnv):
    """Ego-vehicle driving in a CARLA town from a forward RGB camera (see the module docstring).

    The agent-facing behaviour (action clipping, action repeat, time limit, ``info`` basics, seeding, errors,
    ``image_hooks``) is :class:`envs.base.BaseEnv`'s; ``render_hooks`` are not supported (the server renders).

    ``info`` (reset and step): ``"discount"`` (0.0 on a terminating step, else 1.0), ``"env_steps"``,
    ``"speed"`` (m/s), ``"collision_intensity"`` (summed over the step) and ``"termination"``
    (``""``, ``"stuck"`` or ``"collision"``).

    Args:
        town: CARLA map, e.g. ``"Town04"`` (loaded if the server has another one).
        size: camera image size, ``s`` or ``(height, width)``; default 224.
        action_repeat: env steps (ticks) per agent step.
        camera: ``None`` or ``0`` (one forward camera).
        seed: seed of the first episode's spawn point.
        time_limit: episode length in env steps.
        fast_render: accepted for interface compatibility; no effect (render quality is a server flag,
            ``-quality-level=Low``).
        obs: ``"pixels"`` only (no state vector).
        host, port: server address; default ``$CARLA_HOST``/``$CARLA_PORT`` or ``localhost:2000``.
        timeout: seconds for connecting and for every RPC/tick before an EnvError.
        load_timeout: seconds for loading another town.
        weather: preset name or dict of fields, see :func:`weather_parameters`.
        fov: camera horizontal field of view in degrees.
        vehicle: ego vehicle blueprint id.

    Raises:
        EnvError: invalid argument, ``carla`` missing, no/unresponsive server, unknown blueprint.
    """

    suite: ClassVar[str] = "carla"
    default_time_limit: ClassVar[int] = 1000
    action_doc: ClassVar[str] = " (steer, throttle_brake)"

    def __init__(
        self,
        town: str = "Town04",
        *,
        size: int | tuple[int, int] = 224,
        action_repeat: int = 2,
        camera: int | None = None,
        seed: int | None = None,
        time_limit: int = 1000,
        fast_render: bool = True,
        obs: str = "pixels",
        host: str | None = None,
        port: int | None = None,
        timeout: float = 10.0,
        load_timeout: float = 120.0,
        weather: str | Mapping[str, float] = "default",
        fov: float = 60.0,
        vehicle: str = "vehicle.tesla.model3",
    ) -> None:
        self._world: Any = None
        self._actors: list[Any] = []
        self._original_settings: Any = None
        self.town = str(town)
        super().__init__(f"carla:{self.town}", size=size, action_repeat=action_repeat, time_limit=time_limit,
                         seed=seed, fast_render=fast_render, obs=obs)
        self.camera = self._resolve_camera(camera, default=0, count=1)
        self.host = os.environ.get("CARLA_HOST", "localhost") if host is None else str(host)
        env_port = os.environ.get("CARLA_PORT", "2000")
        try:
            port = int(env_port) if port is None else port
        except ValueError:
            raise EnvError(f"CARLA_PORT must be an integer, got {env_port!r}") from None
        self.port = check_int("port", port, minimum=1)
        if self.port > 65534:
            raise EnvError(f"port must be <= 65534 (CARLA also uses port + 1), got {self.port}")
        for name, value in (("timeout", timeout), ("load_timeout", load_timeout), ("fov", fov)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise EnvError(f"{name} must be a positive number, got {value!r}")
        self.timeout = float(timeout)
        self.load_timeout = float(load_timeout)
        self.fov = float(fov)
        self.vehicle_blueprint = str(vehicle)
        self._weather = weather_parameters(weather)
        self.tracker = TerminationTracker()
        self._images: queue.Queue[Any] = queue.Queue()
        self._collision_lock = threading.Lock()
        self._collision_sum = 0.0
        self._vehicle: Any = None
        self._last_image: np.ndarray | None = None
        self._pending_frame: int | None = None  # tick whose camera image is fetched at the next frame
        self._setup_spaces(env_dt=DT)

        self._carla = _import_carla()
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        return CARLA_TOWNS

    @classmethod
    def parse_task(cls, name: str, task: str) -> tuple[str, str]:
        if task in CARLA_TOWNS:
            return "town", task
        raise EnvError(f"unknown env {name!r}; known carla towns (need a running CARLA server): "
                       f"{', '.join(f'carla:{t}' for t in CARLA_TOWNS)}")

    # --------------------------------------------------------------- server
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _rpc_error(self, what: str, exc: BaseException) -> EnvError:
        return EnvError(f"CARLA server at {self.address} failed while {what} ({type(exc).__name__}: {exc}); "
                        f"is it running and reachable? {start_hint(self.port)}")

    def _connect(self) -> None:
        carla = self._carla
        _probe_tcp(self.host, self.port, min(self.timeout, 5.0))
        try:
            client = carla.Client(self.host, self.port)
            client.set_timeout(self.timeout)
            client.get_server_version()
            world = client.get_world()
            if world.get_map().name.split("/")[-1] not in (self.town, self.town + "_Opt"):
                client.set_timeout(self.load_timeout)
                world = client.load_world(self.town)
                client.set_timeout(self.timeout)
            self._client = client
            self._world = world
            self._original_settings = world.get_settings()
            settings = world.get_settings()
            settings.synchronous_mode = True
            settings.fixed_delta_seconds = DT
            world.apply_settings(settings)
            world.set_weather(carla.WeatherParameters(**self._weather))
            self._blueprints = world.get_blueprint_library()
        except RuntimeError as exc:
            raise self._rpc_error(f"connecting and loading {self.town}", exc) from exc

    def set_weather(self, weather: str | Mapping[str, float]) -> None:
        """Set the weather now (if connected) and for later episodes: a preset name or a dict of fields.

        Raises:
            EnvError: unknown preset/field or bad value (see :func:`weather_parameters`); lost server.
        """
        self._weather = weather_parameters(weather)
        if self._world is not None:
            try:
                self._world.set_weather(self._carla.WeatherParameters(**self._weather))
            except RuntimeError as exc:
                raise self._rpc_error("setting the weather", exc) from exc

    @property
    def weather(self) -> dict[str, float]:
        """The current weather as a full ``WeatherParameters`` keyword dict."""
        return dict(self._weather)

    # ------------------------------------------------------------ primitives
    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(2), np.ones(2)

    def _sim_action(self, action: np.ndarray) -> tuple[Any, float, float]:
        """``(VehicleControl, throttle, steer)`` (the last two for the reward)."""
        steer, pedal = (float(x) for x in action)
        throttle, brake = max(pedal, 0.0), max(-pedal, 0.0)
        return self._carla.VehicleControl(throttle=throttle, steer=steer, brake=brake), throttle, steer

    def _reset_sim(self, seed: int | None) -> None:
        """Respawn the ego vehicle and its sensors at a spawn point drawn from ``np_random`` (reseeded by
        :meth:`BaseEnv.reset`)."""
        del seed
        self._destroy_actors()
        try:
            self._spawn()
            frame = self._tick()
            self._last_image = self._image_for(frame)
            self._pending_frame = None
        except BaseException:
            self._destroy_actors()
            raise
        self._take_collisions()
        self.tracker.reset()

    def _step_sim(self, sim_action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        control, throttle, steer = sim_action
        try:
            self._vehicle.apply_control(control)
        except RuntimeError as exc:
            raise self._rpc_error("applying the control", exc) from exc
        self._pending_frame = self._tick()
        speed = self._speed()
        intensity = self._take_collisions()
        reason = self.tracker.update(speed, intensity > 0)
        info = {"speed": speed, "collision_intensity": intensity, "termination": reason or ""}
        return carla_reward(speed, throttle, steer, intensity), reason is not None, False, info

    def _reset_info(self) -> dict[str, Any]:
        return {"speed": self._speed(), "collision_intensity": 0.0, "termination": ""}

    def _merge_step_info(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        total = 0.0
        for info in infos:
            total += info["collision_intensity"]
        return {**infos[-1], "collision_intensity": total}

    def _render_rgb(self) -> np.ndarray:
        """The last camera frame (fetched from the sensor queue after a step)."""
        if self._pending_frame is not None:
            frame, self._pending_frame = self._pending_frame, None
            self._last_image = self._image_for(frame)
        if self._last_image is None:
            raise RuntimeError("render() called before reset()")
        return self._last_image.copy()

    def _close_sim(self) -> None:
        """Destroy the ego vehicle and sensors and restore the world's settings; never raises for a lost
        server."""
        try:
            self._destroy_actors()
        finally:
            world, settings = self._world, self._original_settings
            self._world = None
            self._original_settings = None
            if world is not None and settings is not None:
                try:
                    world.apply_settings(settings)
                except RuntimeError:
                    pass  # server gone: nothing to restore

    # ------------------------------------------------------------ internals
    def _spawn(self) -> None:
        carla, world = self._carla, self._world
        try:
            try:
                vehicle_bp = self._blueprints.find(self.vehicle_blueprint)
            except IndexError:
                raise EnvError(f"unknown CARLA vehicle blueprint {self.vehicle_blueprint!r}") from None
            if vehicle_bp.has_attribute("role_name"):
                vehicle_bp.set_attribute("role_name", "hero")
            points = world.get_map().get_spawn_points()
            if not points:
                raise EnvError(f"CARLA map {self.town} has no spawn points")
            vehicle = None
            for idx in self.np_random.permutation(len(points))[:50]:
                vehicle = world.try_spawn_actor(vehicle_bp, points[int(idx)])
                if vehicle is not None:
                    break
            if vehicle is None:
                raise EnvError(f"could not spawn {self.vehicle_blueprint} in {self.town}: every tried spawn point "
                               "is occupied")
            self._actors.append(vehicle)
            self._vehicle = vehicle
            height, width = self.size
            cam_bp = self._blueprints.find("sensor.camera.rgb")
            cam_bp.set_attribute("image_size_x", str(width))
            cam_bp.set_attribute("image_size_y", str(height))
            cam_bp.set_attribute("fov", str(self.fov))
            cam_bp.set_attribute("sensor_tick", "0.0")
            mount = carla.Transform(carla.Location(x=1.5, z=2.4))
            cam = world.spawn_actor(cam_bp, mount, attach_to=vehicle)
            self._actors.append(cam)
            self._images = queue.Queue()
            cam.listen(self._images.put)
            col = world.spawn_actor(self._blueprints.find("sensor.other.collision"), carla.Transform(),
                                    attach_to=vehicle)
            self._actors.append(col)
            col.listen(self._on_collision)
        except RuntimeError as exc:
            raise self._rpc_error("spawning the ego vehicle and sensors", exc) from exc

    def _destroy_actors(self) -> None:
        actors, self._actors = self._actors, []
        self._vehicle = None
        for actor in reversed(actors):  # sensors first, then the vehicle they are attached to
            try:
                if hasattr(actor, "stop") and getattr(actor, "is_listening", False):
                    actor.stop()
                actor.destroy()
            except RuntimeError:
                pass  # server gone: the actors went with it

    def _on_collision(self, event: Any) -> None:
        impulse = event.normal_impulse
        intensity = math.sqrt(impulse.x**2 + impulse.y**2 + impulse.z**2)
        with self._collision_lock:
            self._collision_sum += intensity

    def _take_collisions(self) -> float:
        with self._collision_lock:
            total, self._collision_sum = self._collision_sum, 0.0
        return total

    def _tick(self) -> int:
        try:
            return int(self._world.tick(self.timeout))
        except RuntimeError as exc:
            raise self._rpc_error("ticking the simulation", exc) from exc

    def _speed(self) -> float:
        try:
            v = self._vehicle.get_velocity()
        except RuntimeError as exc:
            raise self._rpc_error("reading the ego velocity", exc) from exc
        return math.sqrt(v.x**2 + v.y**2 + v.z**2)

    def _image_for(self, frame: int | None) -> np.ndarray:
        """The camera image of ``frame`` (older queued images are dropped)."""
        while True:
            try:
                image = self._images.get(timeout=self.timeout)
            except queue.Empty:
                raise EnvError(f"no camera image from the CARLA server at {self.address} within "
                               f"{self.timeout:g}s of frame {frame}") from None
            if frame is None or int(image.frame) >= frame:
                break
        bgra = np.frombuffer(image.raw_data, dtype=np.uint8).reshape(int(image.height), int(image.width), 4)
        return np.ascontiguousarray(bgra[:, :, 2::-1])

