"""Tests of the CARLA env (:mod:`envs.carla`) without a CARLA server: reward and termination rules, the
weather table, clear and fast errors (no server, silent server, no package), and the reset/step/close
actor life cycle against a small fake ``carla`` module."""

from __future__ import annotations

import socket
import sys
import time
import types

import numpy as np
import pytest

import envs
from envs import EnvError, list_envs, make_env
from envs.carla import (
    CLEAR_NOON,
    DT,
    PRESET_FIELDS,
    WEATHER_PRESETS,
    CarlaEnv,
    TerminationTracker,
    carla_reward,
    weather_parameters,
)


# ------------------------------------------------------------------ pure logic
def test_reward_hand_computed():
    assert DT == 0.05
    assert carla_reward(0.0, 0.0, 0.0, 0.0) == 0.0
    # 10 m/s for 0.05 s = 0.5 m, + throttle 0.6, - |steer| 0.5
    assert carla_reward(10.0, 0.6, -0.5, 0.0) == pytest.approx(0.6)
    # collision impulse 2000 N*s costs 0.2
    assert carla_reward(4.0, 1.0, 0.0, 2000.0) == pytest.approx(0.2 + 1.0 - 0.2)
    assert carla_reward(0.0, 0.0, 1.0, 0.0) == pytest.approx(-1.0)
    assert carla_reward(2.0, 0.0, 0.0, 0.0, dt=0.1) == pytest.approx(0.2)


def test_stuck_termination_checked_every_100_steps():
    t = TerminationTracker()
    for step in range(1, 100):
        assert t.update(0.0, False) is None, step  # slow before step 100 is fine
    assert t.update(0.01, False) == "stuck"  # step 100, speed < 0.02
    t.reset()
    for _ in range(99):
        t.update(0.0, False)
    assert t.update(0.02, False) is None  # step 100 at exactly 0.02 m/s: not stuck
    for _ in range(99):
        assert t.update(0.0, False) is None  # steps 101..199: not checked
    assert t.update(0.0, False) == "stuck"  # step 200


def test_collision_termination_needs_20_consecutive_steps():
    t = TerminationTracker()
    for _ in range(19):
        assert t.update(5.0, True) is None
    assert t.update(5.0, False) is None  # the streak breaks
    for _ in range(19):
        assert t.update(5.0, True) is None
    assert t.update(5.0, True) == "collision"
    t.reset()
    assert t.steps == 0 and t.collision_steps == 0


def test_weather_presets_table():
    assert PRESET_FIELDS == ("cloudiness", "precipitation", "precipitation_deposits", "wind_intensity",
                             "fog_density", "sun_altitude_angle")
    expected = {
        "soft_high_light": (20, 0, 0, 0, 20, 10),
        "soft_noisy_low_light": (80, 50, 50, 0, 30, 20),
        "hard_low_light": (100, 0, 0, 0, 100, -90),
        "hard_noisy_low_light": (100, 100, 100, 100, 100, -90),
    }
    assert list(WEATHER_PRESETS) == ["default", *expected]
    for name, values in expected.items():
        assert WEATHER_PRESETS[name] == dict(zip(PRESET_FIELDS, map(float, values), strict=True))
    # default = CARLA's ClearNoon
    assert weather_parameters("default") == CLEAR_NOON
    assert (CLEAR_NOON["cloudiness"], CLEAR_NOON["sun_altitude_angle"], CLEAR_NOON["fog_density"]) == (5, 45, 2)
    full = weather_parameters("hard_low_light")
    assert set(full) == set(CLEAR_NOON) and full["sun_altitude_angle"] == -90 and full["fog_distance"] == 0.75
    assert weather_parameters({"fog_density": 50}) == {**CLEAR_NOON, "fog_density": 50.0}
    with pytest.raises(EnvError, match="unknown weather preset 'foggy'; allowed: default, soft_high_light"):
        weather_parameters("foggy")
    with pytest.raises(EnvError, match="unknown weather field.*fog.*allowed: cloudiness"):
        weather_parameters({"fog": 1})
    with pytest.raises(EnvError, match="finite number"):
        weather_parameters({"fog_density": "dense"})


def test_weather_matches_the_carla_package():
    carla = pytest.importorskip("carla")
    noon = carla.WeatherParameters.ClearNoon
    for key, value in CLEAR_NOON.items():
        assert getattr(noon, key) == pytest.approx(value, abs=1e-6), key
    w = carla.WeatherParameters(**weather_parameters("hard_noisy_low_light"))
    assert (w.precipitation_deposits, w.wind_intensity, w.sun_altitude_angle) == (100, 100, -90)


def test_registry_names():
    names = list_envs()
    for town in ("Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD"):
        assert f"carla:{town}" in names
    assert envs.registry.parse_env_name("carla:Town10HD") == ("carla", "town", "Town10HD")
    with pytest.raises(EnvError, match="known carla towns.*carla:Town01.*carla:Town10HD"):
        make_env("carla:Town99")
    with pytest.raises(EnvError, match="known suites: .*carla"):
        make_env("carlaa:Town01")


# ------------------------------------------------------------ error paths
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_one_clear_fast_error():
    pytest.importorskip("carla")
    port = free_port()
    start = time.monotonic()
    with pytest.raises(EnvError) as err:
        make_env("carla:Town04", options={"host": "localhost", "port": port})
    assert time.monotonic() - start < 15
    msg = str(err.value)
    assert f"localhost:{port}" in msg and f"CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}" in msg
    assert "\n" not in msg


def test_silent_server_times_out_with_a_clear_error():
    pytest.importorskip("carla")
    with socket.socket() as srv:  # accepts TCP connections, never answers an RPC
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(EnvError, match=f"127.0.0.1:{port} failed while connecting.*CarlaUE4.sh"):
            CarlaEnv("Town04", host="127.0.0.1", port=port, timeout=1.0)
        assert time.monotonic() - start < 10


def test_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", None)  # makes `import carla` raise ImportError
    with pytest.raises(EnvError, match=r"pip install carla==0\.9\.16"):
        make_env("carla:Town01")


def test_argument_errors():
    with pytest.raises(EnvError, match="camera must be None or 0"):
        CarlaEnv(camera=1)
    with pytest.raises(EnvError, match="timeout must be a positive number"):
        CarlaEnv(timeout=0)
    with pytest.raises(EnvError, match="port must be"):
        CarlaEnv(port=70000)
    with pytest.raises(EnvError, match="unknown weather preset"):
        CarlaEnv(weather="sunny")
    with pytest.raises(EnvError, match="unknown option.*colour.*allowed: host, port"):
        make_env("carla:Town01", options={"colour": 1})


# ------------------------------------------------------- fake carla server
class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Actor:
    def __init__(self, world, type_id, attrs, parent=None):
        self.world, self.type_id, self.attrs, self.parent = world, type_id, attrs, parent
        self.callback = None
        self.destroyed = False
        self.controls = []

    @property
    def is_listening(self):
        return self.callback is not None

    def listen(self, callback):
        self.callback = callback

    def stop(self):
        self.callback = None

    def destroy(self):
        self.destroyed = True
        self.callback = None
        return True

    def apply_control(self, control):
        self.controls.append(control)

    def get_velocity(self):
        return _Obj(x=self.world.speed * 0.6, y=self.world.speed * 0.8, z=0.0)


class _Blueprint:
    def __init__(self, bp_id):
        self.id, self.attrs = bp_id, {}

    def has_attribute(self, key):
        return key == "role_name" or key.startswith("image_size") or key in ("fov", "sensor_tick")

    def set_attribute(self, key, value):
        self.attrs[key] = value


class _World:
    def __init__(self, town):
        self.town = town
        self.settings = _Obj(synchronous_mode=False, fixed_delta_seconds=None)
        self.weather = None
        self.actors = []
        self.frame = 100
        self.speed = 10.0
        self.collision = 0.0  # impulse per tick
        self.fail_tick = False
        self.fail_spawn = None  # type_id whose spawn raises RuntimeError

    def get_map(self):
        return _Obj(name=f"Carla/Maps/{self.town}",
                    get_spawn_points=lambda: [_Obj(i=i) for i in range(5)])

    def get_settings(self):
        return _Obj(**vars(self.settings))

    def apply_settings(self, settings):
        self.settings = _Obj(**vars(settings))

    def set_weather(self, weather):
        self.weather = weather

    def get_blueprint_library(self):
        def find(bp_id):
            if not (bp_id.startswith("vehicle.") or bp_id.startswith("sensor.")) or bp_id == "vehicle.nope":
                raise IndexError(f"blueprint {bp_id!r} not found")
            return _Blueprint(bp_id)
        return _Obj(find=find)

    def try_spawn_actor(self, bp, transform):
        return self.spawn_actor(bp, transform) if transform.i >= 2 else None  # points 0, 1 occupied

    def spawn_actor(self, bp, transform, attach_to=None):
        if bp.id == self.fail_spawn:
            raise RuntimeError("spawn failed")
        actor = _Actor(self, bp.id, dict(bp.attrs), attach_to)
        actor.transform = transform
        self.actors.append(actor)
        return actor

    def live(self):
        return [a for a in self.actors if not a.destroyed]

    def tick(self, seconds=10.0):
        if self.fail_tick:
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the simulator")
        self.frame += 1
        for actor in self.live():
            if actor.callback is None:
                continue
            if actor.type_id == "sensor.camera.rgb":
                h, w = int(actor.attrs["image_size_y"]), int(actor.attrs["image_size_x"])
                bgra = np.zeros((h, w, 4), np.uint8)
                bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, self.frame % 256, 255
                actor.callback(_Obj(frame=self.frame, width=w, height=h, raw_data=bgra.tobytes()))
            elif actor.type_id == "sensor.other.collision" and self.collision:
                actor.callback(_Obj(frame=self.frame, normal_impulse=_Obj(x=0.0, y=self.collision, z=0.0)))
        return self.frame


@pytest.fixture
def fake(monkeypatch):
    """A fake ``carla`` module whose server holds one world (Town01 loaded at start)."""
    mod = types.ModuleType("carla")
    mod.server = _Obj(world=_World("Town01"), loads=[], timeouts=[])

    class Client:
        def __init__(self, host, port):
            self.host, self.port = host, port

        def set_timeout(self, seconds):
            mod.server.timeouts.append(seconds)

        def get_server_version(self):
            return "0.9.16"

        def get_world(self):
            return mod.server.world

        def load_world(self, town):
            mod.server.loads.append(town)
            mod.server.world = _World(town)
            return mod.server.world

    mod.Client = Client
    mod.Location = lambda **kw: _Obj(**kw)
    mod.Transform = lambda *a: _Obj(args=a)
    mod.VehicleControl = lambda **kw: _Obj(**kw)
    mod.WeatherParameters = lambda **kw: _Obj(**kw)
    monkeypatch.setitem(sys.modules, "carla", mod)
    with socket.socket() as srv:  # something must accept the TCP probe
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        mod.port = srv.getsockname()[1]
        yield mod


def make_fake_env(fake, **kw) -> CarlaEnv:
    return make_env("carla:Town04", size=kw.pop("size", 16), seed=kw.pop("seed", 0),
                    time_limit=kw.pop("time_limit", 1000),
                    options={"host": "127.0.0.1", "port": fake.port, **kw})


def test_fake_server_episode(fake):
    env = make_fake_env(fake, weather="soft_high_light")
    world = fake.server.world
    try:
        assert fake.server.loads == ["Town04"]  # Town01 was loaded: switched
        assert world.settings.synchronous_mode is True and world.settings.fixed_delta_seconds == 0.05
        assert vars(world.weather) == weather_parameters("soft_high_light")
        obs, info = env.reset()
        assert obs["image"].shape == (16, 16, 3) and obs["image"].dtype == np.uint8
        np.testing.assert_array_equal(obs["image"][0, 0], [world.frame % 256, 20, 10])  # BGRA -> RGB
        assert info == {"discount": 1.0, "env_steps": 0, "speed": pytest.approx(10.0),
                        "collision_intensity": 0.0, "termination": ""}
        types_ = sorted(a.type_id for a in world.live())
        assert types_ == ["sensor.camera.rgb", "sensor.other.collision", "vehicle.tesla.model3"]
        cam = next(a for a in world.live() if a.type_id == "sensor.camera.rgb")
        assert cam.attrs == {"image_size_x": "16", "image_size_y": "16", "fov": "60.0", "sensor_tick": "0.0"}
        vehicle = cam.parent
        assert vehicle.attrs["role_name"] == "hero" and vehicle.transform.i >= 2

        obs, reward, term, trunc, info = env.step(np.array([0.5, 0.6]))
        assert reward == pytest.approx(2 * (10.0 * 0.05 + 0.6 - 0.5))
        assert not term and not trunc and info["env_steps"] == 2
        assert vars(vehicle.controls[-1]) == {"throttle": 0.6, "steer": 0.5, "brake": 0.0}
        np.testing.assert_array_equal(obs["image"][0, 0], [world.frame % 256, 20, 10])  # the last tick's image
        env.step(np.array([-2.0, -0.4]))  # clipped steer
        assert vars(vehicle.controls[-1]) == {"throttle": 0.0, "steer": -1.0, "brake": 0.4}

        env.set_weather({"fog_density": 80})
        assert world.weather.fog_density == 80.0 and env.weather["fog_density"] == 80.0

        env.reset(seed=3)  # respawn: the old actors are gone
        assert len(world.live()) == 3 and vehicle.destroyed
    finally:
        env.close()
    assert world.live() == [] and world.settings.synchronous_mode is False
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_fake_server_stuck_collision_and_time_limit(fake):
    env = make_fake_env(fake)
    world = fake.server.world
    try:
        world.speed = 0.0
        env.reset()
        agent_steps = 0
        for agent_steps in range(1, 51):  # noqa: B007 (read after the loop)
            _, _, term, trunc, info = env.step(np.array([0.0, 0.0]))
            if term:
                break
        assert agent_steps == 50 and info["env_steps"] == 100 and info["termination"] == "stuck"
        assert info["discount"] == 0.0 and not trunc
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2))

        world.speed, world.collision = 5.0, 3000.0
        env.reset()
        for agent_steps in range(1, 11):  # noqa: B007 (read after the loop)
            _, reward, term, _, info = env.step(np.array([0.0, 1.0]))
            if term:
                break
        assert agent_steps == 10 and info["termination"] == "collision" and info["env_steps"] == 20
        assert reward == pytest.approx(2 * (5.0 * 0.05 + 1.0 - 0.3))
        assert info["collision_intensity"] == pytest.approx(6000.0)
    finally:
        env.close()

    env = make_fake_env(fake, time_limit=5)
    world = fake.server.world
    try:
        world.collision = 0.0
        env.reset()
        lengths = [env.step(np.zeros(2))[4]["env_steps"] for _ in range(3)]
        assert lengths == [2, 4, 5]
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2))
    finally:
        env.close()


def test_fake_server_failures_clean_up(fake):
    env = make_fake_env(fake)
    world = fake.server.world
    try:
        world.fail_spawn = "sensor.other.collision"
        with pytest.raises(EnvError, match="spawning the ego vehicle"):
            env.reset()
        assert world.live() == []  # the vehicle and camera spawned before the failure are destroyed
        world.fail_spawn = None
        env.reset()
        world.fail_tick = True
        with pytest.raises(EnvError, match=f"127.0.0.1:{fake.port} failed while ticking.*time-out"):
            env.step(np.zeros(2))
    finally:
        env.close()
    assert world.live() == [] and not world.settings.synchronous_mode
    env = make_fake_env(fake, vehicle="vehicle.nope")
    with pytest.raises(EnvError, match="unknown CARLA vehicle blueprint 'vehicle.nope'"):
        env.reset()
    env.close()
    assert world.live() == []
