"""``dreamshift train [key=value ...] [--resume RUN_DIR]``: train an agent (:func:`mbrl.runs.train.train`), or with
``seeds=[0,1,2,3]`` one agent per seed as one batch in this process (:func:`mbrl.runs.train_members.train_members`:
``RUN/seed-<s>/`` per member).

``--resume RUN_DIR`` continues the run from its own stored config; ``key=value`` settings given with it may change
only budgets, logging and device (``steps``, ``log_every``, ``device``, ...; :func:`mbrl.runs.train.resume_config`).
``benchmarks/learning.py`` launches ``python -m dreamshift train --resume RUN_DIR key=value ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.errors import ConfigError
from mbrl.config import build_config, parse_overrides
from mbrl.members import check_seed_list
from mbrl.runs.checkpoint import checkpoint_path
from mbrl.runs.train import check_same_run_dir, resume_config, train
from mbrl.runs.train_members import MEMBERS_FILE, member_dir, read_members, train_members


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    t = sub.add_parser("train", help="train an agent from pixels")
    t.add_argument("overrides", nargs="*", help="key=value settings, e.g. env=dmc:walker_walk size=S steps=1e5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its checkpoint and its stored "
                   "config (settings given with it may change only budgets, logging and device)")
    t.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift train``; raises ``DreamshiftError`` on bad input."""
    run_train(args.overrides, args.resume)


def run_train(overrides: list[str], resume: str | None) -> Path:
    """``dreamshift train``: a new run from ``overrides``, or with ``resume`` the run's own stored config, where
    ``overrides`` may change only budgets, logging and device (:func:`mbrl.runs.train.resume_config`); returns the run
    directory."""
    overrides, seeds = split_seeds(overrides)
    members = read_members(resume) if resume is not None and Path(resume).is_dir() else None
    if members is not None:
        if seeds is not None:
            raise ConfigError(f"--resume {resume} continues its own seeds {members['seeds']}; drop seeds=...")
        live = [s for s in members["seeds"] if str(s) not in members["stopped"]] or members["seeds"]
        given = parse_overrides(overrides)
        check_same_run_dir(resume, given.pop("run_dir", None))  # the batch's directory, not a member's
        cfg = resume_config(member_dir(resume, live[0]), given)
        run_dir = train_members(cfg, resume=resume)
    elif seeds is not None:
        if resume is not None:
            raise ConfigError(f"--resume {resume} is a single run (no {MEMBERS_FILE}); drop seeds=...")
        cfg = build_config(overrides)
        run_dir = train_members(cfg, seeds)
    else:
        cfg = resume_config(resume, overrides) if resume is not None else build_config(overrides)
        run_dir = train(cfg, resume=resume)
    if members is not None or seeds is not None:
        print(f"run directory: {run_dir} (one run directory per seed: {run_dir}/seed-<s>/)")
        return run_dir
    print(f"run directory: {run_dir}")
    print(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoint: {checkpoint_path(run_dir)}")
    return run_dir


def split_seeds(overrides: list[str]) -> tuple[list[str], list[int] | None]:
    """Take ``seeds=[0,1,2,3]`` (or ``seeds=0,1,2,3``) out of ``overrides``: ``(the rest, seeds or None)``.

    Raises:
        ConfigError: ``seeds`` given twice or together with ``seed``, not a list of integers, empty, with a
            duplicate or a negative seed.
    """
    rest, found = [], []
    for tok in overrides:
        (found if tok.split("=", 1)[0].strip() == "seeds" else rest).append(tok)
    if not found:
        return overrides, None
    if len(found) > 1:
        raise ConfigError(f"seeds is given {len(found)} times ({', '.join(found)}); give it once, e.g. seeds=[0,1,2,3]")
    if any(tok.split("=", 1)[0].strip() == "seed" for tok in rest):
        raise ConfigError("seed=N and seeds=[...] are both given; seed=N trains one agent, seeds=[...] one per seed: "
                          "give one of them")
    text = found[0].split("=", 1)[1].strip()
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        seeds = [int(x) for x in inner.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"seeds={text} is not a list of integers; allowed: seeds=[0,1,2,3]") from None
    check_seed_list(seeds)
    return rest, seeds
