"""Pretrained backbones as world-model encoders: preprocessing inside the module, feature choice, fine-tuning
mode and the split into cacheable backbone features and a trainable head.

Feature choices (``D`` = backbone width, ``P`` = number of patch tokens or spatial positions):

- ``cls``: the class token / pooled output, ``(N, D)``; head = identity.
- ``mean``: mean of the patch tokens, ``(N, D)``; head = identity.
- ``patch``: patch tokens ``(N, P, D)``, each projected by a learned ``Linear(D, token_dim)`` + LayerNorm + SiLU
  and flattened, ``(N, P * token_dim)``.
- ``patch_flatten``: patch tokens flattened as in Jones et al. 2025 (``256 x 384`` for DINOv2-S), ``(N, P * D)``;
  head = identity.

``features(images)`` returns the backbone part ``(N, F)`` (``F = D`` or ``P * D``): for the ``frozen`` mode it
is what the feature cache stores. ``head(features)`` maps it to the embedding ``(N, out_dim)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.base import Encoder
from encoders.finetune import FinetuneMode
from envs.errors import ConfigError

FEATURES = ("cls", "mean", "patch", "patch_flatten")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneEncoder(Encoder):
    """Base class: subclasses build the backbone and implement :meth:`backbone_tokens`.

    Args:
        mode: fine-tuning mode (already applied to the backbone by the subclass via
            :func:`encoders.finetune.apply_mode`).
        feature: one of :data:`FEATURES`.
        width: ``D``; num_tokens: ``P`` (patch tokens or spatial positions at ``input_size``).
        input_size: side the images are resized to before the backbone (e.g. 224).
        mean, std: per-channel normalisation of the backbone's pretraining.
        token_dim: projection size per token for ``patch``.

    Raises:
        ConfigError: unknown feature choice.
    """

    def __init__(self, mode: FinetuneMode, feature: str, width: int, num_tokens: int, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], token_dim: int = 32) -> None:
        super().__init__()
        if feature not in FEATURES:
            raise ConfigError(f"unknown encoder_feature {feature!r}; allowed: {', '.join(FEATURES)}")
        self.mode, self.feature, self.width, self.num_tokens = mode, feature, width, num_tokens
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.feature_dim = width if feature in ("cls", "mean") else num_tokens * width
        if feature == "patch":
            self.token_head = nn.Sequential(nn.Linear(width, token_dim), nn.LayerNorm(token_dim), nn.SiLU())
            self.out_dim = num_tokens * token_dim
        else:
            self.token_head = None
            self.out_dim = self.feature_dim
        self.adapters = nn.ModuleList()

    # --- to implement -------------------------------------------------------------------------------------
    backbone: nn.Module

    def backbone_tokens(self, pixels: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        """``(N, 3, S, S)`` normalised pixels -> ``(pooled (N, D), tokens (N, P, D))``."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------------------
    @property
    def cacheable(self) -> bool:
        """Whether :meth:`features` is a fixed function of the image (frozen mode), so it can be cached."""
        return self.mode.kind == "frozen"

    def preprocess(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` uint8 or float in ``[0, 255]`` -> ``(N, 3, S, S)`` resized (bilinear, antialiased)
        and normalised with the backbone's mean/std."""
        x = images.to(torch.float32) / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return (x - self.mean) / self.std

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``(N, F)`` float32 of ``(N, 3, H, W)`` images (no grad in frozen mode)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cacheable):
            pooled, tokens = self.backbone_tokens(self.preprocess(images))
            if self.feature == "cls":
                return pooled
            if self.feature == "mean":
                return tokens.mean(1)
            return tokens.flatten(1)

    def head(self, features: Tensor) -> Tensor:
        """``(N, F)`` backbone features -> ``(N, out_dim)`` embedding (trainable part, world-model LR)."""
        if self.token_head is None:
            return features.to(torch.float32)
        tokens = features.to(torch.float32).view(features.shape[0], self.num_tokens, self.width)
        return self.token_head(tokens).flatten(1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters that train in this mode plus adapters/LoRA (optimised with the encoder LR)."""
        return [p for p in self.backbone.parameters() if p.requires_grad] + list(self.adapters.parameters())

    def train(self, mode: bool = True) -> BackboneEncoder:
        """Like ``nn.Module.train``, but the backbone stays in eval mode when its weights are fixed."""
        super().train(mode)
        if self.mode.backbone_frozen:
            self.backbone.eval()
        return self
