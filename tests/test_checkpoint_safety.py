"""Run directories are safe to open: checkpoints are safetensors + JSON (:mod:`mbrl.runs.checkpoint`), an older
pickle checkpoint is refused without being unpickled (by ``evaluate``, ``train --resume``, ``load_state`` and
``pretrain --resume``), the new format round-trips weights, optimiser states and RNG streams bit for bit, and
``dreamshift convert-run`` turns an older checkpoint into an identical new one."""

from __future__ import annotations

import json
import os
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, assert_user_error, tree

from envs.errors import CheckpointError, ConfigError
from mbrl.agent import Agent
from mbrl.config import build_config, to_dict
from mbrl.replay import Replay
from mbrl.runs import checkpoint


class _Payload:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do with any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _malicious_run(root: Path, name: str = "evil") -> tuple[Path, Path]:
    """A run directory whose ``checkpoint/agent.pt`` runs code when unpickled; returns (run, marker)."""
    run, marker = root / name, root / f"{name}-was-unpickled"
    (run / "checkpoint").mkdir(parents=True)
    torch.save({"config": {}, "agent": _Payload(marker)}, run / "checkpoint" / "agent.pt")
    (run / "config.json").write_text(json.dumps({"config": {}}))
    return run, marker


def test_malicious_pickle_is_refused_by_load_state(tmp_path):
    run, marker = _malicious_run(tmp_path)
    with pytest.raises(CheckpointError, match="old-format checkpoint") as err:
        checkpoint.load_state(run)
    assert f"dreamshift convert-run {run}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="convert-run"):
        checkpoint.read_config(run)
    with pytest.raises(CheckpointError, match="convert-run"):
        checkpoint.load_run(run)
    assert not marker.exists()
    assert checkpoint.checkpoint_path(run).name == "agent.pt"  # callers asking "has a checkpoint?" see it


@pytest.mark.parametrize("args", [["evaluate", "evil", "--episodes", "1"], ["train", "--resume", "evil"],
                                  ["train", "--resume", "evil", *TINY_RUN], ["merge", "evil", "--alpha", "0.5"],
                                  ["evaluate", "evil", "--suite", "quick"]],
                         ids=["evaluate", "resume", "resume-overrides", "merge", "suite"])
def test_malicious_pickle_is_refused_by_the_cli(cli, tmp_path, args):
    run, marker = _malicious_run(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli(*args), "old-format checkpoint", "dreamshift convert-run evil")
    assert not marker.exists()
    assert tree(tmp_path) == before


def test_new_run_into_an_old_run_directory_is_refused(cli, tmp_path):
    run, marker = _malicious_run(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli("train", *TINY_RUN, "run_dir=evil"), "old-format checkpoint", "convert-run")
    assert not marker.exists() and tree(tmp_path) == before


def test_malicious_pretrain_checkpoint_is_refused(tmp_path):
    from mbrl.runs.pretrain import PretrainConfig, pretrain

    out, marker = tmp_path / "pre", tmp_path / "pre-was-unpickled"
    out.mkdir()
    torch.save({"args": _Payload(marker)}, out / "checkpoint.pt")
    for resume in (True, False):
        with pytest.raises(ConfigError, match="old-format checkpoint"):
            pretrain(PretrainConfig(envs="dmc:cartpole_balance", frames=8, arch="vit-micro", out=str(out), steps=2,
                                    resume=resume, progress=False, threads=1))
    assert not marker.exists() and sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


def test_object_array_in_replay_is_refused(tmp_path, tiny_cfg, single_thread):
    cfg = tiny_cfg()
    agent, replay = Agent(cfg, 1), _filled_replay(cfg, 1)
    checkpoint.save(tmp_path / "run", agent, replay, _COUNTERS)
    state = checkpoint.load_state(tmp_path / "run")
    marker = tmp_path / "npz-was-unpickled"
    np.savez(tmp_path / "run" / "checkpoint" / state["replay_file"],
             data_image=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.restore(tmp_path / "run", state, Agent(cfg, 1), _filled_replay(cfg, 1))
    assert not marker.exists()


@pytest.mark.parametrize("field, value", [("weights_file", "../../etc/passwd"), ("format", "other"),
                                          ("version", 99), ("replay_file", "/tmp/x.npz")])
def test_tampered_checkpoint_json_is_one_error(tmp_path, tiny_cfg, single_thread, field, value):
    checkpoint.save(tmp_path / "run", Agent(tiny_cfg(), 1), None, _COUNTERS)
    path = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    doc = json.loads(path.read_text())
    doc[field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError):
        checkpoint.load_state(tmp_path / "run")


# --- the new format round-trips ---------------------------------------------------------------------------

_COUNTERS = {"env_steps": 40, "agent_steps": 20, "updates": 2, "episodes": 0, "last_return": 1.5,
             "mix_counts": {"target": 3, "sources": [1, 2]}}


def _filled_replay(cfg, action_dim: int, steps: int = 24, seed: int = 0, capacity: int = 1000) -> Replay:
    rng = np.random.default_rng(seed)
    replay = Replay(capacity, 1, (cfg.image_size, cfg.image_size, 3), action_dim, seed=cfg.seed)
    for t in range(steps):
        replay.add(0, {"image": rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
                       "action": rng.uniform(-1, 1, action_dim).astype(np.float32), "reward": float(rng.random()),
                       "is_first": t == 0, "is_terminal": False})
    return replay


def _update(agent: Agent, replay: Replay) -> None:
    agent.train_step(replay.sample(2, 8))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):  # strides too: fused Adam needs moments laid out like their parameters
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            a.stride() == b.stride() and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("algo", ["dreamerv3", "dreamerv3_2023"])  # LaProp / Adam
@pytest.mark.slow
def test_round_trip_continues_bit_for_bit(tmp_path, tiny_cfg, single_thread, algo):
    cfg = tiny_cfg(algo=algo)
    torch.manual_seed(0)
    agent, replay = Agent(cfg, 2), _filled_replay(cfg, 2)
    for _ in range(2):
        _update(agent, replay)
    np.random.seed(3)
    random.seed(3)
    path = checkpoint.save(tmp_path / "run", agent, replay, _COUNTERS)
    assert path == tmp_path / "run" / "checkpoint" / "checkpoint.json"
    files = sorted(p.name for p in path.parent.iterdir())
    assert [f.split("-")[0] for f in files] == ["agent", "checkpoint.json", "replay", "state"], files
    # one more update (and draws of every RNG) without the round trip ...
    _update(agent, replay)
    draws = (torch.rand(3), np.random.rand(3), random.random(), replay.rng.random())
    # ... equals one more update after it
    state = checkpoint.load_state(tmp_path / "run")
    assert state["counters"] == _COUNTERS
    agent2 = Agent(checkpoint.config_of(state), state["action_dim"], state["state_dim"])
    replay2 = Replay(1000, 1, (cfg.image_size, cfg.image_size, 3), 2)
    assert checkpoint.restore(tmp_path / "run", state, agent2, replay2) == _COUNTERS
    _update(agent2, replay2)
    draws2 = (torch.rand(3), np.random.rand(3), random.random(), replay2.rng.random())
    assert _same(agent.state_dict(), agent2.state_dict())
    assert _same(agent.optim_state(), agent2.optim_state())
    assert torch.equal(draws[0], draws2[0]) and np.array_equal(draws[1], draws2[1]) and draws[2:] == draws2[2:]


def test_saved_optimiser_state_equals_the_live_one(tmp_path, tiny_cfg, single_thread):
    """Step counts (ints for LaProp), moments, parameter-group hyper-parameters (tuples stay tuples)."""
    for algo in ("dreamerv3", "dreamerv3_2023"):
        cfg = tiny_cfg(algo=algo)
        agent, replay = Agent(cfg, 1), _filled_replay(cfg, 1)
        _update(agent, replay)
        checkpoint.save(tmp_path / algo, agent, replay, _COUNTERS)
        state = checkpoint.load_state(tmp_path / algo)
        assert _same(state["optim"], agent.optim_state()), algo
        assert _same(state["agent"], agent.state_dict())
        doc = json.loads((tmp_path / algo / "checkpoint" / "checkpoint.json").read_text())
        assert doc["format"] == "dreamshift-checkpoint" and doc["config"] == json.loads(json.dumps(to_dict(cfg)))


def test_a_kill_before_the_json_leaves_the_previous_checkpoint(tmp_path, tiny_cfg, single_thread, monkeypatch):
    cfg = tiny_cfg()
    agent, replay = Agent(cfg, 1), _filled_replay(cfg, 1)
    checkpoint.save(tmp_path / "run", agent, replay, _COUNTERS)
    before = checkpoint.load_state(tmp_path / "run")
    _update(agent, replay)
    replay.add(0, {"image": np.zeros((32, 32, 3), np.uint8), "action": np.zeros(1, np.float32), "reward": 0.0,
                   "is_first": False, "is_terminal": False})
    real = checkpoint.files.atomic_write

    def die_on_json(path, write):
        if Path(path).name == "checkpoint.json":
            raise KeyboardInterrupt  # killed after the replay and the tensors, before the commit point
        return real(path, write)

    monkeypatch.setattr(checkpoint.files, "atomic_write", die_on_json)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "run", agent, replay, {**_COUNTERS, "env_steps": 42})
    monkeypatch.undo()
    after = checkpoint.load_state(tmp_path / "run")
    assert _same(after["agent"], before["agent"]) and after["counters"] == before["counters"]
    replay2 = Replay(1000, 1, (32, 32, 3), 1)
    checkpoint.restore(tmp_path / "run", after, Agent(cfg, 1), replay2)
    assert replay2.total_added == 24
    checkpoint.save(tmp_path / "run", agent, replay, {**_COUNTERS, "env_steps": 44})  # the next save tidies up
    assert len(list((tmp_path / "run" / "checkpoint").glob("*.safetensors"))) == 2
    assert len(list((tmp_path / "run" / "checkpoint").glob("replay-*.npz"))) == 1


# --- converter ----------------------------------------------------------------------------------------------

def save_legacy(run_dir: Path, agent: Agent, replay: Replay | None, counters: dict) -> Path:
    """A checkpoint in the layout ``mbrl.runs.checkpoint.save`` wrote before the safe format: ``replay-<n>.npz`` and
    one ``torch.save`` pickle ``agent.pt`` (copied from that version's ``save``)."""
    ckpt_dir = Path(run_dir) / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    replay_name = None
    if replay is not None:
        replay_name = f"replay-{replay.total_added}.npz"
        replay.save(ckpt_dir / replay_name)
    state = {
        "config": to_dict(agent.cfg),
        "action_dim": agent.action_dim,
        "state_dim": agent.state_dim,
        "agent": agent.state_dict(),
        "optim": agent.optim_state(),
        "counters": dict(counters),
        "replay_file": replay_name,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "replay": replay.rng.bit_generator.state if replay is not None else None},
    }
    torch.save(state, ckpt_dir / "agent.pt")
    return ckpt_dir / "agent.pt"


@pytest.fixture
def legacy_run(tmp_path, single_thread) -> tuple[Path, Agent]:
    cfg = build_config([*TINY_RUN, f"run_dir={tmp_path / 'old'}"])
    agent, replay = Agent(cfg, 1), _filled_replay(cfg, 1, capacity=cfg.replay_capacity)
    _update(agent, replay)
    save_legacy(tmp_path / "old", agent, replay, _COUNTERS)
    (tmp_path / "old" / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    return tmp_path / "old", agent


def test_convert_run_writes_an_identical_safe_checkpoint(cli, legacy_run):
    run, agent = legacy_run
    replay_file = next((run / "checkpoint").glob("replay-*.npz")).name
    res = cli("convert-run", "old")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "trust" in warnings[0] and "agent.pt" in warnings[0]
    assert not (run / "checkpoint" / "agent.pt").exists()
    state = checkpoint.load_state(run)
    assert _same(state["agent"], agent.state_dict()) and _same(state["optim"], agent.optim_state())
    assert state["counters"] == _COUNTERS and state["replay_file"] == replay_file
    assert (run / "checkpoint" / replay_file).is_file()
    again = cli("convert-run", "old")  # nothing left to convert: a note, status 0
    assert again.returncode == 0 and "already" in again.stdout and "warning" not in again.stderr
    res = cli("evaluate", "old", "--episodes", "1", "--device", "cpu")
    assert res.returncode == 0, res.stderr


def test_convert_run_of_a_directory_without_checkpoint_is_one_error(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("convert-run", "empty"), "no checkpoint")
    assert_user_error(cli("convert-run", "missing"), "does not exist")


def test_converted_old_run_resumes(cli, legacy_run):
    run, _ = legacy_run
    assert cli("convert-run", "old").returncode == 0
    res = cli("train", "--resume", "old", "steps=60")
    assert res.returncode == 0, res.stderr
    assert checkpoint.load_state(run)["counters"]["env_steps"] == 60


def test_a_leftover_pickle_next_to_checkpoint_json_is_never_opened(cli, tmp_path, tiny_cfg, single_thread):
    agent = Agent(tiny_cfg(), 1)
    checkpoint.save(tmp_path / "run", agent, None, _COUNTERS)
    marker = tmp_path / "leftover-was-unpickled"
    torch.save({"agent": _Payload(marker)}, tmp_path / "run" / "checkpoint" / "agent.pt")
    assert _same(checkpoint.load_state(tmp_path / "run")["agent"], agent.state_dict())
    res = cli("convert-run", "run")
    assert res.returncode == 0 and "already" in res.stdout and "delete it" in res.stderr
    assert not marker.exists() and (tmp_path / "run" / "checkpoint" / "agent.pt").exists()
