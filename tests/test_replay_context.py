"""Replay context (``replay_context``, reference code danijar/dreamerv3 ``replay_context``): replay keeps each
step's posterior latent, a sampled sequence starts from the stored latent of the step before it, every update
writes its posterior back for exactly the replayed steps, checkpoints keep the latents, and ``replay_context=0``
(the default) is today's behaviour, for a run stored before the key existed too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, write_untrained_run

from envs.errors import CheckpointError, ConfigError
from mbrl.config import build_config, model_hash
from mbrl.replay import MixedReplay, Replay, read_npz
from mbrl.runs import checkpoint

IMG = (4, 4, 3)
A = 2
D, S, C = 3, 2, 4


def latent_of(t: int) -> tuple[np.ndarray, np.ndarray]:
    """A latent that encodes the counter ``t``: deter ``(t, t + 0.5, -t)``, stoch one-hot class ``(t + s) % C``."""
    deter = np.array([t, t + 0.5, -t], np.float32)
    stoch = np.zeros((S, C), np.float32)
    for s in range(S):
        stoch[s, (t + s) % C] = 1.0
    return deter, stoch


def step(t: int, *, first: bool = False, latent: bool = True) -> dict:
    out = {"image": np.full(IMG, t % 256, np.uint8), "action": np.array([t, -t], np.float32),
           "reward": np.float32(t), "is_first": first, "is_terminal": False}
    if latent:
        out["deter"], out["stoch"] = latent_of(t)
    return out


def filled(n: int = 30, capacity: int = 100, seed: int = 0, episode: int = 1000, missing=()) -> Replay:
    r = Replay(capacity, 1, IMG, A, seed=seed, latent=(D, S, C))
    for t in range(n):
        r.add(0, step(t, first=(t % episode == 0), latent=t not in missing))
    return r


# ------------------------------------------------------------------------------------------------ replay


def test_start_state_is_the_stored_latent_of_the_step_before():
    r = filled(30)
    b = r.sample(512, 5, context=1)
    t0 = b["reward"][:, 0].long()
    assert torch.all(b["reward"].diff(dim=1) == 1) and t0.min() >= 1  # step 0 can only be context
    for i, t in enumerate(t0.tolist()):
        deter, stoch = latent_of(t - 1)
        assert torch.equal(b["start_deter"][i], torch.from_numpy(deter))
        assert torch.equal(b["start_stoch"][i], torch.from_numpy(stoch))
        assert torch.equal(b["start_action"][i], torch.tensor([t - 1.0, 1.0 - t]))  # a_{t-1}
    assert b["start_stoch"].dtype == torch.float32 and b["start_deter"].shape == (512, D)
    assert not b["is_first"].any()  # one episode, every start latent present: no reset
    assert torch.equal(b["slot"], b["reward"].long())  # one env: the slot is the position
    assert set(t0.tolist()) == set(range(1, 26))  # uniform over every start with a step before it


def test_context_k_samples_k_more_steps_and_uses_the_last():
    r = filled(30)
    b = r.sample(32, 4, context=3)
    assert b["reward"].shape == (32, 4)
    t0 = b["reward"][:, 0].long()
    assert t0.min() >= 3
    assert torch.equal(b["start_deter"][:, 0], (t0 - 1).float())


def test_missing_latent_or_episode_start_starts_from_zero_state():
    r = filled(30, episode=10, missing=(4,))  # episodes start at 0, 10, 20; step 4 has no latent
    b = r.sample(512, 3, context=1)
    t0 = b["reward"][:, 0].long()
    expect = (t0 == 5) | (t0 % 10 == 0)  # after the missing latent, or an episode start
    assert torch.equal(b["is_first"][:, 0], expect)
    assert torch.all(b["start_stoch"][t0 == 5] == 0)
    assert not r.data["is_first"][0, 5]  # the buffer itself is not changed


def test_context_zero_is_the_plain_batch_bit_for_bit():
    plain = Replay(100, 1, IMG, A, seed=4)
    for t in range(30):
        plain.add(0, step(t, first=t == 0, latent=False))
    with_latents = filled(30, seed=4)
    for _ in range(3):
        a, b = plain.sample(8, 6), with_latents.sample(8, 6)
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.all(b["is_first"][:, 0])
    with pytest.raises(ValueError, match="latents"):
        plain.sample(2, 3, context=1)


def test_write_back_updates_exactly_the_sampled_rows():
    r = Replay(40, 2, IMG, A, seed=1, latent=(D, S, C))
    for t in range(25):  # env 1 wraps around its 20-step ring
        r.add(0, step(t, first=t == 0))
        r.add(1, step(100 + t, first=t == 0))
    before = {k: r.data[k].copy() for k in ("deter", "stoch")}
    b = r.sample(3, 4, context=1)
    slot = b["slot"]
    deter = slot.float()[..., None] * 10 + torch.arange(D)  # by slot: a step sampled twice gets one value
    stoch = torch.zeros(3, 4, S, C)
    stoch[..., 3] = 1.0 + 1e-7  # a straight-through sample: 1 +- ulp, stored as an exact one-hot
    r.write_latents(slot, deter, stoch)
    flat_d, flat_s = r.data["deter"].reshape(-1, D), r.data["stoch"].reshape(-1, S, C)
    touched = set(slot.flatten().tolist())
    for i in range(flat_d.shape[0]):
        old_d, old_s = before["deter"].reshape(-1, D)[i], before["stoch"].reshape(-1, S, C)[i]
        if i in touched:
            continue
        assert np.array_equal(flat_d[i], old_d) and np.array_equal(flat_s[i], old_s), i
    for (bi, ti), s in np.ndenumerate(slot.numpy()):
        assert np.array_equal(flat_d[s], deter[bi, ti].numpy())
        assert flat_s[s].dtype == bool and flat_s[s][:, 3].all() and flat_s[s].sum() == S
    # the rows read back are the ones sampled: same env, same time index
    env, idx = np.divmod(slot.numpy(), r.per_env)
    assert np.array_equal(r.data["reward"][env, idx], b["reward"].numpy())
    with pytest.raises(ValueError, match="slots"):
        r.write_latents(np.array([80]), np.zeros((1, D)), np.zeros((1, S, C)))


def test_steps_without_latent_are_stored_as_no_context():
    r = Replay(5, 1, IMG, A, latent=(D, S, C))
    for t in range(5):
        r.add(0, step(t))
    r.add(0, step(5, latent=False))  # overwrites slot 0 of the ring
    assert not r.data["stoch"][0, 0].any() and not r.data["deter"][0, 0].any()
    assert r.data["stoch"][0, 1].any()


def test_save_load_keeps_latents_and_older_replays_load_without(tmp_path):
    r = filled(20)
    r.write_latents(np.array([3]), np.full((1, D), 9.0), latent_of(1)[1][None])
    r.save(tmp_path / "r.npz")
    arrays = read_npz(tmp_path / "r.npz")
    assert arrays["data_stoch"].dtype == bool and not any(v.dtype.hasobject for v in arrays.values())
    back = Replay(100, 1, IMG, A, latent=(D, S, C))
    back.load(tmp_path / "r.npz")
    assert np.array_equal(back.data["deter"], r.data["deter"]) and np.array_equal(back.data["stoch"], r.data["stoch"])
    # a replay written without latents (replay_context=0, or before the key existed) loads: no context anywhere
    old = Replay(100, 1, IMG, A)
    for t in range(20):
        old.add(0, step(t, first=t == 0, latent=False))
    old.save(tmp_path / "old.npz")
    back.load(tmp_path / "old.npz")
    assert not back.data["stoch"].any() and not back.data["deter"].any()
    assert np.array_equal(back.data["reward"], old.data["reward"])
    assert torch.all(back.sample(16, 4, context=1)["is_first"][:, 0])
    # and a replay with latents loads into a buffer that keeps none (they are dropped)
    plain = Replay(100, 1, IMG, A)
    plain.load(tmp_path / "r.npz")
    assert "deter" not in plain.data and np.array_equal(plain.data["reward"], r.data["reward"])
    with pytest.raises(CheckpointError, match="deter"):
        Replay(100, 1, IMG, A, latent=(D + 1, S, C)).load(tmp_path / "r.npz")


def test_mixed_replay_routes_context_and_write_back_to_each_buffer():
    target = filled(30, seed=1)
    source = Replay(60, 1, IMG, A, seed=2, latent=(D, S, C))
    for t in range(40):
        source.add(0, step(500 + t, first=t == 0))
    mixed = MixedReplay(target, [source], 0.5, seed=3)
    b = mixed.sample(16, 3, context=1)
    from_target = b["reward"][:, 0] < 500
    assert 0 < from_target.sum() < 16
    assert torch.equal(b["start_deter"][:, 0], b["reward"][:, 0] - 1)
    assert torch.all(b["slot"][from_target] < 100) and torch.all(b["slot"][~from_target] >= 100)
    mark = -0.25  # no stored latent_of(t) holds it
    mixed.write_latents(b["slot"], torch.full((16, 3, D), mark), b["start_stoch"][:, None].expand(16, 3, S, C))
    for buf, rows in ((target, from_target), (source, ~from_target)):
        env, idx = np.divmod(b["slot"][rows].numpy() - (0 if buf is target else 100), buf.per_env)
        assert np.all(buf.data["deter"][env, idx] == mark)
        assert np.array_equal(buf.data["reward"][env, idx], b["reward"][rows].numpy())
    assert (target.data["deter"] == mark).any(-1).sum() + (source.data["deter"] == mark).any(-1).sum() \
        == len(set(b["slot"].flatten().tolist()))


# ------------------------------------------------------------------------------------------------ model


def test_world_model_filter_starts_from_the_start_latent(tiny_cfg, monkeypatch):
    from mbrl.agent import Agent

    cfg = tiny_cfg(replay_context="1")
    torch.manual_seed(0)
    agent = Agent(cfg, A)
    m = cfg.model
    b, t, size = 3, 4, cfg.image_size
    batch = {"image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8),
             "action": torch.rand(b, t, A) * 2 - 1, "reward": torch.zeros(b, t),
             "is_first": torch.zeros(b, t, dtype=torch.bool), "is_terminal": torch.zeros(b, t, dtype=torch.bool),
             "start_deter": torch.randn(b, m.deter), "start_action": torch.rand(b, A) * 2 - 1,
             "start_stoch": torch.nn.functional.one_hot(torch.randint(0, m.classes, (b, m.stoch)), m.classes).float()}
    batch["is_first"][2, 0] = True  # this row starts an episode: reset despite the context
    calls = []
    original = agent.wm.rssm.obs_step

    def spy(state, action, embed, is_first):
        calls.append(({k: v.clone() for k, v in state.items()}, action.clone(), is_first.clone()))
        return original(state, action, embed, is_first)

    monkeypatch.setattr(agent.wm.rssm, "obs_step", spy)
    agent.wm.loss(batch)
    state, action, first = calls[0]
    assert torch.equal(state["deter"], batch["start_deter"]) and torch.equal(state["stoch"], batch["start_stoch"])
    assert torch.equal(action, batch["start_action"]) and torch.equal(first, batch["is_first"][:, 0])
    assert torch.equal(calls[1][1], batch["action"][:, 0])  # then a_{t-1} from the sequence itself


def _replay_batch(cfg, agent, context):
    r = Replay(200, 1, (cfg.image_size, cfg.image_size, 3), A, seed=5,
               latent=(cfg.model.deter, cfg.model.stoch, cfg.model.classes))
    rng = np.random.default_rng(0)
    for t in range(40):
        r.add(0, {"image": rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
                  "action": rng.uniform(-1, 1, A).astype(np.float32), "reward": np.float32(rng.normal()),
                  "is_first": t == 0, "is_terminal": False})
    return r, r.sample(cfg.batch_size, cfg.batch_length, context=context)


def test_without_stored_latents_context_is_the_zero_start_bit_for_bit(tiny_cfg):
    """With no latent stored yet (a fresh or older replay) a context batch resets every row, so one update gives
    the same losses, gradients and weights as replay_context=0 on the same steps and seed."""
    from mbrl.agent import Agent

    results = []
    for context in (0, 1):
        cfg = tiny_cfg(replay_context=str(context), batch_size="3", batch_length="6")
        torch.manual_seed(0)
        agent = Agent(cfg, A)
        _, batch = _replay_batch(cfg, agent, 0)  # the same steps for both
        if context:  # what Replay.sample(context=1) hands over when the step before has no latent
            m = cfg.model
            batch.update(start_deter=torch.zeros(3, m.deter), start_stoch=torch.zeros(3, m.stoch, m.classes),
                         start_action=torch.rand(3, A))
        assert torch.all(batch["is_first"][:, 0])
        torch.manual_seed(1)
        metrics = agent.train_step(batch)
        results.append(({k: float(v) for k, v in metrics.items()}, agent.state_dict()))
    (m0, w0), (m1, w1) = results
    assert m0 == m1
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_zero_context_loss_is_todays_zero_start_filter(tiny_cfg):
    """replay_context=0: the world model filters from the zero state with a_{-1} = 0, exactly as before."""
    from mbrl.agent import Agent

    cfg = tiny_cfg(batch_size="3", batch_length="6")
    assert cfg.replay_context == 0
    torch.manual_seed(0)
    agent = Agent(cfg, A)
    _, batch = _replay_batch(cfg, agent, 0)
    assert not any(k.startswith("start_") or k == "slot" for k in batch)
    torch.manual_seed(2)
    _, post, _ = agent.wm.loss(batch)
    torch.manual_seed(2)
    action = batch["action"]
    prev = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
    ref, _ = agent.wm.rssm.observe(agent.wm.embed(batch), prev, batch["is_first"])
    assert all(torch.equal(post[k], ref[k]) for k in post)
    out = {}
    agent.act(batch["image"][:, 0], batch["is_first"][:, 0], agent.initial_state(cfg.batch_size), out=out)
    assert out == {}  # the policy hands replay nothing more without context


def test_policy_and_update_hand_back_their_posterior(tiny_cfg):
    from mbrl.agent import Agent
    from mbrl.runs.train import policy_extras, train_on_replay

    cfg = tiny_cfg(replay_context="1", batch_size="2", batch_length="5")
    torch.manual_seed(0)
    agent = Agent(cfg, A)
    replay, _ = _replay_batch(cfg, agent, 1)
    out = {}
    image = torch.zeros(2, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8)
    _, (latent, _) = agent.act(image, torch.ones(2, dtype=torch.bool), agent.initial_state(2), out=out)
    extras = policy_extras(out)
    assert set(extras) == {"deter", "stoch"} and extras["deter"].shape == (2, cfg.model.deter)
    assert np.array_equal(extras["deter"], latent["deter"].numpy())
    state = replay.rng.bit_generator.state
    batch = replay.sample(cfg.batch_size, cfg.batch_length, context=1)
    replay.rng.bit_generator.state = state  # train_on_replay draws the same batch
    train_on_replay(cfg, agent, replay, torch.device("cpu"))
    written = np.flatnonzero(replay.data["stoch"][0].any((-2, -1)))  # none before: the replay had no latents
    assert set(written.tolist()) == set(batch["slot"].flatten().tolist())
    assert replay.data["stoch"][0, written].sum((-2, -1)).tolist() == [cfg.model.stoch] * len(written)


# ------------------------------------------------------------------------------------------------ config, runs


def test_config_key_range_and_capacity():
    assert build_config([]).replay_context == 0
    with pytest.raises(ConfigError, match="replay_context=-1 must be >= 0"):
        build_config(["replay_context=-1"])
    build_config(["replay_capacity=64", "batch_length=64"])
    with pytest.raises(ConfigError, match=r"\(batch_length \+ replay_context\) x num_envs"):
        build_config(["replay_capacity=64", "batch_length=64", "replay_context=1"])
    # the hash of a run stored before the key existed is unchanged; turning context on changes it (prefill=5000:
    # the default then)
    base = build_config(["prefill=5000"])
    assert model_hash(base) == "c898bf79a944"  # measured before the key existed (main f1cf805)
    assert model_hash(build_config(["obs=state", "size=size1m", "prefill=5000"])) == "700cd7ca4448"
    assert model_hash(base) != model_hash(build_config(["replay_context=1"]))


def test_a_run_stored_before_the_key_existed_resumes_unchanged(tmp_path):
    from mbrl.runs.train import resume_config, train

    run = write_untrained_run(tmp_path / "run", TINY_RUN)
    stored_hash = json.loads((run / "config.json").read_text())["config_hash"]
    for path in (run / "config.json", run / "checkpoint" / "checkpoint.json"):  # as written before the key
        doc = json.loads(path.read_text())
        del doc["config"]["replay_context"]
        path.write_text(json.dumps(doc))
    cfg = resume_config(run, ["steps=20"])
    assert cfg.replay_context == 0 and model_hash(cfg) == stored_hash
    threads = torch.get_num_threads()
    try:
        train(cfg, resume=run)
    finally:
        torch.set_num_threads(threads)
    state = checkpoint.load_state(run)
    assert state["counters"]["env_steps"] == 20
    assert "data_deter" not in read_npz(run / "checkpoint" / state["replay_file"])


@pytest.fixture(scope="module")
def context_run(tmp_path_factory):
    from mbrl.runs.train import train

    threads = torch.get_num_threads()
    run = tmp_path_factory.mktemp("ctx") / "run"
    try:
        train(build_config([*TINY_RUN, "replay_context=1", f"run_dir={run}"]))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.mark.slow
def test_context_run_stores_latents_and_resume_keeps_them(context_run, tmp_path):
    from mbrl.agent import Agent
    from mbrl.runs.train import make_replay, resume_config, train

    run = tmp_path / "run"
    shutil.copytree(context_run, run)
    state = checkpoint.load_state(run)
    arrays = read_npz(run / "checkpoint" / state["replay_file"])
    n = int(arrays["count"][0])
    stoch = arrays["data_stoch"][0, :n]
    has = stoch.any((-2, -1))
    assert (stoch.sum(-1)[has] == 1).all()  # exact one-hots
    # every step has a latent but possibly the final observations the policy never saw (then the next is a reset)
    first = arrays["data_is_first"][0, :n]
    assert all(i + 1 == n or first[i + 1] for i in np.flatnonzero(~has))
    assert has.sum() >= n - 2
    cfg = resume_config(run, [])
    agent = Agent(cfg, state["action_dim"])
    replay = make_replay(cfg, agent)
    checkpoint.restore(run, state, agent, replay)
    assert np.array_equal(replay.data["deter"][:, :n], arrays["data_deter"])
    assert np.array_equal(replay.data["stoch"][:, :n], arrays["data_stoch"])
    threads = torch.get_num_threads()
    try:  # the resumed run continues with its latents and keeps writing them
        train(resume_config(run, ["steps=260"]), resume=run)
    finally:
        torch.set_num_threads(threads)
    after = checkpoint.load_state(run)
    arrays2 = read_npz(run / "checkpoint" / after["replay_file"])
    assert after["counters"]["env_steps"] == 260 and after["counters"]["updates"] > state["counters"]["updates"]
    assert int(arrays2["count"][0]) == n + 30 and arrays2["data_stoch"][0].any((-2, -1)).sum() >= n + 30 - 2


def test_adapting_a_context_run_mixes_its_latents_and_leaves_it_untouched(context_run, tmp_path):
    import hashlib

    from mbrl.runs.adapt import adapt, load_source_replay

    def tree(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    source = load_source_replay(context_run)
    assert source.has_latents and source.data["stoch"].any()
    before = tree(context_run)
    threads = torch.get_num_threads()
    try:
        out = adapt(context_run, "color:5", 60, 0.5, 0.1, tmp_path / "ad", overrides={"prefill": "16"})
    finally:
        torch.set_num_threads(threads)
    assert tree(context_run) == before
    state = checkpoint.load_state(out)
    assert checkpoint.config_of(state).replay_context == 1 and state["counters"]["updates"] > 0
    arrays = read_npz(out / "checkpoint" / state["replay_file"])
    assert arrays["data_stoch"][0, : int(arrays["count"][0])].any((-2, -1)).sum() >= int(arrays["count"][0]) - 2
