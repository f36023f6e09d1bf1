"""The results schema: one JSON record per evaluation episode, in JSON Lines files.

Every number on the leaderboard is computed from these records, and nothing else: a sweep writes one file per
trial (``RESULTS_DIR/<trial>.jsonl``, atomically, once the trial's evaluation is complete), ``dreamshift evaluate
RUN [--suite S]`` one file per condition under ``RUN/eval/results/`` (:func:`write_run`; the trial is the run
directory's name), and so do ``dreamshift adapt``'s stage report, ``adapt-eval``'s alpha sweep (one trial and
label ``...@alpha=<alpha>`` per merged agent) and ``continual``'s stages (:func:`from_conditions`), all built by
:func:`episode_records` and written by :func:`dreamshift.common.write_records`, and ``dreamshift leaderboard``
reads every ``*.jsonl`` under a directory (a run directory stands for its ``eval/results``). Paths are never
hand-edited: a record says what it measured.

Schema version 1 (``"schema": 1``); each line is one object with exactly these fields:

================== ============ ==========================================================================
field              type         meaning
================== ============ ==========================================================================
schema             int          schema version (1)
env                str          env name ``suite:task`` (e.g. ``dmc:walker_walk``)
suite              str          env suite (``dmc``, ``metaworld``, ``driving``, ``carla``)
task               str          task within the suite (``walker_walk``)
encoder            str          encoder name (``cnn``, ``efficientnet-lite0``, ``dinov2:small``, ``hf:<dir>``)
label              str          the method's name on the leaderboard: the sweep's encoder label (default: the
                                encoder name), so two variants of one encoder stay apart
encoder_mode       str          resolved fine-tuning mode (``frozen``, ``partial:4``, ``full``, ``lora:8`` ...)
size               str          model-size preset (``XS`` ... ``size200m``)
shift              str          shift kind, ``none`` for the clean env
severity           int          0 (clean) .. 5
seed               int          training seed of the agent
eval_seed          int          evaluation seed (episode and shift seeds derive from it)
episode_seed       int          seed of this episode's ``env.reset``
return             float        undiscounted episode return
success            bool | null  task success at any step of the episode; null if the env defines none
length             int          episode length in env steps
env_steps_trained  int          env steps the agent was trained for
code_version       str          ``dreamshift`` version and git commit of the code that evaluated
config_hash        str          :func:`mbrl.config.model_hash` of the run (experiment-defining settings)
trial              str          sweep trial id (the run directory name outside sweeps)
================== ============ ==========================================================================

Values: ``return`` must be finite with ``|return| <=`` :data:`MAX_ABS_RETURN` (1e9: no benchmark task comes near
it, so a larger value is a bug or a corrupt file, and NaN/Infinity would silently skew or break the statistics);
the other int fields except ``schema`` and ``severity`` must lie in ``[0, 2**63 - 1]``. Files are UTF-8. A file
with no records is an error, and so is a second record of the same episode (same ``trial``, ``env``, ``label``,
``encoder_mode``, ``seed``, ``shift``, ``severity``, ``eval_seed`` and ``episode_seed``), in one file or across
the files :func:`read_dir` reads: it would be counted twice. The records of one trial (one trained run: a
sweep trial, or a run directory) must agree on what was trained (:data:`TRIAL_FIELDS`: env, encoder, label,
size, seed, env steps trained, config hash, and the encoder mode up to a merge variant's ``+merge:<alpha>``):
records of two runs under one trial id (two encoders, a run re-trained or resumed after some conditions were
evaluated) would be averaged as one seed, so :func:`read_dir` refuses them, naming both places.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import DreamshiftError, EnvError
from envs.registry import metaworld_available, parse_env_name

SCHEMA_VERSION = 1

# field -> allowed Python types (bool is checked before int: JSON true is not a severity)
FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,), "env": (str,), "suite": (str,), "task": (str,), "encoder": (str,), "label": (str,),
    "encoder_mode": (str,), "size": (str,), "shift": (str,), "severity": (int,), "seed": (int,), "eval_seed": (int,),
    "episode_seed": (int,), "return": (float, int), "success": (bool, type(None)), "length": (int,),
    "env_steps_trained": (int,), "code_version": (str,), "config_hash": (str,), "trial": (str,),
}


MAX_ABS_RETURN = 1e9  # |return| above this is refused (see the module docstring)
MAX_INT = 2**63 - 1  # int fields (seeds, lengths, steps) must fit an int64 column
# the fields that identify one evaluation episode: a second record with the same values is a duplicate
EPISODE_KEY = ("trial", "env", "label", "encoder_mode", "seed", "shift", "severity", "eval_seed", "episode_seed")


# what one trial's records must agree on (encoder_mode up to a merge variant's "+merge:<alpha>" suffix)
TRIAL_FIELDS = ("env", "encoder", "label", "encoder_mode", "size", "seed", "env_steps_trained", "config_hash")
MERGE_TAG = "+merge:"


class ResultsError(DreamshiftError):
    """A results file or record does not follow the schema (the message names the file and line)."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """``"<package version>+g<git short sha>[.dirty]"``, or the package version outside a git checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("dreamshift")
    except PackageNotFoundError:
        ver = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ver
    return f"{ver}+g{sha}{'.dirty' if dirty else ''}" if sha else ver


def validate(record: Any, where: str) -> dict[str, Any]:
    """Check one record against the schema; returns it.

    Raises:
        ResultsError: not an object, a missing/unknown field, a wrong type or a value out of range; the message
            starts with ``where`` (``file:line``).
    """
    if not isinstance(record, dict):
        raise ResultsError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise ResultsError(f"{where}: missing field(s) {', '.join(missing)} (schema {SCHEMA_VERSION} needs "
                           f"{', '.join(FIELDS)})")
    unknown = [k for k in record if k not in FIELDS]
    if unknown:
        raise ResultsError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    for key, types in FIELDS.items():
        value = record[key]
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ResultsError(f"{where}: field {key!r} must be {names}, got {json.dumps(value)}")
    if record["schema"] != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema version {record['schema']} is not supported (this code reads "
                           f"{SCHEMA_VERSION})")
    ret = record["return"]
    if (isinstance(ret, float) and not math.isfinite(ret)) or abs(ret) > MAX_ABS_RETURN:
        bound = f"{MAX_ABS_RETURN:.0e}".replace("e+0", "e")
        raise ResultsError(f"{where}: field 'return' must be a finite number with |return| <= {bound}, got "
                           f"{_short(ret)}")
    for key, types in FIELDS.items():
        if types == (int,) and key not in ("schema", "severity") and not 0 <= record[key] <= MAX_INT:
            raise ResultsError(f"{where}: field {key!r} must be in [0, 2**63 - 1], got {_short(record[key])}")
    if not 0 <= record["severity"] <= 5:
        raise ResultsError(f"{where}: severity must be in 0..5, got {record['severity']}")
    if (record["shift"] == "none") != (record["severity"] == 0):
        raise ResultsError(f"{where}: shift 'none' goes with severity 0 and only with it, got "
                           f"{record['shift']!r} at severity {record['severity']}")
    if record["env"] != f"{record['suite']}:{record['task']}":
        raise ResultsError(f"{where}: env {record['env']!r} is not suite:task ({record['suite']}:{record['task']})")
    return record


def _short(value: Any) -> str:
    """A value as JSON, cut to 40 characters (a 400-digit number stays readable on one line)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file:line, record)`` of every record of one file, validated."""
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ResultsError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           f"results files are UTF-8 JSON Lines") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or an int literal of more than 4300 digits
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(";")[0]
            raise ResultsError(f"{where}: not valid JSON ({msg})") from None
        except RecursionError:
            raise ResultsError(f"{where}: not valid JSON (nested too deeply)") from None
        out.append((where, validate(record, where)))
    if not out:
        raise ResultsError(f"{path}: no records (an empty results file); a results file holds one JSON record per "
                           f"evaluation episode")
    return out


def _check_duplicates(located: list[tuple[str, dict[str, Any]]]) -> None:
    seen: dict[tuple[Any, ...], str] = {}
    for where, record in located:
        key = tuple(record[k] for k in EPISODE_KEY)
        if key in seen:
            cond = "clean" if record["shift"] == "none" else f"{record['shift']}@{record['severity']}"
            raise ResultsError(f"{where}: duplicate record of trial {record['trial']!r}, {cond}, episode_seed "
                               f"{record['episode_seed']} (first at {seen[key]}); each episode must be recorded "
                               f"once, or it is counted twice")
        seen[key] = where


def _trial_value(record: dict[str, Any], key: str) -> Any:
    value = record[key]
    return value.split(MERGE_TAG, 1)[0] if key == "encoder_mode" else value


def _check_trials(located: list[tuple[str, dict[str, Any]]]) -> None:
    """Every record of one ``trial`` agrees on :data:`TRIAL_FIELDS` with the trial's first record.

    Raises:
        ResultsError: the first record that disagrees, at its ``file:line``, with the first record's place.
    """
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    for where, record in located:
        seen = first.setdefault(record["trial"], (where, record))
        for key in TRIAL_FIELDS:
            a, b = _trial_value(seen[1], key), _trial_value(record, key)
            if a != b:
                what = "is shared by two encoders" if key in ("encoder", "label") else "has records that disagree"
                raise ResultsError(f"{where}: trial {record['trial']!r} {what}: {key} {json.dumps(b)} here but "
                                   f"{json.dumps(a)} at {seen[0]}; a trial's records come from one trained run, "
                                   f"else they are averaged as one seed: re-evaluate the run, or move the stale "
                                   f"results file out of the directory")


def _check_envs(located: list[tuple[str, dict[str, Any]]]) -> None:
    """Every record's ``env`` is an env ``dreamshift train`` accepts (:func:`envs.registry.parse_env_name`), so
    the leaderboard refuses what training would; a ``metaworld:`` name is not checked where the metaworld
    package is missing (a results machine need not have it).

    Raises:
        ResultsError: the first record of an unknown env, at its ``file:line``, with train's message.
    """
    seen: set[str] = set()
    for where, record in located:
        env = record["env"]
        if env in seen:
            continue
        seen.add(env)
        try:
            parse_env_name(env)
        except EnvError as exc:
            if env.split(":", 1)[0] == "metaworld" and not metaworld_available():
                continue
            raise ResultsError(f"{where}: {exc}") from None


def read(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate one JSONL results file.

    Raises:
        ResultsError: the file is missing, not UTF-8 or empty, a line is not JSON, a record breaks the schema,
            repeats an episode, disagrees with its trial's first record or names an env ``train`` refuses (names
            file:line).
    """
    located = _records(Path(path))
    _check_duplicates(located)
    _check_trials(located)
    _check_envs(located)
    return [r for _, r in located]


def read_dir(results_dir: Path | str) -> list[dict[str, Any]]:
    """All records of every ``*.jsonl`` file under ``results_dir`` (recursively, sorted by path).

    Raises:
        ResultsError: the directory does not exist or holds no results file, an episode is recorded twice (in one
            file or two), the records of one trial disagree on :data:`TRIAL_FIELDS`, an env ``train`` refuses, or
            see :func:`read`.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultsError(f"{root}: no such results directory")
    files = sorted(root.rglob("*.jsonl"))
    files = [f for f in files if f.parent.name != "wandb" and "metrics" not in f.name]
    if not files:
        raise ResultsError(f"{root}: no results files (*.jsonl) found; run `dreamshift sweep` or `dreamshift "
                           f"evaluate RUN` first")
    located = [item for f in files for item in _records(f)]
    _check_duplicates(located)
    _check_trials(located)
    _check_envs(located)
    return [r for _, r in located]


def write(path: Path | str, records: Iterable[dict[str, Any]]) -> Path:
    """Validate ``records`` and write them as JSONL atomically (temp file + rename).

    Raises:
        ResultsError: a record breaks the schema (nothing is written).
    """
    path = Path(path)
    records = [validate(r, f"{path} (record {i + 1})") for i, r in enumerate(records)]
    payload = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records).encode()
    return files.atomic_write(path, lambda f: f.write(payload))


def episode_records(run: dict[str, Any], shift: str, severity: int, episodes: Iterable[dict[str, Any]],
                    trial: str, label: str | None = None) -> list[dict[str, Any]]:
    """Schema records of the episodes of one condition ``(shift, severity)`` of one evaluated run: the one place
    where records are built (sweep trials via :func:`from_suite`, ``dreamshift evaluate [--suite]`` via
    :func:`write_run`).

    Args:
        run: the run's config and metadata: ``env``, ``encoder``, ``encoder_mode``, ``size``, ``seed``,
            ``eval_seed``, ``env_steps_trained``, ``config_hash`` (the fields :mod:`mbrl.runs.evaluate` and
            :mod:`mbrl.runs.evaluate` record).
        episodes: :func:`mbrl.runs.evaluate.run_episodes` records (``episode_seed``, ``return``, ``length``, optional
            ``success`` in [0, 1]).
        trial: the sweep trial id, or the run directory's name outside sweeps.
        label: the method's name on the leaderboard (default: the encoder name).
    """
    suite, _, task = run["env"].partition(":")
    out = []
    for ep in episodes:
        success = ep.get("success")
        out.append({
            "schema": SCHEMA_VERSION, "env": run["env"], "suite": suite, "task": task, "encoder": run["encoder"],
            "label": label or run["encoder"], "encoder_mode": run["encoder_mode"], "size": run["size"],
            "shift": shift, "severity": int(severity), "seed": int(run["seed"]), "eval_seed": int(run["eval_seed"]),
            "episode_seed": int(ep["episode_seed"]), "return": float(ep["return"]),
            "success": None if success is None else bool(success >= 0.5), "length": int(ep["length"]),
            "env_steps_trained": int(run["env_steps_trained"]), "code_version": code_version(),
            "config_hash": run["config_hash"], "trial": trial,
        })
    return out


def from_suite(summary: dict[str, Any], trial: str, label: str | None = None) -> list[dict[str, Any]]:
    """Schema records from the summary that :func:`mbrl.runs.evaluate.evaluate_suite` writes
    (``RUN_DIR/eval/suite-<name>.json``); ``label`` defaults to the encoder name."""
    return [r for ep in summary["episodes"]
            for r in episode_records(ep, ep["shift"], ep["severity"], [ep], trial, label)]


# --- a plain run's results: RUN_DIR/eval/results/<shift>-<severity>-seed<eval_seed>[-merge<alpha>].jsonl ---------
RUN_RESULTS = Path("eval") / "results"


def condition_shift(shifts: Iterable[Iterable[Any]]) -> tuple[str, int]:
    """A condition's ``(shift, severity)`` in the suite vocabulary of the records: the clean condition ``()`` (named
    ``clean`` by ``dreamshift adapt``) is ``("none", 0)``, one shift ``[[kind, severity]]`` is itself, and shifts
    applied together are one ``shift`` ``kind+kind`` at their common severity (``kind:sev+kind:sev`` at the highest
    one when the severities differ).

    Args:
        shifts: ``[[kind, severity], ...]`` (the ``shifts`` of a :func:`mbrl.runs.evaluate.evaluate_agent` record).
    """
    pairs = [(str(k), int(s)) for k, s in shifts]
    if not pairs:
        return "none", 0
    severities = {s for _, s in pairs}
    if len(severities) == 1:
        return "+".join(k for k, _ in pairs), pairs[0][1]
    return "+".join(f"{k}:{s}" for k, s in pairs), max(severities)


def from_conditions(run: dict[str, Any], conditions: Iterable[dict[str, Any]], trial: str,
                    label: str | None = None) -> list[dict[str, Any]]:
    """Schema records of an adaptation evaluation: ``conditions`` are :func:`mbrl.runs.evaluate.evaluate_agent` records
    (``shifts``, ``episodes``) of the stage report (``RUN/eval/adapt-report.json``), an alpha sweep row or a
    continual stage, ``run`` their ``run_meta`` (:func:`mbrl.runs.evaluate.run_metadata`); conditions are named by
    :func:`condition_shift`.

    Raises:
        KeyError: a condition without ``episodes`` (a report written before records were kept: evaluate again).
    """
    return [r for cond in conditions
            for r in episode_records(run, *condition_shift(cond["shifts"]), cond["episodes"], trial, label)]


def run_results_dir(run_dir: Path | str) -> Path:
    """Where ``dreamshift evaluate [--suite]`` writes a run's records: ``RUN_DIR/eval/results``."""
    return Path(run_dir) / RUN_RESULTS


def write_run(run_dir: Path | str, records: list[dict[str, Any]], tag: str = "") -> list[Path]:
    """Write an evaluation's records under :func:`run_results_dir`, one file per condition and evaluation seed
    (``<shift>-<severity>-seed<eval_seed><tag>.jsonl``, atomically); returns the paths.

    A file is keyed by what identifies its episodes, so re-evaluating a condition (alone, in ``evaluate`` for the
    clean env, or in any suite containing it) replaces its file: an episode is never recorded twice and the
    directory always reads with :func:`read_dir`. ``tag`` separates variants of the agent (``-merge0.5``).
    """
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["shift"], r["severity"], r["eval_seed"]), []).append(r)
    root = run_results_dir(run_dir)
    return [write(root / f"{_file_safe(shift)}-{severity}-seed{seed}{tag}.jsonl", recs)
            for (shift, severity, seed), recs in groups.items()]


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)


def resolve_dir(path: Path | str) -> Path:
    """The results directory that ``path`` names: a directory of ``*.jsonl`` results as is (a sweep's
    ``results/``, a run's ``eval/results``), or a run directory -> its ``eval/results``."""
    path = Path(path)
    own = run_results_dir(path)
    if own.is_dir():
        return own
    if (path / "eval").is_dir() or (path / "metrics.jsonl").is_file():
        raise ResultsError(f"{path}: a run directory without results ({own} does not exist); evaluate it first: "
                           f"`dreamshift evaluate {path} [--suite quick]`")
    return path
