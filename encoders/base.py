"""The encoder interface the world model plugs into.

Data flow: env ``obs["image"]`` ``(H, W, 3) uint8`` -> world model rearranges to ``(N, 3, H, W)`` -> encoder ->
``(N, out_dim)`` embedding -> RSSM posterior. Preprocessing (scaling, resizing, normalising) happens inside the
encoder, so envs render once at the size the run asks for.
"""

from __future__ import annotations

from torch import Tensor, nn


class Encoder(nn.Module):
    """Base class of image encoders.

    Subclasses set :attr:`out_dim` and implement :meth:`forward`. :meth:`encoder_parameters` returns the
    parameters that train with the encoder learning rate (``optim.encoder_lr``); an encoder that must not be
    trained returns none.
    """

    out_dim: int

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - interface
        """``(N, 3, H, W)`` uint8 (or float in ``[0, 255]``) -> ``(N, out_dim)`` float embedding."""
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters optimised with the encoder learning rate (default: all that require grad)."""
        return [p for p in self.parameters() if p.requires_grad]
