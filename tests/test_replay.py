"""Tests for :mod:`mbrl.replay`: layout, contiguous sampling (also across the ring wrap-around), per-env
streams, sampling preconditions and the atomic save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.errors import CheckpointError
from mbrl.replay import KEYS, Replay

IMG = (8, 8, 3)
A = 2


def step(t: float, *, first: bool = False, terminal: bool = False) -> dict:
    """One step whose every field encodes the counter ``t`` (reward = t, image = t mod 256, action = (t, -t))."""
    return {"image": np.full(IMG, int(t) % 256, np.uint8), "action": np.array([t, -t], np.float32),
            "reward": np.float32(t), "is_first": first, "is_terminal": terminal}


def fill(replay: Replay, n: int, env: int = 0, offset: float = 0.0) -> None:
    for t in range(n):
        replay.add(env, step(offset + t, first=(t == 0)))


def test_sample_shapes_and_dtypes():
    r = Replay(100, 1, IMG, A)
    fill(r, 20)
    assert len(r) == 20 and r.total_added == 20
    b = r.sample(4, 5)
    assert set(b) == set(KEYS)
    assert b["image"].shape == (4, 5, *IMG) and b["image"].dtype == torch.uint8
    assert b["action"].shape == (4, 5, A) and b["action"].dtype == torch.float32
    for k, dtype in (("reward", torch.float32), ("is_first", torch.bool), ("is_terminal", torch.bool)):
        assert b[k].shape == (4, 5) and b[k].dtype == dtype, k
    assert all(v.device.type == "cpu" for v in b.values())


def test_fields_of_one_step_stay_aligned():
    r = Replay(50, 1, IMG, A, seed=3)
    fill(r, 40)
    b = r.sample(16, 6)
    t = b["reward"]
    assert torch.equal(b["image"][..., 0, 0, 0].float(), t)
    assert torch.all(b["image"] == b["image"][..., :1, :1, :1])  # whole image carries the same counter
    assert torch.equal(b["action"][..., 0], t) and torch.equal(b["action"][..., 1], -t)


def test_sequences_are_contiguous_before_wraparound():
    r = Replay(10, 1, IMG, A, seed=1)
    fill(r, 5)
    b = r.sample(32, 5)  # only one valid start: the whole stream
    assert torch.equal(b["reward"], torch.arange(5.0).expand(32, 5))
    b = r.sample(64, 3)
    assert torch.all(b["reward"].diff(dim=1) == 1)
    assert set(b["reward"][:, 0].tolist()) == {0.0, 1.0, 2.0}  # every start position is drawn


@pytest.mark.parametrize("added", [10, 11, 17, 37])
def test_sequences_never_jump_across_the_write_head(added):
    cap = 10
    r = Replay(cap, 1, IMG, A, seed=added)
    fill(r, added)
    assert len(r) == cap and r.total_added == added
    oldest = added - cap
    for length in (2, 4, 7):
        b = r.sample(256, length)
        rew = b["reward"]
        assert torch.all(rew.diff(dim=1) == 1), f"non-contiguous sequence for length {length}"
        assert rew.min() >= oldest and rew.max() <= added - 1  # only the newest `cap` steps survive
        starts = set(rew[:, 0].long().tolist())
        assert starts == set(range(oldest, added - length + 1))  # uniform over all valid starts
    full = r.sample(8, cap)  # a sequence as long as the buffer is the whole buffer, oldest first
    assert torch.equal(full["reward"], torch.arange(oldest, added, dtype=torch.float32).expand(8, cap))


def test_first_step_has_is_first_and_storage_is_not_modified():
    r = Replay(64, 1, IMG, A, seed=2)
    for t in range(40):
        r.add(0, step(t, first=(t % 10 == 0)))
    b = r.sample(128, 8)
    assert torch.all(b["is_first"][:, 0])
    # inside a sequence is_first marks the stored episode starts only
    inner_expected = (b["reward"][:, 1:].long() % 10) == 0
    assert torch.equal(b["is_first"][:, 1:], inner_expected)
    # forcing is_first on the sampled copy must not write into the buffer
    assert r.data["is_first"][0, :40].sum() == 4
    assert not r.data["is_first"][0, 1]


def test_multi_env_streams_never_mix():
    n = 3
    r = Replay(30, n, IMG, A, seed=5)
    assert r.per_env == 10
    for t in range(25):  # overfill each env's ring (10 steps) too
        rew = np.array([1000.0 * e + t for e in range(n)], np.float32)
        r.add_batch({"image": np.zeros((n, *IMG), np.uint8), "action": np.zeros((n, A), np.float32),
                     "reward": rew, "is_first": np.full(n, t == 0), "is_terminal": np.zeros(n, bool)})
    assert len(r) == 30 and r.total_added == 75
    b = r.sample(512, 6)
    rew = b["reward"]
    env_of = torch.div(rew, 1000, rounding_mode="floor")
    assert torch.all(env_of == env_of[:, :1]), "a sequence mixes env streams"
    assert torch.all(rew.diff(dim=1) == 1)
    assert set(env_of[:, 0].long().tolist()) == set(range(n))
    assert torch.all(rew % 1000 >= 15)  # per-env ring keeps only that env's newest 10 steps


def test_add_batch_subset_of_envs_and_uniform_over_starts():
    r = Replay(40, 2, IMG, A, seed=11)
    for t in range(12):
        r.add_batch({k: np.stack([v]) for k, v in step(t).items()}, envs=np.array([0]))
    for t in range(7):
        r.add(1, step(1000 + t))
    assert r.count.tolist() == [12, 7]
    with pytest.raises(ValueError):
        Replay(1, 2, IMG, A)
    # length 5: env 0 has 8 start positions, env 1 has 3 -> env 0 drawn ~8/11 of the time
    b = r.sample(4000, 5)
    frac0 = float((b["reward"][:, 0] < 1000).float().mean())
    assert abs(frac0 - 8 / 11) < 0.04
    # length 8: only env 0 holds enough steps
    b = r.sample(200, 8)
    assert torch.all(b["reward"] < 1000) and torch.all(b["reward"].diff(dim=1) == 1)


def test_can_sample_and_error_when_too_few_steps():
    r = Replay(20, 2, IMG, A)
    assert not r.can_sample(1)
    with pytest.raises(ValueError, match="need 1"):
        r.sample(2, 1)
    for t in range(3):
        r.add(0, step(t))
        r.add(1, step(t))
    # 6 steps in total, but no single env holds 4
    assert len(r) == 6
    assert r.can_sample(3) and not r.can_sample(4)
    with pytest.raises(ValueError, match="holds 6 steps"):
        r.sample(2, 4)
    r.add(1, step(3))
    assert r.can_sample(4)
    assert r.sample(3, 4)["reward"].shape == (3, 4)
    assert not r.can_sample(11)  # longer than one env's ring can ever hold


def _random_replay(capacity: int, num_envs: int, steps: int, seed: int) -> Replay:
    rng = np.random.default_rng(seed)
    r = Replay(capacity, num_envs, IMG, A, seed=seed)
    for t in range(steps):
        for e in range(num_envs):
            r.add(e, {"image": rng.integers(0, 256, IMG, dtype=np.uint8),
                      "action": rng.standard_normal(A).astype(np.float32), "reward": np.float32(t + 100 * e),
                      "is_first": bool(rng.random() < 0.1), "is_terminal": bool(rng.random() < 0.05)})
    return r


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("steps", [6, 23])  # partially filled, and wrapped around
def test_save_load_round_trip(tmp_path, steps):
    r = _random_replay(20, 2, steps, seed=steps)
    r.sample(5, 4)  # advance the RNG so that copying its state matters
    path = tmp_path / "replay-1.npz"
    r.save(path)
    assert path.is_file() and not (tmp_path / "replay-1.npz.npz").exists()
    r2 = _random_replay(20, 2, 15, seed=99)  # a dirty buffer: stale data must not leak into samples
    r2.load(path)
    assert len(r2) == len(r) and r2.total_added == r.total_added
    assert np.array_equal(r2.head, r.head) and np.array_equal(r2.count, r.count)
    r2.rng.bit_generator.state = r.rng.bit_generator.state
    for _ in range(3):
        _assert_same(r.sample(16, 4), r2.sample(16, 4))
    # writes continue at the restored head
    for rep in (r, r2):
        rep.add(1, step(555, first=True))
    _assert_same(r.sample(32, 3), r2.sample(32, 3))
    assert r2.total_added == r.total_added == 2 * steps + 1


def test_load_rejects_a_different_buffer_layout(tmp_path):
    r = _random_replay(20, 2, 12, seed=0)
    path = tmp_path / "r.npz"
    r.save(path)
    for other in (Replay(30, 2, IMG, A), Replay(10, 1, IMG, A), Replay(20, 2, (4, 4, 3), A),
                  Replay(20, 2, IMG, A + 1)):
        before = {k: v.copy() for k, v in other.data.items()}
        with pytest.raises(CheckpointError, match="r.npz' does not fit this run's replay"):  # one line, the file
            other.load(path)
        assert len(other) == 0 and other.total_added == 0
        if other.per_env == r.per_env and other.num_envs == r.num_envs:
            continue  # shapes checked per key; earlier keys may already be copied
        assert all(np.array_equal(before[k], other.data[k]) for k in before)


def test_atomic_save_leaves_no_temp_files(tmp_path):
    r = _random_replay(20, 1, 25, seed=4)
    path = tmp_path / "replay-25.npz"
    r.save(path)
    r.save(path)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["replay-25.npz"]
    good = path.read_bytes()

    def boom():
        raise RuntimeError("disk full")

    r.state_dict = boom  # a failing write: the old file must stay intact, no temp file left behind
    with pytest.raises(RuntimeError):
        r.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["replay-25.npz"]
    assert path.read_bytes() == good


def test_feature_cache_is_sampled_with_its_step_and_checked_on_load(tmp_path):
    r = Replay(30, 1, IMG, A, seed=0, feature_dim=5)
    for t in range(35):
        r.add(0, {**step(t), "features": np.full(5, t, np.float16)})
    b = r.sample(64, 4)
    assert b["features"].shape == (64, 4, 5) and b["features"].dtype == torch.float16
    assert torch.equal(b["features"][..., 0].float(), b["reward"])
    path = tmp_path / "f.npz"
    r.save(path)
    with pytest.raises(CheckpointError):
        Replay(30, 1, IMG, A).load(path)  # a buffer without the cache
    with pytest.raises(CheckpointError):
        Replay(30, 1, IMG, A, feature_dim=7).load(path)
    plain = tmp_path / "plain.npz"
    _random_replay(30, 1, 5, seed=0).save(plain)
    with pytest.raises(CheckpointError):
        Replay(30, 1, IMG, A, feature_dim=5).load(plain)  # a cache-enabled buffer, file without features
    r2 = Replay(30, 1, IMG, A, feature_dim=5)
    r2.load(path)
    r2.rng.bit_generator.state = r.rng.bit_generator.state
    _assert_same(r.sample(8, 6), r2.sample(8, 6))

