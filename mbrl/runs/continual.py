"""Continual adaptation through a sequence of visual shifts (one lineage).

``continual(RUN, stages, steps, mix, lr_scale, out)`` adapts the agent of ``RUN`` to the first shift, the result
to the second, and so on (:func:`mbrl.runs.adapt.adapt`, each stage mixing in an equal share of every earlier
condition's data: the clean run's replay and each earlier stage's target replay). Stage ``i`` (1-based) is the run
directory ``OUT/stage<i>-<kind><severity>``; after each stage it is evaluated (:func:`mbrl.runs.adapt.stage_report`)
on the clean env, every earlier target and the current target (and the other severities of the current kind),
and ``OUT/continual.json`` -- the matrix stage x condition, with the base run as stage 0, and the data used --
is rewritten atomically, so a killed sequence keeps what it finished; ``resume=True`` continues it (finished
stages are skipped, a killed stage is resumed from its checkpoint).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import ConfigError
from mbrl.runs import checkpoint
from mbrl.runs.adapt import REPORT_FILE, _override, adapt, check_replay_sources, stage_report
from mbrl.runs.evaluate import evaluate_agent, resolve_threads
from shifts.conditions import CLEAN, Condition, condition_name, parse_target

SUMMARY_FILE = "continual.json"


def parse_stages(text: str, env_name: str | None = None) -> list[Condition]:
    """``"color:5;gaussian_noise:5"`` -> one :data:`~shifts.conditions.Condition` per stage (a stage may combine
    shifts with ``,``: ``"color:5,fog:2;texture:5"``).

    Raises:
        ConfigError: no stage, an empty stage (``color:5;;fog:1``: a stage left out by mistake is not dropped
            silently), or a stage :func:`shifts.conditions.parse_target` rejects.
    """
    items = [t.strip() for t in str(text).split(";")]
    if not any(items):
        raise ConfigError("--stages is empty; expected KIND:SEVERITY;KIND:SEVERITY;..., e.g. color:5;fog:5")
    empty = [str(i) for i, item in enumerate(items, start=1) if not item]
    if empty:
        raise ConfigError(f"--stages {text!r}: stage {', '.join(empty)} of {len(items)} is empty; expected "
                          f"KIND:SEVERITY;KIND:SEVERITY;... with one condition between each ';', e.g. color:5;fog:5")
    return [parse_target(item, env_name) for item in items]


def stage_dir(out: Path | str, index: int, cond: Condition) -> Path:
    """``OUT/stage<index>-<kind><severity>[-...]`` (1-based index)."""
    slug = "-".join(f"{k}{s}" for k, s in cond)
    return Path(out) / f"stage{index}-{slug}"


def _finished(run_dir: Path, steps: int) -> bool:
    """Whether a stage run reached its budget and has its report."""
    if not checkpoint.checkpoint_path(run_dir).exists() or not (run_dir / "eval" / REPORT_FILE).exists():
        return False
    return checkpoint.load_run(run_dir, agent=False).env_steps >= steps


def continual(run: Path | str, stages: str | list[Condition], steps: int, mix: float = 0.5, lr_scale: float = 0.1,
              out: Path | str | None = None, seed: int | None = None, eval_episodes: int = 3, levels: bool = True,
              overrides: dict[str, str] | None = None, resume: bool = False,
              progress: Callable[[str], None] | None = None, threads: int | None = None) -> Path:
    """Adapt through ``stages`` one after another; returns the path of ``OUT/continual.json``.

    Args:
        run: trained (clean) run directory, read only.
        stages: ``"kind:sev;kind:sev;..."`` or parsed conditions.
        steps: target env steps per stage; mix, lr_scale, seed, overrides: as :func:`mbrl.runs.adapt.adapt`.
        eval_episodes: evaluation episodes per condition after each stage (>= 1).
        levels: also evaluate the other severities of each stage's kind.
        resume: continue a killed sequence in ``out``.
        threads: torch CPU threads of the evaluations (:func:`mbrl.runs.evaluate.resolve_threads`: default each
            evaluated run's ``threads``, else all cores); the adaptations train with their config's ``threads``
            (``overrides``). Every evaluation is reproducible bit for bit (:func:`mbrl.runs.evaluate.evaluate_agent`).

    Returns:
        ``OUT/continual.json``: ``stages`` (one record per stage: run, target, data, results per condition with
        ``role`` target | clean | earlier | level) with stage 0 the base run, and ``matrix``
        ``{stage name: {condition: mean return}}``.

    Raises:
        ConfigError: bad stages (an empty one included), mix, lr_scale, steps, episodes or threads; ``out``
            existing and not empty without ``resume``, or missing or empty with ``resume``. CheckpointError: a
            missing run, or ``mix`` > 0 from a run that stores no replay to mix in (a merged run). All checked
            before anything is written (and before the base run's evaluation).
    """
    if out is None:
        raise ConfigError("continual needs --out DIR")
    out = Path(out)
    base = checkpoint.load_run(run, agent=False)
    env_name = base.config.env
    conds = stages if isinstance(stages, list) else parse_stages(stages, env_name)
    if not conds:
        raise ConfigError("--stages names no stage")
    if eval_episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, got {eval_episodes}")
    resolve_threads(None, threads)
    if not 0.0 <= mix <= 1.0:
        raise ConfigError(f"--mix must be in [0, 1], got {mix}")
    if not 0.0 < lr_scale <= 1.0:
        raise ConfigError(f"--lr-scale must be in (0, 1], got {lr_scale}")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1 target env steps, got {steps}")
    if len(set(conds)) != len(conds):
        raise ConfigError("--stages repeats a condition; each stage must be a new shift")
    _override(copy.deepcopy(base.config), dict(overrides or {}))  # --set fails before stage 0
    check_replay_sources(base, mix)  # a run without replay (merged) with mix > 0: before stage 0, as adapt does
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(f"--out {str(out)!r} already exists and is not empty; continue it with --resume or "
                          f"choose another --out")
    if resume and not (out.is_dir() and any(out.iterdir())):
        raise ConfigError(f"--resume: --out {str(out)!r} {'is empty' if out.is_dir() else 'does not exist'}, so "
                          f"there is no sequence to continue; give the --out of the killed sequence, or drop "
                          f"--resume to start a new one")
    say = progress or (lambda line: None)
    summary_path = out / SUMMARY_FILE
    summary: dict[str, Any] = {"base": str(run), "stages_spec": [condition_name(c) for c in conds],
                               "steps_per_stage": steps, "mix": mix, "lr_scale": lr_scale,
                               "eval_episodes": eval_episodes, "stages": []}

    # stage 0: the base run on every condition of the sequence (the reference for forgetting)
    say(f"stage 0 (base {run}): evaluating on clean + {len(conds)} target(s)")
    base_conds = [CLEAN, *conds]
    base_results = evaluate_agent(base.build_agent(), base.config, base_conds, eval_episodes, 0, say, threads)
    for rec, cond in zip(base_results, base_conds, strict=True):
        rec["role"] = "clean" if cond == CLEAN else "later"
    summary["stages"].append({"stage": 0, "run": str(run), "target": "clean", "results": base_results,
                              "data": {"target_env_steps": 0, "lineage_target_env_steps": 0}})
    del base  # the stages load their own runs
    parent: Path = Path(run)
    for i, cond in enumerate(conds, start=1):
        sdir = stage_dir(out, i, cond)
        if resume and _finished(sdir, steps):
            say(f"stage {i} ({condition_name(cond)}): finished earlier, {sdir}")
        elif resume and checkpoint.checkpoint_path(sdir).exists():
            say(f"stage {i} ({condition_name(cond)}): resuming {sdir}")
            adapt(None, None, steps, overrides=overrides, resume=sdir)
        else:
            if sdir.exists() and any(sdir.iterdir()):
                raise ConfigError(f"stage directory {str(sdir)!r} has files but no checkpoint; remove it to rerun "
                                  f"the stage")
            say(f"stage {i} ({condition_name(cond)}): adapting {parent} for {steps} env steps")
            adapt(parent, cond, steps, mix, lr_scale, sdir, seed, overrides)
        if not (sdir / "eval" / REPORT_FILE).exists():
            stage_report(sdir, eval_episodes, 0, levels, progress=say, threads=threads)
        report = json.loads((sdir / "eval" / REPORT_FILE).read_text())
        meta = checkpoint.read_meta(sdir)
        summary["stages"].append({"stage": i, "run": str(sdir), "target": meta["target"], "data": report["data"],
                                  "results": report["results"]})
        summary["matrix"] = _matrix(summary["stages"])
        files.write_json(summary_path, summary)
        parent = sdir
    return summary_path


def _matrix(stages: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{"stage<i> <target>": {condition: mean return}}``."""
    return {f"stage{s['stage']} {s['target']}": {r["condition"]: r["return_mean"] for r in s["results"]}
            for s in stages}


def format_summary(summary: dict[str, Any]) -> str:
    """Stage x condition table (clean, then each stage's target in order; blank where not evaluated) and the data
    used per stage."""
    conds = ["clean", *summary["stages_spec"]]
    names = [f"{s['stage']}: {s['target']}" for s in summary["stages"]]
    w = max(len("stage"), *(len(n) for n in names))
    col = max(9, *(len(c) for c in conds))
    lines = [f"{'stage':<{w}}  " + "  ".join(f"{c:>{col}}" for c in conds) + "  target steps (% of base)"]
    for name, stage in zip(names, summary["stages"], strict=True):
        got = {r["condition"]: r["return_mean"] for r in stage["results"]}
        cells = [f"{got[c]:>{col}.1f}" if c in got else f"{'':>{col}}" for c in conds]
        d = stage["data"]
        frac = d.get("lineage_fraction")
        data = f"{d['lineage_target_env_steps']}" + (f" ({100 * frac:.1f}%)" if frac is not None else "")
        lines.append(f"{name:<{w}}  " + "  ".join(cells) + f"  {data}")
    return "\n".join(lines)
