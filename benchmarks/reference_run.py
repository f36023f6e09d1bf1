"""The reference implementation (danijar/dreamerv3, JAX) trained here with dreamshift's learning-check settings, so
that our curves can be compared with the reference code on the same configuration and machine, not only with the
published curves (which used another model size).

    python benchmarks/reference_run.py setup [--source URL_OR_PATH] [--commit SHA]
    python benchmarks/reference_run.py run dmc:cartpole_swingup [--seed 0] [--steps 50000] [--size size1m] \\
        [--train-ratio 512] [--runs runs/learning/reference] [--dry-run]
    python benchmarks/reference_run.py report dmc:cartpole_swingup [--ours runs/learning/cpu-state/...-s0] \\
        [--out docs/img/reference-run.png]

``setup`` makes ``.peers/dreamerv3`` (git-ignored): ``repo/`` cloned from ``--source`` (default the public GitHub
repository) at ``--commit`` (default :data:`COMMIT`, the version read for this project) and ``venv/`` with the
packages of its ``requirements.txt`` that training on dm_control needs, ``jax[cpu]`` in place of its CUDA build and
``dm_control==1.0.28 mujoco==3.3.0`` as dreamshift pins them (:data:`PACKAGES`). It does nothing when both exist.
Nothing of the reference code enters this repository.

``run`` trains the reference agent on one dm_control task from proprioceptive state with the settings of
dreamshift's ``cpu-state`` check (``benchmarks/learning.py``), each given on the reference's command line
(:func:`reference_command`): config ``dmc_proprio`` with ``--size`` (its ``size1m``: deter 512, hidden 64,
4 classes, as ours), ``--train-ratio`` replayed steps per agent step, action repeat 2 (``env.dmc.repeat``; today's
reference config has 1), one environment (``run.envs 1``; reference 16), no replay context (``replay_context 0``,
as dreamshift's default), no eval envs, JAX on the CPU with float32 compute (``jax.compute_dtype float32``: bfloat16
runs about 2x slower on XLA's CPU backend; dreamshift's runs use bf16 autocast), one XLA thread. What still differs
from a dreamshift run: the reference acts with its untrained policy until replay holds one batch (1 024 agent
steps) where dreamshift takes uniform random actions for ``prefill`` env steps (2 048 by default, as the 2023
reference; the ``cpu-state`` runs used 5 000), and each keeps its own random streams. The run directory
``RUNS/<task>-s<seed>`` (``<task>`` as in ``dmc_cartpole_swingup``) is the reference's logdir; running the same
command again resumes from its checkpoint (saved every 15 min). Output goes to ``<run dir>.log``.

``report`` prints, every 10k env steps, the mean training-episode return over the last 10k env steps (the
statistic of ``benchmarks/learning.py``) of the reference run (``scores.jsonl``: ``step`` counts env steps, two per
agent step at action repeat 2), of ``--ours`` (a dreamshift run directory) and of the published curves
(``dmc_proprio-dreamerv3.json.gz``, size12m) with their seed range, and writes a PNG of the three.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.errors import ConfigError  # noqa: E402
from experiments.plot import (  # noqa: E402
    WINDOW,
    load_reference,
    load_run,
    reference_band,
    reference_task,
    save_figure,
    window_mean,
)

PEER = ROOT / ".peers" / "dreamerv3"
SOURCE = "https://github.com/danijar/dreamerv3"
COMMIT = "e3f0224"  # "Fix Atari frame maxpooling on reset (#213)"
PACKAGES = ["jax[cpu]==0.4.33", "chex", "einops", "elements>=3.19.1", "granular>=0.20.3", "ninjax>=3.5.1",
            "numpy<2", "optax", "portal>=3.5.0", "scope>=0.4.4", "tqdm", "jaxtyping", "colored_traceback",
            "dm_control==1.0.28", "mujoco==3.3.0"]
DEFAULT_RUNS = Path("runs/learning/reference")
PUBLISHED = ROOT.parent / "shared" / "reference" / "dmc_proprio-dreamerv3.json.gz"
SIZES = ("size1m", "size12m", "size25m", "size50m")
REPEAT = 2  # action repeat; the reference's run.steps counts agent steps, its logged step env steps (x REPEAT)


def dmc_task(env: str) -> str:
    """``"dmc:cartpole_swingup"`` -> ``"cartpole_swingup"``; raises :class:`ConfigError` for other envs."""
    suite, _, task = env.partition(":")
    if suite != "dmc" or not task or not task.replace("_", "").isalnum():
        raise ConfigError(f"env {env!r} is not a dm_control task; give dmc:<domain>_<task>, e.g. dmc:walker_stand")
    return task


def run_dir(runs: Path, env: str, seed: int) -> Path:
    """``RUNS/dmc_<task>-s<seed>``: the reference's logdir for one run."""
    return Path(runs) / f"dmc_{dmc_task(env)}-s{seed}"


def reference_command(env: str, logdir: Path, seed: int = 0, steps: int = 50_000, size: str = "size1m",
                      train_ratio: float = 512.0, python: Path | str = PEER / "venv" / "bin" / "python") -> list[str]:
    """The reference's ``dreamerv3/main.py`` command line for one run with the ``cpu-state`` settings; ``steps``
    counts env steps (the reference's ``run.steps`` counts agent steps: ``steps // 2`` is passed).

    Raises:
        ConfigError: not a dm_control env, an unknown size, a non-positive ratio or step budget.
    """
    task = dmc_task(env)
    if size not in SIZES:
        raise ConfigError(f"size {size!r} is not one of the reference's sizes used here: {', '.join(SIZES)}")
    if train_ratio <= 0 or steps <= 0 or seed < 0:
        raise ConfigError("--train-ratio and --steps must be > 0 and --seed >= 0")
    return [str(python), str(PEER / "repo" / "dreamerv3" / "main.py"), "--configs", "dmc_proprio", size,
            "--task", f"dmc_{task}", "--seed", str(seed), "--run.train_ratio", f"{train_ratio:g}",
            "--env.dmc.repeat", str(REPEAT), "--run.envs", "1", "--run.eval_envs", "0", "--replay_context", "0",
            "--jax.platform", "cpu", "--jax.prealloc", "False", "--jax.compute_dtype", "float32",
            "--run.steps", str(steps // REPEAT), "--logdir", str(Path(logdir).resolve())]


def setup(source: str, commit: str) -> int:
    repo, venv = PEER / "repo", PEER / "venv"
    if not (repo / "dreamerv3" / "main.py").is_file():
        PEER.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--quiet", source, str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", commit], check=True)
    if not (venv / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import jax, elements, portal, dm_control"],
                           capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *PACKAGES], check=True)
    print(f"reference ready: {repo} ({commit}), {venv}")
    return 0


def run(args: argparse.Namespace) -> int:
    logdir = run_dir(args.runs, args.env, args.seed)
    cmd = reference_command(args.env, logdir, args.seed, args.steps, args.size, args.train_ratio)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if not Path(cmd[0]).is_file():
        raise ConfigError(f"no reference venv at {PEER / 'venv'}; run `python benchmarks/reference_run.py setup`")
    logdir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    with open(f"{logdir}.log", "a") as log:
        return subprocess.run(cmd, cwd=PEER / "repo", env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def load_scores(logdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(env steps, episode score)`` from a reference run's ``scores.jsonl`` (lines cut short are skipped)."""
    xs, ys = [], []
    path = Path(logdir) / "scores.jsonl"
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found: not a reference run directory (or no episode ended yet)")
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "episode/score" in rec and "step" in rec:
            xs.append(float(rec["step"]))
            ys.append(float(rec["episode/score"]))
    return np.asarray(xs), np.asarray(ys)


def report(args: argparse.Namespace) -> int:
    ref_run = load_scores(run_dir(args.runs, args.env, args.seed))
    ours = load_run(args.ours).series("episode", "return") if args.ours else None
    published = load_reference(args.published).get(reference_task(args.env) or "", [])
    furthest = max(ref_run[0].max(initial=0), ours[0].max(initial=0) if ours else 0)
    steps = np.arange(WINDOW, furthest + 1, WINDOW)
    mean, lo, hi = reference_band(published, steps) if published else (np.full(len(steps), np.nan),) * 3
    header = ["env steps", "reference code here", *(["ours"] if ours else []), "published mean [min-max]"]
    print(" | ".join(f"{c:>26}" for c in header))
    partial = []

    def next_end(xs: np.ndarray) -> float:
        """The env step the run's next episode would end at (last end + the median spacing of episode ends)."""
        return xs.max(initial=0) + (float(np.median(np.diff(xs))) if len(xs) > 1 else 0.0)

    def cell(xs: np.ndarray, ys: np.ndarray, s: float, name: str, after: float) -> str:
        value = f"{window_mean(xs, ys, s)[0]:.1f}"
        if after <= s and value != "nan":  # another episode would have ended in the window: the run stopped early
            partial.append(f"{name} reached {xs.max():.0f} env steps")
            return value + "*"
        return value

    ref_next, ours_next = next_end(ref_run[0]), next_end(ours[0]) if ours else 0.0
    for i, s in enumerate(steps):
        cells = [f"{s:.0f}", cell(*ref_run, s, "the reference code", ref_next),
                 *([cell(*ours, s, "ours", ours_next)] if ours else []), f"{mean[i]:.1f} [{lo[i]:.0f}-{hi[i]:.0f}]"]
        print(" | ".join(f"{c:>26}" for c in cells))
    if partial:
        print(f"* a window the run has not finished ({'; '.join(dict.fromkeys(partial))}): the mean of its episodes "
              "so far")
    if args.out:
        from experiments.plot import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        if published:
            grid = np.arange(WINDOW, max(furthest, WINDOW) + 1, 1000)
            m, low, high = reference_band(published, grid)
            ax.fill_between(grid, low, high, color="grey", alpha=0.25, label="published seed range (size12m)")
            ax.plot(grid, m, color="grey", label="published mean (size12m)")
        series = [(ref_run, f"reference code here ({args.size})"), *([(ours, "dreamshift")] if ours else [])]
        for (xs, ys), label in series:
            if len(xs):
                grid = np.arange(WINDOW, xs.max() + 1, 1000)
                ax.plot(grid, window_mean(xs, ys, grid), label=label)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"return, mean of the last {WINDOW // 1000}k env steps")
        ax.set_title(args.env)
        ax.legend(fontsize=8)
        print(f"wrote {save_figure(fig, args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="clone the reference and make its venv in .peers/dreamerv3")
    s.add_argument("--source", default=SOURCE)
    s.add_argument("--commit", default=COMMIT)
    r = sub.add_parser("run", help="train the reference on one task (resumes its checkpoint)")
    q = sub.add_parser("report", help="table and plot: reference code here, ours, published")
    for x in (r, q):
        x.add_argument("env", help="dmc:<domain>_<task>")
        x.add_argument("--seed", type=int, default=0)
        x.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
        x.add_argument("--size", default="size1m", choices=SIZES)
    r.add_argument("--steps", type=int, default=50_000, help="env steps")
    r.add_argument("--train-ratio", type=float, default=512.0)
    r.add_argument("--dry-run", action="store_true", help="print the command only")
    q.add_argument("--ours", type=Path, default=None, help="a dreamshift run directory to compare")
    q.add_argument("--published", type=Path, default=PUBLISHED)
    q.add_argument("--out", type=Path, default=None, help="write the plot here (PNG)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "setup":
            return setup(args.source, args.commit)
        return run(args) if args.cmd == "run" else report(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
