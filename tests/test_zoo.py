"""The zoo (:mod:`experiments.zoo`): an exported agent is an evaluation-only run directory that every reading
command accepts, that resume refuses with one line, and that carries its provenance; every shipped zoo entry
loads and evaluates one episode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_RUN, assert_user_error

from experiments.zoo import PROVENANCE, ZOO_DIR, export, size_mb, train_command
from mbrl.config import build_config
from mbrl.runs import checkpoint
from mbrl.runs.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("zoo") / "run"
    train(build_config([*TINY_RUN, "obs=state", f"run_dir={run_dir}"]))
    return run_dir


@pytest.mark.slow
def test_export_is_evaluation_only_with_provenance(cli, trained, tmp_path):
    res = cli("zoo-export", str(trained), "--name", "tiny", "--out", str(tmp_path / "zoo"))
    assert res.returncode == 0, res.stderr
    entry = tmp_path / "zoo" / "tiny"
    assert not list((entry / "checkpoint").glob("replay-*")) and size_mb(entry) < size_mb(trained)
    state = checkpoint.load_state(entry)
    assert state["optim"] is None and state["replay_file"] is None
    assert state["agent"].keys() == checkpoint.load_state(trained)["agent"].keys()
    prov = json.loads((entry / PROVENANCE).read_text())
    assert prov["env_steps"] == 200 and prov["command"].startswith("dreamshift train env=dmc:cartpole_balance")
    assert prov["last_return"] is not None and prov["source"] == str(trained.resolve())
    res = cli("evaluate", str(entry), "--episodes", "1")
    assert res.returncode == 0, res.stderr
    res = cli("train", "--resume", str(entry))
    assert_user_error(res, "evaluation-only run")
    res = cli("zoo-export", str(trained), "--name", "tiny", "--out", str(tmp_path / "zoo"))
    assert_user_error(res, "exists already")
    res = cli("zoo-export", str(trained), "--name", "../x", "--out", str(tmp_path / "zoo"))
    assert_user_error(res, "--name")


def test_train_command_names_what_trained_the_agent():
    pixels = {"env": "dmc:walker_stand", "obs": "pixels", "encoder": "cnn", "decoder": "pixels", "size": "size1m",
              "train_ratio": 512.0, "steps": 50000, "seed": 3}
    assert train_command(pixels) == ("dreamshift train env=dmc:walker_stand obs=pixels encoder=cnn decoder=pixels "
                                     "size=size1m train_ratio=512 steps=50000 seed=3")
    state = {**pixels, "obs": "state", "train_ratio": 0.5}  # reads no pixels: no encoder settings
    assert train_command(state) == "dreamshift train env=dmc:walker_stand obs=state size=size1m train_ratio=0.5 " \
                                   "steps=50000 seed=3"


def test_export_refuses_a_missing_run(tmp_path):
    with pytest.raises(Exception, match="checkpoint|run"):
        export(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


SHIPPED = sorted(p for p in ZOO_DIR.glob("*") if (p / PROVENANCE).is_file()) if ZOO_DIR.is_dir() else []


@pytest.mark.parametrize("entry", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_zoo_entries_evaluate_one_episode(cli, entry, tmp_path):
    import shutil

    run = tmp_path / entry.name
    shutil.copytree(entry, run)  # evaluation writes eval/ into the run
    res = cli("evaluate", str(run), "--episodes", "1")
    assert res.returncode == 0, res.stderr


def test_the_zoo_stays_small():
    assert (size_mb(ZOO_DIR) if ZOO_DIR.is_dir() else 0.0) <= 40.0
