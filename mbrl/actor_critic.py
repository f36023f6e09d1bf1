"""Actor-critic trained in imagination (DreamerV3, Hafner et al. 2023, Sec. 3, Eq. 6-11; current reference code
danijar/dreamerv3 ``dreamerv3/agent.py`` ``Agent.loss``, ``imag_loss``, ``repl_loss``, ``lambda_return``).

- Imagination: from every posterior state of the replay batch, roll the RSSM prior forward ``H`` steps
  (imagination horizon, 15) with actions from the actor. Continue flags are the continue head's probability
  (reference ``con.prob(1)``, ``LossConfig.imag_cont=prob``) or its mode with the start state's flag from the
  data (2023 code, ``imag_cont=mode``); the discount is ``gamma * cont`` with ``gamma = 1 - 1/333``.
- Critic: two-hot distribution (:class:`mbrl.distributions.TwoHot`) regressed onto lambda-returns (Eq. 7-8,
  lambda 0.95) computed with the critic's own values, plus a regulariser towards the outputs of a slow EMA copy
  (rate 0.02); both terms weighted by the cumulative imagined discount.
- Replay value loss (``repval``, reference ``repl_loss``, scale 0.3): the critic is also regressed onto
  lambda-returns along the replayed posterior sequence, from the data's rewards and terminals, bootstrapped at
  every step with the imagined return from that state (:meth:`ActorCritic.repval_loss`).
- Actor: advantages ``(R - v) / max(1, P95 - P5)`` (scale only, no offset), the percentiles an EMA (rate 0.01)
  that starts at 0 without debiasing (reference ``embodied/jax/utils.py`` ``Normalize(impl=perc, debias=False)``;
  the 2023 code's ``Moments(perc_ema)`` is the same); entropy bonus 3e-4; REINFORCE gradients (reference code)
  or backpropagation through the dynamics (2023 paper, continuous actions).
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
    """Lambda-returns ``R_t = r_{t+1} + disc_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1})``, ``R_H = v_H`` (Eq. 7;
    reference ``lambda_return`` with ``last = 0``, ``boot = val``).

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


def replay_lambda_return(reward: Tensor, is_terminal: Tensor, is_last: Tensor, boot: Tensor, disc: float,
                         lam: float) -> Tensor:
    """Lambda-returns along replayed sequences (reference ``agent.py`` ``lambda_return`` as called by
    ``repl_loss``): ``R_t = r_{t+1} + g_{t+1} ((1 - l_{t+1}) boot_{t+1} + l_{t+1} R_{t+1})`` with
    ``g = disc * (1 - is_terminal)``, ``l = lam * (1 - is_last)`` (no lambda-mixing across an episode end) and
    ``R_{T-1} = boot_{T-1}``.

    Args:
        reward: ``(B, T)`` reward r_t received on arriving at step t (replay layout).
        is_terminal, is_last: ``(B, T)`` bool/float flags of step t.
        boot: ``(B, T)`` bootstrap value of step t (the imagined lambda-return from that posterior state).
        disc: ``gamma = 1 - 1/horizon``.

    Returns:
        ``(B, T-1)`` returns for t = 0..T-2.
    """
    live = (1.0 - is_terminal[:, 1:].to(reward.dtype)) * disc
    cont = (1.0 - is_last[:, 1:].to(reward.dtype)) * lam
    interm = reward[:, 1:] + (1.0 - cont) * live * boot[:, 1:]
    out = []
    ret = boot[:, -1]
    for t in reversed(range(live.shape[1])):
        ret = interm[:, t] + live[:, t] * cont[:, t] * ret
        out.append(ret)
    return torch.stack(out[::-1], 1)


def percentiles(x: Tensor, q: Tensor) -> Tensor:
    """``(Q,)`` quantiles ``q`` (fractions in ``[0, 1]``) of the 1-d ``x`` with linear interpolation, the values of
    ``torch.quantile`` / ``jnp.percentile``: sort, then interpolate between the neighbours of position
    ``q * (n - 1)``. Written with sort and gather because ``torch.quantile`` checks ``q`` on the host (a device
    sync, which a CUDA graph cannot hold) and has no ``vmap`` batching rule (seeds as a batch)."""
    n = x.shape[-1]
    srt = torch.sort(x).values
    pos = q.to(x.dtype) * (n - 1)
    lo = pos.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo.to(x.dtype)
    a, b = srt[lo], srt[hi]
    return a + (b - a) * frac


def episode_last(batch: dict[str, Tensor]) -> Tensor:
    """``(B, T)`` bool ``is_last`` of a replay batch: the batch's own if present, else ``is_terminal`` or the next
    step starts an episode (``is_first[t + 1]``; the replay stores an episode's final observation as its own
    step). The last step's flag is unknown then but does not change :func:`replay_lambda_return`."""
    if "is_last" in batch:
        return batch["is_last"].to(torch.bool)
    last = batch["is_terminal"].to(torch.bool).clone()
    last[:, :-1] |= batch["is_first"][:, 1:].to(torch.bool)
    return last


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
        self.twohot = model.twohot
        self.actor = MLP(feat_dim, 2 * action_dim, model.units, model.ac_layers, model.norm,
                         outscale=model.actor_outscale, outscale_mode=model.outscale_mode)
        self.critic = MLP(feat_dim, model.bins, model.units, model.ac_layers, model.norm, outscale=0.0)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", twohot_bins(model.bins), persistent=False)
        self.register_buffer("retnorm", torch.zeros(2))  # EMA of (P5, P95) of the imagined returns, from 0
        self.register_buffer("retnorm_q", torch.tensor([loss.perclo, loss.perchi]) / 100.0, persistent=False)

    def policy(self, feat: Tensor) -> BoundedNormal:
        """Action distribution for ``(..., F)`` features (fp32 parameters)."""
        return BoundedNormal(self.actor(feat).to(torch.float32), self.minstd, self.maxstd)

    def value(self, feat: Tensor, slow: bool = False) -> TwoHot:
        """Critic (or slow critic) distribution for ``(..., F)`` features."""
        return TwoHot((self.slow_critic if slow else self.critic)(feat), self.bins, self.twohot)

    def imagine(self, wm: WorldModel, start: State, start_cont: Tensor, horizon: int) -> dict[str, Tensor]:
        """Roll the prior ``horizon`` steps from ``start`` (batch ``N``) with the actor.

        Args:
            start: posterior states, ``(N, ...)`` each.
            start_cont: ``(N,)`` float ``1 - is_terminal`` of the start states (used by ``imag_cont=mode`` only;
                ``prob`` takes the continue head's prediction for the start state too, as the reference).

        Returns:
            dict with ``feat`` ``(H+1, N, F)``, ``action`` ``(H+1, N, A)`` (a_t sampled at state t), ``reward``
            ``(H, N)`` (r_{t+1}, the reward head's prediction), ``cont`` ``(H+1, N)`` (continue probabilities, or
            0/1 flags for ``imag_cont=mode``) and ``weight`` ``(H+1, N)``: ``cumprod(gamma * cont) / gamma``
            (reference ``imag_loss`` with ``contdisc=False``; 2023 code ``imagine``), stop-gradient.
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
        if self.cfg.imag_cont == "prob":
            cont = torch.sigmoid(wm.cont_logits(feat))
        else:
            cont = torch.cat([start_cont[None].to(torch.float32), (wm.cont_logits(feat[1:]) > 0).to(torch.float32)])
        gamma = 1.0 - 1.0 / self.cfg.horizon
        weight = torch.cumprod(gamma * cont, 0) / gamma
        return {"feat": feat, "action": torch.stack(actions), "reward": reward, "cont": cont,
                "weight": weight.detach()}

    def _update_retnorm(self, ret: Tensor) -> Tensor:
        """Update the percentile EMA with ``ret`` (any shape) and return the advantage scale
        ``max(limit, P95 - P5)`` as a 0-d tensor, without a host sync.

        Reference ``embodied/jax/utils.py`` ``Normalize(impl='perc', debias=False)``: ``lo``/``hi`` start at 0 and
        move by ``rate`` towards each batch's percentiles (``jnp.percentile``, linear interpolation); the stats
        are read after the update. A batch with non-finite percentiles leaves them unchanged (its update is skipped
        too, :class:`mbrl.optim.Optimizer`), so a diverged batch cannot poison the normaliser.
        """
        perc = percentiles(ret.detach().flatten().to(torch.float32), self.retnorm_q)
        # a non-finite batch (its update is skipped by the optimiser) leaves the statistics as they were
        self.retnorm.copy_(torch.where(torch.isfinite(perc), self.retnorm.lerp(perc, self.cfg.retnorm_rate),
                                       self.retnorm))
        return (self.retnorm[1] - self.retnorm[0]).clamp(min=self.cfg.retnorm_limit)

    def loss(self, traj: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Actor and critic losses on an imagined trajectory (Eq. 8-11; reference ``imag_loss``).

        Also stores the detached lambda-returns in ``traj["ret"]`` ``(H, N)`` (``ret[0]`` bootstraps
        :meth:`repval_loss`) and updates the return normaliser. With REINFORCE gradients the work is split in
        :meth:`critic_terms` and :meth:`actor_terms` (two separately differentiable pieces: ``compile=on`` compiles
        each as one graph, and the actor's and the critic's backward passes stay independent).

        Returns:
            ``(actor_loss, critic_loss, metrics)``: scalar losses (means over ``H x N`` of the weighted terms)
            and metrics as detached 0-d tensors (no host sync): ``ac/actor_loss``, ``ac/critic_loss``,
            ``ac/critic_mean`` (critic prediction over all ``H+1`` states), ``ac/return`` (lambda-return mean),
            ``ac/adv_mean``/``ac/adv_std`` (``R - v`` before scaling), ``ac/retnorm_scale`` (the divisor
            ``max(limit, P95 - P5)``), ``ac/retnorm_lo``/``ac/retnorm_hi`` (the EMA percentiles),
            ``ac/entropy``, ``ac/policy_std``, ``ac/imag_reward``, ``ac/imag_cont``, ``ac/imag_weight``.
        """
        if self.cfg.actor_grad == "backprop":
            return self._loss_backprop(traj)
        feat, weight = traj["feat"].detach(), traj["weight"]
        critic_loss, ret, adv, metrics = self.critic_terms(feat, traj["reward"].detach(), traj["cont"].detach(),
                                                           weight)
        actor_loss, actor_metrics = self.actor_terms(feat[:-1], traj["action"][:-1].detach(), adv, weight[:-1])
        traj["ret"] = ret
        metrics.update(actor_metrics)
        return actor_loss, critic_loss, metrics

    def critic_terms(self, feat: Tensor, reward: Tensor, cont: Tensor,
                     weight: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """The critic's part of :meth:`loss` with REINFORCE actor gradients: one critic pass for the targets and
        the loss, lambda-returns, the return-normaliser update (in place, ``retnorm``) and the critic loss.

        Args:
            feat: ``(H+1, N, F)`` imagined features (no gradient into them).
            reward: ``(H, N)``, cont: ``(H+1, N)``, weight: ``(H+1, N)``: as returned by :meth:`imagine`.

        Returns:
            ``(critic_loss, ret, adv, metrics)``: the scalar critic loss (gradients into the critic only), the
            detached lambda-returns ``(H, N)``, the detached scaled advantages ``(R - v) / scale`` ``(H, N)`` and
            the critic/return metrics of :meth:`loss` as detached 0-d tensors.
        """
        cfg = self.cfg
        gamma = 1.0 - 1.0 / cfg.horizon
        logits = self.critic(feat)  # one critic pass for the targets and the loss
        value = TwoHot(logits, self.bins, self.twohot).mean.detach()
        dist = TwoHot(logits[:-1], self.bins, self.twohot)
        ret = lambda_return(reward, value, gamma * cont[1:], cfg.lam)
        scale = self._update_retnorm(ret)
        adv_raw = ret - value[:-1]
        adv = adv_raw / scale
        slow_mean = self.value(feat[:-1], slow=True).mean.detach()
        critic_loss = -dist.log_prob(ret) - cfg.slowreg * dist.log_prob(slow_mean)
        critic_loss = (critic_loss * weight[:-1]).mean()
        with torch.no_grad():
            metrics = {"ac/critic_loss": critic_loss.detach(), "ac/critic_mean": value.mean(),
                       "ac/return": ret.mean(), "ac/adv_mean": adv_raw.mean(), "ac/adv_std": adv_raw.std(),
                       "ac/retnorm_scale": scale.detach(), "ac/retnorm_lo": self.retnorm[0].clone(),
                       "ac/retnorm_hi": self.retnorm[1].clone(), "ac/imag_reward": reward.mean(),
                       "ac/imag_cont": cont.mean(), "ac/imag_weight": weight.mean()}
        return critic_loss, ret.detach(), adv.detach(), metrics

    def actor_terms(self, feat: Tensor, action: Tensor, adv: Tensor,
                    weight: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The actor's part of :meth:`loss` with REINFORCE gradients:
        ``mean(weight * (-log pi(a | s) * adv - actent * H[pi(. | s)]))``.

        Args:
            feat: ``(H, N, F)`` features of the states the actions were taken in; action: ``(H, N, A)``;
            adv: ``(H, N)`` scaled advantages (constants); weight: ``(H, N)``.

        Returns:
            ``(actor_loss, metrics)``: the scalar loss (gradients into the actor only) and ``ac/actor_loss``,
            ``ac/entropy``, ``ac/policy_std`` as detached 0-d tensors.
        """
        policy = self.policy(feat)
        ent = policy.entropy()
        actor_loss = -policy.log_prob(action) * adv
        actor_loss = ((actor_loss - self.cfg.actent * ent) * weight).mean()
        with torch.no_grad():
            metrics = {"ac/actor_loss": actor_loss.detach(), "ac/entropy": ent.detach().mean(),
                       "ac/policy_std": policy.std.detach().mean()}
        return actor_loss, metrics

    def _loss_backprop(self, traj: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """:meth:`loss` with ``actor_grad=backprop``: the actor maximises the return differentiated through the
        imagined features."""
        cfg = self.cfg
        feat, weight = traj["feat"], traj["weight"]
        gamma = 1.0 - 1.0 / cfg.horizon
        # Differentiate the return through the imagined features, not into the critic's parameters.
        self.critic.requires_grad_(False)
        try:
            value = self.value(feat).mean
        finally:
            self.critic.requires_grad_(True)
        dist = self.value(feat[:-1].detach())
        ret = lambda_return(traj["reward"], value, gamma * traj["cont"][1:], cfg.lam)
        scale = self._update_retnorm(ret)
        adv_raw = ret - value[:-1].detach()
        adv = adv_raw / scale
        policy = self.policy(feat[:-1].detach())
        ent = policy.entropy()
        actor_loss = ((-adv - cfg.actent * ent) * weight[:-1]).mean()
        slow_mean = self.value(feat[:-1].detach(), slow=True).mean.detach()
        critic_loss = -dist.log_prob(ret.detach()) - cfg.slowreg * dist.log_prob(slow_mean)
        critic_loss = (critic_loss * weight[:-1]).mean()
        traj["ret"] = ret.detach()
        with torch.no_grad():
            adv_raw = adv_raw.detach()
            metrics = {"ac/actor_loss": actor_loss.detach(), "ac/critic_loss": critic_loss.detach(),
                       "ac/critic_mean": value.detach().mean(), "ac/return": ret.detach().mean(),
                       "ac/adv_mean": adv_raw.mean(), "ac/adv_std": adv_raw.std(),
                       "ac/retnorm_scale": scale.detach(), "ac/retnorm_lo": self.retnorm[0].clone(),
                       "ac/retnorm_hi": self.retnorm[1].clone(), "ac/entropy": ent.detach().mean(),
                       "ac/policy_std": policy.std.detach().mean(),
                       "ac/imag_reward": traj["reward"].detach().mean(),
                       "ac/imag_cont": traj["cont"].detach().mean(), "ac/imag_weight": weight.mean()}
        return actor_loss, critic_loss, metrics

    def repval_loss(self, feat: Tensor, reward: Tensor, is_terminal: Tensor, is_last: Tensor, boot: Tensor,
                    wm_grad: bool = False) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """Replay value loss (reference ``agent.py`` ``repl_loss`` with ``slowtar=False``, as called by
        ``Agent.loss``): the critic regressed onto :func:`replay_lambda_return` targets along the replayed
        posterior sequence, plus the slow-critic regulariser, weighted by ``1 - is_last``.

        ``loss = mean_{b, t < T-1} (1 - last_t) * (-log p(R_t | s_t) - slowreg * log p(slow(s_t) | s_t))``.

        Args:
            feat: ``(B, T, F)`` posterior features of the replayed sequence.
            reward: ``(B, T)`` replayed rewards (r_t received on arriving at step t): the data, not the reward head.
            is_terminal, is_last: ``(B, T)`` replayed flags (:func:`episode_last`): the data, not the continue head.
            boot: ``(B, T)`` imagined lambda-return from each posterior state (``traj["ret"][0]`` of
                :meth:`loss`, reshaped); a target, never differentiated.
            wm_grad: also return the loss with gradients into ``feat`` (reference ``repval_grad=True``: the
                world model learns from it); the critic's copy always sees ``feat`` detached.

        Returns:
            ``(critic_loss, wm_loss, metrics)``: the scalar loss for the critic's parameters, the same loss
            differentiable w.r.t. ``feat`` (None unless ``wm_grad``; it also reaches the critic's parameters,
            whose gradients the critic's own step discards), and ``ac/repval_loss``, ``ac/repval_return`` as
            detached 0-d tensors.
        """
        cfg = self.cfg
        gamma = 1.0 - 1.0 / cfg.horizon
        with torch.no_grad():
            ret = replay_lambda_return(reward.to(torch.float32), is_terminal, is_last, boot.to(torch.float32),
                                       gamma, cfg.lam)
            slow_mean = self.value(feat[:, :-1].detach(), slow=True).mean
            weight = 1.0 - is_last[:, :-1].to(torch.float32)

        def term(x: Tensor) -> Tensor:
            dist = self.value(x[:, :-1])
            return ((-dist.log_prob(ret) - cfg.slowreg * dist.log_prob(slow_mean)) * weight).mean()

        critic_loss = term(feat.detach())
        wm_loss = term(feat) if wm_grad else None
        metrics = {"ac/repval_loss": critic_loss.detach(), "ac/repval_return": ret.mean()}
        return critic_loss, wm_loss, metrics

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """EMA update ``slow <- (1 - rate) * slow + rate * critic``."""
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            slow.lerp_(fast, self.cfg.slow_rate)
