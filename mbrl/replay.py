"""Uniform sequence replay with pixels stored as uint8 (DreamerV3: uniform replay, batch ``B x T`` = 16 x 64).

Each parallel env writes to its own ring buffer of ``capacity // num_envs`` agent steps, so a sampled sequence
is always contiguous in time for one env. Sequences may cross episode boundaries; ``is_first`` marks where the
RSSM state resets (as in the reference code).

Step layout (one agent step of one env): ``image`` ``(H, W, 3)`` uint8, ``action`` ``(A,)`` float32 (taken
after seeing ``image``), ``reward`` float32 (received on arriving at ``image``), ``is_first``/``is_terminal``
bool; optionally ``features`` ``(F,)`` float16, the frozen encoder's output for ``image`` (feature cache), and
``state`` ``(D,)`` float32, the proprioceptive observation. A state-only run (``obs=state``) stores no image.

Replay context (``replay_context`` K >= 1, reference code ``replay_context``): the buffer also keeps each step's
posterior latent, ``deter`` ``(D,)`` float32 and ``stoch`` ``(S, C)`` bool (the one-hot sample, exact in one byte
per class). The actor writes its policy-time posterior with each step, :meth:`Replay.write_latents` replaces it
with the posterior of every training update that replays the step, and :meth:`Replay.sample` with ``context=K``
draws ``K`` more steps and returns the latent of the last of them as the start state. A step without a latent
(an episode's final observation, which the policy never sees, or a replay saved before latents existed) has an
all-zero ``stoch``: "no context", and a sequence starting after it starts from the zero state as without context.
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
LATENT_KEYS = ("deter", "stoch")


class Replay:
    """Per-env ring buffers with uniform sampling of length-``T`` sequences.

    Args:
        capacity: total agent steps kept over all envs (oldest dropped first).
        num_envs: number of parallel env streams.
        image_shape: ``(H, W, 3)``, or None for a run without pixels; action_dim: ``A``.
        seed: seed of the sampling RNG.
        feature_dim: ``F`` of the frozen-encoder feature cache (0: none).
        state_dim: ``D`` of the proprioceptive observation (0: none).
        latent: ``(D, S, C)``: keep each step's posterior latent (``deter`` ``(D,)``, ``stoch`` ``(S, C)``) for
            replay context; None: none.

    Raises:
        ValueError: capacity smaller than ``num_envs`` steps per env.
    """

    def __init__(self, capacity: int, num_envs: int, image_shape: tuple[int, int, int] | None, action_dim: int,
                 seed: int = 0, feature_dim: int = 0, state_dim: int = 0,
                 latent: tuple[int, int, int] | None = None) -> None:
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
        if latent is not None:
            deter, stoch, classes = latent
            self.data["deter"] = np.zeros((n, c, deter), np.float32)
            self.data["stoch"] = np.zeros((n, c, stoch, classes), bool)
        self.keys = tuple(self.data)
        self.head = np.zeros(n, np.int64)  # next write position per env
        self.count = np.zeros(n, np.int64)  # filled steps per env (<= per_env)
        self.total_added = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Agent steps currently stored."""
        return int(self.count.sum())

    @property
    def has_latents(self) -> bool:
        """Whether the buffer keeps posterior latents (replay context)."""
        return "deter" in self.data

    def add(self, env: int, step: dict[str, np.ndarray | float | bool]) -> None:
        """Append one step (layout in the module docstring) to env ``env``'s stream. A buffer with latents takes
        ``deter``/``stoch`` too; a step without them is stored with zeros ("no context")."""
        h = self.head[env]
        for key in self.keys:
            if key in LATENT_KEYS:
                value = step.get(key)
                self.data[key][env, h] = 0 if value is None else _stored(key, value)
                continue
            self.data[key][env, h] = step[key]
        self.head[env] = (h + 1) % self.per_env
        self.count[env] = min(self.count[env] + 1, self.per_env)
        self.total_added += 1

    def add_batch(self, steps: dict[str, np.ndarray], envs: np.ndarray | None = None) -> None:
        """Append one step for each env in ``envs`` (default all); arrays have a leading env dim."""
        envs = np.arange(self.num_envs) if envs is None else envs
        for i, env in enumerate(envs):
            self.add(int(env), {k: steps[k][i] for k in self.keys if k in steps})

    def can_sample(self, length: int) -> bool:
        """Whether some env holds at least ``length`` steps."""
        return bool((self.count >= length).any())

    def sample(self, batch: int, length: int, device: torch.device | str = "cpu",
               context: int = 0) -> dict[str, torch.Tensor]:
        """``batch`` sequences of ``length`` steps, uniform over all valid start positions.

        Args:
            context: ``K`` (``replay_context``): draw ``K + length`` consecutive steps and hand back only the
                last ``length``, starting from the latent stored with the step just before them (needs a buffer
                with latents). 0: the sequence starts from the zero state (``is_first`` set at its first step).

        Returns:
            dict of tensors ``image`` ``(B, T, H, W, 3)`` uint8, ``action`` ``(B, T, A)``, ``reward``/
            ``is_first``/``is_terminal`` ``(B, T)``, and ``features`` ``(B, T, F)`` float16 when the buffer
            caches encoder features. Without context the first step of each sequence has ``is_first`` set, so
            the RSSM starts from its initial state. With context also ``start_deter`` ``(B, D)`` and
            ``start_stoch`` ``(B, S, C)`` float32 (the stored latent of the step before), ``start_action``
            ``(B, A)`` (that step's action, a_{t-1} of the first step) and ``slot`` ``(B, T)`` int64 (where each
            step lives, for :meth:`write_latents`); ``is_first`` is set at the first step only where that
            latent is missing (or the step starts an episode anyway).

        Raises:
            ValueError: no env holds ``context + length`` steps yet, or ``context`` without stored latents.
        """
        if context and not self.has_latents:
            raise ValueError("replay context needs a buffer that keeps latents (Replay(..., latent=(D, S, C)))")
        total_len = length + context
        starts_per_env = np.maximum(self.count - total_len + 1, 0)
        total = starts_per_env.sum()
        if total <= 0:
            raise ValueError(f"replay holds {len(self)} steps; need {total_len} in one env to sample")
        flat = self.rng.integers(0, total, size=batch)
        env = np.searchsorted(np.cumsum(starts_per_env), flat, side="right")
        offset = flat - (np.cumsum(starts_per_env) - starts_per_env)[env]
        oldest = np.where(self.count[env] < self.per_env, 0, self.head[env])
        idx = (oldest[:, None] + offset[:, None] + np.arange(total_len)[None]) % self.per_env
        if not context:
            out = {key: torch.from_numpy(self.data[key][env[:, None], idx]) for key in self.keys
                   if key not in LATENT_KEYS}
            out["is_first"][:, 0] = True
            return {k: v.to(device) for k, v in out.items()}
        prev, idx = idx[:, context - 1], idx[:, context:]
        out = {key: torch.from_numpy(self.data[key][env[:, None], idx]) for key in self.keys
               if key not in LATENT_KEYS}
        stoch = self.data["stoch"][env, prev]
        out["start_deter"] = torch.from_numpy(self.data["deter"][env, prev])
        out["start_stoch"] = torch.from_numpy(stoch.astype(np.float32))
        out["start_action"] = torch.from_numpy(self.data["action"][env, prev])
        out["slot"] = torch.from_numpy(env[:, None] * self.per_env + idx)
        missing = torch.from_numpy(~stoch.any((-2, -1)))
        out["is_first"][:, 0] |= missing
        return {k: v.to(device) for k, v in out.items()}

    def write_latents(self, slot: np.ndarray | torch.Tensor, deter: np.ndarray | torch.Tensor,
                      stoch: np.ndarray | torch.Tensor) -> None:
        """Store posterior latents at the steps ``slot`` names (the ``slot`` of a :meth:`sample` batch).

        Args:
            slot: ``(...)`` int positions from :meth:`sample`.
            deter: ``(..., D)`` float; stoch: ``(..., S, C)`` one-hot (straight-through values are rounded).

        Raises:
            ValueError: a buffer without latents, or a slot outside it.
        """
        if not self.has_latents:
            raise ValueError("this replay keeps no latents (Replay(..., latent=(D, S, C)))")
        slot = _numpy(slot).reshape(-1)
        size = self.num_envs * self.per_env
        if slot.size and (slot.min() < 0 or slot.max() >= size):
            raise ValueError(f"replay slots must be in [0, {size}), got {slot.min()} .. {slot.max()}")
        d, s = self.data["deter"], self.data["stoch"]
        d.reshape(size, *d.shape[2:])[slot] = _numpy(deter).reshape(-1, *d.shape[2:])
        s.reshape(size, *s.shape[2:])[slot] = _stored("stoch", _numpy(stoch)).reshape(-1, *s.shape[2:])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays holding the whole buffer (only the filled part) and its pointers."""
        fill = int(self.count.max())
        out = {f"data_{k}": v[:, :fill] for k, v in self.data.items()}
        out.update(head=self.head, count=self.count, total_added=np.array(self.total_added),
                   per_env=np.array(self.per_env))
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; raises ValueError if the shapes do not match this buffer. Latents
        missing from ``state`` (a replay saved without replay context) load as zeros ("no context"); latents in
        ``state`` that this buffer does not keep are dropped."""
        if int(state["per_env"]) != self.per_env or state["head"].shape != self.head.shape:
            raise ValueError("replay checkpoint does not match the configured capacity / num_envs")
        stored = {k[5:] for k in state if k.startswith("data_")}
        if set(self.keys) - set(LATENT_KEYS) != stored - set(LATENT_KEYS):
            raise ValueError("replay checkpoint does not match the configured feature cache")
        keys = [k for k in self.keys if k in stored]  # latents: only where both have them (else zeros)
        for k in keys:
            arr = state[f"data_{k}"]
            if arr.shape[2:] != self.data[k].shape[2:]:
                raise ValueError(f"replay checkpoint {k} shape {arr.shape[2:]} != {self.data[k].shape[2:]}")
        for k in self.keys:
            if k in keys:
                arr = state[f"data_{k}"]
                self.data[k][:, : arr.shape[1]] = arr
            else:
                self.data[k][:] = 0
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
            CheckpointError: the file is missing, truncated or corrupt, holds other arrays than a replay's, or a
                replay of another layout (:meth:`load_state_dict`); the message names the file.
        """
        self.load_arrays(read_npz(path), path)

    def load_arrays(self, arrays: dict[str, np.ndarray], path: Path | str) -> None:
        """:meth:`load_state_dict` of the arrays :func:`read_npz` read from ``path``.

        Raises:
            CheckpointError: they do not fit this buffer (another capacity, number of envs, observation or
                feature layout, or damaged arrays); the message names ``path``.
        """
        try:
            self.load_state_dict(arrays)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"replay file {str(path)!r} does not fit this run's replay ({exc}); the "
                                  f"checkpoint is damaged or mixed with another run's: restore the file or "
                                  f"restart the run") from None


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _stored(key: str, value: np.ndarray | torch.Tensor) -> np.ndarray:
    """A latent as the buffer stores it: ``stoch`` as bool one-hot (straight-through samples are ``1 +- ulp``)."""
    value = _numpy(value)
    return value > 0.5 if key == "stoch" and value.dtype != bool else value


def read_npz(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of a replay ``.npz`` (read fully, the file closed).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or lacks an array of :data:`REPLAY_ARRAYS`
            (another ``.npz``); the message names it.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files} if isinstance(data, np.lib.npyio.NpzFile) else None
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CheckpointError(f"replay file {str(path)!r} is unreadable ({reason}); the checkpoint is damaged, "
                              f"restart the run or restore the file") from None
    missing = [k for k in REPLAY_ARRAYS if k not in (arrays or {})]
    if missing:
        found = ", ".join(sorted(arrays)[:5]) if arrays else "none"
        raise CheckpointError(f"replay file {str(path)!r} is not a replay buffer: no {', '.join(missing)} (it holds "
                              f"{found}); the checkpoint is damaged, restore the file or restart the run")
    return arrays


# the arrays every replay file holds (Replay.state_dict), checked by read_npz before any is used
REPLAY_ARRAYS = ("head", "count", "total_added", "per_env", "data_action", "data_reward", "data_is_first",
                 "data_is_terminal")


class MixedReplay:
    """Replay for adapting to a new domain: new steps go to a *target* buffer, while each sampled batch draws a
    ``mix`` fraction of its sequences from earlier (*source*) buffers that are never saved (Julian et al. 2020,
    "Never Stop Learning", Sec. 4: fine-tune on base and target data sampled 50/50).

    Per batch of ``B`` sequences, ``n_src = floor(mix * B)`` plus one more with probability ``frac(mix * B)``
    (stochastic rounding, so the expected source fraction is exactly ``mix`` for any ``B``) come from the sources,
    the rest from the target; the source sequences are spread as evenly as possible over the source buffers
    (each earlier condition of a continual lineage keeps an equal share, whatever its size), each drawn uniformly
    within its buffer. ``counts`` records how many sequences came from the target and from each source.

    The object has :class:`Replay`'s interface for the training loop: ``add``/``add_batch``/``save``/
    ``state_dict``/``total_added``/``rng``/``len`` act on the target buffer only (a checkpoint stores the
    target data; the sources stay in their own runs). With replay context, :meth:`write_latents` refreshes the
    latents of every replayed row, the sources' in memory only (their files are never written).

    Args:
        target: buffer receiving the new (target-domain) steps.
        sources: buffers of earlier data, never saved (e.g. the base run's replay), same layout as ``target``.
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
    def has_latents(self) -> bool:
        """Whether the buffers keep posterior latents (replay context)."""
        return self.target.has_latents

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

    def sample(self, batch: int, length: int, device: torch.device | str = "cpu",
               context: int = 0) -> dict[str, torch.Tensor]:
        """A batch of ``batch`` sequences of ``length`` steps, a ``mix`` fraction from the sources (rows in random
        order); same layout as :meth:`Replay.sample` (``image`` ``(B, T, H, W, 3)`` uint8, ...; with ``context``
        the start latents and ``slot``, which here also says which buffer a row came from: the target's slots
        first, then each source's, for :meth:`write_latents`).

        Raises:
            ValueError: a buffer that must provide sequences holds fewer than ``context + length`` steps in every
                env.
        """
        counts = self.split(batch)
        parts = []
        for buf, n, base in zip(self._buffers, counts, self._slot_bases(), strict=True):
            if n:
                part = buf.sample(n, length, context=context)
                if context:
                    part["slot"] = part["slot"] + base
                parts.append(part)
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        perm = torch.from_numpy(self.split_rng.permutation(batch))
        self.counts["target"] += counts[0]
        for i, n in enumerate(counts[1:]):
            self.counts["sources"][i] += n
        return {k: v[perm].to(device) for k, v in out.items()}

    def write_latents(self, slot: np.ndarray | torch.Tensor, deter: np.ndarray | torch.Tensor,
                      stoch: np.ndarray | torch.Tensor) -> None:
        """Store posterior latents at the ``slot`` of a :meth:`sample` batch, in whichever buffer each row came
        from (sources in memory only: their runs' files are never written); shapes as :meth:`Replay.write_latents`.
        """
        slot = _numpy(slot)
        deter, stoch = _numpy(deter), _numpy(stoch)
        bases = self._slot_bases()
        for buf, base in zip(self._buffers, bases, strict=True):
            mine = (slot >= base) & (slot < base + buf.num_envs * buf.per_env)
            if mine.any():
                buf.write_latents(slot[mine] - base, deter[mine], stoch[mine])

    @property
    def _buffers(self) -> list[Replay]:
        return [self.target, *self.sources]

    def _slot_bases(self) -> list[int]:
        sizes = [b.num_envs * b.per_env for b in self._buffers]
        return [int(x) for x in np.cumsum([0, *sizes[:-1]])]

    @property
    def source_fraction(self) -> float:
        """Fraction of all sequences sampled so far that came from the sources (0 before any sample)."""
        total = self.counts["target"] + sum(self.counts["sources"])
        return sum(self.counts["sources"]) / total if total else 0.0
