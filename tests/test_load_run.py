"""The run loader (:func:`mbrl.runs.checkpoint.load_run`): a real tiny run opens as a :class:`LoadedRun` (config,
agent with the stored weights in eval mode, counters, metadata); a missing run, a missing weights file and a
stored config that does not fit give the one :class:`CheckpointError`, naming the path and what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import TINY_RUN, write_untrained_run

from envs.errors import CheckpointError
from mbrl.agent import Agent
from mbrl.config import build_config
from mbrl.runs import checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One untrained tiny run for the whole module (the tests copy it before they damage it)."""
    return write_untrained_run(tmp_path_factory.mktemp("load_run") / "run", TINY_RUN)


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def _edit_doc(run, edit) -> None:
    path = run / checkpoint.CHECKPOINT_DIR / checkpoint.CHECKPOINT_FILE
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_load_run_opens_a_real_run(tiny_run, single_thread):
    run = checkpoint.load_run(tiny_run)
    state = checkpoint.load_state(tiny_run)
    assert run.run_dir == tiny_run
    assert run.config == build_config([*TINY_RUN, f"run_dir={tiny_run}"])
    assert (run.action_dim, run.state_dim) == (1, 0)
    assert run.counters == {"env_steps": 2, "agent_steps": 1, "updates": 0, "episodes": 0} and run.env_steps == 2
    assert run.replay_file is not None and (tiny_run / "checkpoint" / run.replay_file).is_file()
    assert isinstance(run.agent, Agent) and not run.agent.training and run.agent.cfg is run.config
    assert run.agent.device == torch.device("cpu")
    stored = run.agent.state_dict()
    assert stored.keys() == state["agent"].keys() == run.weights.keys()
    assert all(torch.equal(stored[k], state["agent"][k]) for k in stored)
    assert run.state is None  # the optimiser and RNG states only when asked for
    assert run.meta["config_hash"] and run.adapted_from is None and run.lineage == [] and run.replay_sources == []
    assert run.encoder_mode == "full"  # auto: the cnn trains end to end


def test_load_run_without_agent_keeps_the_train_state(tiny_run):
    run = checkpoint.load_run(tiny_run, agent=False, train_state=True)
    assert run.agent is None and set(run.state) >= {"optim", "rng", "agent"}
    agent = run.build_agent()  # the same weights as the loaded agent would have
    assert all(torch.equal(v, run.weights[k]) for k, v in agent.state_dict().items())


def test_missing_run_is_one_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as err:
        checkpoint.load_run(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint") as err:
        checkpoint.load_run(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_missing_weights_file_is_one_checkpoint_error(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (weights,) = (run / "checkpoint").glob("agent-*.safetensors")
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing") as err:
        checkpoint.load_run(run)
    assert str(weights) in str(err.value)


def test_unknown_config_key_is_one_checkpoint_error(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    _edit_doc(run, lambda doc: doc["config"].update(no_such_key=1))
    with pytest.raises(CheckpointError, match="config stored in the checkpoint") as err:
        checkpoint.load_run(run, agent=False)
    assert str(run) in str(err.value) and "no_such_key" in str(err.value)


def test_weights_that_do_not_fit_the_config_are_one_checkpoint_error(tiny_run, tmp_path, single_thread):
    run = _copy(tiny_run, tmp_path)
    _edit_doc(run, lambda doc: doc["config"]["model"].update(deter=32))  # stored weights have deter 64
    with pytest.raises(CheckpointError, match="do not fit its stored config") as err:
        checkpoint.load_run(run)
    assert str(run) in str(err.value) and "\n" not in str(err.value)


def test_missing_metadata_is_one_checkpoint_error(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / "config.json").unlink()
    loaded = checkpoint.load_run(run, agent=False)  # the metadata is read only when asked for
    with pytest.raises(CheckpointError, match="cannot read") as err:
        loaded.lineage  # noqa: B018
    assert str(run / "config.json") in str(err.value)
