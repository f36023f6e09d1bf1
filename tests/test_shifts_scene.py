"""Tests for the scene-level shifts (``shifts.scene``) and DMCEnv's rendering hooks (real MuJoCo rendering)."""

from __future__ import annotations

from contextlib import contextmanager

import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (selects MUJOCO_GL before dm_control is imported)
from envs import make_env
from shifts.base import ShiftError, ShiftWrapper, kinds, make_shift, supports
from shifts.scene import Distractors, foreground_mask

WALKER, CARTPOLE = "dmc:walker_walk", "dmc:cartpole_swingup"
SCENE_KINDS = ["background", "camera", "color", "distractors", "lighting", "texture"]
CASES = [(WALKER, k) for k in SCENE_KINDS] + [(CARTPOLE, "color"), (CARTPOLE, "camera")]
EPISODE = 3


@pytest.fixture(scope="module")
def pairs():
    """Per env name: (clean env, env the shifts are applied to); shifts are removed after every use."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = (make_env(name, size=64, seed=0), make_env(name, size=64, seed=0))
        return made[name]

    yield get
    for clean, shifted in made.values():
        clean.close()
        shifted.close()


@pytest.fixture(scope="module")
def actions():
    return np.random.default_rng(0).uniform(-1, 1, (20, 6)).astype(np.float32)


@contextmanager
def wrapped(env, kind, severity, seed=0):
    shift = make_shift(kind, severity, seed)
    try:
        yield ShiftWrapper(env, [shift])
    finally:
        if severity:
            shift.remove(env)


def rollout(env, actions, episode=EPISODE):
    """Frames ``(T+1, H, W, 3)``, rewards ``(T,)`` and qpos ``(T+1, nq)`` of one episode."""
    obs, _ = env.reset(seed=episode)
    physics = env.unwrapped.physics
    frames, rewards, qpos = [obs["image"]], [], [physics.data.qpos.copy()]
    for action in actions:
        obs, reward, *_ = env.step(action[: env.action_space.shape[0]])
        frames.append(obs["image"])
        rewards.append(reward)
        qpos.append(physics.data.qpos.copy())
    return np.stack(frames), np.asarray(rewards), np.stack(qpos)


def change(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------ registry
def test_registry_errors_and_severity_zero():
    assert [k for k in kinds("scene") if supports(k, WALKER)] == SCENE_KINDS  # weather: driving envs only
    with pytest.raises(ShiftError) as info:
        make_shift("nope", 1)
    for kind in SCENE_KINDS:
        assert kind in str(info.value)
    for kind in SCENE_KINDS:
        with pytest.raises(ShiftError, match="0-5"):
            make_shift(kind, 6)
        shift = make_shift(kind, 0)
        assert shift.severity == 0 and shift.level == "scene" and shift.kind == kind


# --------------------------------------------------------------- contract
def test_severity_zero_is_bit_identical(pairs, actions):
    for name, kind in CASES:
        clean, env = pairs(name)
        expected, _, _ = rollout(clean, actions[:3])
        with wrapped(env, kind, 0) as w:
            frames, _, _ = rollout(w, actions[:3])
            assert not env.render_hooks and not env.image_hooks
        np.testing.assert_array_equal(frames, expected, err_msg=kind)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_change_grows_with_severity(pairs, actions, name, kind):
    clean, env = pairs(name)
    expected, _, _ = rollout(clean, actions[:2])
    changes = []
    for severity in (1, 3, 5):
        with wrapped(env, kind, severity) as w:
            frames, _, _ = rollout(w, actions[:2])
        changes.append(change(frames, expected))
    assert 0.3 < changes[0] < changes[1] < changes[2], changes


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_deterministic_and_seeded(pairs, actions, name, kind):
    _, env = pairs(name)
    runs = {}
    for seed in (0, 0, 1):
        with wrapped(env, kind, 3, seed=seed) as w:
            runs.setdefault(seed, []).append(rollout(w, actions[:2])[0])
    np.testing.assert_array_equal(runs[0][0], runs[0][1])
    assert change(runs[0][0], runs[1][0]) > 0.3


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_physics_untouched(pairs, actions, kind):
    clean, env = pairs(WALKER)
    frames, rewards, qpos = rollout(clean, actions)
    with wrapped(env, kind, 5) as w:
        frames_s, rewards_s, qpos_s = rollout(w, actions)
    np.testing.assert_array_equal(qpos_s, qpos)
    np.testing.assert_array_equal(rewards_s, rewards)
    assert rewards.sum() > 0
    assert change(frames_s, frames) > 1


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_no_drift_across_resets_and_remove_restores(pairs, actions, kind):
    clean, env = pairs(WALKER)
    with wrapped(env, kind, 4) as w:
        first = rollout(w, actions[:4])[0]
        rollout(w, actions[:2], episode=EPISODE + 1)
        again = rollout(w, actions[:4])[0]
        np.testing.assert_array_equal(again, first)  # re-applied from the originals, not on top
    # after remove() the env renders exactly like a clean one
    np.testing.assert_array_equal(rollout(env, actions[:2])[0], rollout(clean, actions[:2])[0])
    assert not env.render_hooks and not env.image_hooks


# --------------------------------------------------------------- specifics
def test_render_hooks_api(pairs):
    clean, env = pairs(WALKER)
    seen = []

    def hook(model, data, scene):
        seen.append((type(model), type(data), isinstance(scene, mujoco.MjvScene)))

    env.reset(seed=0)
    reference = clean.reset(seed=0)[0]["image"]
    env.render_hooks.append(hook)
    env.image_hooks.append(lambda image: 255 - image)
    try:
        image = env.render()
        seg = env.render_segmentation()
    finally:
        env.render_hooks.clear()
        env.image_hooks.clear()
    np.testing.assert_array_equal(image, 255 - reference)
    assert seen[0] == (mujoco.MjModel, mujoco.MjData, True) and len(seen) == 2  # RGB + segmentation
    assert seg.shape == (64, 64, 2) and seg.dtype == np.int32
    np.testing.assert_array_equal(env.render(), reference)


def test_foreground_rule_and_background_keeps_agent(pairs, actions):
    clean, env = pairs(WALKER)
    clean.reset(seed=EPISODE)
    seg = clean.render_segmentation()
    model = clean.physics.model
    fg = foreground_mask(seg, np.asarray(model.geom_bodyid) != 0)
    floor = seg[..., 0] == model.name2id("floor", "geom")
    assert 0.02 < fg.mean() < 0.5 and floor.any() and not fg[floor].any()
    assert (seg[~fg, 1] != -1).any() and (seg[~fg, 1] == -1).any()  # floor and skybox are background
    expected = clean.render()
    with wrapped(env, "background", 5) as w:
        image = w.reset(seed=EPISODE)[0]["image"]
    np.testing.assert_array_equal(image[fg], expected[fg])
    assert change(image[~fg], expected[~fg]) > 20


def _camera_frame(scene, first):
    """Positions of the scene geoms from index ``first`` on, in the (tracking) camera's forward/up frame."""
    cam = scene.camera[0]
    rel = np.array([g.pos for g in list(scene.geoms)[first:]]) - cam.pos
    return rel @ np.stack([cam.forward, cam.up]).T


def test_distractors_static_then_moving(pairs):
    _, env = pairs(WALKER)
    scene = env._camera.scene
    for severity, moving in ((2, False), (5, True)):
        with wrapped(env, "distractors", severity) as w:
            w.reset(seed=0)
            base = env.physics.model.ngeom
            assert scene.ngeom == base + Distractors._COUNTS[severity]
            before = _camera_frame(scene, base)
            w.step(np.zeros(6, np.float32))
            after = _camera_frame(scene, base)
            assert np.allclose(before, after, atol=1e-5) == (not moving), severity
