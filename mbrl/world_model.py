"""DreamerV3 world model: encoder -> RSSM -> pixel decoder, reward and continue heads (Hafner et al. 2023,
Sec. 2, Eq. 4-5).

Batch layout (from :class:`mbrl.replay.Replay`), ``B`` sequences of ``T`` steps:

- ``image`` ``(B, T, H, W, 3)`` uint8: observation x_t.
- ``action`` ``(B, T, A)`` float: action a_t taken after seeing x_t.
- ``reward`` ``(B, T)`` float: reward r_t received on arriving at x_t (0 at an episode start).
- ``is_first`` ``(B, T)`` bool, ``is_terminal`` ``(B, T)`` bool.
- optional ``features`` ``(B, T, F)``: cached backbone features of a frozen encoder (used instead of ``image``
  for the embedding; the decoder still reconstructs ``image``).
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor, nn

from encoders.base import Encoder
from mbrl.config import LossConfig, ModelConfig
from mbrl.distributions import TwoHot, twohot_bins
from mbrl.nets import MLP, ConvDecoder
from mbrl.rssm import RSSM, State


class WorldModel(nn.Module):
    """Encoder, RSSM, decoder and heads, with the world-model loss.

    Args:
        encoder: an :class:`encoders.base.Encoder` (``(N, 3, H, W) uint8 -> (N, E)``).
        action_dim: ``A``.
        image_size: side of the square images in pixels.
    """

    def __init__(self, encoder: Encoder, action_dim: int, image_size: int, model: ModelConfig,
                 loss: LossConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_cfg = loss
        self.rssm = RSSM(action_dim, encoder.out_dim, model.deter, model.hidden, model.stoch, model.classes,
                         model.blocks, model.norm, model.unimix)
        feat = self.rssm.feat_dim
        self.decoder = ConvDecoder(feat, image_size, model.cnn_depth, tuple(model.cnn_mults), model.cnn_norm)
        self.reward_head = MLP(feat, model.bins, model.units, model.head_layers, model.norm, outscale=0.0)
        self.cont_head = MLP(feat, 1, model.units, model.head_layers, model.norm)
        self.register_buffer("bins", twohot_bins(model.bins), persistent=False)

    def embed(self, image: Tensor, features: Tensor | None = None) -> Tensor:
        """``(B, T, H, W, 3)`` uint8 -> ``(B, T, E)`` embeddings. With ``features`` ``(B, T, F)`` (the frozen
        encoder's cached backbone output) only the encoder's trainable head runs."""
        b = image.shape[0]
        if features is not None:
            return einops.rearrange(self.encoder.head(features.flatten(0, 1)), "(b t) e -> b t e", b=b)
        x = einops.rearrange(image, "b t h w c -> (b t) c h w")
        return einops.rearrange(self.encoder(x), "(b t) e -> b t e", b=b)

    def reward(self, feat: Tensor) -> TwoHot:
        """Reward distribution for ``(..., F)`` features."""
        return TwoHot(self.reward_head(feat), self.bins)

    def cont_logits(self, feat: Tensor) -> Tensor:
        """``(...)`` logits of the continue flag (1 - terminal)."""
        return self.cont_head(feat).squeeze(-1)

    def loss(self, data: dict[str, Tensor], state: State | None = None) -> tuple[Tensor, State, dict[str, float]]:
        """World-model loss (DreamerV3 Eq. 4-5) on a batch (see the module docstring for the layout).

        Returns:
            ``(loss, post, metrics)``: scalar loss (mean over ``B, T`` of the scaled terms), posterior states
            ``(B, T, ...)`` and float metrics.
        """
        cfg = self.loss_cfg
        image, action = data["image"], data["action"]
        embed = self.embed(image, data.get("features"))
        prev_action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
        post, prior = self.rssm.observe(embed, prev_action, data["is_first"], state)
        feat = self.rssm.features(post)
        b = image.shape[0]
        recon = self.decoder(einops.rearrange(feat, "b t f -> (b t) f"))
        target = einops.rearrange(image, "b t h w c -> (b t) c h w").to(torch.float32) / 255.0
        rec = einops.rearrange((recon - target).pow(2).sum((1, 2, 3)), "(b t) -> b t", b=b)
        rew = -self.reward(feat).log_prob(data["reward"])
        cont = 1.0 - data["is_terminal"].to(torch.float32)
        con = nn.functional.binary_cross_entropy_with_logits(self.cont_logits(feat), cont, reduction="none")
        dyn, rep, kl = self.rssm.kl_loss(post, prior, cfg.free_nats)
        total = cfg.rec * rec + cfg.rew * rew + cfg.con * con + cfg.dyn * dyn + cfg.rep * rep
        metrics = {"wm/loss": total.mean().item(), "wm/rec": rec.mean().item(), "wm/rew": rew.mean().item(),
                   "wm/con": con.mean().item(), "wm/kl": kl.mean().item()}
        return total.mean(), post, metrics
