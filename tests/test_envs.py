"""Tests for the ``envs`` package (real dm_control physics and headless rendering)."""

from __future__ import annotations

import os
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # must come before anything importing dm_control (selects MUJOCO_GL)
from envs import DMCEnv, EnvError, list_envs, make_env, make_vector_env, rendering
from envs.registry import default_camera, parse_env_name

CARTPOLE = "dmc:cartpole_swingup"
WALKER = "dmc:walker_walk"


def _rollout(env: gymnasium.Env, seed: int, actions: np.ndarray):
    obs, _ = env.reset(seed=seed)
    images, rewards = [obs["image"]], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        images.append(obs["image"])
        rewards.append(reward)
    return np.stack(images), np.asarray(rewards)


# ----------------------------------------------------------------- backend
def test_backend_selected_on_import():
    assert os.environ.get("MUJOCO_GL")
    assert rendering.select_gl_backend() == os.environ["MUJOCO_GL"]


def test_no_backend_raises_env_error_naming_apt_packages(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(rendering, "_selected", None)
    monkeypatch.setattr(rendering, "_failure", None)
    # pretend dm_control was not imported yet (else its fixed backend is reused)
    monkeypatch.delitem(sys.modules, "dm_control._render", raising=False)
    monkeypatch.setattr(rendering, "_probe", lambda backend: f"{backend} broken")
    with pytest.raises(EnvError, match="libegl1 libgl1 libosmesa6") as info:
        rendering.select_gl_backend()
    assert "egl: egl broken" in str(info.value)
    assert "osmesa: osmesa broken" in str(info.value)
    with pytest.raises(EnvError):  # cached failure is raised again
        rendering.select_gl_backend()


# ---------------------------------------------------------------- registry
def test_registry_names_and_parsing():
    names = list_envs()
    for name in (
        WALKER,
        CARTPOLE,
        "dmc:cartpole_balance",
        "dmc:walker_stand",
        "dmc:manipulator_bring_ball",
        "dmc:ball_in_cup_catch",
        "dmc:cheetah_run",
        "dmc:reacher_easy",
        "dmc:finger_spin",
    ):
        assert name in names
    assert names == sorted(names)
    assert not any(n.startswith("dmc:lqr") for n in names)
    assert parse_env_name("dmc:ball_in_cup_catch") == ("dmc", "ball_in_cup", "catch")
    assert parse_env_name("dmc:point_mass_easy") == ("dmc", "point_mass", "easy")
    assert parse_env_name("dmc:humanoid_CMU_run") == ("dmc", "humanoid_CMU", "run")
    assert parse_env_name("dmc:manipulator_bring_ball") == (
        "dmc",
        "manipulator",
        "bring_ball",
    )
    assert default_camera("quadruped") == 2
    assert default_camera("walker") == 0


def test_unknown_task_lists_known_tasks():
    with pytest.raises(EnvError) as info:
        make_env("dmc:walker_fly")
    msg = str(info.value)
    assert "'dmc:walker_fly'" in msg
    assert "dmc:walker_walk" in msg and "dmc:cheetah_run" in msg
    assert "run, stand, walk" in msg  # the walker domain's tasks
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_unknown_suite_and_bad_name_list_suites():
    with pytest.raises(EnvError, match=r"unknown suite 'atari'.*known suites: dmc"):
        make_env("atari:pong")
    with pytest.raises(EnvError, match=r"suite:task.*known suites: dmc"):
        make_env("walker_walk")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"size": 0}, "size must be a positive int or a \\(height, width\\)"),
        ({"size": (64,)}, "size must be"),
        ({"size": 64.0}, "size must be"),
        ({"action_repeat": 0}, "action_repeat must be an integer >= 1"),
        ({"time_limit": -5}, "time_limit must be an integer >= 1"),
        ({"seed": -1}, "seed must be None or an integer in"),
        ({"camera": 7}, r"camera 7 out of range .*\(ids 0\.\.1\)"),
    ],
)
def test_bad_arguments_raise_env_error(kwargs, pattern):
    with pytest.raises(EnvError, match=pattern):
        make_env(CARTPOLE, **kwargs)


# ---------------------------------------------------------- single env
@pytest.mark.parametrize("size", [64, (24, 40)])
def test_observation_shape_dtype_range(size):
    env = make_env(CARTPOLE, size=size, seed=0)
    h, w = (size, size) if isinstance(size, int) else size
    assert env.observation_space["image"].shape == (h, w, 3)
    obs, info = env.reset()
    assert info == {"discount": 1.0, "env_steps": 0}
    for _ in range(2):
        image = obs["image"]
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert env.observation_space.contains(obs)
        assert image.std() > 0  # not a blank frame
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        # 2 env steps, each rewarded in [0, 1]
        assert isinstance(reward, float) and 0.0 <= reward <= 2.0
        assert terminated is False and truncated is False
    frame = env.render()
    assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, obs["image"])  # render() = current state
    env.close()


def test_large_size_for_vit():
    env = make_env(CARTPOLE, size=224, seed=0)
    obs, _ = env.reset()
    assert obs["image"].shape == (224, 224, 3) and obs["image"].std() > 0
    env.close()


def test_gymnasium_env_checker_passes():
    env = make_env(CARTPOLE, size=16, seed=0)
    check_env(env, skip_render_check=True)
    env.close()


def test_action_space_and_rescaling_to_spec_bounds():
    # quadruped has asymmetric, non-unit bounds (e.g. [-1, 1.1], [-0.8, 0.8]);
    # it also exercises envs.compat (np.in1d removed in numpy 2.4).
    env = make_env("dmc:quadruped_walk", size=16, seed=0, action_repeat=1)
    space = env.action_space
    assert space.shape == (12,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, -1.0)
    np.testing.assert_array_equal(space.high, 1.0)
    assert env.camera == 2  # DreamerV3 default for quadruped
    spec = env._env.action_spec()
    env.reset()
    for action, expected in (
        (np.ones(12), spec.maximum),
        (-np.ones(12), spec.minimum),
        (np.zeros(12), (spec.minimum + spec.maximum) / 2),
        (np.full(12, 5.0), spec.maximum),  # clipped to [-1, 1] first
    ):
        env.step(action.astype(np.float32))
        np.testing.assert_allclose(env.physics.data.ctrl, expected, rtol=0, atol=1e-12)
    env.close()


def test_invalid_actions_raise_value_error():
    env = make_env(CARTPOLE, size=16, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(1,\).*got shape \(2,\)"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan]))
    env.step(np.zeros(1))  # the right shape still works
    env.close()


def test_reward_is_sum_over_action_repeat_matches_dm_control():
    from dm_control import suite

    seed, repeat = 7, 3
    actions = np.random.default_rng(0).uniform(-1, 1, size=(8, 1))
    env = make_env(CARTPOLE, size=16, seed=seed, action_repeat=repeat)
    env.reset()
    rewards = [env.step(a)[1] for a in actions]
    env.close()

    raw = suite.load("cartpole", "swingup", task_kwargs={"random": seed})
    raw.reset()
    expected = [sum(raw.step(a).reward for _ in range(repeat)) for a in actions]
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-12)
    assert max(rewards) > 0


@pytest.mark.parametrize(
    ("time_limit", "repeat", "agent_steps"), [(20, 2, 10), (7, 3, 3)]
)
def test_truncation_at_exactly_time_limit_env_steps(time_limit, repeat, agent_steps):
    env = make_env(
        CARTPOLE, size=16, seed=0, time_limit=time_limit, action_repeat=repeat
    )
    env.reset()
    for k in range(1, agent_steps + 1):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert terminated is False
        assert truncated is (k == agent_steps), k
        assert info["env_steps"] == min(k * repeat, time_limit)
        assert info["discount"] == 1.0
    assert info["env_steps"] == time_limit
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    _, info = env.reset()  # a new episode starts cleanly
    assert info["env_steps"] == 0
    assert env.step(env.action_space.sample())[4]["env_steps"] == min(
        repeat, time_limit
    )
    env.close()


def test_default_episode_is_1000_env_steps():
    env = make_env(CARTPOLE, size=8, seed=0, action_repeat=4)
    env.reset()
    steps, truncated = 0, False
    while not truncated:
        _, _, _, truncated, info = env.step(np.zeros(1, np.float32))
        steps += 1
    assert steps == 250 and info["env_steps"] == 1000
    env.close()


@pytest.mark.slow
def test_seeding_is_deterministic():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(12, 6)).astype(np.float32)
    env_a = make_env(WALKER, size=32)
    env_b = make_env(WALKER, size=32, seed=3)
    images_a, rewards_a = _rollout(env_a, 3, actions)
    images_b, rewards_b = _rollout(env_b, 3, actions)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    images_again, rewards_again = _rollout(env_a, 3, actions)  # same env, reseeded
    np.testing.assert_array_equal(images_a, images_again)
    np.testing.assert_array_equal(rewards_a, rewards_again)
    images_other, _ = _rollout(env_a, 4, actions)
    assert not np.array_equal(images_a[0], images_other[0])
    # constructor seed == reset(seed=...)
    env_c = make_env(WALKER, size=32, seed=3)
    np.testing.assert_array_equal(env_c.reset()[0]["image"], images_a[0])
    for env in (env_a, env_b, env_c):
        env.close()


def test_fast_render_images_are_valid():
    fast = make_env(WALKER, size=48, seed=0, fast_render=True)
    slow = make_env(WALKER, size=48, seed=0, fast_render=False)
    image_fast = fast.reset()[0]["image"]
    image_slow = slow.reset()[0]["image"]
    for image in (image_fast, image_slow):
        assert image.std() > 5
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    # Same scene, only shadows/reflections/antialiasing differ.
    assert not np.array_equal(image_fast, image_slow)
    diff = np.abs(image_fast.astype(int) - image_slow.astype(int)).mean()
    assert diff < 20, diff
    assert fast.physics.model.vis.quality.offsamples == 0
    assert fast.physics.model.vis.quality.shadowsize == 512
    fast.close()
    slow.close()


def test_close_is_idempotent_and_final():
    env = DMCEnv("cartpole", "balance", size=16, seed=0)
    env.reset()
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_dmcenv_rejects_unknown_domain_and_task():
    with pytest.raises(EnvError, match="known domains: .*walker"):
        DMCEnv("walkr", "walk")
    with pytest.raises(EnvError, match="known tasks: run, stand, walk"):
        DMCEnv("walker", "fly")


# ------------------------------------------------------------- vector env
@pytest.mark.slow
def test_async_vector_env_stacks_and_autoresets_same_step():
    name, kwargs = (
        "dmc:cartpole_balance",
        {"size": (16, 24), "time_limit": 4, "action_repeat": 2},
    )
    action = np.full((2, 1), 0.5, dtype=np.float32)
    # Reference: sub-env 0 of the vector env is make_env(name, seed=5, **kwargs).
    ref = make_env(name, seed=5, **kwargs)
    ref_first = ref.reset()[0]["image"]
    ref.step(action[0])
    ref_final = ref.step(action[0])[0]["image"]
    ref_next_first = ref.reset()[0]["image"]  # next episode, RNG continues
    ref.close()

    venv = make_vector_env(name, 2, seed=5, **kwargs)
    try:
        assert isinstance(venv, gymnasium.vector.AsyncVectorEnv)
        obs, info = venv.reset()
        assert obs["image"].shape == (2, 16, 24, 3) and obs["image"].dtype == np.uint8
        np.testing.assert_array_equal(obs["image"][0], ref_first)
        assert not np.array_equal(obs["image"][0], obs["image"][1])  # seeds 5 and 6
        np.testing.assert_array_equal(info["env_steps"], [0, 0])

        obs, reward, terminated, truncated, info = venv.step(action)
        assert obs["image"].shape == (2, 16, 24, 3) and reward.shape == (2,)
        assert not truncated.any() and not terminated.any() and "final_obs" not in info
        np.testing.assert_array_equal(info["env_steps"], [2, 2])

        obs, reward, terminated, truncated, info = venv.step(action)
        assert truncated.all() and not terminated.any()  # 4 env steps = 2 agent steps
        assert info["_final_obs"].all()
        # SAME_STEP: the final obs of the ended episode is in info["final_obs"] ...
        final = info["final_obs"][0]["image"]
        assert final.shape == (16, 24, 3) and final.dtype == np.uint8
        np.testing.assert_array_equal(final, ref_final)
        np.testing.assert_array_equal(info["final_info"]["env_steps"], [4, 4])
        # ... and the returned obs/info already belong to the new episode.
        np.testing.assert_array_equal(obs["image"][0], ref_next_first)
        np.testing.assert_array_equal(info["env_steps"], [0, 0])

        _, _, _, truncated, info = venv.step(action)
        assert not truncated.any()
        np.testing.assert_array_equal(info["env_steps"], [2, 2])
    finally:
        venv.close()


def test_sync_vector_env_and_vector_argument_errors():
    venv = make_vector_env(CARTPOLE, 1, size=8, seed=0)
    assert isinstance(venv, gymnasium.vector.SyncVectorEnv)
    obs, _ = venv.reset()
    assert obs["image"].shape == (1, 8, 8, 3)
    venv.close()
    with pytest.raises(EnvError, match="num_envs must be an integer >= 1"):
        make_vector_env(CARTPOLE, 0)
    with pytest.raises(EnvError, match="unknown env keyword.*sise.*allowed: size"):
        make_vector_env(CARTPOLE, 2, sise=8)
    with pytest.raises(EnvError, match="known dmc tasks"):
        make_vector_env("dmc:nope_nope", 2)


def test_public_api_exports():
    assert set(envs.__all__) == {
        "make_env",
        "make_vector_env",
        "list_envs",
        "EnvError",
        "DMCEnv",
        "BaseEnv",
    }
    assert issubclass(EnvError, ValueError)
