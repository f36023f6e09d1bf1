"""Recurrent State-Space Model (RSSM) of DreamerV3 (Hafner et al. 2023, Sec. 2, Eq. 1; block GRU of the
reference code danijar/dreamerv3 ``nets.RSSM``).

State (a dict of tensors, batch dims ``...``):

- ``deter`` ``(..., D)`` float: deterministic recurrent state h_t.
- ``stoch`` ``(..., S, K)`` float: one-hot sample z_t of ``S`` categoricals with ``K`` classes.
- ``logits`` ``(..., S, K)`` float: log-probabilities (after unimix) that ``stoch`` was drawn from.

Model features for the heads are ``concat(deter, flatten(stoch))``, size ``D + S*K``.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor, nn

from encoders.layers import make_norm
from mbrl.distributions import OneHotCategorical, categorical_kl
from mbrl.nets import BlockLinear, DenseBlock, Linear

State = dict[str, Tensor]


def chunk_start(state: State) -> State:
    """The filter's start state for chunked (compiled) filtering: with grad enabled, each tensor that does not
    require grad becomes a fresh contiguous leaf that does. The later chunks start from states that require grad
    (they depend on the weights) and dynamo guards on ``requires_grad`` and strides (a broadcast start has stride
    0), so without this the first chunk compiles a second graph (measured: 2 ``observe_steps`` compiles -> 1). Values
    are unchanged; the start state's own gradient (one extra ``(B, D)`` product in the backward pass) is computed
    and dropped. Under ``no_grad`` the state is returned as is."""
    if not torch.is_grad_enabled():
        return state
    return {k: v if v.requires_grad else v.detach().contiguous().requires_grad_() for k, v in state.items()}


class RSSM(nn.Module):
    """RSSM with a block-diagonal GRU (``blocks`` groups; 1 = dense) and categorical latents with unimix.

    Args:
        action_dim: size ``A`` of the (continuous) action vector.
        embed_dim: size ``E`` of the encoder embedding.
        deter, hidden, stoch, classes, blocks, norm, unimix: see :class:`mbrl.config.ModelConfig`.
    """

    def __init__(self, action_dim: int, embed_dim: int, deter: int = 512, hidden: int = 512, stoch: int = 32,
                 classes: int = 32, blocks: int = 8, norm: str = "rms", unimix: float = 0.01) -> None:
        super().__init__()
        self.deter, self.stoch, self.classes, self.blocks, self.unimix = deter, stoch, classes, blocks, unimix
        self.feat_dim = deter + stoch * classes
        self.dynin_deter = DenseBlock(deter, hidden, norm)
        self.dynin_stoch = DenseBlock(stoch * classes, hidden, norm)
        self.dynin_action = DenseBlock(action_dim, hidden, norm)
        self.dynhid = BlockLinear(deter + 3 * hidden * blocks, deter, blocks)
        self.dynhid_norm = make_norm(norm, deter)
        self.dyngru = BlockLinear(deter, 3 * deter, blocks)
        self.prior_net = nn.Sequential(DenseBlock(deter, hidden, norm), DenseBlock(hidden, hidden, norm),
                                       Linear(hidden, stoch * classes))
        self.post_net = nn.Sequential(DenseBlock(deter + embed_dim, hidden, norm), Linear(hidden, stoch * classes))
        #: steps per :meth:`observe_steps` call in :meth:`observe`; 0 = the whole sequence in one call (eager).
        self.observe_chunk = 0
        #: on CPU, run :meth:`observe` in fp32 even under autocast (``precision=bf16`` sets it): its ``B``-row
        #: filter steps are too small for bf16 matmuls to pay off on CPU (``docs/benchmarks.md``).
        self.observe_fp32_on_cpu = False

    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        """Zero state for ``batch`` sequences (reference code's initial state)."""
        return {"deter": torch.zeros(batch, self.deter, device=device),
                "stoch": torch.zeros(batch, self.stoch, self.classes, device=device),
                "logits": torch.zeros(batch, self.stoch, self.classes, device=device)}

    def features(self, state: State) -> Tensor:
        """``(..., D + S*K)`` model features of a state."""
        return torch.cat([state["deter"], einops.rearrange(state["stoch"], "... s k -> ... (s k)")], -1)

    def _dist(self, logits: Tensor) -> OneHotCategorical:
        logits = einops.rearrange(logits.to(torch.float32), "... (s k) -> ... s k", s=self.stoch)
        return OneHotCategorical(logits, self.unimix)

    def entropy(self, state: State) -> Tensor:
        """``(...)`` entropy of the latent distribution a state was drawn from, nats summed over ``S``."""
        return -(state["logits"].exp() * state["logits"]).sum((-2, -1))

    def core(self, deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
        """One block-GRU step ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})``: ``(B, D), (B, S, K), (B, A) -> (B, D)``."""
        action = action / action.abs().clamp(min=1.0).detach()
        x = torch.cat([self.dynin_deter(deter), self.dynin_stoch(stoch.flatten(-2)), self.dynin_action(action)], -1)
        g = self.blocks
        x = einops.repeat(x, "b h -> b g h", g=g)
        x = torch.cat([einops.rearrange(deter, "b (g d) -> b g d", g=g), x], -1)
        x = einops.rearrange(x, "b g h -> b (g h)")
        x = torch.nn.functional.silu(self.dynhid_norm(self.dynhid(x)))
        x = einops.rearrange(self.dyngru(x), "b (g three d) -> b g three d", g=g, three=3)
        reset, cand, update = (einops.rearrange(x[:, :, i], "b g d -> b (g d)") for i in range(3))
        reset = torch.sigmoid(reset.to(torch.float32))  # the recurrent state stays fp32 under autocast
        cand = torch.tanh(reset * cand.to(torch.float32))
        update = torch.sigmoid(update.to(torch.float32) - 1.0)
        return update * cand + (1.0 - update) * deter.to(torch.float32)

    def img_step(self, state: State, action: Tensor, sample: bool = True) -> State:
        """Prior step p(z_t | h_t): ``state`` at t-1 and ``(B, A)`` action a_{t-1} -> prior state at t."""
        deter = self.core(state["deter"], state["stoch"], action)
        dist = self._dist(self.prior_net(deter))
        return {"deter": deter, "stoch": dist.sample() if sample else dist.mode(), "logits": dist.logits}

    def obs_step(self, state: State, action: Tensor, embed: Tensor, is_first: Tensor) -> tuple[State, State]:
        """Posterior step q(z_t | h_t, x_t).

        Args:
            state: posterior state at t-1 (batch ``B``).
            action: ``(B, A)`` action a_{t-1}.
            embed: ``(B, E)`` encoder embedding of x_t.
            is_first: ``(B,)`` bool/float; where set, state and action are reset to zeros first.

        Returns:
            ``(post, prior)`` states at t.
        """
        keep = (1.0 - is_first.to(embed.dtype)).unsqueeze(-1)
        state = {"deter": state["deter"] * keep, "stoch": state["stoch"] * keep.unsqueeze(-1),
                 "logits": state["logits"]}
        action = action * keep
        prior = self.img_step(state, action)
        logits = self.post_net(torch.cat([prior["deter"], embed], -1))
        dist = self._dist(logits)
        post = {"deter": prior["deter"], "stoch": dist.sample(), "logits": dist.logits}
        return post, prior

    def observe(self, embed: Tensor, prev_action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Filter a batch of sequences.

        Args:
            embed: ``(B, T, E)`` embeddings.
            prev_action: ``(B, T, A)`` action preceding each step (a_{t-1}).
            is_first: ``(B, T)`` episode starts.
            state: optional initial state (batch ``B``); zeros if None.

        Returns:
            ``(post, prior)``, dicts of ``(B, T, ...)`` tensors (fp32 when :attr:`observe_fp32_on_cpu` applies).
        """
        kind = embed.device.type
        if self.observe_fp32_on_cpu and kind == "cpu" and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                state = None if state is None else {k: v.to(torch.float32) for k, v in state.items()}
                return self.observe(embed.to(torch.float32), prev_action.to(torch.float32), is_first, state)
        b, t = embed.shape[:2]
        if state is None:
            state = self.initial(b, embed.device)
        step = self.observe_chunk or t  # 0: the whole sequence in one observe_steps call
        if step < t:
            state = chunk_start(state)
        posts, priors = [], []
        for i in range(0, t, step):
            state, post, prior = self.observe_steps(state, prev_action[:, i:i + step], embed[:, i:i + step],
                                                    is_first[:, i:i + step])
            posts.append(post)
            priors.append(prior)
        if len(posts) == 1:
            return posts[0], priors[0]
        return ({k: torch.cat([p[k] for p in posts], 1) for k in posts[0]},
                {k: torch.cat([p[k] for p in priors], 1) for k in priors[0]})

    def observe_steps(self, state: State, prev_action: Tensor, embed: Tensor,
                      is_first: Tensor) -> tuple[State, State, State]:
        """:meth:`obs_step` over the ``K`` steps of a chunk: ``(B, K, ...)`` inputs -> ``(last_post, post, prior)``
        with the last posterior state ``(B, ...)`` and the chunk's ``(B, K, ...)`` posterior and prior states
        (the unit ``compile=on`` compiles as one graph, :attr:`observe_chunk`)."""
        posts, priors = [], []
        for i in range(embed.shape[1]):
            state, prior = self.obs_step(state, prev_action[:, i], embed[:, i], is_first[:, i])
            posts.append(state)
            priors.append(prior)
        stack = lambda seq: {k: torch.stack([s[k] for s in seq], 1) for k in seq[0]}  # noqa: E731
        return state, stack(posts), stack(priors)

    def kl_loss(self, post: State, prior: State, free_nats: float) -> tuple[Tensor, Tensor, Tensor]:
        """KL balancing with free bits (DreamerV3 Eq. 5).

        Returns:
            ``(dyn, rep, kl)``, each ``(...)``: ``dyn = max(free, KL(sg(post) || prior))``,
            ``rep = max(free, KL(post || sg(prior)))`` and the raw KL (nats, summed over the ``S`` latents).
        """
        dyn = categorical_kl(post["logits"].detach(), prior["logits"])
        rep = categorical_kl(post["logits"], prior["logits"].detach())
        return dyn.clamp(min=free_nats), rep.clamp(min=free_nats), dyn.detach()
