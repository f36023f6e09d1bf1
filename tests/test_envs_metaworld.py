"""Tests for the ``metaworld:`` suite (:class:`envs.metaworld.MetaWorldEnv`): real Meta-World v3 physics and
headless rendering at small sizes. Skipped when the optional metaworld package is not installed (except the
"not installed" behaviour, which is simulated)."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

from envs import EnvError, list_envs, make_env, make_vector_env, registry
from envs.registry import metaworld_available, parse_env_name  # envs first: selects MUJOCO_GL

needs_metaworld = pytest.mark.skipif(not metaworld_available(), reason="metaworld is not installed")

REACH = "metaworld:reach"
TASKS = ["reach", "push", "pick-place", "door-open", "drawer-close", "button-press-topdown", "window-open"]


def _rollout(env: gymnasium.Env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    images, rewards = [obs["image"]], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        images.append(obs["image"])
        rewards.append(reward)
    return np.stack(images), np.asarray(rewards)


@pytest.fixture
def reach():
    env = make_env(REACH, size=64, seed=0, obs="pixels+state")
    yield env
    env.close()


# ---------------------------------------------------------------- registry
@needs_metaworld
def test_registry_lists_and_parses_mt1_tasks():
    names = list_envs()
    assert names == sorted(names)
    mw = [n for n in names if n.startswith("metaworld:")]
    assert len(mw) == 50  # MT1 v3
    for task in TASKS:
        assert f"metaworld:{task}" in mw
    assert "dmc:walker_walk" in names
    assert parse_env_name("metaworld:pick-place") == ("metaworld", "mt1", "pick-place")
    assert parse_env_name("metaworld:reach-v3") == ("metaworld", "mt1", "reach")  # -v3 accepted


@needs_metaworld
def test_unknown_metaworld_task_lists_tasks():
    with pytest.raises(EnvError) as info:
        make_env("metaworld:reech")
    msg = str(info.value)
    assert "'metaworld:reech'" in msg and "did you mean 'metaworld:reach'" in msg
    assert "metaworld:pick-place" in msg and "metaworld:window-open" in msg
    assert "\n" not in msg
    with pytest.raises(EnvError, match="known suites: dmc, metaworld"):
        make_env("metaworlds:reach")


def test_without_metaworld_list_envs_works_and_make_env_names_pip(monkeypatch):
    monkeypatch.setattr(registry, "_metaworld_table", lambda: "ModuleNotFoundError: No module named 'metaworld'")
    names = list_envs()
    assert "dmc:walker_walk" in names
    assert not any(n.startswith("metaworld:") for n in names)  # suite omitted
    for call in (lambda: make_env(REACH), lambda: make_vector_env(REACH, 2), lambda: parse_env_name(REACH)):
        with pytest.raises(EnvError, match=r"pip install metaworld==3\.1\.1"):
            call()


@needs_metaworld
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"camera": "cornr2"}, r"unknown camera 'cornr2'.*corner2 \(2\)"),
        ({"camera": 7}, r"camera 7 out of range .*\(ids 0\.\.6"),
        ({"camera": -1}, "camera must be an integer >= 0"),
        ({"size": 0}, "size must be"),
        ({"time_limit": 0}, "time_limit must be an integer >= 1"),
        ({"seed": -1}, "seed must be None or an integer"),
        ({"options": {"stat": True}}, "unknown option.*stat.*allowed: goal"),
        ({"options": {"state": True}}, r"option 'state' of metaworld:reach was replaced by .*obs='pixels\+state'"),
        ({"obs": "proprio"}, "obs must be one of 'pixels', 'state', 'pixels\\+state', got 'proprio'"),
        ({"options": {"goal": 50}}, r"goal must be None or an MT1 goal index in \[0, 50\), got 50"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_raise_env_error(kwargs, pattern):
    with pytest.raises(EnvError, match=pattern):
        make_env(REACH, **kwargs)


# ---------------------------------------------------------- single env
@needs_metaworld
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.slow
def test_task_resets_steps_and_renders(task):
    env = make_env(f"metaworld:{task}", size=64, seed=0)
    assert env.time_limit == 500 and env.action_repeat == 2  # Meta-World's episode: 500 env steps
    assert env.camera == "corner2" and env.camera_rolled
    assert env.action_space.shape == (4,) and env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    assert set(env.observation_space.spaces) == {"image"}  # no state unless requested
    obs, info = env.reset()
    assert info == {"discount": 1.0, "env_steps": 0, "success": 0.0}
    for k in range(1, 3):
        image = obs["image"]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert env.observation_space.contains(obs) and image.std() > 5
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and 0.0 <= reward <= 20.0  # 2 env steps, each in [0, 10]
        assert terminated is False and truncated is False
        assert info["env_steps"] == 2 * k and info["success"] in (0.0, 1.0)
    np.testing.assert_array_equal(env.render(), obs["image"])  # render() = current state
    env.close()


@needs_metaworld
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is:UserWarning")
def test_state_observation_and_gymnasium_checker():
    env = make_env(REACH, size=16, seed=0, obs="pixels+state")
    obs, _ = env.reset()
    assert obs["state"].shape == (39,) and obs["state"].dtype == np.float32
    # MT1 is goal-observable: the last 3 entries are the goal, Meta-World's own goal
    np.testing.assert_allclose(obs["state"][-3:], env.metaworld_env._target_pos, atol=1e-6)
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)
    env.close()


@needs_metaworld
@pytest.mark.slow
def test_seeding_reproduces_pixels_and_seeds_pick_goals():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(8, 4)).astype(np.float32)
    env_a = make_env(REACH, size=64, obs="pixels+state")
    env_b = make_env(REACH, size=64, seed=3)
    images_a, rewards_a = _rollout(env_a, 3, actions)
    images_b, rewards_b = _rollout(env_b, 3, actions)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    images_again, rewards_again = _rollout(env_a, 3, actions)  # same env, reseeded
    np.testing.assert_array_equal(images_a, images_again)
    np.testing.assert_array_equal(rewards_a, rewards_again)
    # constructor seed == reset(seed=...)
    env_c = make_env(REACH, size=64, seed=3)
    np.testing.assert_array_equal(env_c.reset()[0]["image"], images_a[0])
    # a seed fixes the goal; other seeds give other goals (and pixels)
    goal = env_a.reset(seed=3)[0]["state"][-3:]
    index = env_a.task_index
    assert env_a.reset(seed=3)[0]["state"][-3:].tolist() == goal.tolist()
    others = {}
    for seed in (4, 5):
        obs, _ = env_a.reset(seed=seed)
        others[seed] = (env_a.task_index, obs["state"][-3:], obs["image"])
        assert others[seed][0] != index and not np.allclose(others[seed][1], goal)
        assert not np.array_equal(others[seed][2], images_a[0])  # the goal marker: only ~5 pixels at 64 px
    # reset() without a seed continues the seeded stream: same goal sequence in two envs
    env_b.reset(seed=7)
    env_c.reset(seed=7)
    seq_b, seq_c = [], []
    for _ in range(3):
        env_b.reset()
        env_c.reset()
        seq_b.append(env_b.task_index)
        seq_c.append(env_c.task_index)
    assert seq_b == seq_c and len(set(seq_b)) > 1
    for env in (env_a, env_b, env_c):
        env.close()


@needs_metaworld
def test_pinned_goal_is_used_for_every_episode():
    env = make_env(REACH, size=8, seed=0, obs="pixels+state", options={"goal": 7})
    goals = []
    for seed in (None, 1, 2, None):
        obs, _ = env.reset(seed=seed)
        assert env.task_index == 7
        goals.append(obs["state"][-3:])
    np.testing.assert_array_equal(goals[0], goals[-1])
    assert all(np.array_equal(g, goals[0]) for g in goals)
    env.close()


@needs_metaworld
@pytest.mark.slow
def test_reach_success_with_scripted_p_controller(reach):
    obs, info = reach.reset(seed=0)
    assert info["success"] == 0.0
    successes = []
    for _ in range(40):
        state = obs["state"]
        action = np.zeros(4, np.float32)
        action[:3] = np.clip(10.0 * (state[-3:] - state[:3]), -1.0, 1.0)  # hand -> goal
        obs, reward, _, _, info = reach.step(action)
        successes.append(info["success"])
        if info["success"]:
            break
    assert successes[0] == 0.0 and successes[-1] == 1.0, successes
    assert reward > 15.0  # near the goal both env steps reward ~10


@needs_metaworld
@pytest.mark.parametrize(("time_limit", "repeat", "agent_steps"), [(7, 3, 3), (501, 100, 6)])
@pytest.mark.slow
def test_truncation_at_exactly_time_limit_env_steps(time_limit, repeat, agent_steps):
    # 501 > Meta-World's own max_path_length (500): still allowed
    env = make_env(REACH, size=8, seed=0, time_limit=time_limit, action_repeat=repeat)
    env.reset()
    for k in range(1, agent_steps + 1):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert terminated is False
        assert truncated is (k == agent_steps), k
        assert info["env_steps"] == min(k * repeat, time_limit)
    assert info["env_steps"] == time_limit
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    assert env.reset()[1]["env_steps"] == 0
    env.close()


@needs_metaworld
def test_invalid_actions_and_close():
    env = make_env(REACH, size=8, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(4,\).*got shape \(3,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    env.step(np.full(4, 5.0))  # clipped to [-1, 1]
    env.close()
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


@needs_metaworld
def test_image_is_right_side_up(reach):
    """corner2 is defined upside down in Meta-World; the env rolls it 180 degrees (checked visually: table and
    floor in the lower half, the plain grey wall at the top)."""
    image = reach.reset(seed=0)[0]["image"].astype(np.float64)
    h = image.shape[0]
    brown = image[..., 0] > image[..., 2] + 30  # the wooden table top
    assert brown[h // 2:].mean() > 0.25 and brown[: h // 2].mean() < 0.12
    top = image[: h // 8]
    assert (top.max(-1) - top.min(-1)).mean() < 15  # the unsaturated grey wall
    # geometric check: the table's pixels (segmentation) are mostly in the lower half
    seg = reach.render_segmentation()
    model = reach.physics.model.ptr
    table = [g for g in range(model.ngeom) if model.body(int(model.geom_bodyid[g])).name == "tablelink"]
    rows = np.nonzero((seg[..., 1] == 5) & np.isin(seg[..., 0], table))[0]
    assert rows.size > 100 and rows.mean() > 0.6 * h
    # the upward-facing topview camera is not rolled
    top_env = make_env(REACH, size=8, seed=0, camera="topview")
    assert top_env.camera_id == 0 and not top_env.camera_rolled
    top_env.close()


@needs_metaworld
def test_hook_api_and_physics_handle_match_dmcenv(reach):
    import mujoco

    physics = reach.physics
    assert physics.model.ptr is reach.metaworld_env.model and physics.data.ptr is reach.metaworld_env.data
    clean = reach.reset(seed=0)[0]["image"]
    calls = []

    def dark(model, data, scene):
        assert isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData)
        calls.append(scene.ngeom)
        for i in range(scene.nlight):
            scene.lights[i].diffuse[:] = 0.0
            scene.lights[i].ambient[:] = 0.0
            scene.lights[i].specular[:] = 0.0

    reach.render_hooks.append(dark)
    reach.image_hooks.append(lambda image: 255 - image)
    shifted = reach.render()
    assert calls and calls[0] > 0
    assert (255 - shifted).mean() < clean.mean() - 20  # darker, then inverted
    seg = reach.render_segmentation()  # render hooks run, image hooks not
    assert seg.shape == (64, 64, 2) and seg.dtype == np.int32 and len(calls) == 2
    assert (seg[..., 1] == 5).mean() > 0.3  # mostly model geoms
    reach.render_hooks.clear()
    reach.image_hooks.clear()
    np.testing.assert_array_equal(reach.render(), clean)


@needs_metaworld
@pytest.mark.slow
def test_scene_shifts_run_on_metaworld():
    from shifts.base import ShiftWrapper, make_shift

    env = ShiftWrapper(make_env(REACH, size=32, seed=0), [make_shift("texture", 3, seed=1),
                                                          make_shift("background", 3, seed=1)])
    clean_env = make_env(REACH, size=32, seed=0)
    clean = clean_env.reset(seed=0)[0]["image"]
    shifted = env.reset(seed=0)[0]["image"]
    assert np.abs(shifted.astype(int) - clean.astype(int)).mean() > 5
    env.close()  # removes the shifts and restores the model
    clean_env.close()


# ------------------------------------------------------------- vector env
@needs_metaworld
@pytest.mark.slow
def test_vector_env_with_two_metaworld_envs():
    venv = make_vector_env(REACH, 2, seed=5, size=16, time_limit=4, obs="pixels+state")
    try:
        assert isinstance(venv, gymnasium.vector.AsyncVectorEnv)
        obs, info = venv.reset()
        assert obs["image"].shape == (2, 16, 16, 3) and obs["image"].dtype == np.uint8
        assert obs["state"].shape == (2, 39)
        assert not np.allclose(obs["state"][0, -3:], obs["state"][1, -3:])  # seeds 5 and 6: different goals
        action = np.zeros((2, 4), np.float32)
        _, reward, terminated, truncated, info = venv.step(action)
        assert reward.shape == (2,) and not truncated.any() and not terminated.any()
        np.testing.assert_array_equal(info["env_steps"], [2, 2])
        assert info["success"].shape == (2,)
        _, _, terminated, truncated, info = venv.step(action)
        assert truncated.all() and not terminated.any()
        assert info["final_obs"][0]["image"].shape == (16, 16, 3)
        np.testing.assert_array_equal(info["final_info"]["env_steps"], [4, 4])
    finally:
        venv.close()


# ------------------------------------------------------------ training
@needs_metaworld
@pytest.mark.slow
def test_train_smoke_run(tmp_path, single_thread):
    from mbrl.config import build_config
    from mbrl.runs.train import train

    cfg = build_config([
        "env=metaworld:reach", "size=XS", "model.deter=64", "model.hidden=32", "model.units=32", "model.blocks=4",
        "model.stoch=4", "model.classes=4", "model.cnn_depth=4", "model.bins=31", "image_size=32", "batch_size=2",
        "batch_length=8", "train_ratio=4", "prefill=100", "steps=400", "time_limit=200", "log_every=100",
        "save_every=0", "replay_capacity=2000", "wandb_mode=disabled", "progress=false", "threads=1",
        "device=cpu", f"run_dir={tmp_path / 'run'}",
    ])
    run_dir = train(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    episodes = [r for r in records if r["kind"] == "episode"]
    assert [r["length"] for r in episodes] == [200, 200]
    assert all(np.isfinite(r["return"]) and r["return"] >= 0 for r in episodes)
    assert all(r["success"] in (0.0, 1.0) for r in episodes)  # Meta-World success is logged per episode
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records[-1]["env_steps"] == 400 and train_records[-1]["updates"] > 0
    assert np.isfinite(train_records[-1]["wm/loss"])
    assert (run_dir / "checkpoint").is_dir()
