"""Tests of the server-free driving env ``driving:carracing`` (:mod:`envs.driving`): pixels, seeding,
appearance (changes pixels, never reward), time limit, vector env, and a tiny in-process training run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("Box2D", reason='driving:carracing needs `pip install "gymnasium[box2d]"`')

from envs import EnvError, make_env, make_vector_env  # noqa: E402
from envs.driving import DEFAULT_APPEARANCE, Appearance, CarRacingEnv  # noqa: E402

NAME = "driving:carracing"
# Fixed agent actions (steer, throttle_brake): accelerate, turn both ways, brake.
ACTIONS = [np.array(a, dtype=np.float32) for a in
           [(0.0, 1.0)] * 8 + [(0.6, 0.4)] * 6 + [(-0.8, 0.2)] * 6 + [(0.0, -0.5)] * 4]


def rollout(env: CarRacingEnv, seed: int, actions=ACTIONS) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    images, rewards = [obs["image"]], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        images.append(obs["image"])
        rewards.append(r)
        if term or trunc:
            break
    return images, rewards


@pytest.mark.parametrize("size", [64, 96])
def test_shape_dtype_spaces_and_info(size):
    env = make_env(NAME, size=size, seed=0)
    try:
        assert isinstance(env, CarRacingEnv)
        assert env.observation_space["image"].shape == (size, size, 3)
        assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
        assert env.metadata["render_fps"] == 25
        obs, info = env.reset()
        assert obs["image"].shape == (size, size, 3) and obs["image"].dtype == np.uint8
        assert env.observation_space.contains(obs)
        assert info["discount"] == 1.0 and info["env_steps"] == 0
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert obs["image"].shape == (size, size, 3) and obs["image"].dtype == np.uint8
        assert isinstance(reward, float) and not term and not trunc
        assert info["env_steps"] == 2 and info["discount"] == 1.0
        assert set(info) == {"discount", "env_steps", "tiles_visited", "lap_finished"}
        np.testing.assert_array_equal(env.render(), obs["image"])
    finally:
        env.close()


def test_non_square_size():
    env = CarRacingEnv(size=(48, 80), seed=0)
    assert env.reset()[0]["image"].shape == (48, 80, 3)
    env.close()


@pytest.mark.parametrize("zoom", [None, 4.5])
@pytest.mark.slow
def test_matches_gymnasium_carracing_at_96(zoom, monkeypatch):
    """At size 96 and action_repeat 1, frames and rewards are CarRacing-v3's own (its module ZOOM set to the
    appearance's zoom), bit for bit: the fast off-screen culling draws exactly what CarRacing draws."""
    import math

    from gymnasium.envs.box2d import car_racing

    if zoom is not None:
        monkeypatch.setattr(car_racing, "ZOOM", zoom)
        monkeypatch.setattr(car_racing, "MAX_SHAPE_DIM", max(car_racing.GRASS_DIM, car_racing.TRACK_WIDTH,
                            car_racing.TRACK_DETAIL_STEP) * math.sqrt(2) * zoom * car_racing.SCALE)
    ref = car_racing.CarRacing()
    env = CarRacingEnv(size=96, action_repeat=1, appearance=Appearance(zoom=zoom or 2.7))
    try:
        ref_obs, _ = ref.reset(seed=7)
        obs, _ = env.reset(seed=7)
        np.testing.assert_array_equal(obs["image"], ref_obs)
        for steer, pedal in ACTIONS + ACTIONS[::-1] + [(0.9, 0.3)] * 20:
            ref_obs, ref_r, *_ = ref.step(np.array([steer, max(pedal, 0), max(-pedal, 0)]))
            obs, r, *_ = env.step(np.array([steer, pedal]))
            np.testing.assert_array_equal(obs["image"], ref_obs)
            assert r == ref_r
        np.testing.assert_array_equal(env.render(), obs["image"])
    finally:
        ref.close()
        env.close()


def test_seeding_reproduces_pixels_and_seeds_differ():
    a, b = CarRacingEnv(size=64, seed=3), CarRacingEnv(size=64, seed=3)
    try:
        obs_a, _ = a.reset()  # constructor seed seeds the first episode
        obs_b, _ = b.reset()
        np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
        ims_a, rew_a = rollout(a, seed=11, actions=ACTIONS[:10])
        ims_b, rew_b = rollout(b, seed=11, actions=ACTIONS[:10])
        for x, y in zip(ims_a, ims_b, strict=True):
            np.testing.assert_array_equal(x, y)
        assert rew_a == rew_b
        ims_c, _ = rollout(b, seed=12, actions=ACTIONS[:10])
        assert not np.array_equal(ims_a[-1], ims_c[-1])
        track_a, track_b = np.asarray(a.car_racing.track), np.asarray(b.car_racing.track)
        assert track_a.shape != track_b.shape or not np.allclose(track_a, track_b)  # a different track
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("change", [
    dict(grass_color=(160, 110, 60), bg_color=(140, 100, 50)),
    dict(road_color=(40, 40, 120)),
    dict(zoom=4.5),
    dict(zoom=1.2),
    dict(brightness=0.5),
    dict(tint=(1.0, 0.8, 0.6)),
])
@pytest.mark.slow
def test_appearance_changes_pixels_not_reward(change):
    base = CarRacingEnv(size=64)
    shifted = CarRacingEnv(size=64, appearance=Appearance(**change))
    try:
        ims0, rew0 = rollout(base, seed=5)
        ims1, rew1 = rollout(shifted, seed=5)
        assert rew0 == rew1  # the same physics, bit for bit
        assert len(rew0) == len(ACTIONS)
        assert sum(rew0) > 0  # the car does drive over tiles
        frac = np.mean([np.mean(np.any(x != y, axis=-1)) for x, y in zip(ims0, ims1, strict=True)])
        assert frac > 0.05, f"{change}: only {frac:.3f} of the pixels changed"
        assert shifted.car_racing.tile_visited_count == base.car_racing.tile_visited_count
    finally:
        base.close()
        shifted.close()


def test_appearance_takes_effect_at_next_reset_or_now():
    env = CarRacingEnv(size=64, seed=0)
    try:
        env.reset(seed=1)
        for a in ACTIONS[:4]:
            env.step(a)
        before = env.render()
        new = dataclasses.replace(DEFAULT_APPEARANCE, grass_color=(200, 50, 50), road_color=(10, 10, 10))
        env.appearance = new
        assert env.appearance == new and env.active_appearance == DEFAULT_APPEARANCE
        np.testing.assert_array_equal(env.render(), before)  # not yet
        env.set_appearance(new, now=True)
        assert env.active_appearance == new
        assert np.mean(np.any(env.render() != before, axis=-1)) > 0.3
        env.set_appearance(DEFAULT_APPEARANCE, now=True)  # undone exactly (road tiles recoloured back)
        np.testing.assert_array_equal(env.render(), before)
        env.appearance = new
        obs, _ = env.reset(seed=1)
        ref = CarRacingEnv(size=64, appearance=new)
        np.testing.assert_array_equal(obs["image"], ref.reset(seed=1)[0]["image"])
        ref.close()
    finally:
        env.close()


def test_appearance_validation():
    for bad in [dict(road_color=(250, 0, 0)), dict(grass_color=(0, 0)), dict(bg_color=(0, 0, 256)),
                dict(brightness=-1), dict(tint=(1, 1)), dict(zoom=0), dict(zoom=float("nan"))]:
        with pytest.raises(EnvError, match="Appearance"):
            Appearance(**bad)
    env = CarRacingEnv(size=32)
    with pytest.raises(EnvError, match="Appearance"):
        env.appearance = {"zoom": 3}
    env.close()
    assert Appearance(tint=[1, 1, 1]).gain is None and Appearance(brightness=0.5).gain is not None


def test_time_limit_and_episode_end():
    env = make_env(NAME, size=32, seed=0, time_limit=7)  # 7 env steps = 2 + 2 + 2 + 1
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2))
        env.reset()
        steps = []
        for _ in range(4):
            _, _, term, trunc, info = env.step(np.array([0.0, 0.5]))
            steps.append(info["env_steps"])
        assert steps == [2, 4, 6, 7] and trunc and not term and info["discount"] == 1.0
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2))
        env.reset()
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3))
        with pytest.raises(ValueError, match="finite"):
            env.step(np.array([np.nan, 0.0]))
    finally:
        env.close()


def test_leaving_the_playfield_terminates():
    env = CarRacingEnv(size=32, action_repeat=8, seed=0, time_limit=2000)
    try:
        env.reset(seed=0)
        for _ in range(100):  # half throttle straight ahead leaves the track, then the playfield (~270 steps)
            _, reward, term, trunc, info = env.step(np.array([0.0, 0.5]))
            if term or trunc:
                break
        assert term and not trunc and info["discount"] == 0.0 and reward < -50
    finally:
        env.close()


def test_argument_errors():
    with pytest.raises(EnvError, match="camera"):
        make_env(NAME, camera=1)
    with pytest.raises(EnvError, match="size"):
        make_env(NAME, size=0)
    with pytest.raises(EnvError, match="unknown option.*allowed: appearance"):
        make_env(NAME, options={"zoom": 3})
    with pytest.raises(EnvError, match="known driving tasks: driving:carracing"):
        make_env("driving:carracing-v2")
    env = make_env(NAME, size=32, options={"appearance": Appearance(zoom=3.0)})
    assert env.active_appearance.zoom == 3.0
    env.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env(asynchronous):
    venv = make_vector_env(NAME, 2, asynchronous=asynchronous, seed=4, size=32, time_limit=6)
    try:
        obs, info = venv.reset()
        assert obs["image"].shape == (2, 32, 32, 3) and obs["image"].dtype == np.uint8
        assert not np.array_equal(obs["image"][0], obs["image"][1])  # seeds 4 and 5: different tracks
        for _ in range(3):
            obs, reward, term, trunc, info = venv.step(np.zeros((2, 2), dtype=np.float32))
        assert trunc.all() and reward.shape == (2,)
        assert info["final_obs"][0]["image"].shape == (32, 32, 3)
        assert list(info["final_info"]["env_steps"]) == [6, 6]
    finally:
        venv.close()


@pytest.mark.slow
def test_train_smoke(tmp_path):
    """A tiny DreamerV3 run on driving:carracing in-process (writes metrics with a finite loss)."""
    import json

    from mbrl.config import build_config
    from mbrl.runs.train import train

    threads = torch.get_num_threads()
    run_dir = tmp_path / "run"
    try:
        out = train(build_config([
            "env=driving:carracing", "size=XS", "model.deter=64", "model.hidden=32", "model.units=32",
            "model.blocks=4", "model.stoch=4", "model.classes=4", "model.cnn_depth=4", "model.bins=31",
            "image_size=32", "batch_size=2", "batch_length=8", "train_ratio=4", "prefill=100", "steps=300",
            "time_limit=200", "log_every=100", "save_every=0", "replay_capacity=2000", "wandb_mode=disabled",
            "progress=false", "threads=1", "device=cpu", f"run_dir={run_dir}"]))
    finally:
        torch.set_num_threads(threads)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert train_recs and all(np.isfinite(r["wm/loss"]) for r in train_recs)
    assert any(r["kind"] == "episode" and r["length"] == 200 for r in recs)
