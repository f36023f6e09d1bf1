"""Representation drift: linear CKA (:mod:`experiments.analysis.cka`, Kornblith et al. 2019) between two encoders
(pretrained vs fine-tuned, or pretrained vs random init) on the same env frames, per block.

Layers compared, in forward order:

- ViTs (:class:`encoders.hf.HFEncoder`): ``block0 ... block{L-1}``, the hidden state after each transformer
  block, all tokens (CLS/registers + patches) flattened, ``(N, T * D)``;
- EfficientNet-Lite0: ``stage0 ... stage6``, the output of the last MBConv block of each stage, ``(N, C*H*W)``
  (adapters included, they are hooks on those blocks);
- ``pooled``: the pooled backbone feature (CLS / pooler / average pool), ``(N, D)``;
- ``features``: what the world model's encoder head receives, :meth:`BackboneEncoder.features`, ``(N, F)``.

The outputs are captured with forward hooks on the block modules (registered after the fine-tuning hooks, so
they see adapted outputs), one batch at a time, stored as float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from envs.errors import ConfigError
from experiments.analysis.cka import linear_cka


def block_modules(encoder: Any) -> list[tuple[str, nn.Module]]:
    """``[(layer name, module whose output is that layer's representation), ...]`` in forward order.

    Raises:
        ConfigError: an encoder without known blocks (e.g. ``cnn``).
    """
    stages = getattr(encoder, "stages", None)
    if callable(stages):
        return [(f"stage{i}", stage[-1]) for i, stage in enumerate(stages())]
    blocks = getattr(encoder, "blocks", None)
    if blocks:
        return [(f"block{i}", block) for i, block in enumerate(blocks)]
    raise ConfigError(f"drift needs a pretrained backbone with blocks (ViT or efficientnet-lite0), got "
                      f"{type(encoder).__name__}")


@torch.no_grad()
def layer_features(encoder: Any, images: np.ndarray | Tensor, batch_size: int = 16) -> dict[str, Tensor]:
    """Representations of ``(N, H, W, 3)`` uint8 frames at every layer (names in the module docstring).

    Returns:
        ``{layer: (N, F_layer) float32}`` in forward order.
    """
    x = torch.as_tensor(images)
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    layers = block_modules(encoder)
    captured: dict[str, list[Tensor]] = {name: [] for name, _ in layers}
    captured.update(pooled=[], features=[])

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            captured[name].append(out.detach().float().flatten(1).clone())
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    encoder.eval()
    try:
        for i in range(0, len(x), batch_size):
            batch = x[i: i + batch_size]
            pooled, tokens = encoder.backbone_tokens(encoder.preprocess(batch))
            captured["pooled"].append(pooled.float())
            if encoder.feature == "cls":
                feats = pooled
            elif encoder.feature == "mean":
                feats = tokens.mean(1)
            else:
                feats = tokens.flatten(1)
            captured["features"].append(feats.float())
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items() if parts}


def cka_by_layer(a: Any, b: Any, images: np.ndarray | Tensor,
                 a_features: dict[str, Tensor] | None = None) -> dict[str, float]:
    """``{layer: linear CKA between encoders a and b}`` on the same frames (layers of :func:`layer_features`).
    ``a_features``: ``layer_features(a, images)`` when already computed (one reference, several encoders).

    Raises:
        ConfigError: the encoders have different layers, or an encoder without blocks.
    """
    fa = layer_features(a, images) if a_features is None else a_features
    fb = layer_features(b, images)
    if list(fa) != list(fb):
        raise ConfigError(f"the encoders have different layers: {list(fa)} vs {list(fb)}")
    return {name: linear_cka(fa[name], fb[name]) for name in fa}
