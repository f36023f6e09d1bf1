"""The ``dreamshift`` command line.

    dreamshift train [key=value ...] [--resume RUN_DIR]
    dreamshift evaluate RUN_DIR [--episodes N] [--seed S] [--alpha 0,0.5,1]
    dreamshift merge RUN_DIR --alpha A [--out DIR]
    dreamshift demo [key=value ...]
    dreamshift envs list
    dreamshift config [key=value ...]       # print the resolved configuration

Bad input (unknown env, key, type, missing checkpoint, incompatible resume) prints one ``error:`` line and
exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mbrl.config import allowed_keys, build_config, parse_overrides, to_dict
from mbrl.errors import DreamshiftError

# The embedded default of `dreamshift demo`: a few minutes end to end on 2 CPU cores. Not a learning budget:
# see benchmarks/learning.py for that.
DEMO_OVERRIDES = {
    "env": "dmc:cartpole_balance", "size": "XS", "steps": "4000", "prefill": "1000", "batch_size": "8",
    "batch_length": "32", "train_ratio": "16", "log_every": "1000", "save_every": "0", "eval_episodes": "2",
    "replay_capacity": "100000",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dreamshift", description="DreamerV3 agents under graded visual shift.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an agent from pixels")
    t.add_argument("overrides", nargs="*", help="key=value settings, e.g. env=dmc:walker_walk size=S steps=1e5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its checkpoint")
    e = sub.add_parser("evaluate", help="evaluate a trained run on its clean env")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--alpha", default="", help="comma-separated weight-merging alphas to sweep (e.g. 0,0.5,1)")
    d = sub.add_parser("demo", help="train + evaluate the embedded default in a few minutes")
    d.add_argument("overrides", nargs="*")
    m = sub.add_parser("merge", help="interpolate a fine-tuned encoder with its pretrained weights")
    m.add_argument("run_dir")
    m.add_argument("--alpha", type=float, required=True, help="0 = pretrained encoder, 1 = fine-tuned")
    m.add_argument("--out", help="output run directory (default RUN_DIR-merged-a<alpha>)")
    envs_p = sub.add_parser("envs", help="list environments")
    envs_p.add_argument("action", choices=["list"])
    c = sub.add_parser("config", help="print the resolved configuration and the allowed keys")
    c.add_argument("overrides", nargs="*")
    return p


def _train(overrides: list[str], resume: str | None) -> Path:
    from mbrl.train import train

    cfg = build_config(overrides)
    run_dir = train(cfg, resume=resume)
    print(f"run directory: {run_dir}")
    print(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoint: {run_dir / 'checkpoint' / 'agent.pt'}")
    return run_dir


def _evaluate(run_dir: str, episodes: int, seed: int, device: str, alphas: str = "") -> None:
    from mbrl.errors import ConfigError
    from mbrl.evaluate import evaluate

    try:
        sweep = [float(a) for a in alphas.split(",") if a.strip()] or [None]
    except ValueError:
        raise ConfigError(f"--alpha {alphas!r}: expected comma-separated numbers in [0, 1]") from None
    for alpha in sweep:
        path = evaluate(run_dir, episodes=episodes, seed=seed, device=device, alpha=alpha)
        summary = json.loads(path.read_text())
        tag = "" if alpha is None else f" (alpha {alpha:g})"
        print(f"{summary['env']}{tag}: return {summary['return_mean']:.1f} +- {summary['return_stderr']:.1f} "
              f"(stderr, {len(summary['episodes'])} episodes)")
        print(f"results: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamshift`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # transformers draws a progress bar per weight load (read when it is imported); runs show their own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import envs

        if args.command == "train":
            _train(args.overrides, args.resume)
        elif args.command == "evaluate":
            _evaluate(args.run_dir, args.episodes, args.seed, args.device, args.alpha)
        elif args.command == "demo":
            given = parse_overrides(args.overrides)
            merged = {**DEMO_OVERRIDES, **given}
            run_dir = _train([f"{k}={v}" for k, v in merged.items()], None)
            _evaluate(str(run_dir), int(merged["eval_episodes"]), 0, "auto")
        elif args.command == "merge":
            from mbrl.merge import merge_run

            out = args.out or f"{args.run_dir.rstrip('/')}-merged-a{args.alpha:g}"
            print(f"merged run: {merge_run(args.run_dir, args.alpha, out)}")
        elif args.command == "envs":
            print("\n".join(envs.list_envs()))
        elif args.command == "config":
            print(json.dumps(to_dict(build_config(args.overrides)), indent=2))
            print("allowed keys: " + " ".join(allowed_keys()), file=sys.stderr)
    except (DreamshiftError, ValueError) as exc:
        if not isinstance(exc, DreamshiftError) and type(exc).__name__ != "EnvError":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
