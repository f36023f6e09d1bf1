"""Driving shifts: graded CARLA weather presets and the appearance analogues of scene kinds on the server-free
``driving:carracing`` env (real Box2D simulation and pygame rendering)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("Box2D")

from envs import make_env  # noqa: E402
from shifts.base import ShiftError, ShiftWrapper, make_shift, supports  # noqa: E402
from shifts.driving import carla_weather  # noqa: E402
from shifts.suites import for_env, get_suite  # noqa: E402

ACTIONS = np.random.default_rng(0).uniform(-1, 1, size=(12, 2)).astype(np.float32)
DRIVING_KINDS = ("color", "texture", "lighting", "camera", "weather")


def _rollout(kind: str | None, severity: int, seed: int = 3, shift_seed: int = 0):
    env = make_env("driving:carracing", size=48, time_limit=200)
    if kind is not None:
        env = ShiftWrapper(env, [make_shift(kind, severity, shift_seed)])
    try:
        obs, _ = env.reset(seed=seed)
        frames, rewards = [obs["image"]], []
        for a in ACTIONS:
            obs, r, *_ = env.step(a)
            frames.append(obs["image"])
            rewards.append(r)
        return np.stack(frames), np.array(rewards)
    finally:
        env.close()


@pytest.fixture(scope="module")
def clean():
    return _rollout(None, 0)


@pytest.mark.parametrize("kind", DRIVING_KINDS)
@pytest.mark.slow
def test_driving_shift_grows_with_severity_and_keeps_rewards(kind, clean):
    clean_frames, clean_rewards = clean
    zero_frames, _ = _rollout(kind, 0)
    assert np.array_equal(zero_frames, clean_frames)  # severity 0 is the clean env
    change = []
    for sev in (1, 3, 5):
        frames, rewards = _rollout(kind, sev)
        np.testing.assert_array_equal(rewards, clean_rewards)  # appearance never touches the reward
        change.append(np.abs(frames.astype(float) - clean_frames).mean())
    assert 0 < change[0] < change[1] < change[2], change


def test_driving_shift_is_deterministic_per_seed():
    a, _ = _rollout("color", 3, shift_seed=1)
    b, _ = _rollout("color", 3, shift_seed=1)
    c, _ = _rollout("color", 3, shift_seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_carla_weather_levels_follow_jones_presets():
    assert carla_weather(0) == "default"
    assert [carla_weather(s) for s in (1, 2, 3, 4)] == ["soft_high_light", "soft_noisy_low_light",
                                                         "hard_low_light", "hard_noisy_low_light"]
    five = carla_weather(5)
    assert five["wetness"] == 100.0 and five["fog_density"] == 100.0 and five["sun_altitude_angle"] == -90.0


def test_weather_on_a_carla_like_env_sets_the_preset():
    class FakeCarla:
        def __init__(self):
            self.calls = []

        def set_weather(self, weather):
            self.calls.append(weather)

    env = FakeCarla()
    shift = make_shift("weather", 2)
    shift.on_reset(env, shift.episode_rng(0))
    shift.remove(env)
    assert env.calls == ["soft_noisy_low_light", "default"]


def test_kind_applicability_and_suites():
    assert supports("weather", "carla:Town04") and supports("weather", "driving:carracing")
    assert not supports("weather", "dmc:walker_walk") and not supports("distractors", "driving:carracing")
    assert supports("gaussian_noise", "carla:Town04")  # pixel kinds apply everywhere
    dmc = {k for k, _ in for_env("standard", get_suite("standard"), "dmc:walker_walk")}
    driving = {k for k, _ in for_env("standard", get_suite("standard"), "driving:carracing")}
    assert "weather" not in dmc and "distractors" in dmc
    assert "weather" in driving and "background" not in driving and "fog" in driving
    with pytest.raises(ShiftError, match="do not apply"):
        for_env("quick", [("none", 0), ("weather", 3)], "dmc:walker_walk")
