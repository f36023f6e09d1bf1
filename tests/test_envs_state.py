"""State (proprioceptive) observations: ``make_env(..., obs="state" | "pixels+state")`` on real simulators
(dm_control, Meta-World), the refusal for suites without a state vector, vector envs, and visual shifts leaving
``obs["state"]`` untouched."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401 - must come before anything importing dm_control (selects MUJOCO_GL)
from envs import DMCEnv, EnvError, make_env, make_vector_env
from envs.registry import metaworld_available
from shifts.base import ShiftWrapper, kinds, make_shift, supports

CARTPOLE = "dmc:cartpole_swingup"
#: D measured from dm_control's observation specs (key order: see envs/dmc.py)
DIMS = {"dmc:cartpole_swingup": 5, "dmc:walker_stand": 24, "dmc:reacher_easy": 6, "dmc:finger_spin": 9}
REFUSED = "suites with a state observation: dmc, metaworld"


def _actions(env: gymnasium.Env, n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)


def _rollout(env: gymnasium.Env, seed: int, actions: np.ndarray) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        out.append(obs)
    return out


@pytest.fixture
def no_rendering(monkeypatch):
    """Make every rendering entry point of DMCEnv / dm_control raise."""
    from dm_control.mujoco import engine

    def fail(*args, **kwargs):
        raise AssertionError("rendered with obs='state'")

    monkeypatch.setattr(DMCEnv, "_render_rgb", fail)
    monkeypatch.setattr(DMCEnv, "_ensure_camera", fail)
    monkeypatch.setattr(engine.Camera, "__init__", fail)
    monkeypatch.setattr(engine.Physics, "_make_rendering_contexts", fail)


# ------------------------------------------------------------------ dmc
@pytest.mark.parametrize(("name", "dim"), DIMS.items())
def test_dmc_state_shape_dtype_and_dim(name, dim, no_rendering):
    env = make_env(name, obs="state", seed=0)
    try:
        assert set(env.observation_space.spaces) == {"state"}
        assert env.observation_space["state"].shape == (dim,)
        assert env.observation_space["state"].dtype == np.float32
        obs, _ = env.reset()
        assert set(obs) == {"state"}
        assert obs["state"].shape == (dim,) and obs["state"].dtype == np.float32
        assert np.all(np.isfinite(obs["state"]))
        obs, *_ = env.step(env.action_space.sample())
        assert set(obs) == {"state"} and obs["state"].shape == (dim,) and obs["state"].dtype == np.float32
        # no renderer was ever created (reset/step/construction)
        assert env.unwrapped._camera is None and env.unwrapped.physics._contexts is None
    finally:
        env.close()


def test_dmc_state_is_the_flattened_dm_control_observation():
    env = make_env("dmc:walker_stand", obs="state", seed=0)
    try:
        obs, _ = env.reset()
        physics = env.unwrapped.physics
        task = env.unwrapped._env.task
        expected = np.concatenate([np.asarray(v, np.float32).ravel() for v in task.get_observation(physics).values()])
        np.testing.assert_array_equal(obs["state"], expected)
        # key order: orientations (14), height (1), velocity (9)
        assert obs["state"][14] == np.float32(physics.torso_height())
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is:UserWarning")
def test_state_env_passes_gymnasium_checker_and_render_still_works():
    env = make_env(CARTPOLE, obs="state", size=16, seed=0)
    try:
        check_env(env, skip_render_check=True)
        env.reset(seed=0)
        frame = env.render()  # explicit render: creates the renderer lazily
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    finally:
        env.close()


def test_pixels_plus_state_matches_pixels_and_state_envs():
    plain = make_env(CARTPOLE, size=32, seed=0)
    state = make_env(CARTPOLE, obs="state", seed=0)
    both = make_env(CARTPOLE, size=32, obs="pixels+state", seed=0)
    try:
        assert set(both.observation_space.spaces) == {"image", "state"}
        assert both.observation_space["image"] == plain.observation_space["image"]
        assert both.observation_space["state"] == state.observation_space["state"]
        actions = _actions(plain)
        for a, b, c in zip(_rollout(plain, 7, actions), _rollout(state, 7, actions), _rollout(both, 7, actions),
                           strict=True):
            assert set(a) == {"image"} and set(b) == {"state"} and set(c) == {"image", "state"}
            np.testing.assert_array_equal(c["image"], a["image"])
            np.testing.assert_array_equal(c["state"], b["state"])
    finally:
        for env in (plain, state, both):
            env.close()


def test_state_deterministic_under_seed_across_envs():
    env_a, env_b = make_env(CARTPOLE, obs="state"), make_env(CARTPOLE, obs="state", seed=123)
    try:
        actions = _actions(env_a, 8)
        run_a, run_b = _rollout(env_a, 3, actions), _rollout(env_b, 3, actions)
        for a, b in zip(run_a, run_b, strict=True):
            np.testing.assert_array_equal(a["state"], b["state"])
        other = _rollout(env_a, 4, actions)
        assert not np.array_equal(other[0]["state"], run_a[0]["state"])  # another seed: another start
    finally:
        env_a.close()
        env_b.close()


# ----------------------------------------------------------- errors
@pytest.mark.parametrize("obs", ["state", "pixels+state"])
def test_suites_without_state_refuse(obs, monkeypatch):
    from envs.carla import CarlaEnv
    from envs.driving import CarRacingEnv

    def built(*args, **kwargs):
        raise AssertionError("the env was built before obs was checked")

    monkeypatch.setattr(CarRacingEnv, "__init__", built)
    monkeypatch.setattr(CarlaEnv, "__init__", built)
    for name in ("driving:carracing", "carla:Town04"):
        with pytest.raises(EnvError) as info:
            make_env(name, obs=obs)
        assert str(info.value) == f"obs={obs!r} is not available for {name}; {REFUSED}"
        with pytest.raises(EnvError, match=REFUSED):
            make_vector_env(name, 2, obs=obs)


@pytest.mark.parametrize("bad", ["proprio", "", "Pixels", None, 1, ("pixels", "state")])
def test_bad_obs_value_refused(bad):
    pattern = r"obs must be one of 'pixels', 'state', 'pixels\+state', got"
    with pytest.raises(EnvError, match=pattern):
        make_env(CARTPOLE, obs=bad)
    with pytest.raises(EnvError, match=pattern):
        make_env("driving:carracing", obs=bad)
    with pytest.raises(EnvError, match=pattern):
        make_vector_env(CARTPOLE, 2, obs=bad)
    with pytest.raises(EnvError, match=pattern):
        DMCEnv("cartpole", "swingup", obs=bad)


# ----------------------------------------------------------- vector env
def test_sync_vector_env_with_state_and_final_obs(no_rendering):
    venv = make_vector_env(CARTPOLE, 2, asynchronous=False, seed=3, obs="state", time_limit=4)
    try:
        assert set(venv.single_observation_space.spaces) == {"state"}
        obs, _ = venv.reset()
        assert set(obs) == {"state"} and obs["state"].shape == (2, 5) and obs["state"].dtype == np.float32
        assert not np.array_equal(obs["state"][0], obs["state"][1])  # seeds 3 and 4
        action = np.zeros((2, 1), np.float32)
        obs, _, _, truncated, info = venv.step(action)
        assert not truncated.any() and "final_obs" not in info
        last, _, _, truncated, info = venv.step(action)
        assert truncated.all()
        for i in range(2):
            final = info["final_obs"][i]
            assert set(final) == {"state"} and final["state"].shape == (5,) and final["state"].dtype == np.float32
            assert not np.array_equal(final["state"], last["state"][i])  # obs is already the new episode's
    finally:
        venv.close()


# ----------------------------------------------------------- metaworld
@pytest.mark.skipif(not metaworld_available(), reason="metaworld is not installed")
def test_metaworld_state_39d_without_rendering(monkeypatch):
    from envs.metaworld import MetaWorldEnv

    both = make_env("metaworld:reach", size=16, seed=0, obs="pixels+state")

    def fail(*args, **kwargs):
        raise AssertionError("rendered with obs='state'")

    monkeypatch.setattr(MetaWorldEnv, "_render_rgb", fail)
    monkeypatch.setattr(MetaWorldEnv, "_ensure_camera", fail)
    state = make_env("metaworld:reach", seed=0, obs="state")
    try:
        assert set(state.observation_space.spaces) == {"state"}
        assert state.observation_space["state"].shape == (39,)
        actions = _actions(state, 3)
        obs_state = _rollout(state, 5, actions)
        monkeypatch.undo()
        obs_both = _rollout(both, 5, actions)
        for s, b in zip(obs_state, obs_both, strict=True):
            assert set(s) == {"state"} and s["state"].shape == (39,) and s["state"].dtype == np.float32
            assert set(b) == {"image", "state"} and b["image"].shape == (16, 16, 3)
            np.testing.assert_array_equal(s["state"], b["state"])
        assert state.unwrapped._camera is None and state.unwrapped.physics._contexts is None
    finally:
        state.close()
        both.close()


# ----------------------------------------------------------- shifts
DMC_KINDS = [k for k in kinds() if supports(k, CARTPOLE)]


def test_shift_registry_covers_dmc():
    assert len(kinds()) == 18 and len(DMC_KINDS) == 17  # every kind but the carla/driving-only "weather"


def test_shifts_never_touch_state():
    """Every dmc-applicable kind at severity 5 with obs="pixels+state": state bit-identical to the clean env's,
    image changed."""
    env = make_env(CARTPOLE, size=32, obs="pixels+state")
    try:
        actions = _actions(env)
        clean = _rollout(env, 0, actions)
        for kind in DMC_KINDS:
            wrapped = ShiftWrapper(env, [make_shift(kind, 5, seed=0)])
            try:
                shifted = _rollout(wrapped, 0, actions)
            finally:
                wrapped.remove_shifts()
            for c, s in zip(clean, shifted, strict=True):
                assert set(s) == {"image", "state"}, kind
                np.testing.assert_array_equal(s["state"], c["state"], err_msg=kind)
            assert any(not np.array_equal(s["image"], c["image"]) for c, s in zip(clean, shifted, strict=True)), kind
    finally:
        env.close()


def test_shifts_on_state_only_env_do_not_render(no_rendering):
    env = make_env(CARTPOLE, obs="state")
    try:
        actions = _actions(env)
        clean = _rollout(env, 0, actions)
        for kind in DMC_KINDS:
            wrapped = ShiftWrapper(env, [make_shift(kind, 5, seed=0)])
            try:
                shifted = _rollout(wrapped, 0, actions)
            finally:
                wrapped.remove_shifts()
            for c, s in zip(clean, shifted, strict=True):
                assert set(s) == {"state"}, kind
                np.testing.assert_array_equal(s["state"], c["state"], err_msg=kind)
        assert env.unwrapped._camera is None and env.unwrapped.physics._contexts is None
    finally:
        env.close()
