"""The DreamerV3 convolutional encoder (``cnn``), trained from scratch with the agent."""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor, nn

from encoders.base import Encoder
from encoders.layers import ChannelNorm, channels_last, init_linear_


class ConvEncoder(Encoder):
    """Stride-2 convolutions (kernel 4) with channel norm and SiLU down to a 4x4 map, flattened
    (Hafner et al. 2023, App. B).

    Args:
        image_size: input side in pixels, ``4 * 2**k`` (64 -> 4 stages).
        depth, mults: stage ``i`` has ``depth * mults[i]`` channels (the last multiplier repeats if there are
            more stages than multipliers).
        norm: ``rms`` | ``layer`` | ``none``.

    Forward: ``(N, 3, H, W)`` uint8 or float in ``[0, 255]`` -> ``(N, 16 * depth * mults[-1])`` float. Pixels
    are scaled to ``[-0.5, 0.5]``.

    Raises:
        ValueError: ``image_size`` not of the form ``4 * 2**k``.
    """

    def __init__(self, image_size: int = 64, depth: int = 32, mults: tuple[int, ...] = (1, 2, 4, 8),
                 norm: str = "rms") -> None:
        super().__init__()
        stages = int(round(math.log2(image_size / 4)))
        if stages < 1 or 4 * 2**stages != image_size:
            raise ValueError(f"cnn encoder needs image_size = 4 * 2**k (e.g. 64), got {image_size}")
        mults = tuple(mults[:stages]) + (mults[-1],) * max(0, stages - len(mults))
        layers: list[nn.Module] = []
        inp = 3
        for m in mults:
            out = depth * m
            conv = nn.Conv2d(inp, out, 4, 2, 1, bias=norm == "none")
            init_linear_(conv.weight, inp * 16)
            layers += [conv, ChannelNorm(norm, out), nn.SiLU()]
            inp = out
        self.convs = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.out_dim = 16 * inp

    def forward(self, images: Tensor) -> Tensor:
        # channels_last makes the per-pixel channel norm a contiguous op (~2x faster on CPU).
        x = channels_last(images.to(torch.float32) / 255.0 - 0.5)
        return einops.rearrange(self.convs(x), "n c h w -> n (c h w)")


class RandomCNN(ConvEncoder):
    """The scratch CNN's architecture (:class:`ConvEncoder`) at its random initialisation, frozen: the control for
    "does pretraining matter for a frozen encoder?" (``encoder=random-cnn``). Its weights come from the run's seed
    (each seed of a batch has its own); nothing trains them.

    Like a frozen pretrained encoder its output is a fixed function of the image, so the feature cache stores it
    (:meth:`features`, ``(N, feature_dim)``) and ``decoder=features`` can reconstruct it; :meth:`head` is the
    identity. Forward: ``(N, 3, H, W)`` uint8 -> ``(N, 16 * depth * mults[-1])`` float, as :class:`ConvEncoder`.
    """

    def __init__(self, image_size: int = 64, depth: int = 32, mults: tuple[int, ...] = (1, 2, 4, 8),
                 norm: str = "rms") -> None:
        super().__init__(image_size, depth, mults, norm)
        self.requires_grad_(False)
        self.feature_dim = self.out_dim

    @property
    def cacheable(self) -> bool:
        """Always: the weights never change."""
        return True

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` uint8 -> ``(N, feature_dim)`` the frozen random features (what the cache stores)."""
        return self.forward(images)

    def head(self, features: Tensor) -> Tensor:
        """Identity: ``(N, feature_dim)`` -> ``(N, out_dim)``."""
        return features
