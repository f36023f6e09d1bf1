"""Shared fixtures: a tiny model configuration so that model tests run in seconds on a CPU."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

# imported at collection, outside any captured test: the command modules import their libraries (submitit sets up a
# logging handler on the stderr it sees at import), which must not be a test's captured stream
from dreamshift import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(stem: str) -> ModuleType:
    """Import ``benchmarks/<stem>.py`` (a script, not a package module) as ``benchmark_<stem>``, registered in
    ``sys.modules`` (dataclasses look their module up there)."""
    name = f"benchmark_{stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TINY = {"size": "XS", "model.deter": "64", "model.hidden": "32", "model.stoch": "4", "model.classes": "4",
        "model.blocks": "4", "model.units": "32", "model.cnn_depth": "4", "model.bins": "31",
        "image_size": "32"}

# TINY as run overrides plus a small, quiet training budget (200 env steps; episodes of 100 env steps, random
# actions for the first 50, one update per 4 agent steps). Test files import it: ``from conftest import TINY_RUN``.
TINY_RUN = ["env=dmc:cartpole_balance", *(f"{k}={v}" for k, v in TINY.items()), "batch_size=2", "batch_length=8",
            "train_ratio=4", "prefill=50", "steps=200", "time_limit=100", "log_every=50", "save_every=100",
            "replay_capacity=5000", "wandb_mode=disabled", "progress=false", "threads=1", "device=cpu"]


def override(base: list[str], *extra: str) -> list[str]:
    """``base`` key=value tokens (e.g. ``TINY_RUN``) with those of ``extra`` replacing the ones of the same key:
    each key once, as the command line requires (a key given twice is refused)."""
    keys = {tok.split("=", 1)[0] for tok in extra}
    return [tok for tok in base if tok.split("=", 1)[0] not in keys] + list(extra)


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(**extra)`` -> a validated tiny :class:`mbrl.config.Config` (extra dotted overrides as kwargs
    with ``__`` for ``.``, e.g. ``optim__lr="1e-3"``)."""
    from mbrl.config import build_config

    def make(**extra: str):
        return build_config({**TINY, **{k.replace("__", "."): v for k, v in extra.items()}})

    return make


@pytest.fixture
def single_thread():
    """Run a test with one torch thread: tiny models are faster, and a busy 2-core machine (another torch
    process running) otherwise slows intra-op thread sync down ~30x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Result:
    """Exit status and captured streams of one CLI run (like ``subprocess.CompletedProcess``)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``cli(*args)``: run :func:`dreamshift.main` in-process with the cwd set to ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            status = cli_main(list(args))
        except SystemExit as exc:  # argparse usage errors
            status = exc.code
        out, err = capsys.readouterr()
        return Result(status, out, err)

    yield run
    torch.set_num_threads(threads)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256) plus every directory (-> "dir") and symbolic link
    (-> "link:<target>", not followed: it may dangle or loop)."""
    return {str(p.relative_to(root)): f"link:{os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def assert_user_error(res: Result, *needles: str) -> str:
    """Status 2, exactly one ``error:`` line on stderr containing every needle, no traceback, no run printed."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "run directory:" not in res.stdout
    return errors[0]


def write_untrained_run(run_dir: Path, overrides: list[str]) -> Path:
    """A run directory with a real (untrained) checkpoint of ``overrides`` (e.g. ``TINY_RUN``), written in-process:
    ``config.json`` and a checkpoint with one replay step. Returns ``run_dir``."""
    import numpy as np

    from envs import files
    from mbrl.agent import Agent
    from mbrl.config import build_config, model_hash, to_dict
    from mbrl.replay import Replay
    from mbrl.runs import checkpoint

    cfg = build_config([*overrides, f"run_dir={run_dir}"])
    torch.manual_seed(0)
    agent = Agent(cfg, action_dim=1)
    replay = Replay(cfg.replay_capacity, cfg.num_envs, (cfg.image_size, cfg.image_size, 3), 1)
    replay.add(0, {"image": np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8),
                   "action": np.zeros(1, np.float32), "reward": 0.0, "is_first": True, "is_terminal": False})
    files.write_json(run_dir / "config.json", {"config": to_dict(cfg), "config_hash": model_hash(cfg)})
    checkpoint.save(run_dir, agent, replay, {"env_steps": 2, "agent_steps": 1, "updates": 0, "episodes": 0})
    return run_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with the most ``slow`` tests first, each module's tests kept together in their order: with
    ``-n auto`` (pytest-xdist) the long tests start early instead of leaving one worker busy at the end."""
    slow: dict[str, int] = {}
    for item in items:
        slow[item.module.__name__] = slow.get(item.module.__name__, 0) + (item.get_closest_marker("slow") is not None)
    order = {name: i for i, name in enumerate(dict.fromkeys(item.module.__name__ for item in items))}
    items.sort(key=lambda item: (-slow[item.module.__name__], order[item.module.__name__]))
