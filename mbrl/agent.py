"""The DreamerV3 agent: world model + actor-critic + optimisers, one training update and the acting policy."""

from __future__ import annotations

from typing import Any

import einops
import torch
from torch import Tensor, nn

from encoders.registry import build_encoder
from mbrl.actor_critic import ActorCritic
from mbrl.config import Config
from mbrl.optim import Optimizer
from mbrl.rssm import State
from mbrl.world_model import WorldModel

PolicyState = tuple[State, Tensor]


class Agent(nn.Module):
    """DreamerV3 agent for continuous actions in ``[-1, 1]^A`` and square RGB images.

    Args:
        cfg: the run's configuration (``encoder``, ``image_size``, ``model``, ``loss``, ``optim``).
        action_dim: ``A``.
    """

    def __init__(self, cfg: Config, action_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        encoder = build_encoder(cfg.encoder, image_size=cfg.image_size, cfg=cfg)
        self.wm = WorldModel(encoder, action_dim, cfg.image_size, cfg.model, cfg.loss)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, action_dim, cfg.model, cfg.loss)
        o = cfg.optim
        enc_params = {id(p) for p in encoder.encoder_parameters()}
        rest = [p for p in self.wm.parameters() if id(p) not in enc_params and p.requires_grad]
        enc_lr = o.encoder_lr if o.encoder_lr >= 0 else o.lr if cfg.encoder == "cnn" else 0.1 * o.lr
        betas = (o.beta1, o.beta2)
        self.wm_opt = Optimizer([(encoder.encoder_parameters(), enc_lr), (rest, o.lr)], o.name, o.eps, betas,
                                o.agc, o.clip, o.warmup)
        self.actor_opt = Optimizer([(list(self.ac.actor.parameters()), o.actor_lr)], o.name, o.ac_eps, betas,
                                   o.agc, o.ac_clip, o.warmup)
        self.critic_opt = Optimizer([(list(self.ac.critic.parameters()), o.critic_lr)], o.name, o.ac_eps, betas,
                                    o.agc, o.ac_clip, o.warmup)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One update of world model, critic and actor on a replay batch (layout: :mod:`mbrl.world_model`).

        Returns:
            float metrics (losses, gradient norms, return statistics).
        """
        self.train()
        wm_loss, post, metrics = self.wm.loss(batch)
        metrics["wm/grad_norm"] = self.wm_opt.step(wm_loss)
        start = {k: einops.rearrange(v.detach(), "b t ... -> (b t) ...") for k, v in post.items()}
        start_cont = einops.rearrange(1.0 - batch["is_terminal"].to(torch.float32), "b t -> (b t)")
        if self.cfg.loss.actor_grad == "backprop":
            traj = self.ac.imagine(self.wm, start, start_cont, self.cfg.loss.imag_horizon)
        else:
            with torch.no_grad():
                traj = self.ac.imagine(self.wm, start, start_cont, self.cfg.loss.imag_horizon)
        actor_loss, critic_loss, ac_metrics = self.ac.loss(traj)
        metrics.update(ac_metrics)
        metrics["ac/actor_grad_norm"] = self.actor_opt.step(actor_loss)
        metrics["ac/critic_grad_norm"] = self.critic_opt.step(critic_loss)
        self.ac.update_slow_critic()
        return metrics

    def initial_state(self, n: int) -> PolicyState:
        """Policy state (latent, previous action) for ``n`` parallel envs."""
        return self.wm.rssm.initial(n, self.device), torch.zeros(n, self.action_dim, device=self.device)

    @property
    def caches_features(self) -> bool:
        """Whether replay should store the encoder's backbone features (frozen pretrained encoder + cache on)."""
        return bool(self.cfg.encoder_cache and getattr(self.wm.encoder, "cacheable", False))

    @torch.no_grad()
    def encode_features(self, image: Tensor) -> Tensor:
        """``(N, H, W, 3)`` uint8 -> ``(N, F)`` backbone features (for the feature cache)."""
        self.eval()
        return self.wm.encoder.features(einops.rearrange(image.to(self.device), "n h w c -> n c h w"))

    @torch.no_grad()
    def act(self, image: Tensor, is_first: Tensor, state: PolicyState, mode: str = "train",
            out: dict[str, Tensor] | None = None) -> tuple[Tensor, PolicyState]:
        """One policy step for ``N`` envs.

        Args:
            image: ``(N, H, W, 3)`` uint8 current observations.
            is_first: ``(N,)`` bool, True where the observation starts an episode (state is reset).
            state: from :meth:`initial_state` or the previous call.
            mode: ``train`` samples the policy; ``eval`` takes its mean.
            out: if given and the agent caches features, ``out["features"]`` receives the ``(N, F)`` backbone
                features of ``image`` (computed once, for replay).

        Returns:
            ``(action, state)``: ``(N, A)`` float actions in ``[-1, 1]`` and the new policy state.
        """
        self.eval()
        latent, prev_action = state
        if self.caches_features:
            features = self.encode_features(image)
            if out is not None:
                out["features"] = features
            embed = self.wm.encoder.head(features)
        else:
            embed = self.wm.encoder(einops.rearrange(image.to(self.device), "n h w c -> n c h w"))
        latent, _ = self.wm.rssm.obs_step(latent, prev_action, embed, is_first.to(self.device))
        dist = self.ac.policy(self.wm.rssm.features(latent))
        action = (dist.sample() if mode == "train" else dist.mode()).clamp(-1.0, 1.0)
        return action, (latent, action)

    def optim_state(self) -> dict[str, Any]:
        """State of the three optimisers (for checkpoints)."""
        return {"wm": self.wm_opt.state_dict(), "actor": self.actor_opt.state_dict(),
                "critic": self.critic_opt.state_dict()}

    def load_optim_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`optim_state` output."""
        self.wm_opt.load_state_dict(state["wm"])
        self.actor_opt.load_state_dict(state["actor"])
        self.critic_opt.load_state_dict(state["critic"])
