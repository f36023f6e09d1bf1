"""Procedural two-colour patterns (no downloads) for the ``texture`` and ``background`` scene shifts.

A pattern is a function of continuous coordinates ``(u, v)`` measured in *periods* (one checker cell pair,
one stripe pair, one noise lattice cell, ...), so that the same :class:`Pattern` can be evaluated on a
texture's pixel grid (static) or on an image's pixel grid shifted by a time-dependent offset (moving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERN_KINDS = ("checker", "stripes", "waves", "noise", "rings")
_NOISE_LATTICE = 16  # value-noise lattice side (the noise repeats every 16 periods)


@dataclass(frozen=True)
class Pattern:
    """One random pattern: kind, two RGB colours in ``[0, 1]``, rotation and per-kind random data.

    Draw with :meth:`draw`; the same RNG state gives the same pattern.
    """

    kind: str
    color0: np.ndarray  # (3,) float32 in [0, 1]
    color1: np.ndarray  # (3,) float32 in [0, 1]
    angle: float  # radians, rotation of the (u, v) frame
    phase: np.ndarray  # (2,) offset in periods
    lattice: np.ndarray  # (_NOISE_LATTICE, _NOISE_LATTICE) float32 in [0, 1], value-noise lattice

    @classmethod
    def draw(cls, rng: np.random.Generator, kinds: tuple[str, ...] = PATTERN_KINDS) -> Pattern:
        """Draw a pattern; always consumes the same amount of randomness (independent of severity)."""
        kind = kinds[int(rng.integers(len(kinds)))]
        color0, color1 = rng.uniform(0.0, 1.0, (2, 3)).astype(np.float32)
        # keep the two colours clearly apart (luminance or hue) so every pattern is visible
        if np.abs(color0 - color1).max() < 0.5:
            color1 = (1.0 - color0).astype(np.float32)
        return cls(kind, color0, color1, float(rng.uniform(0, np.pi)), rng.uniform(0, 1, 2),
                   rng.uniform(0, 1, (_NOISE_LATTICE, _NOISE_LATTICE)).astype(np.float32))

    def mix(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Mixing weight ``t`` in ``[0, 1]`` (same shape as ``u``) at coordinates ``(u, v)`` in periods."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = c * u - s * v + self.phase[0], s * u + c * v + self.phase[1]
        if self.kind == "checker":
            return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        if self.kind == "stripes":
            return (np.floor(2 * u) % 2).astype(np.float32)
        if self.kind == "waves":
            return (0.5 + 0.5 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * (v + 0.3 * np.sin(np.pi * u)))).astype(
                np.float32)
        if self.kind == "rings":
            return (0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(u - self.phase[0], v - self.phase[1]))).astype(
                np.float32)
        # noise: bilinear value noise on a periodic lattice, contrast-stretched to [0, 1]
        n = _NOISE_LATTICE
        u0, v0 = np.floor(u), np.floor(v)
        fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)  # smoothstep
        i0, j0 = u0.astype(np.int64) % n, v0.astype(np.int64) % n
        i1, j1 = (i0 + 1) % n, (j0 + 1) % n
        lat = self.lattice
        t = (lat[i0, j0] * (1 - fu) * (1 - fv) + lat[i1, j0] * fu * (1 - fv) + lat[i0, j1] * (1 - fu) * fv
             + lat[i1, j1] * fu * fv)
        return np.clip((t - 0.5) * 2.0 + 0.5, 0.0, 1.0)

    def render(self, height: int, width: int, periods: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Evaluate on a pixel grid.

        Args:
            height, width: output size in pixels.
            periods: pattern periods across the larger side.
            offset: ``(du, dv)`` shift in periods (for moving patterns).

        Returns:
            ``(height, width, 3) float32`` RGB in ``[0, 1]``.
        """
        scale = periods / max(height, width)
        v = (np.arange(height, dtype=np.float32) * scale + offset[1])[:, None]
        u = (np.arange(width, dtype=np.float32) * scale + offset[0])[None, :]
        u, v = np.broadcast_to(u, (height, width)), np.broadcast_to(v, (height, width))
        t = self.mix(u, v)[..., None]
        return self.color0 + t * (self.color1 - self.color0)

    def render_uint8(self, height: int, width: int, periods: float, max_side: int = 256) -> np.ndarray:
        """Like :meth:`render` but ``(height, width, 3) uint8``, evaluated on a grid of at most ``max_side``
        pixels per side and upsampled (nearest) -- for large textures (an 800 px skybox face costs ~5 ms
        instead of ~100 ms; the texture is seen at a much lower resolution anyway)."""
        factor = max(1, -(-max(height, width) // max_side))
        small = self.render(-(-height // factor), -(-width // factor), periods)
        small = np.rint(255.0 * small).astype(np.uint8)
        if factor == 1:
            return small
        return small.repeat(factor, axis=0).repeat(factor, axis=1)[:height, :width]
