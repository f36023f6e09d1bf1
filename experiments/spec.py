"""Sweep grid files (``experiments/<name>.yaml``) and the trials they expand to.

A grid is ``envs × encoders × modes × seeds``; each trial trains one agent on the clean env, then evaluates it
under every condition of a shift suite. File format (every key but ``envs`` and ``encoders`` is optional)::

    name: quick                       # default: the file name; letters, digits, '.', '_', '-' (a directory name)
    envs: [dmc:cartpole_balance]
    encoders:                         # a name, or a mapping with modes / overrides / label
      - cnn                           #   modes default to [auto] (cnn: full, pretrained: frozen)
      - {name: efficientnet-lite0, modes: [frozen, partial:1, full], overrides: {encoder_input_size: 128}}
    seeds: [0, 1]                     # or an int n >= 1: seeds 0 .. n-1
    seed_batch: 2                     # train each (env, encoder, mode)'s seeds in batches of this many, one process
    steps: 3000                       # env steps of training
    overrides: {size: XS, prefill: 1000}   # `dreamshift train` keys, applied to every trial
    evaluation: {suite: quick, episodes: 2, seed: 0, alphas: [0.5]}   # alphas: also evaluate WiSE-FT merges
    retries: 1                        # a failed trial is retried this many times, its errors recorded
    backend: {name: local, workers: 2}     # local | slurm | submitit-local
    slurm: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 720,
            array_parallelism: 16}

Every trial's configuration is validated (:func:`mbrl.config.build_config`) when the file is loaded, so a bad
key or value fails before anything runs. The file itself is held to what a grid needs (:func:`read_grid`): at most
:data:`MAX_GRID_BYTES`, no key given twice in a mapping (reported with its line), no YAML anchors or aliases
(``&name``/``*name``: nothing for a grid to share, and the way a small file expands into a huge document), and a
``description`` that is a string of at most :data:`MAX_DESCRIPTION` characters.

``seed_batch: E`` (default 1: one agent per process) trains the seeds of each (env, encoder, mode) together, E at a
time, in one process (``dreamshift train seeds=[...]``, :mod:`mbrl.runs.train_members`); each trial is still one seed
with its own results file and record, so the results schema and the leaderboard do not change. Pretrained encoders
must then be frozen (a fine-tuned backbone trains one seed per process).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import envs
from encoders.finetune import parse_mode
from encoders.registry import check_name, resolve_mode
from envs.errors import ConfigError
from mbrl.config import build_config
from mbrl.members import check_members
from shifts.suites import parse_suite

BACKENDS = ("local", "slurm", "submitit-local")
MAX_GRID_BYTES = 1 << 20  # 1 MiB: the grids that ship are ~1-2 KiB
MAX_DESCRIPTION = 2000  # characters of a grid's description
_TOP_KEYS = {"name", "description", "envs", "encoders", "modes", "seeds", "seed_batch", "steps", "overrides",
             "evaluation", "retries", "backend", "slurm"}
_ENCODER_KEYS = {"name", "modes", "overrides", "label"}
_EVAL_KEYS = {"suite", "episodes", "seed", "alphas"}
_BACKEND_KEYS = {"name", "workers", "threads"}
SLURM_KEYS = {"partition": str, "gpus_per_node": int, "cpus_per_task": int, "mem_gb": int, "timeout_min": int,
              "array_parallelism": int, "account": str, "qos": str, "constraint": str}


@dataclass
class Trial:
    """One (env, encoder, mode, seed) cell of a grid: train with ``overrides``, evaluate under ``suite``."""

    id: str
    env: str
    encoder: str
    label: str  # the method's name on the leaderboard
    mode: str
    seed: int
    overrides: dict[str, str]  # complete `dreamshift train` overrides (strings), run_dir excluded
    suite: str
    episodes: int
    eval_seed: int
    group: str  # wandb group: env/encoder/mode
    alphas: list[float] = field(default_factory=list)  # WiSE-FT merges also evaluated (pretrained, trained modes)
    # seeds as a batch (``seed_batch`` > 1): the batch's id (its run directory under ``runs/``) and its seeds
    batch: str = ""
    batch_seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sweep:
    """A parsed grid file."""

    name: str
    path: str
    trials: list[Trial]
    retries: int = 1
    backend: str = "local"
    workers: int = 1
    threads: int = 0  # torch threads per trial; 0 = cores / workers
    seed_batch: int = 1  # seeds trained together in one process
    slurm: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_sweep_name(name: str, where: str) -> str:
    """A sweep name is a directory under ``runs/sweeps/``: a plain name (letters, digits, ``.``, ``_``, ``-``; not
    starting with ``.``; no ``..``), so that it cannot point outside it.

    Raises:
        ConfigError: otherwise.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: name {name!r} must be a plain directory name (letters, digits, '.', '_', '-'; "
                          f"not starting with '.', no '..' or '/'); set `name:` in the file")
    return name


def _seeds(where: str, value: Any) -> list[int]:
    """``seeds: n`` (n >= 1: seeds 0 .. n-1) or a non-empty list of distinct ints >= 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{where}: seeds must be a number of seeds >= 1 or a list of seeds >= 0, got {value}")
        return list(range(value))
    seeds = _list(f"{where}: seeds", value, int)
    bad = [s for s in seeds if s < 0]
    if bad:
        raise ConfigError(f"{where}: seeds must be >= 0, got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds repeat a seed: {seeds}")
    return seeds


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _str_overrides(where: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: overrides must be a mapping of `dreamshift train` keys, got {value!r}")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def _list(where: str, value: Any, kind: type | tuple[type, ...]) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ConfigError(f"{where}: expected a non-empty list of {names}, got {value!r}")
    return items


class GridYAMLError(yaml.YAMLError):
    """A grid file that is valid YAML but not allowed in a grid (a duplicate key, an anchor or an alias)."""


class GridLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses what a grid file has no use for: a key given twice in one mapping (YAML
    would silently keep the last) and anchors/aliases (which let a small file expand to a huge document)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose the next node; an alias or an anchor is a :class:`GridYAMLError`."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise GridYAMLError(f"a YAML alias (*{event.anchor}) at line {event.start_mark.line + 1}: grid files "
                                f"may not use anchors or aliases; write the values out")
        if getattr(event, "anchor", None) is not None:
            raise GridYAMLError(f"a YAML anchor (&{event.anchor}) at line {event.start_mark.line + 1}: grid files "
                                f"may not use anchors or aliases; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct a mapping; a key given twice is a :class:`GridYAMLError` naming both lines."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor says so
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise GridYAMLError(f"duplicate key {key!r} at line {line} (first given at line {first}); give "
                                        f"each key once")
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_grid(path: Path) -> Any:
    """The YAML document of the grid file ``path`` (:class:`GridLoader`), refusing files over
    :data:`MAX_GRID_BYTES`.

    Raises:
        ConfigError: too large, unreadable, not UTF-8, not valid YAML, or using what :class:`GridLoader` refuses.
    """
    try:
        size = path.stat().st_size
        if size > MAX_GRID_BYTES:
            raise ConfigError(f"sweep file {str(path)!r} is {size} bytes; a grid file may be at most "
                              f"{MAX_GRID_BYTES} bytes (1 MiB)")
        return yaml.load(path.read_text(encoding="utf-8"), Loader=GridLoader)  # a SafeLoader subclass
    except UnicodeDecodeError as exc:
        raise ConfigError(f"sweep file {str(path)!r} is not UTF-8 text (byte {exc.start}); give a YAML grid "
                          f"file") from None
    except OSError as exc:
        raise ConfigError(f"sweep file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except GridYAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load(path: Path | str) -> Sweep:
    """Parse and validate a grid file; returns its trials (ids unique, configs checked).

    Raises:
        ConfigError: missing, unreadable or too large file, not UTF-8, YAML error, a duplicate key, an anchor or
            alias (:func:`read_grid`), unknown key, wrong type, no seeds, a name that is not a plain directory
            name, a description that is not a short string, an invalid trial configuration, or two trials with
            the same id.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a grid file" if path.is_dir() else "not found"
        raise ConfigError(f"sweep file {str(path)!r} {what} (the grids that ship are in experiments/*.yaml)")
    data = read_grid(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    where = str(path)
    _check_keys(where, data, _TOP_KEYS)
    description = data.get("description")
    description = "" if description is None else description  # `description:` left empty
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        got = f"{len(description)} characters" if isinstance(description, str) else f"a {type(description).__name__}"
        raise ConfigError(f"{where}: description must be a string of at most {MAX_DESCRIPTION} characters, got {got}")
    for key in ("envs", "encoders"):
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}")
    env_names = _list(f"{where}: envs", data["envs"], str)
    sweep_name = check_sweep_name(str(data.get("name", path.stem)), where)
    seeds = _seeds(where, data.get("seeds", [0]))
    seed_batch = data.get("seed_batch", 1)
    if not isinstance(seed_batch, int) or isinstance(seed_batch, bool) or not 1 <= seed_batch <= 64:
        raise ConfigError(f"{where}: seed_batch must be an int in 1..64 (seeds trained together), got {seed_batch!r}")
    batches = [seeds[i:i + seed_batch] for i in range(0, len(seeds), seed_batch)]
    common = _str_overrides(f"{where}: overrides", data.get("overrides"))
    for reserved in ("env", "encoder", "encoder_mode", "seed", "run_dir"):
        if reserved in common:
            raise ConfigError(f"{where}: overrides may not set {reserved!r}; the grid sets it per trial")
    if "steps" in data:
        common["steps"] = str(data["steps"])
    evaluation = data.get("evaluation") or {}
    _check_keys(f"{where}: evaluation", evaluation, _EVAL_KEYS)
    suite = str(evaluation.get("suite", "quick"))
    episodes = evaluation.get("episodes", 5)
    eval_seed = evaluation.get("seed", 0)
    if not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"{where}: evaluation.episodes must be an int >= 1, got {episodes!r}")
    parse_suite(suite)  # unknown suite/kind fails here
    alphas = evaluation.get("alphas", [])
    if not isinstance(alphas, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                               and 0 <= a <= 1 for a in alphas):
        raise ConfigError(f"{where}: evaluation.alphas must be a list of numbers in [0, 1], got {alphas!r}")
    default_modes = _list(f"{where}: modes", data.get("modes", ["auto"]), str)

    trials: list[Trial] = []
    for i, entry in enumerate(_list(f"{where}: encoders", data["encoders"], (str, dict))):
        entry = {"name": entry} if isinstance(entry, str) else entry
        _check_keys(f"{where}: encoders[{i}]", entry, _ENCODER_KEYS)
        if "name" not in entry:
            raise ConfigError(f"{where}: encoders[{i}] needs a name")
        modes = _list(f"{where}: encoders[{i}].modes", entry.get("modes", default_modes), str)
        extra = _str_overrides(f"{where}: encoders[{i}].overrides", entry.get("overrides"))
        label = str(entry.get("label", entry["name"]))
        for env in env_names:
            for mode in modes:
                for seed in seeds:
                    overrides = {**common, **extra, "env": env, "encoder": str(entry["name"]),
                                 "encoder_mode": mode, "seed": str(seed)}
                    try:
                        cfg = build_config(overrides)
                        envs.registry.parse_env_name(env)  # unknown env / encoder / mode fail here, as in train
                        check_name(cfg.encoder)
                        resolved = resolve_mode(cfg)
                        parse_mode(resolved)
                    except (ConfigError, ValueError) as exc:
                        raise ConfigError(f"{where}: trial {env} / {label} / {mode} / seed {seed}: {exc}") from None
                    merges = [float(a) for a in alphas] if entry["name"] != "cnn" and resolved != "frozen" else []
                    group = next(b for b in batches if seed in b) if seed_batch > 1 else []
                    if group:
                        try:
                            check_members(cfg, group)
                        except ConfigError as exc:
                            raise ConfigError(f"{where}: trial {env} / {label} / {mode}: seed_batch: {exc}") from None
                    base = f"{_slug(env)}-{_slug(label)}-{_slug(resolved)}"
                    trials.append(Trial(
                        id=f"{_slug(env)}-{_slug(label)}-{_slug(resolved)}-s{seed}", env=env,
                        encoder=str(entry["name"]), label=label, mode=resolved, seed=seed, overrides=overrides,
                        suite=suite,
                        episodes=episodes, eval_seed=int(eval_seed), group=f"{env}/{label}/{resolved}",
                        alphas=merges, batch=f"{base}-seeds-{'-'.join(map(str, group))}" if group else "",
                        batch_seeds=list(group)))
    ids = [t.id for t in trials]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise ConfigError(f"{where}: duplicate trials {', '.join(dupes)}; give encoder entries distinct labels")

    backend = data.get("backend") or {}
    _check_keys(f"{where}: backend", backend, _BACKEND_KEYS)
    name = str(backend.get("name", "local"))
    if name not in BACKENDS:
        raise ConfigError(f"{where}: backend.name {name!r}; allowed: {', '.join(BACKENDS)}")
    slurm = data.get("slurm") or {}
    _check_keys(f"{where}: slurm", slurm, set(SLURM_KEYS))
    for k, v in slurm.items():
        if not isinstance(v, SLURM_KEYS[k]) or isinstance(v, bool):
            raise ConfigError(f"{where}: slurm.{k} must be {SLURM_KEYS[k].__name__}, got {v!r}")
    retries = data.get("retries", 1)
    workers = backend.get("workers", 1)
    threads = backend.get("threads", 0)
    for key, value in (("retries", retries), ("backend.workers", workers), ("backend.threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "backend.workers" else 0):
            raise ConfigError(f"{where}: {key} must be a non-negative int (workers >= 1), got {value!r}")
    return Sweep(name=sweep_name, path=str(path), trials=trials, retries=retries,
                 backend=name, workers=workers, threads=threads, seed_batch=seed_batch, slurm=dict(slurm),
                 description=description)
