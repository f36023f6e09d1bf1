"""Uniform sequence replay with pixels stored as uint8 (DreamerV3: uniform replay, batch ``B x T`` = 16 x 64).

Each parallel env writes to its own ring buffer of ``capacity // num_envs`` agent steps, so a sampled sequence
is always contiguous in time for one env. Sequences may cross episode boundaries; ``is_first`` marks where the
RSSM state resets (as in the reference code).

Step layout (one agent step of one env): ``image`` ``(H, W, 3)`` uint8, ``action`` ``(A,)`` float32 (taken
after seeing ``image``), ``reward`` float32 (received on arriving at ``image``), ``is_first``/``is_terminal``
bool; optionally ``features`` ``(F,)`` float16, the frozen encoder's output for ``image`` (feature cache), and
``state`` ``(D,)`` float32, the proprioceptive observation. A state-only run (``obs=state``) stores no image.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from envs.errors import CheckpointError
from envs.files import atomic_write

KEYS = ("image", "action", "reward", "is_first", "is_terminal")


class Replay:
    """Per-env ring buffers with uniform sampling of length-``T`` sequences.

    Args:
        capacity: total agent steps kept over all envs (oldest dropped first).
        num_envs: number of parallel env streams.
        image_shape: ``(H, W, 3)``, or None for a run without pixels; action_dim: ``A``.
        seed: seed of the sampling RNG.
        feature_dim: ``F`` of the frozen-encoder feature cache (0: none).
        state_dim: ``D`` of the proprioceptive observation (0: none).

    Raises:
        ValueError: capacity smaller than ``num_envs`` steps per env.
    """

    def __init__(self, capacity: int, num_envs: int, image_shape: tuple[int, int, int] | None, action_dim: int,
                 seed: int = 0, feature_dim: int = 0, state_dim: int = 0) -> None:
        self.per_env = capacity // num_envs
        if self.per_env < 1:
            raise ValueError(f"replay capacity {capacity} too small for {num_envs} envs")
        self.num_envs = num_envs
        n, c = num_envs, self.per_env
        self.data = {} if image_shape is None else {"image": np.zeros((n, c, *image_shape), np.uint8)}
        self.data.update({
            "action": np.zeros((n, c, action_dim), np.float32),
            "reward": np.zeros((n, c), np.float32),
            "is_first": np.zeros((n, c), bool),
            "is_terminal": np.zeros((n, c), bool),
        })
        if state_dim:
            self.data["state"] = np.zeros((n, c, state_dim), np.float32)
        if feature_dim:
            # frozen-encoder feature cache, half precision (see encoders.backbone)
            self.data["features"] = np.zeros((n, c, feature_dim), np.float16)
        self.keys = tuple(self.data)
        self.head = np.zeros(n, np.int64)  # next write position per env
        self.count = np.zeros(n, np.int64)  # filled steps per env (<= per_env)
        self.total_added = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Agent steps currently stored."""
        return int(self.count.sum())

    def add(self, env: int, step: dict[str, np.ndarray | float | bool]) -> None:
        """Append one step (layout in the module docstring) to env ``env``'s stream."""
        h = self.head[env]
        for key in self.keys:
            self.data[key][env, h] = step[key]
        self.head[env] = (h + 1) % self.per_env
        self.count[env] = min(self.count[env] + 1, self.per_env)
        self.total_added += 1

    def add_batch(self, steps: dict[str, np.ndarray], envs: np.ndarray | None = None) -> None:
        """Append one step for each env in ``envs`` (default all); arrays have a leading env dim."""
        envs = np.arange(self.num_envs) if envs is None else envs
        for i, env in enumerate(envs):
            self.add(int(env), {k: steps[k][i] for k in self.keys})

    def can_sample(self, length: int) -> bool:
        """Whether some env holds at least ``length`` steps."""
        return bool((self.count >= length).any())

    def sample(self, batch: int, length: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``batch`` sequences of ``length`` steps, uniform over all valid start positions.

        Returns:
            dict of tensors ``image`` ``(B, T, H, W, 3)`` uint8, ``action`` ``(B, T, A)``, ``reward``/
            ``is_first``/``is_terminal`` ``(B, T)``, and ``features`` ``(B, T, F)`` float16 when the buffer
            caches encoder features. The first step of each sequence has ``is_first`` set, so
            the RSSM starts from its initial state.

        Raises:
            ValueError: no env holds ``length`` steps yet.
        """
        starts_per_env = np.maximum(self.count - length + 1, 0)
        total = starts_per_env.sum()
        if total <= 0:
            raise ValueError(f"replay holds {len(self)} steps; need {length} in one env to sample")
        flat = self.rng.integers(0, total, size=batch)
        env = np.searchsorted(np.cumsum(starts_per_env), flat, side="right")
        offset = flat - (np.cumsum(starts_per_env) - starts_per_env)[env]
        oldest = np.where(self.count[env] < self.per_env, 0, self.head[env])
        idx = (oldest[:, None] + offset[:, None] + np.arange(length)[None]) % self.per_env
        out = {key: torch.from_numpy(self.data[key][env[:, None], idx]) for key in self.keys}
        out["is_first"][:, 0] = True
        return {k: v.to(device) for k, v in out.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays holding the whole buffer (only the filled part) and its pointers."""
        fill = int(self.count.max())
        out = {f"data_{k}": v[:, :fill] for k, v in self.data.items()}
        out.update(head=self.head, count=self.count, total_added=np.array(self.total_added),
                   per_env=np.array(self.per_env))
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; raises ValueError if the shapes do not match this buffer."""
        if int(state["per_env"]) != self.per_env or state["head"].shape != self.head.shape:
            raise ValueError("replay checkpoint does not match the configured capacity / num_envs")
        if set(self.keys) != {k[5:] for k in state if k.startswith("data_")}:
            raise ValueError("replay checkpoint does not match the configured feature cache")
        for k in self.keys:
            arr = state[f"data_{k}"]
            if arr.shape[2:] != self.data[k].shape[2:]:
                raise ValueError(f"replay checkpoint {k} shape {arr.shape[2:]} != {self.data[k].shape[2:]}")
        for k in self.keys:
            arr = state[f"data_{k}"]
            self.data[k][:, : arr.shape[1]] = arr
        self.head[:] = state["head"]
        self.count[:] = state["count"]
        self.total_added = int(state["total_added"])

    def save(self, path: Path) -> None:
        """Write the buffer to ``path`` (``.npz``, uncompressed) atomically (temp file + rename). Every array is
        numeric or bool, so :func:`read_npz` reads it back with ``allow_pickle=False``."""
        arrays = self.state_dict()
        odd = [k for k, v in arrays.items() if v.dtype.hasobject]
        if odd:
            raise TypeError(f"replay arrays {odd} hold Python objects, which cannot be stored without pickle")
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def load(self, path: Path) -> None:
        """Load a buffer written by :meth:`save`.

        Raises:
            CheckpointError: the file is missing, truncated or corrupt.
            ValueError: a replay of another layout (:meth:`load_state_dict`).
        """
        self.load_state_dict(read_npz(path))


def read_npz(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of a replay ``.npz`` (read fully, the file closed).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt (the message names it).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CheckpointError(f"replay file {str(path)!r} is unreadable ({reason}); the checkpoint is damaged, "
                              f"restart the run or restore the file") from None


class MixedReplay:
    """Replay for adapting to a new domain: new steps go to a *target* buffer, while each sampled batch draws a
    ``mix`` fraction of its sequences from earlier (*source*) buffers that are only read (Julian et al. 2020,
    "Never Stop Learning", Sec. 4: fine-tune on base and target data sampled 50/50).

    Per batch of ``B`` sequences, ``n_src = floor(mix * B)`` plus one more with probability ``frac(mix * B)``
    (stochastic rounding, so the expected source fraction is exactly ``mix`` for any ``B``) come from the sources,
    the rest from the target; the source sequences are spread as evenly as possible over the source buffers
    (each earlier condition of a continual lineage keeps an equal share, whatever its size), each drawn uniformly
    within its buffer. ``counts`` records how many sequences came from the target and from each source.

    The object has :class:`Replay`'s interface for the training loop: ``add``/``add_batch``/``save``/
    ``state_dict``/``total_added``/``rng``/``len`` act on the target buffer only (a checkpoint stores the
    target data; the sources stay in their own runs).

    Args:
        target: buffer receiving the new (target-domain) steps.
        sources: read-only buffers of earlier data (e.g. the base run's replay), same layout as ``target``.
        mix: fraction of sequences from the sources, in ``[0, 1]``.
        seed: seed of the source/target split RNG.

    Raises:
        ValueError: ``mix`` outside ``[0, 1]``, ``mix > 0`` without sources, or sources whose keys/shapes differ
            from the target's.
    """

    def __init__(self, target: Replay, sources: list[Replay], mix: float, seed: int = 0) -> None:
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix={mix} must be in [0, 1]")
        if mix > 0 and not sources:
            raise ValueError(f"mix={mix} needs at least one source replay")
        for i, src in enumerate(sources):
            if src.keys != target.keys or any(src.data[k].shape[2:] != target.data[k].shape[2:] for k in src.keys):
                raise ValueError(f"source replay {i} has a different step layout from the target replay")
        self.target = target
        self.sources = list(sources)
        self.mix = float(mix)
        self.split_rng = np.random.default_rng(seed)
        self.counts = {"target": 0, "sources": [0] * len(self.sources)}

    # --- the Replay interface used by the training loop and checkpoints (target buffer) ---
    def __len__(self) -> int:
        """Agent steps in the target buffer."""
        return len(self.target)

    @property
    def keys(self) -> tuple[str, ...]:
        """Step fields of every buffer (``image``, ``action``, ..., ``features`` with a feature cache)."""
        return self.target.keys

    @property
    def total_added(self) -> int:
        """Steps ever added to the target buffer (names the checkpoint's replay file)."""
        return self.target.total_added

    @property
    def rng(self) -> np.random.Generator:
        """The target buffer's sampling RNG (stored in checkpoints)."""
        return self.target.rng

    def add(self, env: int, step: dict[str, np.ndarray | float | bool]) -> None:
        """Append a step to the target buffer (:meth:`Replay.add`)."""
        self.target.add(env, step)

    def add_batch(self, steps: dict[str, np.ndarray], envs: np.ndarray | None = None) -> None:
        """Append one step per env to the target buffer (:meth:`Replay.add_batch`)."""
        self.target.add_batch(steps, envs)

    def save(self, path: Path) -> None:
        """Save the target buffer (sources are never written)."""
        self.target.save(path)

    # --- mixing ---
    def can_sample(self, length: int) -> bool:
        """Whether every part a batch may need holds ``length`` steps in some env: the target unless
        ``mix == 1``, the sources unless ``mix == 0``."""
        ok = self.mix == 1.0 or self.target.can_sample(length)
        return ok and (self.mix == 0.0 or all(s.can_sample(length) for s in self.sources))

    def split(self, batch: int) -> list[int]:
        """Sequence counts ``[n_target, n_source_0, n_source_1, ...]`` of the next batch of ``batch``
        sequences (stochastic rounding of ``mix * batch``; source sequences spread evenly, the remainder to
        randomly chosen sources)."""
        want = self.mix * batch
        n_src = int(np.floor(want)) + int(self.split_rng.random() < want - np.floor(want))  # <= batch: mix <= 1
        per = [0] * len(self.sources)
        if self.sources:
            base, rest = divmod(n_src, len(self.sources))
            per = [base] * len(self.sources)
            for i in self.split_rng.choice(len(self.sources), size=rest, replace=False):
                per[int(i)] += 1
        return [batch - n_src, *per]

    def sample(self, batch: int, length: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """A batch of ``batch`` sequences of ``length`` steps, a ``mix`` fraction from the sources (rows in random
        order); same layout as :meth:`Replay.sample` (``image`` ``(B, T, H, W, 3)`` uint8, ...).

        Raises:
            ValueError: a buffer that must provide sequences holds fewer than ``length`` steps in every env.
        """
        counts = self.split(batch)
        parts = []
        for buf, n in zip([self.target, *self.sources], counts, strict=True):
            if n:
                parts.append(buf.sample(n, length))
        out = {k: torch.cat([p[k] for p in parts]) for k in self.keys}
        perm = torch.from_numpy(self.split_rng.permutation(batch))
        self.counts["target"] += counts[0]
        for i, n in enumerate(counts[1:]):
            self.counts["sources"][i] += n
        return {k: v[perm].to(device) for k, v in out.items()}

    @property
    def source_fraction(self) -> float:
        """Fraction of all sequences sampled so far that came from the sources (0 before any sample)."""
        total = self.counts["target"] + sum(self.counts["sources"])
        return sum(self.counts["sources"]) / total if total else 0.0
