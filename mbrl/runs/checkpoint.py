"""Run checkpoints: agent weights, optimiser states, RNG states, step counters, config and replay, stored so that
opening a run directory never runs code (no pickle anywhere).

Layout of ``RUN_DIR/checkpoint/`` (``<tag>`` = ``<env_steps>-<8 hex digits>``, new at every save):

- ``replay-<n>.npz``: the replay buffer (``n`` = steps ever added, which counts each episode's final observation
  too), plain numeric arrays read with ``np.load(..., allow_pickle=False)`` (:meth:`mbrl.replay.Replay.save`).
- ``agent-<tag>.safetensors``: the agent's ``state_dict``, keys as in ``Agent.state_dict()`` (a plain weights
  file any safetensors reader opens).
- ``state-<tag>.safetensors``: every other tensor: the optimisers' per-parameter state (``optim/<wm|actor|
  critic>/opt/state/<param index>/<m|v|step|exp_avg|exp_avg_sq>``) and the torch RNG state (``rng/torch``,
  uint8).
- ``checkpoint.json``: ``format`` (``"dreamshift-checkpoint"``), ``version`` (1), ``config``, ``action_dim``,
  ``state_dim``, ``counters``, ``replay_file`` (or null), ``weights_file``, ``weights_strides`` (the memory
  layout of weights that are not contiguous, e.g. channels_last convolutions), ``state_file``, ``optim`` (the
  optimisers' state dicts with every tensor replaced by ``{"__tensor__": key}`` into ``state_file``: step
  counts, parameter-group hyper-parameters, ``updates``; see :mod:`mbrl.safe_state`) and ``rng``: ``torch``
  (a tensor reference), ``numpy`` (``np.random.get_state()`` as ``[name, keys, pos, has_gauss,
  cached_gaussian]``), ``python`` (``random.getstate()`` as ``[version, internal state, gauss_next]``) and
  ``replay`` (the replay sampler's ``bit_generator.state`` dict, or null).

Write order: the replay, the two safetensors files, then ``checkpoint.json``, the commit point that names the
other files; files no longer named are removed last. Every write is atomic (temp file + rename) and every file
name is new, so a run killed at any moment resumes from a consistent (weights, optimiser, replay, counters) set.

Reading: :func:`load_run` is the run loader every command uses: a :class:`LoadedRun` with the stored config,
counters, weights, the agent (weights loaded, eval mode, on a device), the run's ``config.json`` metadata
(lineage, replay sources) and, only for training on, the raw optimiser/RNG state; a missing, unreadable or
incompatible run raises one :class:`CheckpointError` naming the path and what is wrong. :func:`restore` loads a
state into the objects of a resumed training loop.

A run whose ``checkpoint/`` holds an older pickle checkpoint (``agent.pt``) and no ``checkpoint.json`` is refused
with one :class:`CheckpointError` naming the converter (``dreamshift convert-run RUN``, :mod:`mbrl.runs.convert`); the
pickle is never opened here.
"""

from __future__ import annotations

import functools
import json
import random
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.registry import resolve_mode
from envs import files
from envs.errors import CheckpointError
from mbrl import safe_state
from mbrl.agent import Agent, module_of, nonfinite_tensors
from mbrl.config import Config, from_dict, to_dict
from mbrl.optim import NonFiniteError
from mbrl.replay import Replay
from mbrl.runs import signals
from mbrl.runtime import resolve_device

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.json"
META_FILE = "config.json"  # the config as trained and what adapt/merge add (lineage, sources, ...)
FORMAT = "dreamshift-checkpoint"
VERSION = 1
# checkpoints of earlier versions: pickles, never opened outside `dreamshift convert-run`
LEGACY_FILES = ("agent.pt",)
CONVERT_COMMAND = "dreamshift convert-run"
_NAMES = {"weights_file": re.compile(r"agent-[0-9]+-[0-9a-f]+\.safetensors"),
          "state_file": re.compile(r"state-[0-9]+-[0-9a-f]+\.safetensors"),
          "replay_file": re.compile(r"replay-[0-9]+\.npz")}


def checkpoint_path(run_dir: Path | str) -> Path:
    """The file whose existence means ``run_dir`` holds a checkpoint: ``RUN_DIR/checkpoint/checkpoint.json``, or
    an older run's ``agent.pt`` when only that exists (so that callers asking whether a run has a checkpoint see
    old runs too; :func:`load_state` refuses those with the converter's name)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    path = ckpt_dir / CHECKPOINT_FILE
    if not path.exists():
        legacy = legacy_path(run_dir)
        if legacy is not None:
            return legacy
    return path


def legacy_path(run_dir: Path | str) -> Path | None:
    """``RUN_DIR/checkpoint/agent.pt`` (an older pickle checkpoint) if it exists, else None."""
    for name in LEGACY_FILES:
        path = Path(run_dir) / CHECKPOINT_DIR / name
        if path.exists():
            return path
    return None


def legacy_message(run_dir: Path | str, path: Path) -> str:
    """The one-line refusal of an older (pickle) checkpoint, naming the converter."""
    return (f"{str(path)!r} is an old-format checkpoint (a pickle, which can run arbitrary code when opened); it "
            f"was not opened. If you trust where this run came from, convert it once with "
            f"`{CONVERT_COMMAND} {run_dir}`")


def save(run_dir: Path | str, agent: Agent, replay: Replay | None, counters: dict[str, Any]) -> Path:
    """Write a checkpoint (layout and write order in the module docstring); returns the path of
    ``checkpoint.json``.

    Args:
        counters: step counters of the loop (``env_steps``, ``agent_steps``, ``updates``, episodes, ...; JSON
            values).

    A Ctrl-C during the save is held back until it is complete (:func:`mbrl.runs.signals.deferred_interrupts`), then
    raised as ``KeyboardInterrupt``.

    Raises:
        mbrl.optim.NonFiniteError: an optimiser met a non-finite loss/gradient or a weight is NaN/inf; nothing
            is written, so the previous checkpoint stays the last good one.
    """
    agent.check_finite()
    weights = agent.state_dict()
    bad = nonfinite_tensors(weights)
    if bad:
        raise NonFiniteError(f"non-finite weights in {bad[0]} (and {len(bad) - 1} more tensors); not saving a "
                             f"checkpoint, the previous one in {str(run_dir)!r} stays loadable")
    with signals.deferred_interrupts():  # Ctrl-C while saving: after the save, never half of it
        return _save(run_dir, agent, replay, counters, weights)


def _save(run_dir: Path | str, agent: Agent, replay: Replay | None, counters: dict[str, Any],
          weights: dict[str, torch.Tensor]) -> Path:
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    replay_name = None
    if replay is not None:
        replay_name = f"replay-{replay.total_added}.npz"
        replay.save(ckpt_dir / replay_name)
    state = {
        "config": to_dict(agent.cfg),
        "action_dim": agent.action_dim,
        "state_dim": agent.state_dim,
        "agent": weights,
        "optim": agent.optim_state(),
        "counters": dict(counters),
        "replay_file": replay_name,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "replay": replay.rng.bit_generator.state if replay is not None else None},
    }
    return write_state(run_dir, state)


def write_state(run_dir: Path | str, state: dict[str, Any]) -> Path:
    """Write a checkpoint state (the dict :func:`load_state` returns; its replay file must already be in
    ``RUN_DIR/checkpoint/``) as safetensors + ``checkpoint.json``, then remove the files it no longer names;
    returns the path of ``checkpoint.json``. Used by :func:`save` and by the converter of older checkpoints.

    Raises:
        TypeError: a value of the state that JSON and safetensors cannot hold.
    """
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    counters = dict(state["counters"])
    tag = f"{int(counters.get('env_steps', 0))}-{secrets.token_hex(4)}"
    weights_name, state_name = f"agent-{tag}.safetensors", f"state-{tag}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    rng = state["rng"]
    np_state = rng["numpy"]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "config": state["config"],
        "action_dim": int(state["action_dim"]),
        "state_dim": int(state.get("state_dim", 0)),
        "counters": safe_state.split(counters, "counters", tensors),
        "replay_file": state["replay_file"],
        "weights_file": weights_name,
        "weights_strides": {k: list(v.stride()) for k, v in state["agent"].items() if not v.is_contiguous()},
        "state_file": state_name,
        "optim": safe_state.split(state["optim"], "optim", tensors),
        "rng": {
            "torch": safe_state.split(rng["torch"], "rng/torch", tensors),
            "numpy": [str(np_state[0]), np.asarray(np_state[1]).tolist(), *(x.item() if isinstance(x, np.generic)
                                                                           else x for x in np_state[2:])],
            "python": [rng["python"][0], list(rng["python"][1]), rng["python"][2]],
            "replay": safe_state.split(rng["replay"], "rng/replay", tensors),
        },
    }
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"  # fails (TypeError) before anything is written
    safe_state.write_tensors(ckpt_dir / weights_name, state["agent"], metadata={"format": "dreamshift-agent"})
    safe_state.write_tensors(ckpt_dir / state_name, tensors, metadata={"format": "dreamshift-train-state"})
    path = files.atomic_write(ckpt_dir / CHECKPOINT_FILE, lambda f: f.write(text.encode()))
    keep = {weights_name, state_name, state["replay_file"]}
    for pattern in ("agent-*.safetensors", "state-*.safetensors", "replay-*.npz"):
        for old in ckpt_dir.glob(pattern):
            if old.name not in keep:
                old.unlink()
    return path


def remove_unnamed(run_dir: Path | str) -> list[Path]:
    """Remove the checkpoint files (``agent-*``, ``state-*``, ``replay-*``) that ``checkpoint.json`` does not name:
    left by a save that a killed process did not finish (written before the commit point, or not yet cleaned up
    after it). Nothing is removed without a readable ``checkpoint.json``. Call it only while no other process
    can be saving there (holding the run's lock); returns the removed files."""
    try:
        doc = read_doc(run_dir)
    except CheckpointError:
        return []
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    keep = {doc["weights_file"], doc["state_file"], doc["replay_file"]}
    removed = []
    for pattern in ("agent-*.safetensors", "state-*.safetensors", "replay-*.npz"):
        for old in sorted(ckpt_dir.glob(pattern)):
            if old.name not in keep and old.is_file() and _NAMES[_KIND[pattern]].fullmatch(old.name):
                old.unlink()
                removed.append(old)
    return removed


_KIND = {"agent-*.safetensors": "weights_file", "state-*.safetensors": "state_file", "replay-*.npz": "replay_file"}


def _check_run_dir(run_dir: Path | str) -> Path:
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise CheckpointError(f"{str(run_dir)!r} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    path = Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE
    if not path.is_file():
        legacy = legacy_path(run_dir)
        if legacy is not None:
            raise CheckpointError(legacy_message(run_dir, legacy))
        raise CheckpointError(f"no checkpoint at {str(path)!r}; train first with `dreamshift train` "
                              f"or pass a run directory that has one")
    return path


def read_doc(run_dir: Path | str) -> dict[str, Any]:
    """The parsed, checked ``checkpoint.json`` of a run (no tensor is read).

    Raises:
        CheckpointError: no run directory, no checkpoint, an older (pickle) checkpoint, or a ``checkpoint.json``
            that is unreadable or not of this format.
    """
    path = _check_run_dir(run_dir)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a dreamshift checkpoint (no \"format\": {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {doc.get('version')!r}; this dreamshift "
                              f"reads version {VERSION} (a newer dreamshift wrote it?)")
    missing = [k for k in ("config", "action_dim", "counters", "replay_file", "weights_file", "state_file", "optim",
                           "rng") if k not in doc]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: no {', '.join(missing)}")
    for key, pattern in _NAMES.items():
        name = doc[key]
        if not (name is None and key == "replay_file") and not (isinstance(name, str) and pattern.fullmatch(name)):
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: {key} {name!r} is not a file name it writes")
    if not isinstance(doc["config"], dict):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: config is not an object")
    return doc


def read_config(run_dir: Path | str) -> Config:
    """The :class:`Config` a run's checkpoint stores (only ``checkpoint.json`` is read).

    Raises:
        CheckpointError: see :func:`read_doc`, or a stored config this version cannot rebuild.
    """
    doc = read_doc(run_dir)
    try:
        return from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the config stored in the checkpoint of {str(run_dir)!r} is not valid: {exc}") from None


def load_state(run_dir: Path | str) -> dict[str, Any]:
    """Read a run's checkpoint (nothing in it can run code): ``{"config", "action_dim", "state_dim", "agent"
    (state_dict), "optim", "counters", "replay_file", "rng": {"torch", "numpy", "python", "replay"}}``, tensors
    on the CPU.

    Raises:
        CheckpointError: the run directory or its checkpoint is missing, unreadable or damaged (the message says
            which file), or it is an older pickle checkpoint (the message names ``dreamshift convert-run``).
    """
    doc = read_doc(run_dir)
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    tensors = {}
    for key in ("weights_file", "state_file"):
        path = ckpt_dir / doc[key]
        try:
            tensors[key] = safe_state.read_tensors(path)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint names {str(path)!r}, which is missing; the checkpoint is damaged, "
                                  f"restore the file or restart the run") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint file {str(path)!r} is unreadable: {exc}") from None
    extra = tensors["state_file"]
    try:
        rng = doc["rng"]
        strides = dict(doc.get("weights_strides", {}))
        name, keys, pos, has_gauss, cached = rng["numpy"]
        version, internal, gauss_next = rng["python"]
        return {
            "config": doc["config"],
            "action_dim": int(doc["action_dim"]),
            "state_dim": int(doc.get("state_dim", 0)),
            "agent": {k: safe_state.join({"__tensor__": k, **({"stride": strides[k]} if k in strides else {})},
                                         tensors["weights_file"]) for k in tensors["weights_file"]},
            "optim": safe_state.join(doc["optim"], extra),
            "counters": safe_state.join(doc["counters"], extra),
            "replay_file": doc["replay_file"],
            "rng": {"torch": safe_state.join(rng["torch"], extra),
                    "numpy": (str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)),
                    "python": (int(version), tuple(int(x) for x in internal), gauss_next),
                    "replay": safe_state.join(rng["replay"], extra)},
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint of {str(run_dir)!r} is damaged ({type(exc).__name__}: {exc})") from None


def config_of(state: dict[str, Any]) -> Config:
    """The :class:`Config` stored in a checkpoint state (:func:`load_state`)."""
    return from_dict(state["config"])


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    """A run's ``config.json`` as a dict: the config as trained plus what the command that made the run adds
    (``adapted_from``, ``target``, ``lineage``, ``replay_sources``, ... of :mod:`mbrl.runs.adapt`; ``merged_from``,
    ``alpha`` of :mod:`mbrl.runs.merge`).

    Raises:
        CheckpointError: the run directory or its ``config.json`` is missing, unreadable or not a JSON object.
    """
    path = Path(run_dir) / META_FILE
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(path)!r} is damaged: not a JSON object")
    return meta


@dataclass(eq=False)
class LoadedRun:
    """A run directory opened by :func:`load_run`: its stored config, counters, weights and (unless asked
    otherwise) its agent, ready to act.

    Attributes:
        run_dir: the run directory.
        config: the :class:`Config` stored in the checkpoint (the agent's ``cfg``, the same object).
        action_dim: ``A`` of the env's actions; state_dim: ``D`` of its proprioceptive observation (0 without).
        counters: the loop's step counters at the checkpoint (``env_steps``, ``agent_steps``, ``updates``, ...).
        replay_file: the checkpoint's replay file name in ``RUN_DIR/checkpoint/``, or None (a merged run).
        weights: the agent's ``state_dict`` as stored, CPU tensors (what merging interpolates).
        agent: the trained :class:`Agent` on the requested device in eval mode, or None (``agent=False``).
        state: the raw checkpoint state of :func:`load_state` (optimiser and RNG states, for training on from the
            run) with ``train_state=True``, else None.
    """

    run_dir: Path
    config: Config
    action_dim: int
    state_dim: int
    counters: dict[str, Any]
    replay_file: str | None
    weights: dict[str, torch.Tensor] = field(repr=False)
    agent: Agent | None = field(default=None, repr=False)
    state: dict[str, Any] | None = field(default=None, repr=False)

    @functools.cached_property
    def meta(self) -> dict[str, Any]:
        """The run's ``config.json`` (:func:`read_meta`), read on first access.

        Raises:
            CheckpointError: ``config.json`` is missing or unreadable.
        """
        return read_meta(self.run_dir)

    @property
    def adapted_from(self) -> str | None:
        """The parent run of an adapted run (:mod:`mbrl.runs.adapt`), None for a run trained from scratch."""
        return self.meta.get("adapted_from")

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """The earlier stages of an adapted run (``run``, ``target``, ``env_steps``, oldest first); empty for a
        run trained from scratch."""
        return list(self.meta.get("lineage", []))

    @property
    def replay_sources(self) -> list[str]:
        """Run directories whose checkpoint replays an adapted run mixes in (oldest first); empty for a run
        trained from scratch."""
        return list(self.meta.get("replay_sources", []))

    @property
    def encoder_mode(self) -> str:
        """The resolved encoder mode of the run (:func:`encoders.registry.resolve_mode`)."""
        return resolve_mode(self.config)

    @property
    def env_steps(self) -> int:
        """Env steps the run was trained for (its counter at the checkpoint)."""
        return int(self.counters["env_steps"])

    def build_agent(self, weights: dict[str, torch.Tensor] | None = None, device: str = "cpu") -> Agent:
        """A new :class:`Agent` of the run's architecture holding ``weights`` (default the run's own, e.g. a
        merge of them with another run's), on ``device`` (``auto`` | ``cpu`` | ``cuda``) in eval mode. Its
        ``cfg`` is :attr:`config`.

        Raises:
            CheckpointError: ``weights`` do not fit the stored config (missing, extra or mis-shaped tensors).
            mbrl.optim.NonFiniteError: a weight is NaN/inf (the run diverged).
            ConfigError: an unknown device or ``cuda`` without a GPU; an encoder the config names that cannot
                be built here (e.g. missing pretrained weights).
        """
        weights = self.weights if weights is None else weights
        bad = nonfinite_tensors(weights)
        if bad:  # a diverged run (saved before checkpoints refused NaN, or edited): no episode could run
            raise NonFiniteError(f"the weights in the checkpoint of {str(self.run_dir)!r} are not finite: "
                                 f"{module_of(bad[0])} tensor {bad[0]}"
                                 f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''} hold NaN/inf (the run "
                                 f"diverged); evaluate or continue an earlier copy of the run")
        agent = Agent(self.config, self.action_dim, self.state_dim)
        try:
            agent.load_state_dict(weights)
        except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors; torch's message spans lines
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            detail = detail if len(detail) <= 300 else detail[:297] + "..."
            raise CheckpointError(f"the weights in the checkpoint of {str(self.run_dir)!r} do not fit its stored "
                                  f"config (written by another dreamshift version, or damaged): {detail}") from None
        return agent.to(resolve_device(device)).eval()


def load_run(run_dir: Path | str, device: str = "cpu", agent: bool = True, train_state: bool = False) -> LoadedRun:
    """Open a run directory: the one way every command loads an agent (or just the config, counters and
    weights) from a run. Nothing read can run code (:func:`load_state`); torch's threads and RNGs are left
    alone (building the agent draws its initial weights from torch's global RNG before the stored ones replace
    them).

    Args:
        device: where the agent goes (``auto`` | ``cpu`` | ``cuda``, :func:`mbrl.runtime.resolve_device`).
        agent: build the trained agent (:meth:`LoadedRun.build_agent`); False leaves :attr:`LoadedRun.agent`
            None (the weights are still read).
        train_state: keep the raw checkpoint state (optimiser and RNG states) in :attr:`LoadedRun.state`, for
            training on from the run (:func:`restore`, :mod:`mbrl.runs.adapt`).

    Raises:
        CheckpointError: the one error of a missing or unusable run, naming the path and what is wrong: no run
            directory, no checkpoint, an older pickle checkpoint (naming ``dreamshift convert-run``), a missing,
            unreadable or damaged checkpoint file, a stored config this version cannot rebuild, or weights that
            do not fit it.
        ConfigError: an unknown device, or an encoder the stored config names that cannot be built here.
    """
    state = load_state(run_dir)
    try:
        cfg = config_of(state)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # unknown keys, a missing section, ...
        raise CheckpointError(f"the config stored in the checkpoint of {str(run_dir)!r} is not valid for this "
                              f"dreamshift: {exc}") from None
    run = LoadedRun(run_dir=Path(run_dir), config=cfg, action_dim=int(state["action_dim"]),
                    state_dim=int(state.get("state_dim", 0)), counters=dict(state["counters"]),
                    replay_file=state["replay_file"], weights=state["agent"],
                    state=state if train_state else None)
    if agent:
        run.agent = run.build_agent(device=device)
    return run


def check_resumable(run_dir: Path | str, state: dict[str, Any]) -> None:
    """Refuse to train on from an evaluation-only run (a zoo entry, :mod:`experiments.zoo`: weights without
    optimiser state or replay).

    Raises:
        CheckpointError: one line naming the run and what it can be used for.
    """
    if state.get("optim") is None:
        raise CheckpointError(f"{str(run_dir)!r} is an evaluation-only run (weights, no optimiser state or replay): "
                              f"it can be evaluated, analysed and merged, not resumed or adapted; train a new run "
                              f"or resume the run it was exported from")


def restore(run_dir: Path | str, state: dict[str, Any], agent: Agent, replay: Replay | None) -> dict[str, Any]:
    """Load weights, optimiser and RNG states (and the replay, if given) into existing objects.

    Returns:
        the stored counters.

    Raises:
        CheckpointError: an evaluation-only run (:func:`check_resumable`).
    """
    check_resumable(run_dir, state)
    agent.load_state_dict(state["agent"])
    agent.load_optim_state(state["optim"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if replay is not None and state["replay_file"]:
        path = Path(run_dir) / CHECKPOINT_DIR / state["replay_file"]
        if not path.is_file():
            raise CheckpointError(f"checkpoint names replay file {str(path)!r}, which is missing")
        replay.load(path)
        if state["rng"]["replay"] is not None:
            replay.rng.bit_generator.state = state["rng"]["replay"]
    return dict(state["counters"])
