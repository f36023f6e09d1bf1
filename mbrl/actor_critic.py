"""Actor-critic trained in imagination (DreamerV3, Hafner et al. 2023, Sec. 3, Eq. 6-11).

- Imagination: from every posterior state of the replay batch, roll the RSSM prior forward ``H`` steps
  (imagination horizon, 15) with actions from the actor.
- Critic: two-hot symlog distribution regressed onto lambda-returns (Eq. 7-8, lambda 0.95, gamma = 1 - 1/333),
  regularised towards the outputs of a slow EMA copy (rate 0.02).
- Actor: advantages normalised by ``max(1, P95 - P5)`` of the returns (percentile EMA, rate 0.01, Eq. 11),
  entropy bonus 3e-4; REINFORCE gradients (reference code) or backpropagation through the dynamics (2023
  paper, continuous actions).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mbrl.config import LossConfig, ModelConfig
from mbrl.distributions import BoundedNormal, TwoHot, twohot_bins
from mbrl.nets import MLP
from mbrl.rssm import State
from mbrl.world_model import WorldModel


def lambda_return(reward: Tensor, value: Tensor, disc: Tensor, lam: float) -> Tensor:
    """Lambda-returns ``R_t = r_{t+1} + disc_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1})``, ``R_H = v_H`` (Eq. 7).

    Args:
        reward: ``(H, N)`` rewards r_{t+1} for t = 0..H-1.
        value: ``(H+1, N)`` values v_t for t = 0..H.
        disc: ``(H, N)`` discount ``gamma * cont_{t+1}``.

    Returns:
        ``(H, N)`` returns for t = 0..H-1.
    """
    out = []
    last = value[-1]
    for t in reversed(range(reward.shape[0])):
        last = reward[t] + disc[t] * ((1.0 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


class ActorCritic(nn.Module):
    """Actor (bounded Normal policy), critic and slow critic over RSSM features.

    Args:
        feat_dim: ``deter + stoch * classes``.
        action_dim: ``A``.
    """

    def __init__(self, feat_dim: int, action_dim: int, model: ModelConfig, loss: LossConfig) -> None:
        super().__init__()
        self.cfg = loss
        self.minstd, self.maxstd = model.minstd, model.maxstd
        self.actor = MLP(feat_dim, 2 * action_dim, model.units, model.ac_layers, model.norm, outscale=0.01)
        self.critic = MLP(feat_dim, model.bins, model.units, model.ac_layers, model.norm, outscale=0.0)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", twohot_bins(model.bins), persistent=False)
        self.register_buffer("retnorm", torch.zeros(2))  # EMA of (P5, P95)
        self.register_buffer("retnorm_init", torch.zeros((), dtype=torch.bool))

    def policy(self, feat: Tensor) -> BoundedNormal:
        """Action distribution for ``(..., F)`` features."""
        return BoundedNormal(self.actor(feat), self.minstd, self.maxstd)

    def value(self, feat: Tensor, slow: bool = False) -> TwoHot:
        """Critic (or slow critic) distribution for ``(..., F)`` features."""
        return TwoHot((self.slow_critic if slow else self.critic)(feat), self.bins)

    def imagine(self, wm: WorldModel, start: State, start_cont: Tensor, horizon: int) -> dict[str, Tensor]:
        """Roll the prior ``horizon`` steps from ``start`` (batch ``N``) with the actor.

        Returns:
            dict with ``feat`` ``(H+1, N, F)``, ``action`` ``(H+1, N, A)``, ``reward`` ``(H, N)`` (r_{t+1}),
            ``cont`` ``(H+1, N)`` and ``weight`` ``(H+1, N)`` (cumulative discount, stop-gradient).
        """
        backprop = self.cfg.actor_grad == "backprop"
        state = start
        feats = [wm.rssm.features(state)]
        actions = []
        for _ in range(horizon):
            feat = feats[-1] if backprop else feats[-1].detach()
            action = self.policy(feat).sample()
            actions.append(action)
            state = wm.rssm.img_step(state, action)
            feats.append(wm.rssm.features(state))
        feat = torch.stack(feats)
        actions.append(self.policy(feat[-1].detach()).sample())
        reward = wm.reward(feat[1:]).mean
        cont = torch.cat([start_cont[None], (wm.cont_logits(feat[1:]) > 0).to(feat.dtype)], 0)
        gamma = 1.0 - 1.0 / self.cfg.horizon
        weight = torch.cumprod(gamma * cont, 0) / gamma
        return {"feat": feat, "action": torch.stack(actions), "reward": reward, "cont": cont,
                "weight": weight.detach()}

    def _update_retnorm(self, ret: Tensor) -> Tensor:
        """Update the percentile EMA with ``ret`` and return the scale ``max(limit, P95 - P5)``."""
        q = torch.tensor([self.cfg.perclo / 100.0, self.cfg.perchi / 100.0], device=ret.device)
        perc = torch.quantile(ret.detach().flatten().float(), q)
        if not bool(self.retnorm_init):
            self.retnorm.copy_(perc)
            self.retnorm_init.fill_(True)
        else:
            self.retnorm.lerp_(perc, self.cfg.retnorm_rate)
        return (self.retnorm[1] - self.retnorm[0]).clamp(min=self.cfg.retnorm_limit)

    def loss(self, traj: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Actor and critic losses on an imagined trajectory (Eq. 8-11).

        Returns:
            ``(actor_loss, critic_loss, metrics)`` scalars.
        """
        cfg = self.cfg
        feat, weight = traj["feat"], traj["weight"]
        gamma = 1.0 - 1.0 / cfg.horizon
        backprop = cfg.actor_grad == "backprop"
        if backprop:
            # Differentiate the return through the imagined features, not into the critic's parameters.
            self.critic.requires_grad_(False)
            try:
                value = self.value(feat).mean
            finally:
                self.critic.requires_grad_(True)
        else:
            value = self.value(feat.detach()).mean.detach()
        ret = lambda_return(traj["reward"], value, gamma * traj["cont"][1:], cfg.lam)
        scale = self._update_retnorm(ret)
        adv = (ret - value[:-1].detach()) / scale
        policy = self.policy(feat[:-1].detach())
        ent = policy.entropy()
        if backprop:
            actor_loss = -adv
        else:
            actor_loss = -policy.log_prob(traj["action"][:-1].detach()) * adv.detach()
        actor_loss = ((actor_loss - cfg.actent * ent) * weight[:-1]).mean()
        dist = self.value(feat[:-1].detach())
        slow_mean = self.value(feat[:-1].detach(), slow=True).mean.detach()
        critic_loss = -dist.log_prob(ret.detach()) - cfg.slowreg * dist.log_prob(slow_mean)
        critic_loss = (critic_loss * weight[:-1]).mean()
        metrics = {"ac/actor_loss": actor_loss.item(), "ac/critic_loss": critic_loss.item(),
                   "ac/entropy": ent.mean().item(), "ac/return": ret.mean().item(),
                   "ac/retnorm_scale": float(scale), "ac/imag_reward": traj["reward"].mean().item()}
        return actor_loss, critic_loss, metrics

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """EMA update ``slow <- (1 - rate) * slow + rate * critic``."""
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            slow.lerp_(fast, self.cfg.slow_rate)
