"""Last-block CLS attention of ViT encoders (Hugging Face backbones, :class:`encoders.hf.HFEncoder`).

The attention map of an image is the softmax attention of the class token (query) to the ``P`` patch tokens
(keys) in the last transformer block, ``(heads, P)``; CLS/register keys are dropped, so a row sums to at most
1. For the masks, the heads are averaged and the map is thresholded as in DINO's visualisation (Caron et al.
2021, ``visualize_attention.py``, default ``threshold=0.6``): sort the patches by attention, keep the smallest
set of patches holding the fraction ``mass`` of the map's total attention (the largest ones first). The patch
grid is upsampled to the frame with nearest-neighbour interpolation (each patch becomes a block of pixels).

Attention weights need the eager attention implementation (``sdpa`` returns none): :func:`eager_attention`
switches the backbone to ``eager`` for the call and back afterwards (the weights are unchanged, the outputs agree
to float precision).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from encoders.hf import HFEncoder
from envs.errors import ConfigError

VIT_ENCODERS = "dinov2[:small|base|large], clip[:b32|b16], dreamshift-vit, hf:<ViT model id or dir>"


def require_vit(encoder: Any, name: str) -> None:
    """Raise :class:`ConfigError` unless ``encoder`` is a Hugging Face ViT with a CLS token and a square patch
    grid (the attention analyses need one)."""
    if not isinstance(encoder, HFEncoder):
        raise ConfigError(f"attention analyses need a ViT encoder with a CLS token ({VIT_ENCODERS}); got {name!r}")
    if encoder.num_prefix_tokens < 1:
        raise ConfigError(f"encoder {name!r} has no CLS token, so it has no CLS attention; use a ViT with one "
                          f"({VIT_ENCODERS})")
    side = math.isqrt(encoder.num_tokens)
    if side * side != encoder.num_tokens:
        raise ConfigError(f"encoder {name!r} has {encoder.num_tokens} patch tokens, not a square grid")


def _transformer(encoder: Any) -> Any:
    backbone = encoder.backbone
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


@contextmanager
def eager_attention(encoder: Any) -> Iterator[None]:
    """Run ``encoder``'s transformer with ``attn_implementation="eager"`` inside the block, then restore it."""
    model = _transformer(encoder)
    old = model.config._attn_implementation
    setter = getattr(model, "set_attn_implementation", None)
    try:
        if callable(setter):
            setter("eager")
        else:
            model.config._attn_implementation = "eager"
        yield
    finally:
        if callable(setter):
            setter(old)
        else:
            model.config._attn_implementation = old


@torch.no_grad()
def cls_attention(encoder: Any, images: Tensor | np.ndarray, batch_size: int = 32) -> Tensor:
    """Last-block attention of the CLS token to the patch tokens.

    Args:
        encoder: an :class:`encoders.hf.HFEncoder` with a CLS token (checked by :func:`require_vit`).
        images: ``(N, 3, H, W)`` uint8 tensor or ``(N, H, W, 3)`` uint8 array (env frames); resized and
            normalised by the encoder's own preprocessing.

    Returns:
        ``(N, heads, P)`` float32 attention weights (softmax probabilities; each row sums to 1 minus the mass
        on CLS/register tokens), ``P = (encoder_input_size / patch_size)^2`` in row-major grid order.

    Raises:
        ConfigError: not a ViT with a CLS token, or the model returns no attention weights.
    """
    require_vit(encoder, getattr(encoder, "model_id", type(encoder).__name__))
    x = torch.as_tensor(images)
    if x.dim() == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    prefix = encoder.num_prefix_tokens
    out: list[Tensor] = []
    was_training = encoder.training
    encoder.eval()
    try:
        with eager_attention(encoder):
            for i in range(0, len(x), batch_size):
                pixels = encoder.preprocess(x[i: i + batch_size])
                result = encoder.backbone(pixel_values=pixels, output_attentions=True, **encoder._call_kwargs)
                attentions = getattr(result, "attentions", None)
                if not attentions:
                    raise ConfigError(f"encoder {encoder.model_id!r} returned no attention weights "
                                      f"(output_attentions with eager attention)")
                out.append(attentions[-1][:, :, 0, prefix:].float())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def attention_grid(attn: Tensor) -> Tensor:
    """``(N, P)`` (or ``(N, heads, P)``, averaged over heads) -> ``(N, g, g)`` with ``g = sqrt(P)``."""
    if attn.dim() == 3:
        attn = attn.mean(1)
    side = math.isqrt(attn.shape[-1])
    if side * side != attn.shape[-1]:
        raise ConfigError(f"{attn.shape[-1]} patch tokens do not form a square grid")
    return attn.reshape(attn.shape[0], side, side)


def keep_mass(attn: Tensor, mass: float = 0.6) -> Tensor:
    """DINO thresholding: per map, the patches that together hold the fraction ``mass`` of its attention.

    Args:
        attn: ``(N, ...)`` non-negative attention maps (any trailing shape, e.g. ``(N, g, g)``).
        mass: fraction in ``(0, 1]`` of each map's total attention to keep (DINO: 0.6).

    Returns:
        ``(N, ...)`` bool: the largest patches whose cumulative share reaches ``mass``. As DINO: in ascending
        order, a patch is kept when the cumulative share up to and including it is ``> 1 - mass``.

    Raises:
        ConfigError: ``mass`` outside ``(0, 1]``.
    """
    if not 0.0 < mass <= 1.0:
        raise ConfigError(f"--mass must be in (0, 1] (DINO uses 0.6), got {mass}")
    flat = attn.reshape(attn.shape[0], -1).double()
    val, idx = torch.sort(flat, dim=1)  # ascending
    val = val / val.sum(1, keepdim=True).clamp_min(1e-30)
    cum = torch.cumsum(val, dim=1)
    keep_sorted = cum > (1.0 - mass)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, idx, keep_sorted)
    return keep.reshape(attn.shape)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, g, g)`` patch-grid maps (float or bool) -> ``(N, H, W)`` by nearest-neighbour interpolation."""
    is_bool = maps.dtype == torch.bool
    up = F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0]
    return up > 0.5 if is_bool else up
