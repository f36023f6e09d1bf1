"""Pixel-level shifts: ImageNet-C corruptions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", ICLR 2019) of the rendered ``(H, W, 3) uint8`` frame.

Severity tables. Observations are 64 x 64, so the parameters are those of **Tiny-ImageNet-C** (64 x 64 images),
``ImageNet-C/create_c/make_tinyimagenet_c.py`` in github.com/hendrycks/robustness; the 224-px ImageNet-C values
(``imagenet_c/corruptions.py``) are given for comparison. Spatial parameters (blur radii, sigmas) are in pixels of
a 64-px frame and scale with ``min(H, W) / 64`` for other render sizes.

============== ==================================== ============================== ================================
kind           parameter                             severity 1 .. 5 (used here)    ImageNet-C 224 px
============== ==================================== ============================== ================================
gaussian_noise std of N(0, s) added to x / 255        .04 .08 .12 .15 .18            .08 .12 .18 .26 .38
shot_noise     photons c: Poisson(c x / 255) / c      250 100 50 30 15               60 25 12 5 3
impulse_noise  fraction of salt-and-pepper values     .01 .02 .05 .08 .14            .03 .06 .09 .17 .27
motion_blur    (radius, sigma) of ImageMagick's       (10,1) (10,1.5) (10,2)         (10,3) (15,5) (15,8)
               one-sided motion blur, angle           (10,2.5) (12,3)                (15,12) (20,15)
               U(-45, 45) deg
defocus_blur   (disk radius, anti-alias sigma)        (.5,.6) (1,.1) (1.5,.1)        (3,.1) (4,.5) (6,.5)
                                                      (2.5,.01) (3,.1)               (8,.5) (10,.5)
fog            (amount, plasma wibble decay)          (.4,3) (.7,3) (1,2.5)          (1.5,2) (2,2) (2.5,1.7)
                                                      (1.5,2) (2,1.75)               (2.5,1.5) (3,1.4)
brightness     added to HSV value                     .1 .2 .3 .4 .5                 same
contrast       factor towards the per-channel mean    .4 .3 .2 .1 .05                same
jpeg           JPEG quality (PIL, 4:2:0)              65 58 50 40 25                 25 18 15 10 7
pixelate       BOX down-scale factor, BOX back up     .9 .8 .7 .6 .5                 .6 .5 .4 .3 .25
saturate       (factor, offset) on HSV saturation     (.3,0) (.1,0) (2,0)            (.3,0) (.1,0) (2,0)
                                                      (5,.1) (30,.2)                 (5,.1) (20,.2)
============== ==================================== ============================== ================================

Implementation notes (each op is numpy, written for speed at 64 x 64 -- a per-frame torch/kornia call costs more
than the whole budget; the kornia timings below were measured once and are not part of a benchmark, while the
cost of every shift on an env step is measured by ``benchmarks/shift_cost.py``; wall time per 64-px frame on the
loaded 2-core development machine: kornia's ``motion_blur`` ~2.9 ms, ``filter2d`` (9 x 9) ~1.3 ms,
``RandomGaussianNoise`` ~0.8 ms, ``adjust_saturation`` ~0.5 ms, vs a ~5 ms (~2.9 ms CPU) walker_walk env step;
these numpy versions take 35-210 us CPU, ``jpeg`` (PIL) 200-330 us):

- Results are rounded to the nearest integer (ImageNet-C truncates with ``np.uint8``) and clipped to 0-255.
- Noise (gaussian/shot/impulse) is drawn fresh for every frame from the episode's RNG, per pixel and channel,
  by inverse-CDF lookup: a table ``T[x, u]`` of the corrupted value of input value ``x`` at the uniform quantile
  ``u`` (2**14 levels, midpoints). Exact for the rounded output except that quantiles are resolved to 2**-14
  (tails beyond ~3.8 sigma are cut for Gaussian noise; impulse rates are exact to 6e-5).
- ``motion_blur`` reproduces ImageMagick's ``MotionBlurImage`` kernel (weights ``exp(-i^2 / 2 sigma^2)``,
  ``i = 0 .. 2 ceil(radius)``, at offsets ``round(i (cos a, sin a))``, edge pixels repeated); taps below 1e-4 of
  the largest are dropped. The angle is drawn once per episode (ImageNet-C: once per image).
- ``defocus_blur`` uses ImageNet-C's anti-aliased disk kernel (3 x 3 Gaussian blur of the aliased disk, borders
  reflected as OpenCV's ``filter2D``).
- ``fog`` is ImageNet-C's diamond-square plasma fractal, drawn once per episode from the episode's RNG (a static
  fog bank for the episode), on a power-of-two map cropped to the frame.
- ``brightness``/``saturate`` edit HSV value/saturation in closed form (hue and the other coordinate fixed,
  exactly skimage's ``rgb2hsv``/``hsv2rgb`` round trip; grey pixels have hue 0, so ``saturate`` 4-5 tints them red
  as in ImageNet-C).
- ``pixelate`` reproduces PIL's ``resize(BOX)`` down and up (within 1 grey level of PIL).
- ``jpeg`` encodes and decodes with PIL (Pillow).

``saturate`` is the one non-monotone ImageNet-C family (1-2 desaturate, 3-5 oversaturate). On DMC frames, whose
colours are already saturated, the mean pixel change is 16 / 20 / 20 / 20 / 20 grey levels (walker_walk, seed 0):
it grows 1 < 3 < 5, but 4 and 5 clip at saturation 1 and look alike. Mean absolute change per severity on that
frame, for orientation: gaussian_noise 8-34, shot_noise 6-25, impulse_noise 1.5-18, defocus_blur 2-6.5,
motion_blur 2.4-7, fog 20-57, brightness 19-91, contrast 10-16, jpeg 5.5-7.6, pixelate 1.3-3.8.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any, ClassVar

import numpy as np

from shifts.base import Shift, ShiftError, register

_BITS = 14  # resolution of the uniform quantile of per-pixel noise
_LEVELS = 1 << _BITS


def _check(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ShiftError(f"pixel shifts take (H, W, 3) uint8 images, got {desc}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round a float array to uint8 (clipped to 0-255)."""
    np.add(x, 0.5, out=x)
    np.clip(x, 0.0, 255.0, out=x)
    return x.astype(np.uint8)


def _scale(image: np.ndarray) -> float:
    """Spatial scale of the frame relative to the 64-px frames of the severity tables."""
    return min(image.shape[0], image.shape[1]) / 64.0


class PixelShift(Shift):
    """A function of the rendered frame. Subclasses set ``kind``, ``table`` (the parameter of severities 1-5) and
    implement ``_apply``; ``_episode`` draws per-episode parameters from the episode RNG (``self.rng``), per-frame
    noise is drawn from ``self.rng`` in ``_apply``.

    Before the first ``on_reset`` the shift uses the RNG of episode seed ``None`` (so ``apply`` works on a frame
    without a wrapper and is still deterministic).
    """

    level: ClassVar[str] = "pixel"
    table: ClassVar[tuple[Any, ...]] = ()
    random: ClassVar[bool] = False  # draws random numbers (per frame or per episode)

    def __init__(self, severity: int, seed: int = 0) -> None:
        super().__init__(severity, seed)
        self.param = self.table[self.severity - 1] if self.severity else None
        if self.severity:
            self.on_reset(None, self.episode_rng(None))

    def on_reset(self, env: Any, rng: np.random.Generator) -> None:
        self.rng = rng
        self._episode(rng)

    def _episode(self, rng: np.random.Generator) -> None:
        """Draw per-episode parameters (default: none)."""

    def apply(self, image: np.ndarray, step: int = 0) -> np.ndarray:
        if self.severity == 0:
            return image
        _check(image)
        return self._apply(image)

    def _apply(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------- per-pixel noise (inverse-CDF tables)

def _uniform_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform integers in ``[0, 2**_BITS)`` (uint16) from the raw bit stream of ``rng``."""
    raw = rng.bit_generator.random_raw((n + 3) // 4).astype("<u8", copy=False)  # same codes on any byte order
    codes = raw.view("<u2")[:n]
    return codes >> np.uint16(16 - _BITS)


@functools.lru_cache(maxsize=32)
def _noise_table(kind: str, param: float) -> np.ndarray:
    """Flattened ``(256, 2**_BITS)`` uint8 table: corrupted value of input ``x`` at uniform quantile ``u``."""
    from scipy import special  # a dependency of dm_control

    u = (np.arange(_LEVELS) + 0.5) / _LEVELS
    x = np.arange(256, dtype=np.float64)
    if kind == "gaussian_noise":
        out = x[:, None] + np.rint(255.0 * param * special.ndtri(u))[None, :]
    elif kind == "shot_noise":
        lam = x * param / 255.0
        k = np.arange(int(param + 12 * math.sqrt(param) + 40), dtype=np.float64)
        cdf = np.cumsum(np.exp(special.xlogy(k[None, :], lam[:, None]) - lam[:, None] - special.gammaln(k + 1)),
                        axis=1)
        counts = np.stack([np.searchsorted(row, u) for row in cdf])
        out = np.rint(255.0 * counts / param)
    elif kind == "impulse_noise":
        out = np.repeat(x[:, None], _LEVELS, axis=1)
        out[:, u < param / 2] = 0.0
        out[:, u > 1.0 - param / 2] = 255.0
    else:  # pragma: no cover
        raise ValueError(kind)
    return np.clip(out, 0, 255).astype(np.uint8).ravel()


class _TableNoise(PixelShift):
    random = True

    def _apply(self, image: np.ndarray) -> np.ndarray:
        table = _noise_table(self.kind, float(self.param))
        idx = np.left_shift(image.reshape(-1), _BITS, dtype=np.uint32)
        idx |= _uniform_codes(self.rng, idx.size)
        return table.take(idx).reshape(image.shape)


@register
class GaussianNoise(_TableNoise):
    """``clip(x + N(0, s) * 255)``, fresh noise per pixel, channel and frame."""

    kind = "gaussian_noise"
    table = (0.04, 0.08, 0.12, 0.15, 0.18)


@register
class ShotNoise(_TableNoise):
    """Poisson photon noise: ``Poisson(c x / 255) * 255 / c``."""

    kind = "shot_noise"
    table = (250, 100, 50, 30, 15)


@register
class ImpulseNoise(_TableNoise):
    """Salt and pepper: each value becomes 0 or 255 with probability ``p / 2`` each."""

    kind = "impulse_noise"
    table = (0.01, 0.02, 0.05, 0.08, 0.14)


# ---------------------------------------------------------------- linear filters (taps on a padded frame)

Taps = tuple[tuple[float, tuple[tuple[int, int], ...]], ...]  # (weight, ((dy, dx), ...)) groups


def _group_taps(kernel: dict[tuple[int, int], float]) -> Taps:
    """Drop taps below 1e-4 of the largest, renormalise, group offsets of equal weight."""
    top = max(kernel.values())
    kept = {o: w for o, w in kernel.items() if w >= 1e-4 * top}
    total = sum(kept.values())
    groups: dict[float, list[tuple[int, int]]] = {}
    for off, w in sorted(kept.items()):
        groups.setdefault(round(w / total, 9), []).append(off)
    return tuple((w, tuple(offs)) for w, offs in groups.items())


def _pad(image: np.ndarray, p: int, reflect: bool) -> np.ndarray:
    """Pad ``(H, W, C)`` by ``p`` on each side: reflect-101 (OpenCV's default) or edge repeat."""
    h, w, c = image.shape
    out = np.empty((h + 2 * p, w + 2 * p, c), image.dtype)
    out[p:p + h, p:p + w] = image
    if p == 0:
        return out
    if reflect:
        out[:p, p:p + w] = image[p:0:-1]
        out[p + h:, p:p + w] = image[h - 1 - p:h - 1][::-1]
        out[:, :p] = out[:, p + 1:2 * p + 1][:, ::-1]
        out[:, p + w:] = out[:, w - 1:p + w - 1][:, ::-1]
    else:
        out[:p, p:p + w] = image[:1]
        out[p + h:, p:p + w] = image[-1:]
        out[:, :p] = out[:, p:p + 1]
        out[:, p + w:] = out[:, p + w - 1:p + w]
    return out


def _filter(image: np.ndarray, taps: Taps, reflect: bool) -> np.ndarray:
    """``out[y, x] = sum_k w_k image[y + dy_k, x + dx_k]`` with padded borders, rounded to uint8."""
    h, w, _ = image.shape
    p = max(max(abs(dy), abs(dx)) for _, offs in taps for dy, dx in offs)
    if reflect:
        p = min(p, h - 1, w - 1)
    padded = _pad(image.astype(np.float32), p, reflect)
    acc = None
    for weight, offsets in taps:
        part = None
        for dy, dx in offsets:
            dy, dx = max(-p, min(p, dy)), max(-p, min(p, dx))
            view = padded[p + dy:p + dy + h, p + dx:p + dx + w]
            if part is None:
                part = view.copy()
            else:
                part += view
        part *= np.float32(weight)
        if acc is None:
            acc = part
        else:
            acc += part
    np.add(acc, 0.5, out=acc)  # a convex combination of 0-255 values: no clipping needed
    return acc.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _motion_taps(radius: float, sigma: float, angle: float) -> Taps:
    """ImageMagick ``MotionBlurImage`` kernel: one-sided Gaussian along ``angle`` (degrees)."""
    width = 2 * math.ceil(radius) + 1
    a = math.radians(angle)
    kernel: dict[tuple[int, int], float] = {}
    for i in range(width):
        off = (math.ceil(i * math.sin(a) - 0.5), math.ceil(i * math.cos(a) - 0.5))  # (dy, dx)
        kernel[off] = kernel.get(off, 0.0) + math.exp(-(i * i) / (2.0 * sigma * sigma))
    return _group_taps(kernel)


@register
class MotionBlur(PixelShift):
    """ImageMagick-style one-sided motion blur in a direction drawn per episode from U(-45, 45) degrees."""

    kind = "motion_blur"
    table = ((10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0))
    random = True

    def _episode(self, rng: np.random.Generator) -> None:
        self.angle = float(rng.uniform(-45.0, 45.0))

    def _apply(self, image: np.ndarray) -> np.ndarray:
        s = _scale(image)
        radius, sigma = self.param
        return _filter(image, _motion_taps(radius * s, sigma * s, self.angle), reflect=False)


def _gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(ksize, sigma)``."""
    x = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


@functools.lru_cache(maxsize=64)
def _defocus_taps(radius: float, alias_blur: float) -> Taps:
    """ImageNet-C's ``disk``: the aliased disk of ``radius`` on a 17 x 17 grid (larger when needed), blurred by a
    3 x 3 (5 x 5 for radius > 8) Gaussian of sigma ``alias_blur`` with reflected borders."""
    half = 8 if radius <= 8 else math.ceil(radius)
    grid = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = _gaussian_1d(3 if radius <= 8 else 5, alias_blur)
    r = len(g) // 2
    padded = np.pad(disk, r, mode="reflect")
    blurred = sum(g[i] * padded[i:i + disk.shape[0], r:-r] for i in range(len(g)))
    padded = np.pad(blurred, ((0, 0), (r, r)), mode="reflect")
    blurred = sum(g[i] * padded[:, i:i + disk.shape[1]] for i in range(len(g)))
    kernel = {(int(dy), int(dx)): float(blurred[dy + half, dx + half])
              for dy in grid for dx in grid if blurred[dy + half, dx + half] > 0}
    return _group_taps(kernel)


@register
class DefocusBlur(PixelShift):
    """Convolution with an anti-aliased disk (out-of-focus lens)."""

    kind = "defocus_blur"
    table = ((0.5, 0.6), (1.0, 0.1), (1.5, 0.1), (2.5, 0.01), (3.0, 0.1))

    def _apply(self, image: np.ndarray) -> np.ndarray:
        s = _scale(image)
        radius, alias_blur = self.param
        return _filter(image, _defocus_taps(radius * s, alias_blur * s), reflect=True)


# ---------------------------------------------------------------- fog

def plasma_fractal(rng: np.random.Generator, mapsize: int = 64, wibbledecay: float = 3.0) -> np.ndarray:
    """ImageNet-C's diamond-square height map (``mapsize`` a power of two), ``(mapsize, mapsize)`` in [0, 1]."""
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
    maparray = np.zeros((mapsize, mapsize))
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        # squares: the centre of each square of corner points gets their mean plus noise
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        # diamonds: the edge midpoints get the mean of their four neighbours plus noise
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


@register
class Fog(PixelShift):
    """``(x + a * plasma) * max(x) / (max(x) + a)``: a static fog bank per episode (diamond-square plasma)."""

    kind = "fog"
    table = ((0.4, 3.0), (0.7, 3.0), (1.0, 2.5), (1.5, 2.0), (2.0, 1.75))
    random = True

    def _episode(self, rng: np.random.Generator) -> None:
        self._plasma_seed = int(rng.integers(2**63))  # the plasma is drawn at the first frame (size known)
        self._fog: np.ndarray | None = None

    def _layer(self, h: int, w: int) -> np.ndarray:
        if self._fog is None or self._fog.shape[:2] != (h, w):
            rng = np.random.default_rng(self._plasma_seed)
            amount, decay = self.param
            mapsize = 1 << max(1, math.ceil(math.log2(max(h, w))))
            plasma = plasma_fractal(rng, mapsize, decay)[:h, :w]
            self._fog = (255.0 * amount * plasma[:, :, None]).astype(np.float32)
        return self._fog

    def _apply(self, image: np.ndarray) -> np.ndarray:
        h, w, _ = image.shape
        amount = self.param[0]
        peak = float(image.max()) / 255.0
        x = image.astype(np.float32)
        x += self._layer(h, w)
        x *= np.float32(peak / (peak + amount))
        return _to_uint8(x)


# ---------------------------------------------------------------- photometric

def _channel_max_min(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


@register
class Brightness(PixelShift):
    """HSV value ``v -> min(v + c, 1)`` at fixed hue and saturation (rgb scales by ``v' / v``)."""

    kind = "brightness"
    table = (0.1, 0.2, 0.3, 0.4, 0.5)

    @functools.cached_property
    def _lut(self) -> np.ndarray:
        """``out = lut[v * 256 + x]``: channel value ``x`` of a pixel of HSV value ``v`` (both 0-255)."""
        v = np.arange(256, dtype=np.float64)[:, None]
        x = np.arange(256, dtype=np.float64)[None, :]
        new = np.minimum(v + 255.0 * self.param, 255.0)
        # rgb scales by v'/v at fixed hue and saturation; black (v = 0, so x = 0) has no hue: it becomes grey v'
        out = np.where(v > 0, x * new / np.maximum(v, 1.0), new)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).ravel()

    def _apply(self, image: np.ndarray) -> np.ndarray:
        v, _ = _channel_max_min(image)
        idx = np.left_shift(v, 8, dtype=np.uint16)[..., None] | image
        return self._lut.take(idx)


@register
class Contrast(PixelShift):
    """``(x - mean) * c + mean`` with the per-channel mean of the frame."""

    kind = "contrast"
    table = (0.4, 0.3, 0.2, 0.1, 0.05)

    def _apply(self, image: np.ndarray) -> np.ndarray:
        c = np.float32(self.param)
        x = image.astype(np.float32)
        flat = x.reshape(-1, 3)
        mean = np.ones(len(flat), np.float32) @ flat / np.float32(len(flat))  # exact sums: a fast reduction
        x *= c
        x += (1 - c) * mean + np.float32(0.5)  # a convex combination of 0-255 values: no clipping needed
        return x.astype(np.uint8)


@register
class Saturate(PixelShift):
    """HSV saturation ``s -> clip(s * a + b, 0, 1)`` at fixed hue and value."""

    kind = "saturate"
    table = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (30.0, 0.2))

    def _apply(self, image: np.ndarray) -> np.ndarray:
        a, b = self.param
        hi, lo = _channel_max_min(image)
        v = hi.astype(np.float32)
        chroma = v - lo
        # s = chroma / v; each channel is v - (v - x) * s' / s with s' / s = min(a + b / s, 1 / s) (s' <= 1)
        q = np.divide(v, chroma, out=np.zeros_like(v), where=chroma > 0)  # 1 / s, 0 for grey (then x = v)
        ratio = np.minimum(a + b * q, q)[..., None]
        v = v[..., None]
        out = v - image
        out *= ratio
        np.subtract(v, out, out=out)
        if b > 0:  # grey pixels (s = 0) have hue 0 in skimage's rgb2hsv: they become (v, v (1 - b), v (1 - b))
            grey = chroma == 0
            out[grey, 1:] = v[grey] * (1.0 - min(b, 1.0))
        return _to_uint8(out)


# ---------------------------------------------------------------- resampling and compression

@functools.lru_cache(maxsize=32)
def _box_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's ``resize(..., BOX)`` along one axis (``precompute_coeffs``): input indices and weights
    ``(size_out, K)`` (padded with weight-0 taps), each output pixel the mean of the input pixels whose centres
    fall in its footprint."""
    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)
    ss = 1.0 / max(scale, 1.0)
    rows = []
    for o in range(size_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        rows.append([i for i in range(lo, hi) if -0.5 < (i - center + 0.5) * ss <= 0.5] or [min(lo, size_in - 1)])
    k = max(len(r) for r in rows)
    idx = np.array([r + [r[0]] * (k - len(r)) for r in rows])
    weights = np.array([[1.0 / len(r)] * len(r) + [0.0] * (k - len(r)) for r in rows], np.float32)
    return idx, weights


def _box_resize(image: np.ndarray, axis: int, size_out: int) -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 along ``axis`` with PIL's BOX filter (rounded to uint8 as PIL's passes)."""
    idx, weights = _box_taps(image.shape[axis], size_out)
    if idx.shape[1] == 1:  # one source pixel each (up-scaling): a gather
        return image.take(idx[:, 0], axis=axis)
    shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    acc = image.take(idx[:, 0], axis=axis).astype(np.float32)
    acc *= weights[:, 0].reshape(shape)
    for k in range(1, idx.shape[1]):
        acc += image.take(idx[:, k], axis=axis) * weights[:, k].reshape(shape)
    return _to_uint8(acc)


@register
class Pixelate(PixelShift):
    """Down-scale by the factor with a box filter and back up (PIL ``BOX``, as ImageNet-C)."""

    kind = "pixelate"
    table = (0.9, 0.8, 0.7, 0.6, 0.5)

    def _apply(self, image: np.ndarray) -> np.ndarray:
        h, w, _ = image.shape
        sh, sw = max(1, int(h * self.param)), max(1, int(w * self.param))
        # PIL resamples horizontally, then vertically
        small = _box_resize(_box_resize(image, 1, sw), 0, sh)
        return _box_resize(_box_resize(small, 1, w), 0, h)


@register
class Jpeg(PixelShift):
    """JPEG compression at the given quality (PIL/Pillow, default 4:2:0 chroma subsampling)."""

    kind = "jpeg"
    table = (65, 58, 50, 40, 25)

    def _apply(self, image: np.ndarray) -> np.ndarray:
        try:
            from PIL import Image
        except ModuleNotFoundError:  # pragma: no cover
            raise ShiftError("the jpeg shift needs Pillow: pip install pillow") from None
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(self.param))
        # decode with the C decoder directly (what Image.open does, without its Python header parsing)
        h, w, _ = image.shape
        return np.array(Image.frombytes("RGB", (w, h), buf.getvalue(), "jpeg", "RGB", ""))  # writable
