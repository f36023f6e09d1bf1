"""Building blocks shared by the world model and the actor-critic: MLPs, the block-diagonal linear layer of the
reference code's GRU, and the pixel decoder. The initialisation and normalisation primitives they share with the
CNN encoder live one layer down, in :mod:`encoders.layers`.

All layers follow the reference code (danijar/dreamerv3 ``nets.py``): linear layers without bias followed by
RMSNorm and SiLU, weights from a truncated normal scaled by fan-in, output layer weights multiplied by
``outscale`` (or, for the 2023 code, its variance scaled: ``ModelConfig.outscale_mode``).
"""

from __future__ import annotations

import math

import einops
import torch
from torch import Tensor, nn

from encoders.layers import ChannelNorm, channels_last, init_linear_, make_norm


class Linear(nn.Linear):
    """``nn.Linear`` with the fan-in truncated-normal init (:func:`init_linear_`), zero bias.

    Args:
        outscale: init scale of the weights (0 = zeros); ``outscale_mode`` ``weight`` multiplies the weights
            by it (reference), ``variance`` the variance (2023 code).
    """

    def __init__(self, inp: int, out: int, bias: bool = True, outscale: float = 1.0,
                 outscale_mode: str = "weight") -> None:
        super().__init__(inp, out, bias=bias)
        init_linear_(self.weight, inp, outscale, outscale_mode)
        if bias:
            nn.init.zeros_(self.bias)


class DenseBlock(nn.Sequential):
    """Linear (no bias) -> norm -> SiLU: ``(..., inp) -> (..., out)``."""

    def __init__(self, inp: int, out: int, norm: str = "rms") -> None:
        super().__init__(Linear(inp, out, bias=norm == "none"), make_norm(norm, out), nn.SiLU())


class MLP(nn.Module):
    """``layers`` dense blocks of ``units`` then a linear output layer: ``(..., inp) -> (..., out)``.

    Args:
        outscale: init scale of the output layer (0 for the reward/critic heads, 0.01 for the policy, as the
            reference code); outscale_mode: how it applies (:func:`init_linear_`).
    """

    def __init__(self, inp: int, out: int, units: int, layers: int, norm: str = "rms",
                 outscale: float = 1.0, outscale_mode: str = "weight") -> None:
        super().__init__()
        dims = [inp] + [units] * layers
        self.hidden = nn.Sequential(*[DenseBlock(a, b, norm) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.out = Linear(dims[-1], out, outscale=outscale, outscale_mode=outscale_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.hidden(x))


class BlockLinear(nn.Module):
    """Block-diagonal linear layer: ``groups`` independent ``(inp/g) -> (out/g)`` maps over a flat vector.

    ``(..., inp) -> (..., out)``; used by the block GRU of the reference code (``nn.BlockLinear``).

    Raises:
        ValueError: ``inp`` or ``out`` not divisible by ``groups``.
    """

    def __init__(self, inp: int, out: int, groups: int) -> None:
        super().__init__()
        if inp % groups or out % groups:
            raise ValueError(f"BlockLinear sizes {inp}->{out} must be divisible by groups={groups}")
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, inp // groups, out // groups))
        self.bias = nn.Parameter(torch.zeros(out))
        init_linear_(self.weight, inp // groups)

    def forward(self, x: Tensor) -> Tensor:
        x = einops.rearrange(x, "... (g i) -> ... g i", g=self.groups)
        x = torch.einsum("...gi,gio->...go", x, self.weight)
        return einops.rearrange(x, "... g o -> ... (g o)") + self.bias


class ConvDecoder(nn.Module):
    """Pixel decoder mirroring the DreamerV3 CNN encoder (2023 paper, App. B).

    A linear layer maps model features to a ``(C, 4, 4)`` map (then norm + SiLU); stride-2 transposed
    convolutions (kernel 4) double the resolution per stage up to ``image_size``.

    Args:
        feat_dim: size of the model state ``deter + stoch * classes``.
        image_size: output side in pixels (``4 * 2**len(stages)``).
        depth, mults: channels of stage ``i`` are ``depth * mults[i]`` (reversed on the way up).

    Forward: ``(N, feat_dim)`` float -> ``(N, 3, image_size, image_size)`` float, the predicted image in
    ``[0, 1]`` units (not clamped).
    """

    def __init__(self, feat_dim: int, image_size: int, depth: int, mults: tuple[int, ...],
                 norm: str = "rms") -> None:
        super().__init__()
        stages = int(round(math.log2(image_size / 4)))
        if 4 * 2**stages != image_size:
            raise ValueError(f"decoder image_size={image_size} must be 4 * 2**k")
        mults = tuple(mults[:stages]) + (mults[-1],) * max(0, stages - len(mults))
        chans = [depth * m for m in mults][::-1]  # e.g. 256, 128, 64, 32
        self.start = chans[0]
        self.linear = Linear(feat_dim, 16 * chans[0])
        layers: list[nn.Module] = [ChannelNorm(norm, chans[0]), nn.SiLU()]
        for i in range(stages):
            last = i == stages - 1
            out = 3 if last else chans[i + 1]
            conv = nn.ConvTranspose2d(chans[i], out, 4, 2, 1, bias=last or norm == "none")
            init_linear_(conv.weight, chans[i] * 4, 1.0)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if not last:
                layers += [ChannelNorm(norm, out), nn.SiLU()]
        self.convs = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, feat: Tensor) -> Tensor:
        x = einops.rearrange(self.linear(feat), "n (h w c) -> n c h w", h=4, w=4)
        return self.convs(channels_last(x)) + 0.5
