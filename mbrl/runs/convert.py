"""One-off conversion of older run checkpoints (``RUN/checkpoint/agent.pt``, a ``torch.save`` pickle) into the
safe format of :mod:`mbrl.runs.checkpoint` (safetensors + ``checkpoint.json``).

Unpickling runs whatever code a pickle names, so this is the only place that opens such a file, and only when the
user asks for it with ``dreamshift convert-run RUN`` (after a one-line warning that the file is trusted). The new
files are written next to ``agent.pt`` (same replay file), read back and compared with the pickle's weights,
optimiser tensors and counters, and only then is ``agent.pt`` removed.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import files
from envs.errors import CheckpointError
from mbrl.runs import checkpoint

_KEYS = ("config", "action_dim", "agent", "optim", "counters", "replay_file", "rng")


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def convert_run(run_dir: Path | str, warn: Callable[[str], None] = _warn) -> Path | None:
    """Convert ``RUN/checkpoint/agent.pt`` into ``checkpoint.json`` + safetensors and remove ``agent.pt``;
    returns the path of ``checkpoint.json``, or None when the run is already in the safe format (nothing done).

    Args:
        warn: receives the one-line warning printed before the pickle is opened.

    Raises:
        CheckpointError: no run directory or no checkpoint, an unreadable pickle or one that is not a dreamshift
            checkpoint, a replay file holding Python objects, or a conversion that does not read back equal
            (``agent.pt`` is kept then).
        envs.files.OutputPathError: the checkpoint directory is not writable.
    """
    run_dir = Path(run_dir)
    files.check_run_dir(run_dir, "run directory")
    legacy = checkpoint.legacy_path(run_dir)
    if legacy is None or (legacy.parent / checkpoint.CHECKPOINT_FILE).exists():
        # nothing to convert (a checkpoint.json wins over a leftover agent.pt, which is then never opened);
        # no checkpoint at all, or a damaged one: say so
        checkpoint.read_doc(run_dir)
        if legacy is not None:
            warn(f"note: {str(legacy)!r} is left over next to {checkpoint.CHECKPOINT_FILE}, which is used; it was not "
                 f"opened, delete it")
        return None
    files.check_output_dir(legacy.parent, "checkpoint directory")
    warn(f"warning: convert-run unpickles {str(legacy)!r} with torch.load(weights_only=False), which runs any code "
         f"the file carries; convert only runs you trust")
    try:
        state = torch.load(legacy, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"old checkpoint {str(legacy)!r} is unreadable: {exc}") from None
    missing = [k for k in _KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{str(legacy)!r} is not a dreamshift run checkpoint (no {', '.join(missing)})")
    state = {**state, "state_dim": int(state.get("state_dim", 0)),
             "rng": {"replay": None, **state["rng"]}}
    if state["replay_file"]:
        replay = legacy.parent / state["replay_file"]
        if not replay.is_file():
            warn(f"note: the checkpoint names replay file {str(replay)!r}, which is missing; the converted run "
                 f"evaluates but cannot be resumed")
        else:
            check_npz(replay)
    path = checkpoint.write_state(run_dir, state)
    _check_same(run_dir, state, legacy)
    legacy.unlink()
    return path


def check_npz(path: Path) -> None:
    """Refuse an ``.npz`` with an object array (which only pickle can read); only the array headers are read.

    Raises:
        CheckpointError: an unreadable file or an array holding Python objects.
    """
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                with z.open(name) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    _, _, dtype = read(f)
                    if dtype.hasobject:
                        raise CheckpointError(f"replay file {str(path)!r} holds Python objects ({name}), which "
                                              f"only pickle can read; it is not converted")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"replay file {str(path)!r} is unreadable ({exc})") from None


def _check_same(run_dir: Path, old: dict[str, Any], legacy: Path) -> None:
    """The converted checkpoint reads back equal to the pickle (weights, optimiser, counters)."""
    new = checkpoint.load_state(run_dir)

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
                a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return a == b or (a != a and b != b)  # NaN == NaN here

    for key in ("agent", "optim", "counters", "replay_file", "action_dim"):
        if not same(old[key], new[key]):
            raise CheckpointError(f"the converted checkpoint of {str(run_dir)!r} differs from {str(legacy)!r} in "
                                  f"{key}; {legacy.name} is kept")
