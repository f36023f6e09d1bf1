"""envs.driver.Driver on a real tiny dm_control env: episode boundaries, records, callback order, random vs
policy actions, observation transforms and shifts, single and vector envs."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.driver import Driver, random_policy

ENV = "dmc:cartpole_balance"
KW = {"size": 16, "action_repeat": 2, "time_limit": 10}  # episodes of 5 agent steps, 10 env steps


@pytest.fixture
def env():
    e = envs.make_env(ENV, **KW)
    yield e
    e.close()


def _trace(driver: Driver) -> list[tuple]:
    """Record every callback call as ``("step", t, is_first, reward)`` / ``("episode", index, record)``."""
    events: list[tuple] = []
    driver.on_step(lambda s: events.append(("step", int(s.t[0]), bool(s.is_first[0]), float(s.reward[0]))))
    driver.on_episode(lambda e: events.append(("episode", e.index, e.record)))
    return events


def test_single_env_episode_boundaries_records_and_callback_order(env):
    driver = Driver(env, rng=np.random.default_rng(0), shift="none", severity=0)
    events = _trace(driver)
    episode = driver.episode(seed=3)
    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == [0, 1, 2, 3, 4]  # one call per acted-on observation, before the env steps
    assert [e[2] for e in steps] == [True, False, False, False, False]
    assert steps[0][3] == 0.0  # no reward on arriving at the first observation
    assert events[-1][0] == "episode" and len(events) == 6  # the episode callback comes after the last step
    rec = episode.record
    assert rec == events[-1][2]
    assert rec["steps"] == 5 and rec["length"] == 10 and rec["seed"] == 3 and rec["index"] == 0
    assert rec["shift"] == "none" and rec["severity"] == 0 and rec["cut"] is False
    assert "success" not in rec  # dm_control reports none
    # the return is the sum of the rewards received: on arriving at every later observation and the last one
    assert rec["return"] == pytest.approx(sum(e[3] for e in steps[1:]) + float(episode.last_reward), rel=1e-6)
    assert episode.last_obs["image"].shape == (16, 16, 3) and not episode.terminated
    # the env is left at the last state; the next step resets it (unseeded) and starts a new episode
    driver.step()
    assert events[-1][:3] == ("step", 0, True)


def test_same_seed_same_episode_and_random_actions_match_the_rng_stream(env):
    frames = []

    def run() -> tuple[list[np.ndarray], float]:
        acts: list[np.ndarray] = []
        d = Driver(env, rng=np.random.default_rng(7), on_step=[lambda s: acts.append(s.action[0])])
        frames.append(d.episode(seed=11).last_obs["image"])
        return acts, d.episodes

    a, _ = run()
    b, _ = run()
    assert np.array_equal(np.stack(a), np.stack(b)) and np.array_equal(frames[0], frames[1])
    rng = np.random.default_rng(7)  # the default random policy: rng.uniform(low, high, A) per step, float32
    expected = [rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32) for _ in range(5)]
    assert np.array_equal(np.stack(a), np.stack(expected)) and a[0].dtype == np.float32


def test_random_driver_matches_a_hand_written_loop(env):
    """The driver changes nothing about a rollout: same actions, rewards and frames as a plain loop."""
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=4)
    ref_frames, total, done = [obs["image"]], 0.0, False
    while not done:
        obs, reward, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        ref_frames.append(obs["image"])
        total += float(reward)
        done = term or trunc
    got: list[np.ndarray] = []
    d = Driver(env, rng=np.random.default_rng(1), on_step=[lambda s: got.append(s.obs["image"][0])])
    episode = d.episode(seed=4)
    assert episode.record["return"] == total
    assert np.array_equal(np.stack(got + [episode.last_obs["image"]]), np.stack(ref_frames))


def test_policy_sees_observations_and_is_first_and_its_outs_reach_the_callbacks(env):
    seen: list[tuple] = []

    def policy(obs, is_first):
        seen.append((obs["image"].shape, is_first.copy()))
        return np.full((1, 1), 0.5, np.float32), {"tag": len(seen)}

    outs: list[int] = []
    d = Driver(env, policy, on_step=[lambda s: outs.append(s.outs["tag"])])
    d.episode(seed=0)
    assert [s[0] for s in seen] == [(1, 16, 16, 3)] * 5  # batched: a leading axis of 1 for a single env
    assert [bool(s[1][0]) for s in seen] == [True, False, False, False, False]
    assert outs == [1, 2, 3, 4, 5]


def test_cut_episodes_max_steps_until_and_zero_steps(env):
    d = Driver(env, rng=np.random.default_rng(0))
    cut = d.episode(seed=2, max_steps=3)
    assert cut.record["cut"] is True and cut.record["steps"] == 3 and cut.record["length"] == 6
    first = d.episode(seed=2, max_steps=0)
    assert first.record["steps"] == 0 and first.record["return"] == 0.0 and first.last_reward == 0.0
    reset_frame, _ = env.reset(seed=2)
    assert np.array_equal(first.last_obs["image"], reset_frame["image"])
    calls: list[int] = []
    d2 = Driver(env, rng=np.random.default_rng(0), on_step=[lambda s: calls.append(1)])
    assert d2.episode(seed=2, until=lambda: len(calls) >= 2).record["steps"] == 2


def test_transform_and_shift_wrapper_are_applied_and_labelled(env):
    from shifts.base import ShiftWrapper, make_shift

    invert = lambda o: {**o, "image": 255 - o["image"]}  # noqa: E731
    raw: list[np.ndarray] = []
    clean = Driver(env, rng=np.random.default_rng(0), on_step=[lambda s: raw.append(s.obs["image"][0])])
    clean_episode = clean.episode(seed=5)
    last_clean = clean_episode.last_obs["image"]
    mapped: list[np.ndarray] = []
    d = Driver(env, rng=np.random.default_rng(0), transform=invert,
               on_step=[lambda s: mapped.append(s.obs["image"][0])])
    last = d.episode(seed=5).last_obs["image"]
    assert np.array_equal(np.stack(mapped), 255 - np.stack(raw)) and np.array_equal(last, 255 - last_clean)
    shifted: list[np.ndarray] = []
    fog = ShiftWrapper(env, [make_shift("fog", 3, seed=0)])
    d = Driver(fog, rng=np.random.default_rng(0), shift="fog", severity=3,
               on_step=[lambda s: shifted.append(s.obs["image"][0])])
    episode = d.episode(seed=5)
    assert episode.record["shift"] == "fog" and episode.record["severity"] == 3
    assert not np.array_equal(np.stack(shifted), np.stack(raw))
    assert episode.record["return"] == clean_episode.record["return"]  # same actions; shifts never change physics


def test_vector_env_autoreset_boundaries_and_records():
    venv = envs.make_vector_env(ENV, 2, asynchronous=False, seed=0, **KW)
    try:
        d = Driver(venv, rng=np.random.default_rng(0))
        events = _trace(d)
        firsts: list[np.ndarray] = []
        d.on_step(lambda s: firsts.append(s.is_first.copy()))
        d.reset(seed=10)
        ended = d.run(steps=2 * 7)  # 7 vector steps: both envs end at step 5
        assert [e.index for e in ended] == [0, 1]
        assert [e.record["seed"] for e in ended] == [10, 11] and all(e.record["steps"] == 5 for e in ended)
        assert all(e.record["length"] == 10 and not e.record["cut"] for e in ended)
        assert d.steps == 14 and d.episodes == 2
        assert [bool(f.all()) for f in firsts] == [True, False, False, False, False, True, False]
        kinds = [e[0] for e in events]
        assert kinds[:5] == ["step"] * 5 and kinds[5:7] == ["episode", "episode"]  # after the 5th step
        ended = d.run(episodes=2)
        assert [e.record["seed"] for e in ended] == [None, None]  # autoreset episodes have no seed
    finally:
        venv.close()


def test_vector_final_observation_is_the_last_frame():
    """A vector env and a single env with the same seed and actions give the same episode and last frame."""
    venv = envs.make_vector_env(ENV, 1, asynchronous=False, seed=0, **KW)
    single = envs.make_env(ENV, **KW)
    try:
        v = Driver(venv, rng=np.random.default_rng(3))
        v.reset(seed=8)
        (ev,) = v.run(episodes=1)
        es = Driver(single, rng=np.random.default_rng(3)).episode(seed=8)
        assert ev.record["return"] == es.record["return"]
        assert np.array_equal(ev.last_obs["image"], es.last_obs["image"])
        assert ev.last_reward == es.last_reward
    finally:
        venv.close()
        single.close()


def test_errors(env):
    with pytest.raises(envs.EnvError, match="needs rng"):
        Driver(env)
    with pytest.raises(envs.EnvError, match="shape"):
        Driver(env, lambda o, f: (np.zeros((1, 3), np.float32), {})).step()
    with pytest.raises(envs.EnvError, match="max_steps"):
        Driver(env, rng=np.random.default_rng(0)).episode(max_steps=-1)
    venv = envs.make_vector_env(ENV, 1, asynchronous=False, seed=0, **KW)
    try:
        with pytest.raises(envs.EnvError, match="single env"):
            Driver(venv, rng=np.random.default_rng(0)).episode()
    finally:
        venv.close()
    policy = random_policy(env.action_space, np.random.default_rng(0), np.float64)
    action, outs = policy({}, np.ones(3, bool))
    assert action.shape == (3, 1) and action.dtype == np.float64 and outs == {}
