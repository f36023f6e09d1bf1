"""The zoo: trained agents kept in the repository as evaluation-only run directories (``experiments/zoo/<name>/``).

A zoo entry is a run directory whose checkpoint holds the agent's weights, config and counters but no replay and
no optimiser state (a few MB at size1m instead of tens), so it loads and evaluates like any run
(``dreamshift evaluate experiments/zoo/<name>``, ``--suite``, leaderboard, analyses) and a resume refuses it with
one line (:func:`mbrl.runs.checkpoint.check_resumable`). ``provenance.json`` says where it came from:

- ``source``: the run directory it was exported from; ``command``: the command that trained it (from the run's
  ``config.json`` and counters); ``commit``: the code version of the export (``experiments.results.code_version``);
- ``env_steps``, ``updates``: how far it trained; ``last_return``: the mean training-episode return of its last 10
  logged episodes; ``clean_eval``: the run's ``eval/clean.json`` summary when it was evaluated.

``dreamshift zoo-export RUN --name NAME`` writes an entry (atomically: into a temporary directory, then renamed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import ConfigError
from experiments.results import code_version
from mbrl.runs import checkpoint

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
PROVENANCE = "provenance.json"


def _last_return(run_dir: Path, episodes: int = 10) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    returns = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "episode" and isinstance(rec.get("return"), (int, float)):
            returns.append(float(rec["return"]))
    return sum(returns[-episodes:]) / len(returns[-episodes:]) if returns else None


def train_command(config: dict[str, Any]) -> str:
    """The ``dreamshift train`` command line that trains a run of ``config`` (its seed and budget included); the
    encoder's settings are left out for ``obs=state``, which reads no pixels."""
    perception = ("encoder", "encoder_mode", "decoder", "encoder_input_size")
    keys = ("env", "obs", *perception, "size", "train_ratio", "prefill", "precision", "compile", "steps", "seed")
    if config.get("obs") == "state":
        keys = tuple(k for k in keys if k not in perception)
    return "dreamshift train " + " ".join(f"{k}={_value(config[k])}" for k in keys if k in config)


def _value(v: Any) -> str:
    """A config value as the command line writes it (``512.0`` -> ``512``)."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def export(run_dir: Path | str, out: Path | str) -> Path:
    """Write run ``run_dir``'s agent as an evaluation-only run directory ``out`` with its ``provenance.json``.

    Raises:
        CheckpointError: ``run_dir`` has no readable checkpoint.
        ConfigError: ``out`` exists already.
    """
    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise ConfigError(f"zoo entry {str(out)!r} exists already; remove it or choose another --name")
    state = checkpoint.load_state(run_dir)
    files.check_output_dir(out, "--out")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / checkpoint.CHECKPOINT_DIR).mkdir(parents=True)
        checkpoint.write_state(tmp, {**state, "optim": None, "replay_file": None,
                                     "rng": {**state["rng"], "replay": None}})
        meta = checkpoint.read_meta(run_dir) if (run_dir / "config.json").is_file() else {}
        files.write_json(tmp / "config.json", {**meta, "config": state["config"]})
        clean = run_dir / "eval" / "clean.json"
        counters = state["counters"]
        provenance = {
            "source": str(run_dir.resolve()), "command": train_command(state["config"]), "commit": code_version(),
            "env_steps": int(counters.get("env_steps", 0)), "updates": int(counters.get("updates", 0)),
            "last_return": _last_return(run_dir),
            "clean_eval": {k: v for k, v in json.loads(clean.read_text()).items() if k != "episodes"}
            if clean.is_file() else None,
        }
        files.write_json(tmp / PROVENANCE, provenance)
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copy2(run_dir / "metrics.jsonl", tmp / "metrics.jsonl")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def size_mb(path: Path | str) -> float:
    """Total size of the files under ``path`` in MB."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6
