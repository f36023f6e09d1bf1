"""Uniform sequence replay with pixels stored as uint8 (DreamerV3: uniform replay, batch ``B x T`` = 16 x 64).

Each parallel env writes to its own ring buffer of ``capacity // num_envs`` agent steps, so a sampled sequence
is always contiguous in time for one env. Sequences may cross episode boundaries; ``is_first`` marks where the
RSSM state resets (as in the reference code).

Step layout (one agent step of one env): ``image`` ``(H, W, 3)`` uint8, ``action`` ``(A,)`` float32 (taken
after seeing ``image``), ``reward`` float32 (received on arriving at ``image``), ``is_first``/``is_terminal``
bool; optionally ``features`` ``(F,)`` float16, the frozen encoder's output for ``image`` (feature cache).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mbrl.io import atomic_write

KEYS = ("image", "action", "reward", "is_first", "is_terminal")


class Replay:
    """Per-env ring buffers with uniform sampling of length-``T`` sequences.

    Args:
        capacity: total agent steps kept over all envs (oldest dropped first).
        num_envs: number of parallel env streams.
        image_shape: ``(H, W, 3)``; action_dim: ``A``.
        seed: seed of the sampling RNG.

    Raises:
        ValueError: capacity smaller than ``num_envs`` steps per env.
    """

    def __init__(self, capacity: int, num_envs: int, image_shape: tuple[int, int, int], action_dim: int,
                 seed: int = 0, feature_dim: int = 0) -> None:
        self.per_env = capacity // num_envs
        if self.per_env < 1:
            raise ValueError(f"replay capacity {capacity} too small for {num_envs} envs")
        self.num_envs = num_envs
        n, c = num_envs, self.per_env
        self.data = {
            "image": np.zeros((n, c, *image_shape), np.uint8),
            "action": np.zeros((n, c, action_dim), np.float32),
            "reward": np.zeros((n, c), np.float32),
            "is_first": np.zeros((n, c), bool),
            "is_terminal": np.zeros((n, c), bool),
        }
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
        """Write the buffer to ``path`` (``.npz``, uncompressed) atomically (temp file + rename)."""
        atomic_write(path, lambda f: np.savez(f, **self.state_dict()))

    def load(self, path: Path) -> None:
        """Load a buffer written by :meth:`save`."""
        with np.load(path) as data:
            self.load_state_dict({k: data[k] for k in data.files})
