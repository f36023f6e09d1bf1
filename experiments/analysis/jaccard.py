"""Attention-vs-object Jaccard index (Jones et al. 2025 report 0.42 for frozen DINOv2 vs 0.24 fully fine-tuned).

Per frame: the last-block CLS attention, averaged over heads, thresholded to the patches holding the fraction
``mass`` of the attention (DINO, default 0.6; :func:`experiments.analysis.attention.keep_mass`), upsampled to the
frame (nearest), and compared with the ground-truth foreground mask from MuJoCo segmentation
(:mod:`experiments.analysis.frames`) as ``J(A, B) = |A ∩ B| / |A ∪ B|`` (Jaccard 1901). The score of an encoder
is the mean over frames. By convention two empty masks have ``J = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import files
from experiments.analysis.attention import attention_grid, cls_attention, keep_mass, upsample

# colour map anchors for attention heat maps (black -> purple -> red -> yellow -> white, "inferno"-like)
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def jaccard_index(a: np.ndarray, b: np.ndarray) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two same-shape bool masks; 1.0 when both are empty.

    Raises:
        ValueError: shapes differ.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def jaccard_per_frame(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool predicted and true masks -> ``(N,)`` float64 Jaccard indices."""
    return np.array([jaccard_index(p, t) for p, t in zip(pred, truth, strict=True)], np.float64)


@dataclass
class AttentionJaccard:
    """Attention masks of one encoder on ``N`` frames of ``H x W`` pixels.

    Attributes:
        attention: ``(N, heads, P)`` last-block CLS attention.
        heat: ``(N, H, W)`` float32 head-mean attention upsampled to the frame.
        mask: ``(N, H, W)`` bool thresholded attention (fraction ``mass`` of the attention).
        scores: ``(N,)`` Jaccard index of ``mask`` with the ground-truth foreground.
    """

    attention: torch.Tensor
    heat: np.ndarray
    mask: np.ndarray
    scores: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.scores.mean())


def attention_jaccard(encoder: Any, images: np.ndarray, truth: np.ndarray, mass: float = 0.6) -> AttentionJaccard:
    """Jaccard index of the thresholded CLS attention of ``encoder`` with the foreground masks.

    Args:
        encoder: a ViT :class:`encoders.hf.HFEncoder` with a CLS token.
        images: ``(N, H, W, 3)`` uint8 frames; truth: ``(N, H, W)`` bool foreground masks.
        mass: fraction of attention mass kept (DINO: 0.6).

    Raises:
        ConfigError: not a ViT with a CLS token; ``mass`` outside ``(0, 1]``.
    """
    attn = cls_attention(encoder, images)
    grid = attention_grid(attn)  # (N, g, g), mean over heads
    size = tuple(images.shape[1:3])
    heat = upsample(grid, size).numpy().astype(np.float32)
    mask = upsample(keep_mass(grid, mass), size).numpy()
    return AttentionJaccard(attn, heat, mask, jaccard_per_frame(mask, truth))


def colorize(heat: np.ndarray) -> np.ndarray:
    """``(H, W)`` float map -> ``(H, W, 3)`` uint8, min-max normalised through an inferno-like colour map."""
    lo, hi = float(heat.min()), float(heat.max())
    t = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    pos = t * (len(_ANCHORS) - 1)
    i = np.clip(pos.astype(int), 0, len(_ANCHORS) - 2)
    frac = (pos - i)[..., None]
    return np.rint(_ANCHORS[i] * (1 - frac) + _ANCHORS[i + 1] * frac).astype(np.uint8)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    pad = np.pad(mask, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def overlay_png(path: Path | str, image: np.ndarray, truth: np.ndarray,
                rows: list[tuple[str, np.ndarray, np.ndarray]], scale: int = 3, title: str = "") -> Path:
    """Write a PNG: one row per encoder, columns frame | ground-truth mask | attention map | thresholded mask.

    Args:
        image: ``(H, W, 3)`` uint8 frame; truth: ``(H, W)`` bool foreground mask.
        rows: ``(label, heat (H, W) float, mask (H, W) bool)`` per encoder (label printed above the row).
        scale: integer upscaling of every cell (nearest neighbour).
        title: line printed at the top.

    The thresholded-mask cell shows the frame darkened outside the kept patches, with the ground-truth outline in
    green. Written atomically.
    """
    from PIL import Image, ImageDraw, ImageFont


    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    h, w = truth.shape
    cw, ch, pad, label_h = w * scale, h * scale, 6, 16
    top = label_h + 4 if title else 0
    cols = ("frame", "ground-truth mask", "CLS attention (head mean)", "kept patches")
    width = pad + 4 * (cw + pad)
    height = top + label_h + len(rows) * (ch + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for j, name in enumerate(cols):
        draw.text((pad + j * (cw + pad), top), name, fill="black", font=font)
    gt_cell = np.repeat(truth[..., None].astype(np.uint8) * 255, 3, axis=2)
    edge = _boundary(truth)
    for r, (label, heat, mask) in enumerate(rows):
        y = top + label_h + r * (ch + label_h + pad)
        draw.text((pad, y), label, fill="black", font=font)
        kept = np.where(mask[..., None], image, (image * 0.25).astype(np.uint8))
        kept[edge] = (0, 255, 0)
        for j, cell in enumerate((image, gt_cell, colorize(heat), kept)):
            big = Image.fromarray(np.ascontiguousarray(cell)).resize((cw, ch), Image.NEAREST)
            canvas.paste(big, (pad + j * (cw + pad), y + label_h))

    def write(f: Any) -> None:
        canvas.save(f, format="PNG")

    return files.atomic_write(path, write)
