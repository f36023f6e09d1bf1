"""``dreamshift demo``: train one agent briefly (the training path works), evaluate it, the zoo's learned agents
and the uniform-random policy on the same conditions, and print ONE table in the leaderboard's terms that says
which agents can be told apart from random.

Agents, all on :data:`ENV`:

- ``state oracle`` (:data:`AGENTS`): proprioceptive state instead of pixels (``obs=state``), trained here for
  600 updates with the shared settings (:data:`COMMON_OVERRIDES`): the perception-free reference and the fastest
  learner per CPU second, far too short a run to learn the task;
- ``zoo: <name>`` (:func:`zoo_agents`): every zoo entry trained on the same env (``experiments/zoo/``, trained
  for longer elsewhere, their provenance in the entry), evaluated as they are, from a copy in the demo directory;
- ``dreamshift demo encoder=cnn`` (or ``dreamshift-vit``, ``efficientnet-lite0``: frozen, features cached,
  ``decoder=features``) trains that pixel agent instead of the oracle (:data:`ENCODER_OVERRIDES`).

Each agent is evaluated on every condition of the ``quick`` suite (clean, ``color`` and
``gaussian_noise`` at severities 1 and 5) with ``eval_episodes`` episodes per condition and the same episode seeds
(:func:`mbrl.runs.evaluate.evaluate_suite`); its results records go to ``RUN/eval/results/`` as ``dreamshift
evaluate --suite`` writes them. The uniform-random policy plays the same episode seeds under the same
conditions (:func:`random_policy_records`). :func:`combined_table` turns all records into one table: normalised
return (:mod:`experiments.normalisation`) ID and OOD with the standard error, drop %, and the mean over all
conditions with a 95 % bootstrap CI over episodes (:mod:`experiments.leaderboard`, :mod:`experiments.metrics`).
With one training seed per agent, the unit of every SE and CI is the evaluation episode: they say how well this
agent's return is measured, not how another training seed would do. A row whose CI overlaps the random policy's
is marked :data:`NOT_DISTINGUISHABLE`.

Budget: <= 12 min on 2 CPU cores. Measured end to end (2026-12-07, a fresh clone, the 2-core machine otherwise
idle, sampled evaluation): 7.3 min (state oracle 327 s training + 50 s evaluation, the zoo's
state-cartpole_swingup-s0 54 s, random policy 7 s). The
earlier demo, which also trained cnn and dreamshift-vit for 200 updates each, took 10.2 min end to end on the idle
2-core machine (state oracle 221 s training + 25 s evaluation, cnn 118 + 46 s, dreamshift-vit 77 + 118 s, random
policy 4 s); a zoo agent's evaluation costs what a trained agent's does (25 episodes, ~1 s each for a state agent).
That earlier budget was planned from the components, measured as CPU time of one thread (``threads=1``: an upper
bound for the wall time with two threads on an idle machine), each agent trained for 400 env steps of prefill
and then 32 updates, then evaluated on the ``quick`` suite with one episode per condition:

=============================== ======================= =========================
agent                           CPU s per update        CPU s per eval episode
                                (with its 2 env steps)  (500 agent steps)
=============================== ======================= =========================
state oracle                    0.42                    1.05
cnn (64 px)                     0.76                    2.0
dreamshift-vit, frozen          0.46                    5.3
efficientnet-lite0, frozen      0.51                    8.9
=============================== ======================= =========================

Extrapolated: state oracle 600 x 0.42 + 25 x 1.05 = 280 s, cnn 200 x 0.76 + 25 x 2.0 = 200 s, dreamshift-vit
200 x 0.46 + 25 x 5.3 = 225 s, prefill and setup ~10 s per agent, the random policy ~5 s, imports ~10 s: about
750 s, 12.5 min of one core; two threads on an idle machine make an update ~1.6x faster (docs/benchmarks.md:
0.60 against 0.96 s for the state model). efficientnet-lite0 would add 25 x 8.9 = 220 s of evaluation alone,
so it is not a default agent. Not measured end to end: a full run with an earlier budget (700 and 250 updates,
``threads=1``) on the machine under load 5-7 ran out of its 60-min timeout in the cnn's training; its state
oracle part (imports, 700 updates, 25 episodes) used 450 s of CPU against 330 s from the components, so CPU
time measured under that load is about 1.35x the component estimate.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

import envs
from envs import files
from envs.registry import state_suites
from experiments import leaderboard, metrics, results
from experiments.normalisation import constants
from experiments.zoo import PROVENANCE, ZOO_DIR
from mbrl.config import build_config
from mbrl.runs.evaluate import EVAL_SEED_OFFSET, evaluate_suite, run_episodes
from mbrl.runs.train import train
from mbrl.runtime import check_env_encoder, env_kwargs
from shifts.base import ShiftWrapper, make_shift
from shifts.suites import for_env, parse_suite

ENV = "dmc:cartpole_swingup"
SUITE = "quick"
EVAL_SEED = 0
RANDOM_LABEL = "random policy"
NOT_DISTINGUISHABLE = "not distinguishable from random"

# Shared by every agent; ``key=value`` given to ``dreamshift demo`` override these and the agent's own settings.
# B x T 16 x 32 at train ratio 512: one update per agent step (two env steps) after the 1000 env steps of
# random-action prefill.
COMMON_OVERRIDES = {
    "env": ENV, "size": "size1m", "batch_size": "16", "batch_length": "32", "train_ratio": "512",
    "prefill": "1000", "eval_episodes": "5", "log_every": "500", "save_every": "0", "wandb_mode": "disabled",
    "replay_capacity": "25000",
}
# Each encoder's own settings, also when ``dreamshift demo encoder=NAME`` trains that one alone.
ENCODER_OVERRIDES = {
    "cnn": {"encoder": "cnn"},
    "efficientnet-lite0": {"encoder": "efficientnet-lite0", "encoder_mode": "frozen", "encoder_input_size": "128",
                           "decoder": "features"},
    "dreamshift-vit": {"encoder": "dreamshift-vit", "encoder_mode": "frozen", "decoder": "features"},
}
STATE_STEPS, PIXEL_STEPS = "2200", "1400"  # env steps: 600 and 200 updates
# (label, overrides) of the agents the demo trains; the label names the agent's row (the records' ``label``). One
# short run shows that the training path works (600 updates of the state oracle, the cheapest per update and per
# evaluation episode); it is far too short to learn, which is what the zoo's agents are for.
# ``dreamshift demo encoder=cnn`` (or dreamshift-vit, efficientnet-lite0) trains that pixel agent instead, with
# its settings above.
AGENTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("state oracle", {"obs": "state", "steps": STATE_STEPS}),
)
ZOO_PREFIX = "zoo: "  # the row label of a zoo agent: ``zoo: <entry name>``


def agent_configs(given: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """``(label, overrides)`` of every agent the demo trains with ``given`` applied on top; ``encoder=`` or
    ``obs=`` in ``given`` trains only that one agent (labelled by its encoder, or ``state oracle``)."""
    if "encoder" in given or "obs" in given:
        if given.get("obs") == "state":
            return [("state oracle", {**COMMON_OVERRIDES, **dict(AGENTS)["state oracle"], **given})]
        own = ENCODER_OVERRIDES.get(given.get("encoder", "cnn"), {})
        return [(given.get("encoder", "cnn"), {**COMMON_OVERRIDES, "steps": PIXEL_STEPS, **own, **given})]
    return [(label, {**COMMON_OVERRIDES, **own, **given}) for label, own in AGENTS]


def zoo_agents(env: str, zoo: Path | None = None) -> list[tuple[str, Path]]:
    """``(label, entry directory)`` of the zoo's agents trained on ``env`` (:mod:`experiments.zoo`), by name;
    label ``zoo: <name>``. An entry whose ``config.json`` cannot be read is skipped (the zoo's own test loads
    every entry)."""
    zoo = ZOO_DIR if zoo is None else zoo
    out = []
    for entry in sorted(zoo.glob("*")) if zoo.is_dir() else []:
        try:
            cfg = json.loads((entry / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (entry / PROVENANCE).is_file() and cfg.get("env") == env:
            out.append((ZOO_PREFIX + entry.name, entry))
    return out


def _suite_records(run_dir: Path, label: str, episodes: int, state: bool) -> list[dict[str, Any]]:
    """Evaluate ``run_dir`` on :data:`SUITE` (``episodes`` per condition, seed :data:`EVAL_SEED`), write and return
    its results records labelled ``label``."""
    path = evaluate_suite(run_dir, SUITE, episodes=episodes, seed=EVAL_SEED)
    run_records = results.from_suite(json.loads(path.read_text()), run_dir.name, label)
    if state:  # no image encoder: the records say so instead of naming the unused default
        run_records = [{**r, "encoder": "none", "encoder_mode": "state"} for r in run_records]
    results.write_run(run_dir, run_records)
    return run_records


class RandomPolicy:
    """The uniform-random policy in the interface :func:`mbrl.runs.evaluate.run_episodes` drives: every action is drawn
    uniformly from ``[low, high]`` with numpy's global generator, which ``run_episodes`` seeds per episode, so its
    episodes are reproducible and independent of the observation.

    Args:
        low, high: the env's action bounds, ``(action_dim,)`` float.
    """

    device = "cpu"
    wm = SimpleNamespace(obs_keys=())  # it reads no observation

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)

    def initial_state(self, batch: int) -> None:
        return None

    def act(self, obs: dict[str, Any], is_first: Any, state: None, mode: str = "sample",
            out: dict[str, Any] | None = None) -> tuple[torch.Tensor, None]:
        """``(action (1, action_dim) float32 tensor, None)``; ``out`` (extra outputs) stays empty."""
        return torch.from_numpy(np.random.uniform(self.low, self.high).astype(np.float32)[None]), None


def random_policy_records(env: str, suite: str, episodes: int, seed: int = EVAL_SEED,
                          overrides: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Results records (:func:`experiments.results.episode_records`, label :data:`RANDOM_LABEL`) of the
    uniform-random policy on every condition of ``suite``, with the episode seeds and shift seed of
    :func:`mbrl.runs.evaluate.evaluate_suite` (``seed``). The env is built with ``obs=state`` where its suite has a
    state vector: the policy reads no observation and a visual shift cannot change a return, so nothing needs to
    be rendered.

    Args:
        overrides: further config settings of the env (e.g. ``time_limit``).

    Raises:
        ShiftError: unknown suite; ConfigError / EnvError: a bad env or override.
    """
    name, conditions = parse_suite(suite)
    has_state = env.partition(":")[0] in state_suites()  # else rendered pixels, which it ignores as well
    cfg = build_config({**(overrides or {}), "env": env, "obs": "state" if has_state else "pixels"})
    conditions = for_env(name, conditions, cfg.env)
    probe = envs.make_env(cfg.env, **env_kwargs(cfg))
    try:
        policy = RandomPolicy(probe.action_space.low, probe.action_space.high)
    finally:
        probe.close()
    run = {"env": env, "encoder": "random", "encoder_mode": "uniform", "size": "none", "seed": 0,
           "eval_seed": seed, "env_steps_trained": 0, "config_hash": "none"}
    out = []
    for kind, severity in conditions:
        wrap = None
        if kind != "none":
            def wrap(e: Any, kind: str = kind, severity: int = severity) -> ShiftWrapper:
                return ShiftWrapper(e, [make_shift(kind, severity, seed)])
        eps = run_episodes(policy, cfg, episodes, seed=EVAL_SEED_OFFSET + seed, wrap=wrap, threads=1)
        out += results.episode_records(run, kind, severity, eps, trial="random-policy", label=RANDOM_LABEL)
    return out


def _interval(x: pd.DataFrame, reps: int) -> tuple[float, float, float]:
    """Mean ``(point, lo, hi)`` with a 95 % bootstrap CI over the rows (episode seeds) of a ``(episodes,
    conditions)`` score matrix: each episode seed's mean over the conditions is one sample. An episode seed is
    the independent unit: the random policy and the state oracle play it identically under every visual shift,
    so resampling conditions independently (the leaderboard's stratified bootstrap over seeds) would count one
    episode up to five times and narrow the CI."""
    per_episode = x.to_numpy().mean(axis=1, keepdims=True)  # (episodes, 1)
    return metrics.interval_estimates({"row": per_episode}, reps=reps)["row"]["mean"]


def combined_table(records: Sequence[dict[str, Any]], reps: int = 2000) -> pd.DataFrame:
    """One row per agent (records' ``label`` and ``encoder_mode``) of one env, best score first.

    The leaderboard's statistics (:func:`experiments.leaderboard.per_seed`, :func:`~experiments.leaderboard.summary`)
    with the evaluation episode as the unit in place of the training seed: ID and OOD are the mean ± SE over
    episodes of the score (normalised return where the env has constants; OOD: an episode seed's mean over the
    shifted conditions), drop % compares them; ``score``/``score_lo``/``score_hi`` is the mean score over all
    conditions with a 95 % bootstrap CI over episode seeds (:func:`_interval`). ``vs_random`` compares that CI with the
    :data:`RANDOM_LABEL` row's: :data:`NOT_DISTINGUISHABLE` when they overlap, else ``above random`` / ``below
    random`` (the random row itself: ``reference``; no random row: ``-``).

    Args:
        records: results-schema records (:mod:`experiments.results`) of every agent and the random policy, all of
            one env, each condition of an agent with the same episode seeds.
        reps: bootstrap replications.

    Returns:
        Columns ``agent, mode, env_steps, episodes, id, id_se, ood, ood_se, drop_pct, score, score_lo, score_hi,
        vs_random,
        normalised`` (``env_steps``: trained, from the records; ``episodes``: the fewest of any condition
        of the row).

    Raises:
        ValueError: no records, or records of more than one env.
    """
    if not records:
        raise ValueError("combined_table: no records")
    env_names = sorted({r["env"] for r in records})
    if len(env_names) > 1:
        raise ValueError(f"combined_table: one env expected, got {', '.join(env_names)}")
    episodes = [{**r, "seed": r["episode_seed"]} for r in records]  # the unit: evaluation episode
    trained: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r["label"], r["encoder_mode"])
        trained[key] = max(trained.get(key, 0), r["env_steps_trained"])
    per_episode = leaderboard.per_seed(episodes)
    summ = leaderboard.summary(per_episode, reps=reps)
    rows = []
    for _, s in summ.iterrows():
        g = per_episode[(per_episode["encoder"] == s["encoder"]) & (per_episode["encoder_mode"] == s["encoder_mode"])]
        matrix = g.pivot_table(index="seed", columns=["shift", "severity"], values="score").dropna(axis=0)
        point, lo, hi = _interval(matrix, reps) if matrix.size else (math.nan,) * 3
        rows.append({"agent": s["encoder"], "mode": s["encoder_mode"],
                     "env_steps": trained[(s["encoder"], s["encoder_mode"])],
                     "episodes": int(g.groupby(["shift", "severity"]).size().min()),
                     "id": s["id_score"], "id_se": s["id_se"], "ood": s["ood_score"], "ood_se": s["ood_se"],
                     "drop_pct": s["drop_pct"], "score": point, "score_lo": lo, "score_hi": hi,
                     "normalised": bool(s["normalised"])})
    out = pd.DataFrame(rows).sort_values("score", ascending=False, na_position="last").reset_index(drop=True)
    rand = out[out["agent"] == RANDOM_LABEL]
    out["vs_random"] = [_verdict(r, rand.iloc[0] if len(rand) else None) for _, r in out.iterrows()]
    return out


def _verdict(row: pd.Series, rand: pd.Series | None) -> str:
    if rand is None or math.isnan(row["score_lo"]) or math.isnan(rand["score_lo"]):
        return "-"
    if row["agent"] == RANDOM_LABEL:
        return "reference"
    if row["score_lo"] > rand["score_hi"]:
        return "above random"
    if row["score_hi"] < rand["score_lo"]:
        return "below random"
    return NOT_DISTINGUISHABLE


def format_table(table: pd.DataFrame) -> str:
    """The combined table as Markdown: agent, mode, env steps trained, episodes per condition, ID and OOD
    (mean ± SE), drop % (``–`` for the random policy and the rows not distinguishable from it: a drop from a
    random-level score measures noise), score [95 % CI] (mean over all conditions), vs random."""
    digits = 2 if table["normalised"].all() else 1

    def pm(m: float, se: float) -> str:
        return "–" if math.isnan(m) else f"{m:.{digits}f} ± {se:.{digits}f}"

    def drop(d: float | None, verdict: str) -> str:
        if d is None or math.isnan(d) or verdict in (NOT_DISTINGUISHABLE, "reference"):
            return "–"
        return f"{round(d) + 0:d}"

    shown = pd.DataFrame({
        "agent": table["agent"], "mode": table["mode"],
        "env steps": ["–" if n == 0 else str(n) for n in table["env_steps"]], "episodes": table["episodes"],
        "ID": [pm(r["id"], r["id_se"]) for _, r in table.iterrows()],
        "OOD": [pm(r["ood"], r["ood_se"]) for _, r in table.iterrows()],
        "drop %": [drop(r["drop_pct"], r["vs_random"]) for _, r in table.iterrows()],
        "score [95% CI]": ["–" if math.isnan(r["score"]) else
                           f"{r['score']:.{digits}f} [{r['score_lo']:.{digits}f}, {r['score_hi']:.{digits}f}]"
                           for _, r in table.iterrows()],
        "vs random": table["vs_random"],
    })
    return shown.to_markdown(index=False)


def legend(env: str, episodes: int) -> str:
    """What the table's numbers are, in one paragraph (``episodes``: evaluation episodes per condition)."""
    c = constants(env)
    score = ("score = normalised return (R - R_random) / (R_max - R_random), 0 = the uniform-random policy's mean "
             f"R_random {c.r_random:g}, 1 = R_max {c.r_max:g}") if c else "score = raw return (no constants)"
    return (f"{env}, suite {SUITE}: {score}. ID: clean; OOD: mean over the shifted conditions; mean ± SE over "
            f"{episodes} evaluation episode(s) per condition; drop % = 100 (ID - OOD) / |ID| (– at the random "
            f"level); score: mean over all conditions with a 95 % bootstrap CI over episode seeds. One training seed "
            f"per agent: SEs and CIs measure this agent's evaluation, not the spread over training seeds. A row "
            f"whose CI overlaps the random policy's is marked '{NOT_DISTINGUISHABLE}'; 'above random' is not "
            f"'solved' (a constant action can beat the random policy).")


def run(given: dict[str, str], out: Callable[[str], None] = print, zoo: Path | None = None) -> Path:
    """``dreamshift demo [key=value ...]``: train and evaluate the demo's agent(s), evaluate the zoo's agents of
    the same env (:func:`zoo_agents`) and the random policy on the same episodes, print the combined table and the
    wall time; returns the demo directory (``runs/demo-<time>/`` or ``run_dir=``), which holds one run directory
    per agent (``zoo-<name>/``: a copy of the zoo entry), ``random-policy/eval/results/`` and ``table.md``.

    Args:
        given: ``key=value`` overrides applied to every trained agent (:func:`agent_configs`).
        out: where the lines go (default: stdout).
        zoo: the zoo directory (default :data:`experiments.zoo.ZOO_DIR`).

    Raises:
        ConfigError, EnvError, OutputPathError: bad overrides or output directory, before anything is trained.
    """
    t0 = time.time()
    cfgs = []
    for label, overrides in agent_configs(given):  # every bad override fails before anything is trained
        cfg = build_config(overrides)
        check_env_encoder(cfg)
        cfgs.append((label, overrides, cfg))
    root = Path(given.get("run_dir") or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    files.check_output_dir(root, "run_dir")
    records: list[dict[str, Any]] = []
    timing = []
    for label, overrides, cfg in cfgs:
        slug = label.replace(" ", "-")
        t_train = time.time()
        out(f"[demo] training {label} ({cfg.steps} env steps) ...")
        run_dir = train(build_config({**overrides, "run_dir": str(root / slug)}))
        t_eval = time.time()
        out(f"[demo] evaluating {label}: suite {SUITE}, {cfg.eval_episodes} episode(s) per condition ...")
        records += _suite_records(run_dir, label, cfg.eval_episodes, cfg.obs == "state")
        timing.append(f"{label} {t_eval - t_train:.0f}+{time.time() - t_eval:.0f} s")
    episodes = cfgs[0][2].eval_episodes
    for label, entry in zoo_agents(cfgs[0][2].env, zoo):  # copied: evaluating writes into the run directory
        t_eval = time.time()
        out(f"[demo] evaluating {label} ({entry}): suite {SUITE}, {episodes} episode(s) per condition ...")
        run_dir = root / label.replace(ZOO_PREFIX, "zoo-")
        shutil.copytree(entry, run_dir)
        state = json.loads((entry / "config.json").read_text())["config"].get("obs") == "state"
        records += _suite_records(run_dir, label, episodes, state)
        timing.append(f"{label} {time.time() - t_eval:.0f} s")
    t_rand = time.time()
    out("[demo] evaluating the uniform-random policy on the same episodes ...")
    first = cfgs[0][2]
    rand = random_policy_records(first.env, SUITE, episodes, EVAL_SEED, {
        "time_limit": str(first.time_limit), "action_repeat": str(first.action_repeat)})
    results.write_run(root / "random-policy", rand)
    timing.append(f"random policy {time.time() - t_rand:.0f} s")
    table = combined_table(records + rand)
    text = format_table(table)
    files.atomic_write(root / "table.md", lambda f: f.write((legend(cfgs[0][2].env, episodes) + "\n\n" + text
                                                             + "\n").encode()))
    out("")
    out(legend(cfgs[0][2].env, episodes))
    out(text)
    out(f"wall time: {(time.time() - t0) / 60:.1f} min (train+evaluate: {', '.join(timing)})")
    out(f"demo directory: {root} (table.md; per-run records: dreamshift leaderboard {root})")
    return root
