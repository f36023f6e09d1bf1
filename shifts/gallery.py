"""A PNG grid of one frame under every kind of a suite (rows) at severities 0-5 (columns).

Every cell shows the first frame of the episode with env seed ``seed`` (same physics state everywhere): pixel
kinds are applied to the clean frame of one env, scene kinds get a fresh env per cell (their edits live in the
simulator's model). Cells are upscaled (nearest neighbour) by ``scale`` for viewing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

import envs
from envs import files as mio
from envs.driver import Driver
from envs.errors import ConfigError
from envs.validation import MAX_SEED
from shifts.base import SEVERITIES, ShiftWrapper, make_shift
from shifts.base import kinds as registered
from shifts.suites import for_env, parse_suite

SIZE_RANGE = (16, 1024)  # frame side in pixels
MAX_SCALE = 16  # cell upscaling factor
MAX_CELL = 1024  # side of an upscaled cell (size * scale) in pixels: the grid stays a few hundred MB at most


def check_dimensions(size: int, scale: int | None) -> None:
    """Bound the frame ``size`` and the cell ``scale`` (None or 0 = automatic) so that the grid fits in memory.

    Raises:
        ConfigError: ``size`` outside :data:`SIZE_RANGE`, ``scale`` outside ``[1, MAX_SCALE]`` or a cell of more
            than :data:`MAX_CELL` pixels.
    """
    lo, hi = SIZE_RANGE
    if not lo <= size <= hi:
        raise ConfigError(f"--size must be in [{lo}, {hi}] pixels, got {size}")
    if scale is not None and scale != 0:
        if not 1 <= scale <= MAX_SCALE:
            raise ConfigError(f"--scale must be in [1, {MAX_SCALE}] (0 = automatic), got {scale}")
        if size * scale > MAX_CELL:
            raise ConfigError(f"--size x --scale must be at most {MAX_CELL} pixels per cell, got {size} x {scale} = "
                              f"{size * scale}")


def frames(env_name: str, kinds: list[str], seed: int = 0, size: int = 64) -> dict[tuple[str, int], np.ndarray]:
    """``{(kind, severity): (size, size, 3) uint8}`` for every kind at severities 0-5, plus ``("none", 0)``: the
    first observation of the episode with reset seed ``seed`` (an :class:`envs.driver.Driver` episode of 0
    steps)."""
    def first_frame(env: Any) -> np.ndarray:
        driver = Driver(env, rng=np.random.default_rng(seed))  # takes no step: the reset frame only
        return driver.episode(seed, max_steps=0).last_obs["image"]

    out: dict[tuple[str, int], np.ndarray] = {}
    base = envs.make_env(env_name, size=size)
    try:
        clean = first_frame(base)
        out[("none", 0)] = clean
        for kind in kinds:
            for severity in SEVERITIES:
                shift = make_shift(kind, severity, seed)
                if severity == 0:
                    out[(kind, 0)] = clean
                    continue
                if shift.level == "pixel":
                    out[(kind, severity)] = first_frame(ShiftWrapper(base, [shift]))
                else:
                    env = envs.make_env(env_name, size=size)
                    try:
                        out[(kind, severity)] = first_frame(ShiftWrapper(env, [shift]))
                    finally:
                        env.close()
    finally:
        base.close()
    return out


def grid(cells: dict[tuple[str, int], np.ndarray], kinds: list[str], title: str = "", scale: int = 2) -> Any:
    """A labelled PIL image: a row per kind, a column per severity 0-5."""
    from PIL import Image, ImageDraw, ImageFont


    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    h, w, _ = next(iter(cells.values())).shape
    ch, cw = h * scale, w * scale
    # the label column fits every registered kind, so galleries of different suites have the same width
    pad, head_h = 4, 36 if title else 20
    label_w = 2 * pad + int(max([font.getlength(k) for k in registered() + kinds] + [60.0]))
    width = label_w + len(SEVERITIES) * (cw + pad) + pad
    height = head_h + len(kinds) * (ch + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for j, severity in enumerate(SEVERITIES):
        x = label_w + j * (cw + pad)
        draw.text((x + 2, head_h - 16), "0 (clean)" if severity == 0 else f"severity {severity}", fill="black",
                  font=font)
    for i, kind in enumerate(kinds):
        y = head_h + i * (ch + pad)
        draw.text((pad, y + ch // 2 - 7), kind, fill="black", font=font)
        for j, severity in enumerate(SEVERITIES):
            image = cells[(kind, severity)].repeat(scale, axis=0).repeat(scale, axis=1)
            canvas.paste(Image.fromarray(image), (label_w + j * (cw + pad), y))
    return canvas


def write_gallery(out: Path | str, env_name: str = "dmc:walker_walk", suite: str = "standard", seed: int = 0,
                  size: int = 64, scale: int | None = None) -> Path:
    """Render the gallery of ``suite``'s kinds and write it atomically as a PNG; returns ``out``.

    Raises:
        ShiftError: unknown suite/kind or unregistered kinds.
        EnvError: unknown env.
        ConfigError: ``size`` or ``scale`` out of range (:func:`check_dimensions`), ``seed`` outside
            ``[0, 2**32 - 1]``, ``out`` not a ``.png`` or not writable (:func:`envs.files.check_output_file`); all
            before anything is rendered.
    """
    check_dimensions(size, scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be in [0, {MAX_SEED}] (an env reset seed), got {seed}")
    mio.check_output_file(out, "--out")  # a directory, an unwritable place: said first
    if Path(out).suffix.lower() != ".png":
        raise ConfigError(f"--out {str(out)!r}: the gallery is written as a PNG; give a file name ending in .png")
    name, conditions = parse_suite(suite)
    conditions = for_env(name, conditions, env_name)
    kinds = list(dict.fromkeys(k for k, _ in conditions if k != "none"))
    cells = frames(env_name, kinds, seed=seed, size=size)  # a bad env name or size fails here (EnvError)
    scale = scale or max(1, 128 // size)
    image = grid(cells, kinds, title=f"{env_name}  seed {seed}  {size}px  (suite {suite})", scale=scale)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return mio.atomic_write(out, lambda f: f.write(buf.getvalue()))
