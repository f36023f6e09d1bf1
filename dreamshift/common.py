"""Pieces shared by the ``dreamshift`` sub-commands (the modules of :mod:`dreamshift`): the argument parser class
whose usage errors are one ``error:`` line under the sub-command's own usage, the ``--device`` and ``--threads``
checks, the ``RUN key=value`` splitting of the adaptation commands, and the one-line message printed when a
command is interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from envs.errors import ConfigError
from experiments import results
from mbrl.config import parse_overrides
from mbrl.runs.pretrain import CHECKPOINT as PRETRAIN_CHECKPOINT
from mbrl.runs.train import first_interrupt

DEVICES = ("auto", "cpu", "cuda")
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors print its own usage, then one line ``error: <prog>: <message>``,
    and exit with status 2. Sub-parsers made by ``add_subparsers().add_parser`` are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)sub-parser that parsed ``args``: follows each level's chosen sub-command."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[chosen]


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that arguments no parser knows are reported by the sub-command that
    was given them (its usage and one ``error:`` line, exit 2), not by the top-level parser."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def positive_int(text: str) -> int:
    """argparse ``type=`` of ``--threads``: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def add_threads(p: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` (torch CPU threads of this command; default: the run's ``threads`` setting)."""
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch CPU threads (default: the run's threads setting, else torch's default)")


def check_device(name: str, what: str = "--device") -> str:
    """Check a ``--device`` value up front: one of :data:`DEVICES`, and ``cuda`` only with a GPU.

    Raises:
        ConfigError: otherwise.
    """
    if name not in DEVICES:
        raise ConfigError(f"{what} {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{what} cuda but no CUDA device is available; use --device cpu or auto")
    return name


def threads_kwargs(fn: Callable[..., Any], threads: int | None) -> dict[str, Any]:
    """``{"threads": threads}`` when ``threads`` is given and ``fn`` takes it; when ``fn`` does not, torch's
    thread count is set here instead (best effort: ``fn`` may still set the run's own). ``{}`` without
    ``threads``."""
    if threads is None:
        return {}
    try:
        takes = "threads" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return {"threads": threads}
    import torch

    torch.set_num_threads(threads)
    return {}


def say(line: str) -> None:
    """Print a progress line on stderr."""
    print(line, file=sys.stderr, flush=True)


def split_args(tokens: list[str], what: str) -> tuple[str | None, dict[str, str]]:
    """Positional tokens -> (RUN or None, {key: value} overrides); raises ConfigError for a second RUN."""
    runs = [t for t in tokens if "=" not in t]
    if len(runs) > 1:
        raise ConfigError(f"{what} takes one RUN directory, got {', '.join(runs)}")
    return (runs[0] if runs else None), parse_overrides([t for t in tokens if "=" in t])


def threads_setting(fn: Callable[..., Any], threads: int | None, overrides: dict[str, str]) -> dict[str, Any]:
    """``--threads N``: the adapted runs' ``threads`` setting (their training, unless ``threads=`` is also given
    as a setting) and ``threads=`` of ``fn`` (its evaluations) when ``fn`` takes it."""
    if threads is None:
        return {}
    overrides.setdefault("threads", str(threads))
    return {"threads": threads} if "threads" in inspect.signature(fn).parameters else {}


def command_line(argv: list[str] | None) -> list[str]:
    """The arguments after the program name (``sys.argv[1:]`` when ``argv`` is None)."""
    return list(sys.argv[1:] if argv is None else argv)


def _quote(parts: list[str]) -> str:
    return "dreamshift " + " ".join(shlex.quote(p) for p in parts)


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``exc``: ``128 + signal`` for a training loop stopped by
    ``SIGTERM``/``SIGUSR2`` (:mod:`mbrl.runs.signals`), else :data:`INTERRUPTED_STATUS` (Ctrl-C)."""
    signum = getattr(first_interrupt(exc), "signum", None)
    return 128 + int(signum) if signum else INTERRUPTED_STATUS


def interrupted_message(args: argparse.Namespace, argv: list[str], exc: KeyboardInterrupt) -> str:
    """One line for a command stopped by Ctrl-C: what was saved and how to continue.

    ``exc`` is a :class:`mbrl.runs.train.TrainingInterrupted` when the training loop was running (it saved a
    checkpoint); other commands write their results atomically, so nothing half-written is left. A stop asked
    for by ``SIGTERM``/``SIGUSR2`` (``exc.signum``) says so: ``interrupted (SIGTERM): ...``.
    """
    exc = first_interrupt(exc)  # a second Ctrl-C after the first one's save: the first says what was saved
    return _with_signal(_interrupted_message(args, argv, exc), getattr(exc, "signum", None))


def _with_signal(line: str, signum: int | None) -> str:
    if not signum:
        return line
    import signal

    return line.replace("interrupted", f"interrupted ({signal.Signals(signum).name})", 1)


def _interrupted_message(args: argparse.Namespace, argv: list[str], exc: KeyboardInterrupt) -> str:
    command = getattr(args, "command", None)
    run_dir, ckpt, steps = getattr(exc, "run_dir", None), getattr(exc, "checkpoint", None), getattr(exc, "env_steps",
                                                                                                    0)
    saved = f"checkpoint saved at {steps} env steps in {str(ckpt)!r}" if ckpt is not None else None
    if saved is not None and not getattr(exc, "saved", True):  # stopped before the loop: the earlier checkpoint
        saved = f"the checkpoint at {steps} env steps in {str(ckpt)!r} is kept as it was"
    resumes = "train" if command == "train" or (command == "demo" and run_dir is not None) else command
    if resumes in ("train", "adapt"):  # both resume a run directory from its checkpoint
        if run_dir is None:
            return _before_start(args, resumes)
        if saved is None:
            if not Path(run_dir).exists():
                return "interrupted before the first env step; nothing was written: run the same command again"
            return f"interrupted before the first env step; nothing to resume in {str(run_dir)!r}"
        return f"interrupted: {saved}; continue with: dreamshift {resumes} --resume {shlex.quote(str(run_dir))}"
    if command == "continual":
        out = Path(getattr(args, "out", "") or ".")
        if not (out.is_dir() and any(out.iterdir())):  # stopped during the base run's evaluation (stage 0)
            fresh = [a for a in argv if a != "--resume"]
            return f"interrupted before the first stage; nothing was written to resume; start again with: " \
                   f"{_quote(fresh)}"
        again = argv if "--resume" in argv else [*argv, "--resume"]
        done = f"{saved}; " if saved else "finished stages are kept; "
        return f"interrupted: {done}continue with: {_quote(again)}"
    if command == "sweep":
        out = getattr(args, "out", None)
        where = f" in {out!r}" if out else ""
        return (f"interrupted: finished trials are kept{where} and running ones keep their last checkpoint; "
                f"continue with: {_quote(argv)}")
    if command == "pretrain":
        out = Path(getattr(args, "out", "") or ".")
        if (out / PRETRAIN_CHECKPOINT).is_file():
            again = argv if "--resume" in argv else [*argv, "--resume"]
            where = str(out / PRETRAIN_CHECKPOINT)
            return (f"interrupted: the last checkpoint (every --save-every steps) is in {where!r}; "
                    f"continue with: {_quote(again)}")
        return "interrupted before the first checkpoint; nothing to resume"
    return "interrupted; results are written atomically, so no half-written file was left"


def _before_start(args: argparse.Namespace, command: str) -> str:
    """The line of a ``train``/``adapt`` stopped before it named its run: true about the checkpoint of the run it
    was given (``--resume RUN``), which it had not started to change."""
    what = "training" if command == "train" else "adaptation"
    resume = getattr(args, "resume", None)
    run = resume if isinstance(resume, str) else None
    if run is None:
        return f"interrupted before {what} started; no checkpoint was written"
    ckpt = Path(run) / "checkpoint" / "checkpoint.json"
    if not ckpt.is_file():
        return f"interrupted before {what} started; nothing was written in {run!r}"
    return (f"interrupted before {what} started; the checkpoint in {str(ckpt)!r} is kept as it was; continue "
            f"with: dreamshift {command} --resume {shlex.quote(run)}")


def write_records(run_dir: str | Path, batches: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Write an evaluation's results-schema records under ``RUN_DIR/eval/results/`` and print where, with the
    command that reads them: the one writer of ``dreamshift evaluate`` [``--suite``], ``adapt``'s stage report,
    ``adapt-eval``'s alpha sweep and ``continual``'s stages.

    Args:
        batches: ``(tag, records)``: :func:`experiments.results.write_run` writes each batch as one file per
            condition and evaluation seed, ``tag`` (``""``, ``-merge0.5``, ``-alpha0.5``) separating variants of
            the agent.
    """
    for tag, records in batches:
        results.write_run(run_dir, records, tag)
    print(f"records: {results.run_results_dir(run_dir)} (leaderboard: dreamshift leaderboard {run_dir})")


def run_trial(run_dir: str | Path) -> str:
    """The ``trial`` of a run's records outside sweeps: the run directory's name."""
    return Path(run_dir).resolve().name


def write_report_records(run_dir: str | Path, report: dict[str, Any]) -> None:
    """Records of a stage report (``RUN/eval/adapt-report.json`` of :func:`mbrl.runs.adapt.stage_report`, the clean
    condition written ``none``/0) under ``RUN/eval/results/``, trial the run directory's name: the same files as
    ``dreamshift evaluate RUN [--suite]`` writes for the same conditions, which they replace. A report written
    before reports kept their episodes gets none (a note on stderr)."""
    if "run_meta" not in report or any("episodes" not in r for r in report["results"]):
        say(f"records: none for {run_dir} (its report predates results records; evaluate it again)")
        return
    records = results.from_conditions(report["run_meta"], report["results"], run_trial(run_dir))
    write_records(run_dir, [("", records)])


def write_sweep_records(adapted_run: str | Path, sweep: dict[str, Any]) -> None:
    """Records of an alpha sweep (``ADAPTED/eval/alpha-sweep.json`` of :func:`mbrl.runs.adapt.alpha_sweep`) under
    ``ADAPTED/eval/results/``: each merged agent is its own trial and label, ``<run>@alpha=<alpha>`` and
    ``<encoder>@alpha=<alpha>`` (one leaderboard row per merge), with ``encoder_mode`` ``<mode>+merge:<alpha>``
    and files tagged ``-alpha<alpha>``."""
    meta, trial = sweep["run_meta"], run_trial(adapted_run)
    batches = []
    for row in sweep["sweep"]:
        name = row["alpha_name"]
        run = {**meta, "encoder_mode": f"{meta['encoder_mode']}+merge:{name}"}
        records = results.from_conditions(run, row["results"], f"{trial}@alpha={name}",
                                          f"{meta['encoder']}@alpha={name}")
        batches.append((f"-alpha{_file_tag(name)}", records))
    write_records(adapted_run, batches)


def _file_tag(text: str) -> str:
    """``text`` made safe for a results file name (characters other than letters, digits, ``_.-`` become ``_``)."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)
