"""``dreamshift pretrain``: self-supervised pretraining of a small ViT on env frames (:mod:`mbrl.runs.pretrain`).

    dreamshift pretrain --envs 'dmc:*,metaworld:*' --frames 12000 --arch vit-tiny --objective dino \\
        --out DIR [--diversity 0.5] [--seed 0] [--steps N | --epochs E] [--batch-size 64] [--resume]

Bad input (unknown env glob, arch or objective, ``--frames < 1``, an ``--out`` holding a finished model, or an
unfinished one without ``--resume``) raises :class:`envs.errors.ConfigError`: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from mbrl.runs import pretrain as pretraining


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` sub-command to ``sub`` (handler :func:`handle`)."""
    p = sub.add_parser("pretrain", help="pretrain a small ViT (DINO or MAE) on env frames under random shifts",
                       description="Collect frames with random actions under random visual shifts, train a small "
                                   "ViT self-supervised and save it as a transformers model directory that loads "
                                   "with encoder=hf:<out>.")
    p.add_argument("--envs", default="dmc:*,metaworld:*",
                   help="comma-separated env names or globs over `dreamshift envs list` (dmc:/metaworld:)")
    p.add_argument("--frames", type=int, default=10000, help="frames to collect, split evenly over the envs")
    p.add_argument("--arch", default="vit-tiny", help="vit-tiny (1.24 M params) | vit-micro (tests)")
    p.add_argument("--objective", default="dino", help="dino (Caron et al. 2021) | mae (He et al. 2022)")
    p.add_argument("--out", required=True, help="output directory (model, log, curve, model card)")
    p.add_argument("--diversity", type=float, default=0.5,
                   help="probability that a collection episode is shifted (random applicable kind, severity 1-5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (0: from --epochs)")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the frames when --steps is 0")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (warm-up 10 %%, cosine decay)")
    p.add_argument("--n-local", type=int, default=2, help="DINO local crops (32 px) per image")
    p.add_argument("--out-dim", type=int, default=2048, help="DINO prototypes K")
    p.add_argument("--teacher-temp", type=float, default=0.04,
                   help="DINO final teacher temperature (warm-up from 0.04 over 30 %% of the steps)")
    p.add_argument("--episode-len", type=int, default=50, help="agent steps per collection episode")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--keep-cache", action="store_true", help="keep frames.npz and the checkpoint when finished")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift pretrain``; raises :class:`envs.errors.ConfigError` on bad input."""
    cfg = pretraining.PretrainConfig(envs=args.envs, frames=args.frames, arch=args.arch, objective=args.objective,
                         out=args.out, diversity=args.diversity, seed=args.seed, steps=args.steps,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, n_local=args.n_local,
                         out_dim=args.out_dim, teacher_temp=args.teacher_temp, episode_len=args.episode_len,
                         log_every=args.log_every,
                         save_every=args.save_every, threads=args.threads, resume=args.resume,
                         keep_cache=args.keep_cache, command=_command())
    s = pretraining.pretrain(cfg)
    print(f"pretrained {s['args']['arch']} ({s['args']['objective']}) on {s['num_frames']} frames from "
          f"{s['num_envs']} envs: loss {s['first_loss']:.4f} -> {s['final_loss']:.4f}, {s['steps']} steps, "
          f"{s['wall_s'] / 60:.1f} min")
    print(f"model: {args.out}  (use encoder=hf:{args.out})")


def _command() -> str:
    """The command line as typed (program name normalised to ``dreamshift``)."""
    argv = sys.argv[1:]
    if argv[:1] != ["pretrain"] and "pretrain" in argv:
        argv = argv[argv.index("pretrain"):]
    return "dreamshift " + " ".join(shlex.quote(a) for a in argv)
