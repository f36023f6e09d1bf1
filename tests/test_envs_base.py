"""envs.base.BaseEnv: the shared contract (action repeat, time limit, info, seeding, errors, obs assembly, the
one render path) on a toy simulator, adding a suite through the registry, and determinism of every real suite
(two fresh envs, same seed and actions -> bit-identical rollouts) with a few hand-checked properties."""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np
import pytest

import envs  # noqa: F401 - must come before anything importing dm_control (selects MUJOCO_GL)
import envs.registry
from envs import EnvError, list_envs, make_env
from envs.base import BaseEnv
from envs.registry import metaworld_available, parse_env_name


# ------------------------------------------------------------- toy suite
class ToyEnv(BaseEnv):
    """A 1-D point: ``x += action`` per env step (action bounds [-2, 2]), reward ``x``; terminal when
    ``x >= goal``; the "simulator" cuts the episode (truncation) when ``x <= -goal``."""

    suite: ClassVar[str] = "toy"
    has_state: ClassVar[bool] = True
    default_time_limit: ClassVar[int] = 20

    def __init__(self, task: str = "line", *, size=8, action_repeat=2, camera=None, seed=None, time_limit=20,
                 fast_render=True, obs="pixels", goal: float = 3.0) -> None:
        super().__init__(f"toy:{task}", size=size, action_repeat=action_repeat, time_limit=time_limit,
                         seed=seed, fast_render=fast_render, obs=obs)
        self.camera = self._resolve_camera(camera, default=0, count=1)
        self.goal = goal
        self.x = 0.0
        self.rng: np.random.Generator | None = None
        self.sim_closed = 0
        self._setup_spaces(env_dt=0.1, state_dim=1)

    @classmethod
    def task_names(cls) -> tuple[str, ...]:
        return ("line",)

    def _action_bounds(self):
        return np.array([-2.0]), np.array([2.0])

    def _reset_sim(self, seed):
        if seed is not None or self.rng is None:
            self.rng = np.random.default_rng(seed)
        self.x = float(self.rng.uniform(-0.5, 0.5))

    def _step_sim(self, sim_action):
        self.x += float(sim_action[0])
        return self.x, self.x >= self.goal, self.x <= -self.goal, {"x": self.x, "hits": int(self.x > 0)}

    def _merge_step_info(self, infos):
        return {"x": infos[-1]["x"], "hits": sum(i["hits"] for i in infos)}

    def _reset_info(self):
        return {"x": self.x, "hits": 0}

    def _render_rgb(self):
        self._run_render_hooks(self)
        return np.full((*self.size, 3), int(np.clip(self.x * 10 + 100, 0, 255)), np.uint8)

    def _state_vector(self):
        return np.array([self.x])

    def _close_sim(self):
        self.sim_closed += 1


class ToyEnvWithHooks(ToyEnv):
    supports_render_hooks: ClassVar[bool] = True


def test_toy_action_repeat_time_limit_and_info():
    env = ToyEnv(seed=0, time_limit=7, obs="pixels+state")
    assert env.action_space.shape == (1,) and env.metadata["render_fps"] == 5  # 1 / (0.1 s * 2)
    assert set(env.observation_space.spaces) == {"image", "state"}
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0.0])
    obs, info = env.reset()
    x0 = env.x
    assert info == {"discount": 1.0, "env_steps": 0, "x": x0, "hits": 0}
    assert obs["state"].dtype == np.float32 and obs["state"][0] == np.float32(x0)
    steps = []
    for _ in range(4):
        obs, reward, term, trunc, info = env.step([0.05])  # rescaled to 0.1 per env step
        steps.append((info["env_steps"], term, trunc))
    assert steps == [(2, False, False), (4, False, False), (6, False, False), (7, False, True)]
    assert env.x == pytest.approx(x0 + 0.7)
    assert reward == pytest.approx(x0 + 0.7)  # the last agent step repeated only the remaining env step
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0.0])


def test_toy_terminal_sim_cut_clipping_and_reward_sum():
    env = ToyEnv(seed=1, action_repeat=4, obs="state")
    env.reset()
    x0 = env.x
    _, reward, term, trunc, info = env.step([7.0])  # clipped to 1 -> +2 per env step: terminal at the 2nd
    assert term and not trunc and info["env_steps"] == 2 and info["discount"] == 0.0
    assert reward == pytest.approx((x0 + 2) + (x0 + 4)) and info["hits"] == 2
    env.reset()
    _, _, term, trunc, info = env.step([-1.0])  # the simulator cuts the episode: truncated, discount 1
    assert not term and trunc and info["discount"] == 1.0 and info["env_steps"] == 2
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(1,\) for toy:line, got shape \(2,\)"):
        env.step([0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        env.step([np.nan])


def test_toy_seeding_and_obs_modes():
    a, b = ToyEnv(seed=5), ToyEnv(seed=5)
    xs_a = [a.reset()[1]["x"] for _ in range(3)]  # the constructor seed, then the continued stream
    xs_b = [b.reset()[1]["x"] for _ in range(3)]
    assert xs_a == xs_b and len(set(xs_a)) == 3
    assert a.reset(seed=5)[1]["x"] == xs_a[0]  # reset(seed=s) = the first episode of seed s
    assert a.reset()[1]["x"] == xs_a[1]
    state_env = ToyEnv(seed=0, obs="state")
    obs, _ = state_env.reset()
    assert set(obs) == {"state"} and "image" not in state_env.observation_space.spaces
    assert state_env.render().shape == (8, 8, 3)  # explicit render works without image observations


def test_toy_render_path_hooks_and_errors():
    env = ToyEnvWithHooks(seed=0, size=(4, 6))
    calls = []
    env.render_hooks.append(lambda e: calls.append(("scene", e.x)))
    env.image_hooks.append(lambda im: calls.append(("image", im.shape)) or im + 1)
    env.image_hooks.append(lambda im: im * 2)
    obs, _ = env.reset()
    assert calls == [("scene", env.x), ("image", (4, 6, 3))]  # scene edits first, then pixel edits in order
    plain = int(np.clip(env.x * 10 + 100, 0, 255))
    assert obs["image"][0, 0, 0] == (plain + 1) * 2
    np.testing.assert_array_equal(env.render(), obs["image"])  # render() = the last observation

    no_hooks = ToyEnv(seed=0)
    no_hooks.render_hooks.append(lambda e: None)
    with pytest.raises(EnvError, match="render_hooks cannot run"):
        no_hooks.reset()

    env.close()
    env.close()
    assert env.sim_closed == 2  # _close_sim must be idempotent itself
    for call in (env.reset, env.render, lambda: env.step([0.0])):
        with pytest.raises(RuntimeError, match="ToyEnvWithHooks is closed"):
            call()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"size": 0}, "size must be"),
        ({"action_repeat": 0}, "action_repeat must be an integer >= 1"),
        ({"time_limit": 0}, "time_limit must be an integer >= 1"),
        ({"seed": -1}, "seed must be None or an integer"),
        ({"fast_render": 1}, "fast_render must be a bool"),
        ({"obs": "proprio"}, "obs must be one of"),
        ({"camera": 1}, r"camera must be None or 0 for toy:line \(one camera\), got 1"),
        ({"camera": -1}, "camera must be an integer >= 0"),
    ],
)
def test_toy_argument_errors(kwargs, pattern):
    with pytest.raises(EnvError, match=pattern):
        ToyEnv(**kwargs)


def test_adding_a_suite_is_one_registry_line(monkeypatch):
    monkeypatch.setitem(envs.registry.SUITE_CLASSES, "toy", f"{__name__}:ToyEnv")
    monkeypatch.setattr(envs.registry, "SUITES", tuple(envs.registry.SUITE_CLASSES))
    assert "toy:line" in list_envs()
    assert parse_env_name("toy:line") == ("toy", "toy", "line")  # (suite, domain, task); domain = suite
    assert "toy" in envs.registry.state_suites()
    env = make_env("toy:line", seed=3, obs="state", options={"goal": 10.0})
    assert isinstance(env, ToyEnv) and env.time_limit == 20 and env.goal == 10.0  # the class's default
    with pytest.raises(EnvError, match=r"unknown option\(s\) colour for toy:line; allowed: goal"):
        make_env("toy:line", options={"colour": 1})
    with pytest.raises(EnvError, match="known toy tasks: toy:line"):
        make_env("toy:circle")


def test_every_registered_suite_is_a_base_env():
    for suite in envs.registry.SUITES:
        cls = envs.registry.suite_class(suite)
        assert issubclass(cls, BaseEnv) and cls.suite == suite


# ------------------------------------------------------- real suites
CASES: list[Any] = [
    ("dmc:walker_walk", {"size": 32}),
    ("dmc:cartpole_swingup", {"size": (24, 32), "obs": "pixels+state", "action_repeat": 3}),
    pytest.param("metaworld:reach", {"size": 32, "obs": "pixels+state"},
                 marks=pytest.mark.skipif(not metaworld_available(), reason="metaworld not installed")),
    pytest.param("driving:carracing", {"size": 48},
                 marks=pytest.mark.skipif(importlib.util.find_spec("Box2D") is None, reason="no Box2D")),
]


def _rollout(env, seeds, steps=4):
    """``reset(seed=s)`` then ``steps`` steps with the same fixed actions (some beyond +-1), per seed."""
    actions = np.random.default_rng(0).uniform(-1.3, 1.3, (steps, *env.action_space.shape))
    out = []
    for seed in seeds:
        out.append(env.reset(seed=seed))
        out.extend(env.step(action) for action in actions)
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, dict) and u and isinstance(next(iter(u.values())), np.ndarray):
                assert u.keys() == v.keys()
                for key in u:
                    assert u[key].dtype == v[key].dtype
                    np.testing.assert_array_equal(u[key], v[key])
            else:
                assert u == v


@pytest.mark.parametrize(("name", "kwargs"), CASES)
@pytest.mark.slow
def test_fresh_envs_are_bit_identical(name, kwargs):
    limit = 3 * kwargs.get("action_repeat", 2) + 1  # 4 agent steps, the last one a single env step
    a = make_env(name, seed=3, time_limit=limit, **kwargs)
    b = make_env(name, seed=3, time_limit=limit, **kwargs)
    try:
        first = _rollout(a, [None, None, 11])  # constructor seed, continued stream, explicit seed
        _assert_same(first, _rollout(b, [None, None, 11]))
        _assert_same(first[-5:], _rollout(a, [11]))  # reset(seed=11) replays the episode
        _assert_same(first[:5], _rollout(b, [3]))  # the constructor seed = reset(seed=3)
        key = "state" if "state" in first[0][0] else "image"  # (metaworld's goal marker: ~1 pixel at 32 px)
        assert not np.array_equal(first[0][0][key], first[5][0][key])  # reset() continued the stream
        # hand-checked properties
        repeat = a.action_repeat
        assert [info["env_steps"] for *_, info in first[1:5]] == [repeat, 2 * repeat, 3 * repeat, limit]
        assert [(t[2], t[3]) for t in first[1:5]] == [(False, False)] * 3 + [(False, True)]
        assert all(info["discount"] == 1.0 for *_, info in first[1:5])
        for obs, *_ in first:
            assert a.observation_space.contains(obs)
        np.testing.assert_array_equal(a.render(), first[-1][0]["image"])
    finally:
        a.close()
        b.close()


def test_dmc_action_repeat_sums_rewards_and_clips():
    """action_repeat=2 equals action_repeat=1 with every action taken twice; actions beyond +-1 act as +-1."""
    two = make_env("dmc:cartpole_swingup", obs="state", seed=0, action_repeat=2)
    one = make_env("dmc:cartpole_swingup", obs="state", seed=0, action_repeat=1)
    try:
        two.reset()
        one.reset()
        for action in ([0.3], [1.7], [-4.0]):
            obs2, r2, *_ = two.step(np.array(action))
            clipped = np.clip(action, -1, 1)
            r1 = one.step(clipped)[1]
            obs1, r1b, *_ = one.step(clipped)
            assert r2 == r1 + r1b
            np.testing.assert_array_equal(obs2["state"], obs1["state"])
    finally:
        two.close()
        one.close()
