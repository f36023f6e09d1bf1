"""wandb logging of a trial's evaluation: one ``job_type=eval`` run per trial next to its ``train`` run, in the
trial's group (``env/encoder/mode``), with an id derived from the trial (a rerun continues the same run).

Logged: the trial as config; summary metrics ``eval/<shift>/<severity>/return_mean`` (and ``success_rate``,
``normalised``); a wandb Table with every episode record; a robustness curve (mean return vs severity, one line
per shift kind). Offline by default: files go under the trial's run directory (``wandb sync`` uploads them).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from experiments.metrics import normalised_return
from experiments.normalisation import constants
from experiments.results import FIELDS


def log_evaluation(trial: dict[str, Any], records: list[dict[str, Any]], run_dir: Path | str,
                   mode: str = "offline", project: str = "dreamshift") -> str:
    """Log the trial's evaluation records to wandb; returns the wandb run id."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run_id = f"{trial['id']}-eval"
    run = wandb.init(project=project, dir=str(run_dir), mode=mode, id=run_id, resume="allow", group=trial["group"],
                     job_type="eval", name=f"{trial['id']}-eval", config=trial)
    try:
        by_condition: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            by_condition[(r["shift"], r["severity"])].append(r)
        c = constants(records[0]["env"]) if records else None
        summary: dict[str, float] = {}
        for (shift, severity), rs in by_condition.items():
            mean = float(np.mean([r["return"] for r in rs]))
            summary[f"eval/{shift}/{severity}/return_mean"] = mean
            if c is not None:
                summary[f"eval/{shift}/{severity}/normalised"] = normalised_return(mean, rs[0]["env"])
            successes = [r["success"] for r in rs if r["success"] is not None]
            if successes:
                summary[f"eval/{shift}/{severity}/success_rate"] = float(np.mean(successes))
        run.summary.update(summary)
        table = wandb.Table(columns=list(FIELDS), data=[[r[k] for k in FIELDS] for r in records])
        data: dict[str, Any] = {"eval/episodes": table}
        clean = [float(np.mean([r["return"] for r in rs])) for (s, _), rs in by_condition.items() if s == "none"]
        kinds = sorted({s for s, _ in by_condition if s != "none"})
        severities = sorted({v for _, v in by_condition})
        if kinds and clean:
            def point(kind: str, severity: int) -> float:
                if severity == 0:
                    return clean[0]
                rs = by_condition.get((kind, severity))
                return float(np.mean([r["return"] for r in rs])) if rs else float("nan")

            ys = [[point(k, v) for v in severities] for k in kinds]
            data["eval/robustness_curve"] = wandb.plot.line_series(
                xs=severities, ys=ys, keys=kinds, title="return vs severity", xname="severity")
        run.log(data)
    finally:
        run.finish()
    return run_id
