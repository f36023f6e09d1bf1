"""Layer primitives shared by the CNN encoder (:mod:`encoders.cnn`) and the world model's networks
(:mod:`mbrl.nets`): the fan-in truncated-normal initialisation and the normalisations of the reference code
(danijar/dreamerv3 ``nets.py``). They live here, in the lower layer, so the encoder does not import the model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

OUTSCALE_MODES = ("weight", "variance")


def init_linear_(weight: Tensor, fan_in: int, scale: float = 1.0, mode: str = "weight") -> None:
    """Truncated-normal fan-in initialisation of ``weight`` in place, scaled by ``scale`` (0 = zeros).

    The base draw is a normal truncated at 2 sigma with std ``sqrt(1 / fan_in)`` (corrected by 1/0.8796 for
    the truncation; reference ``embodied/jax/nets.py`` ``Initializer('trunc_normal', 'in')``:
    ``truncated_normal(-2, 2) * 1.1368 * sqrt(1 / fan)``). ``mode`` says how ``scale`` (``outscale``) enters:

    - ``weight`` (reference ``nets.Linear._scaled_winit``): the weights are multiplied by ``scale``, so the std
      is ``scale * sqrt(1 / fan_in)``; the policy's ``outscale=0.01`` gives std ``0.01 / sqrt(fan_in)``.
    - ``variance`` (2023 code ``nets.Initializer(dist, scale, fan)``): the variance is ``scale / fan_in``, so
      the std is ``sqrt(scale / fan_in)``.

    Raises:
        ValueError: unknown ``mode``.
    """
    if mode not in OUTSCALE_MODES:
        raise ValueError(f"unknown outscale mode {mode!r}; allowed: {', '.join(OUTSCALE_MODES)}")
    if scale == 0.0:
        nn.init.zeros_(weight)
        return
    var = scale / fan_in if mode == "variance" else 1.0 / fan_in
    std = math.sqrt(var) / 0.87962566103423978  # correct the std of a normal truncated at 2 sigma
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    if mode == "weight" and scale != 1.0:
        with torch.no_grad():
            weight.mul_(scale)


class RMSNorm(nn.RMSNorm):
    """:class:`torch.nn.RMSNorm` computed in float32 and cast back to the input's dtype, as the reference does
    (``embodied/jax/nets.py`` ``Norm``: ``x.astype(f32)``, normalise and scale, ``astype(dtype)``).

    Under bf16 autocast ``nn.RMSNorm`` alone gets a bf16 input and a float32 weight, which PyTorch cannot fuse
    (a "Mismatch dtype" warning on every run) and computes unfused; here the fused float32 kernel runs instead,
    with the same result. ``(..., D)`` -> ``(..., D)``, same dtype as the input.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def make_norm(kind: str, dim: int) -> nn.Module:
    """``rms`` (RMSNorm, reference code), ``layer`` (LayerNorm, 2023 paper) or ``none``, over the last dim."""
    if kind == "rms":
        return RMSNorm(dim, eps=1e-4)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-3)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; allowed: rms, layer, none")


def channels_last(x: Tensor) -> Tensor:
    """``x`` ``(N, C, H, W)`` in channels-last memory (faster per-pixel norms and convolutions on CPU); unchanged
    inside ``torch.func.vmap`` (seeds as a batch, :mod:`mbrl.members`), which has no channels-last layout."""
    if torch._C._functorch.is_batchedtensor(x):
        return x
    return x.contiguous(memory_format=torch.channels_last)


class ChannelNorm(nn.Module):
    """Normalise ``(N, C, H, W)`` feature maps over channels (RMSNorm/LayerNorm per pixel)."""

    def __init__(self, kind: str, channels: int) -> None:
        super().__init__()
        self.norm = make_norm(kind, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
