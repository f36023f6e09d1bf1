"""Run logging: metrics to ``RUN_DIR/metrics.jsonl`` and wandb, and a rich progress bar.

JSONL records: ``{"kind": "train" | "episode" | "eval", "env_steps": int, "agent_steps": int, ...metrics}``,
one per line. wandb runs offline by default (files under ``RUN_DIR/wandb``, sync later with
``wandb sync``); ``wandb_mode=online`` streams to ``wandb_project`` when the user is logged in.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from envs import files

GARBLED_SUFFIX = ".garbled"  # metrics.jsonl.garbled: lines of metrics.jsonl that were not records, kept on resume


def _decode(line: str) -> dict[str, Any] | None:
    """One JSONL record, or None for a blank line or one cut short by a killed process."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


class Logger:
    """Writes metrics records to JSONL and wandb and drives the progress bar.

    Args:
        run_dir: the run directory (``metrics.jsonl`` is appended to).
        total: env-step budget (progress bar total).
        wandb_mode: ``offline`` | ``online`` | ``disabled``.
        config: dict logged as the wandb config.
        resume_step: when resuming, records with ``env_steps`` beyond this are dropped (they came after the
            checkpoint of the killed run); lines that are not records are kept aside (:meth:`_truncate`).
        run_id: wandb run id (idempotent: a resumed run continues the same wandb run).
        group: wandb group (sweeps group trials by env/encoder/mode); wandb ``job_type`` is ``train``.
    """

    def __init__(self, run_dir: Path, total: int, wandb_mode: str = "offline", wandb_project: str = "dreamshift",
                 config: dict[str, Any] | None = None, progress: bool = True, resume_step: int | None = None,
                 run_id: str | None = None, group: str | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            self._truncate(resume_step)
        self.file = open(self.path, "a")
        self.wandb = None
        if wandb_mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self.wandb = wandb.init(project=wandb_project, dir=str(run_dir), mode=wandb_mode, config=config,
                                    id=run_id, resume="allow", name=Path(run_dir).name,
                                    group=group or None, job_type="train")
        self.console = Console(stderr=True)
        self.progress = None
        if progress:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("env steps"), TextColumn("{task.fields[fps]:>6.0f} FPS"),
                TextColumn("{task.fields[ups]:>5.2f} upd/s"), TextColumn("return {task.fields[ret]}"),
                TimeElapsedColumn(), console=self.console, transient=not sys.stderr.isatty())
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, fps=0.0, ups=0.0, ret="-")
        self._last = (time.time(), 0, 0)

    def _truncate(self, resume_step: int) -> None:
        """Rewrite ``metrics.jsonl`` without the records after ``resume_step``. A last line cut short by a killed
        process (no newline) is dropped; any other line that is not a JSON record is kept aside in
        ``metrics.jsonl.garbled`` (appended to), with one note on stderr, never dropped silently."""
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        if lines and not text.endswith("\n") and _decode(lines[-1]) is None:
            lines = lines[:-1]  # the write a killed process was in the middle of
        kept, garbled = [], []
        for number, line in enumerate(lines, start=1):
            rec = _decode(line)
            if rec is None:
                if line.strip():
                    garbled.append((number, line))
            elif rec.get("env_steps", 0) <= resume_step:
                kept.append(line)
        if garbled:
            aside = self.path.with_name(self.path.name + GARBLED_SUFFIX)
            old = aside.read_text(encoding="utf-8", errors="replace") if aside.is_file() else ""
            new = "".join(f"{line}\n" for _, line in garbled)
            files.atomic_write(aside, lambda f: f.write((old + new).encode()))
            numbers = ", ".join(str(n) for n, _ in garbled[:5]) + (" ..." if len(garbled) > 5 else "")
            print(f"note: {len(garbled)} line(s) of {str(self.path)!r} are not JSON records (line {numbers}); kept "
                  f"aside in {str(aside)!r}, the rest resumes", file=sys.stderr, flush=True)
        files.atomic_write(self.path, lambda f: f.write("".join(x + "\n" for x in kept).encode()))

    def log(self, kind: str, env_steps: int, agent_steps: int, metrics: dict[str, Any]) -> None:
        """Append one record and send it to wandb (keys prefixed with ``kind/`` unless already prefixed)."""
        record = {"kind": kind, "env_steps": env_steps, "agent_steps": agent_steps, "time": time.time(), **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None:
            data = {(k if "/" in k else f"{kind}/{k}"): v for k, v in metrics.items()
                    if isinstance(v, (int, float))}
            self.wandb.log(data, step=env_steps)

    def update_progress(self, env_steps: int, updates: int, last_return: float | None) -> dict[str, float]:
        """Advance the bar; returns ``{"fps": env steps/s, "updates_per_s": ...}`` since the last call."""
        now = time.time()
        t0, s0, u0 = self._last
        dt = max(now - t0, 1e-9)
        rates = {"fps": (env_steps - s0) / dt, "updates_per_s": (updates - u0) / dt}
        self._last = (now, env_steps, updates)
        if self.progress is not None:
            ret = "-" if last_return is None else f"{last_return:.1f}"
            self.progress.update(self.task, completed=env_steps, fps=rates["fps"], ups=rates["updates_per_s"],
                                 ret=ret)
        return rates

    def close(self) -> None:
        """Flush and close the JSONL file, wandb and the progress bar."""
        if self.progress is not None:
            self.progress.stop()
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()
