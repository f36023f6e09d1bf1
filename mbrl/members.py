"""Seeds as a batch: ``E`` independent DreamerV3 agents (one per seed) trained by one update.

Every trainable tensor of the ``E`` member agents is stacked along a leading *member* dimension (``(E, ...)``),
and each member's :class:`~mbrl.agent.Agent` keeps its own parameters, buffers and optimiser moments as views of
row ``e`` of those stacks (:meth:`MemberBatch.bind`). So a member acts, is checkpointed and is evaluated exactly as
a single agent is, while an update runs the losses of all members at once with :func:`torch.func.vmap` over
:func:`torch.func.functional_call` of one template agent (measured against hand-batched layers in
``docs/implementation.md``: the same per-member cost within 10 % on size1m state, and members stay independent by
construction), then one optimiser step on the stacks.

Nothing flows between members:

- each member's weights start from its own seed (built after ``torch.manual_seed(seed)``, as a single run);
- the losses are computed per member by ``vmap`` (every mean, percentile and norm is a member's own); the summed
  loss's backward gives each member's stacked gradient row only its own loss's gradient;
- :class:`MemberOptimizer` clips (AGC per member and tensor, as the reference's ``clip_by_agc``), checks
  finiteness and skips the update per member: a NaN in member 1 leaves member 0's step untouched and member 1's
  weights and moments as they were (as :class:`mbrl.optim.Optimizer` does for one agent);
- return normaliser, slow critic and optimiser state are stacked per member;
- replay, envs, evaluation and checkpoints are per member (:mod:`mbrl.runs.train_members`).

Where we differ from ``E`` separate runs: the update's random draws (latent and policy samples) come from one
torch generator, drawn per member (``vmap(randomness="different")``), so member ``e``'s draws depend on the batch
it is in; each member's replay sampling, envs and acting are seeded from its own seed. With ``E = 1`` an update
gives the single agent's losses on the same batch and RNG state (``tests/test_members.py``).

``compile=on``: the filter (chunks of :data:`mbrl.agent.OBSERVE_CHUNK` steps), the imagination rollout and the
critic's and actor's loss halves each run as ``torch.compile(vmap(...))`` (one graph per region for all members);
the member agents' own compiled acting paths are those of a single agent.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import einops
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from encoders.registry import resolve_mode, split_name
from envs.errors import ConfigError
from mbrl.actor_critic import episode_last
from mbrl.agent import OBSERVE_CHUNK, Agent, compile_regions, use_inductor_cache
from mbrl.config import Config
from mbrl.graphs import GraphedUpdates, graphs_enabled
from mbrl.optim import AGC_PMIN, LaProp
from mbrl.rssm import chunk_start
from mbrl.runtime import resolve_device
from mbrl.world_model import context_state

# ops without a vmap batching rule yet run per member under vmap (same values), and torch says so on every call
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the "
                        "batching rule")

#: encoders whose backbone may train inside a batch of seeds (pretrained backbones must be frozen: partial or full
#: fine-tuning runs one seed per process)
_TRAINABLE_ENCODERS = ("cnn",)


def check_members(cfg: Config, seeds: list[int]) -> None:
    """Refuse what a batch of seeds does not support, before anything is built or written.

    Raises:
        ConfigError: an empty list, a duplicate or negative seed, ``optim.name=adam`` (the batched optimiser is
            LaProp, the reference's), or a pretrained encoder that is fine-tuned (partial/full/adapter/LoRA).
    """
    check_seed_list(seeds)
    if cfg.optim.name != "laprop":
        raise ConfigError(f"seeds=[...] trains with the batched LaProp optimiser; optim.name={cfg.optim.name} "
                          f"(algo=dreamerv3_2023) runs one seed per process: use seed=N")
    if "pixels" in cfg.obs and split_name(cfg.encoder)[0] not in _TRAINABLE_ENCODERS:
        mode = resolve_mode(cfg)
        if mode != "frozen":
            raise ConfigError(f"seeds=[...] with encoder={cfg.encoder} needs encoder_mode=frozen (got {mode}); a "
                              f"fine-tuned pretrained backbone trains one seed per process: use seed=N")


def check_seed_list(seeds: list[int]) -> None:
    """Refuse an empty list, a duplicate or a negative seed (one :class:`ConfigError` line)."""
    if not seeds:
        raise ConfigError("seeds=[] is empty; give one or more distinct seeds, e.g. seeds=[0,1,2,3]")
    if len(set(seeds)) != len(seeds):
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(f"seeds lists {dup[0]} twice; every member needs its own seed, e.g. seeds=[0,1,2,3]")
    if min(seeds) < 0:
        raise ConfigError(f"seeds holds {min(seeds)}; seeds must be >= 0")


class _Bound(nn.Module):
    """``forward(*args) = fn(agent, *args)``: lets :func:`functional_call` run any method of the template agent."""

    def __init__(self, agent: Agent, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.agent = agent
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.agent, *args)


def _stack_key(name: str, tensor: Tensor, is_param: bool) -> bool:
    """Whether a member tensor is stacked: every trainable parameter, the slow critic and the members' persistent
    buffers outside a (frozen, shared) encoder backbone."""
    if is_param:
        return tensor.requires_grad or name.startswith("ac.slow_critic.")
    return not name.startswith("wm.encoder.")


class MemberOptimizer:
    """LaProp with per-member adaptive gradient clipping, global-norm clipping, warm-up and non-finite skips, on
    stacked ``(E, ...)`` parameters; the batched form of :class:`mbrl.optim.Optimizer` (LaProp only).

    Per member ``e`` it computes exactly what that optimiser computes for one agent: the per-tensor gradient norms
    ``|g[e]|`` and the global norm over its tensors, AGC ``g *= 1 / max(1, |g| / (agc * max(pmin, |p|)))``
    (Brock et al. 2021, Sec. 4, tensor-wise as DreamerV3's ``clip_by_agc``), and the LaProp step (Ziyin et al.
    2020, Alg. 1) with bias correction; a member whose global norm is NaN/inf gets no step (weights and moments
    unchanged) and is counted in its own flags.

    Args:
        groups: ``[(names, lr), ...]`` names of ``stacked`` to update with each learning rate.
        stacked: the member batch's stacked tensors (``(E, ...)``, leaves that require grad).
        members: the member agents' :class:`mbrl.optim.Optimizer` objects of this part (``wm_opt``, ...), one per
            member, whose state this optimiser keeps as views (for checkpoints) and whose flags it updates.
        parts: ``{module name: names}`` whose gradient norms are reported per member (``part_norms``).
    """

    def __init__(self, groups: list[tuple[list[str], float]], stacked: dict[str, Tensor], members: list[Any],
                 eps: float, betas: tuple[float, float], agc: float, clip: float, warmup: int,
                 parts: dict[str, list[str]] | None = None) -> None:
        self.groups = [(names, lr) for names, lr in groups if names]
        self.names = [n for names, _ in self.groups for n in names]
        self.stacked, self.members = stacked, members
        self.eps, self.betas, self.agc, self.clip, self.warmup = eps, betas, agc, clip, warmup
        self.parts = parts or {}
        self.part_norms: dict[str, Tensor] = {}
        self.updates = 0
        self.step_count = 0
        self.m: dict[str, Tensor] = {}
        self.v: dict[str, Tensor] = {}
        # the update counter and LaProp's step on the device too, so that a CUDA graph replays fresh updates
        self._n = torch.zeros((), dtype=torch.int64)
        self._t = torch.zeros((), dtype=torch.float64)
        self.nonfinite_count = torch.zeros(len(members), dtype=torch.int64)
        self.frozen = torch.zeros(len(members), dtype=torch.bool)  # stopped members: never stepped again
        self.first_nonfinite = torch.full((len(members),), -1, dtype=torch.int64)

    def bind(self, member_params: list[dict[str, nn.Parameter]]) -> None:
        """Take the moments and counters from the member optimisers (fresh or loaded from checkpoints) into
        stacks, and give each member views of them: after this the members' ``state_dict`` is this optimiser's."""
        self.updates = self.members[0].updates
        steps = set()
        for opt, params in zip(self.members, member_params, strict=True):
            if opt.opt is not None and not isinstance(opt.opt, LaProp):
                raise ConfigError("seeds=[...] needs optim.name=laprop")
            if opt.updates != self.updates:
                raise ConfigError(f"the members' optimisers are at different updates ({opt.updates} vs "
                                  f"{self.updates}); resume each member as its own run")
            for n in self.names:
                st = opt.opt.state.get(params[n], {}) if opt.opt is not None else {}
                steps.add(int(st.get("step", 0)))
        if len(steps) > 1:
            raise ConfigError(f"the members' optimiser steps differ ({sorted(steps)}); resume each member alone")
        self.step_count = steps.pop() if steps else 0
        for n in self.names:
            zeros = torch.zeros_like(self.stacked[n])
            ms, vs = [], []
            for opt, params in zip(self.members, member_params, strict=True):
                st = opt.opt.state.get(params[n], {}) if opt.opt is not None else {}
                ms.append(st.get("m"))
                vs.append(st.get("v"))
            self.m[n] = torch.stack([zeros[i] if x is None else x.detach().to(zeros) for i, x in enumerate(ms)])
            self.v[n] = torch.stack([zeros[i] if x is None else x.detach().to(zeros) for i, x in enumerate(vs)])
        counts = [opt.nonfinite_count for opt in self.members]
        dev = next(iter(self.stacked.values())).device
        self.nonfinite_count = self.nonfinite_count.to(dev)
        self.frozen = self.frozen.to(dev)
        self._n = torch.full((), self.updates, dtype=torch.int64, device=dev)
        self._t = torch.full((), float(self.step_count), dtype=torch.float64, device=dev)
        self.first_nonfinite = self.first_nonfinite.to(dev)
        if all(c is not None for c in counts):
            self.nonfinite_count = torch.stack([c.to(dev) for c in counts])
            self.first_nonfinite = torch.stack([opt.first_nonfinite.to(dev) for opt in self.members])
        self._publish(member_params)

    def _publish(self, member_params: list[dict[str, nn.Parameter]]) -> None:
        """Point each member optimiser's state at its rows of the stacks (views) and its flags at its counters."""
        for e, (opt, params) in enumerate(zip(self.members, member_params, strict=True)):
            opt.updates = self.updates
            opt.nonfinite_count = self.nonfinite_count[e]
            opt.first_nonfinite = self.first_nonfinite[e]
            if opt.opt is None or not self.step_count:
                continue
            for n in self.names:
                opt.opt.state[params[n]] = {"step": self.step_count, "m": self.m[n][e], "v": self.v[n][e]}

    def host_step(self, member_params: list[dict[str, nn.Parameter]]) -> None:
        """Advance the host's counters for an update a CUDA graph replayed (:mod:`mbrl.graphs`)."""
        self.updates += 1
        self.step_count += 1
        self._publish(member_params)

    def zero_grad(self) -> None:
        for n in self.names:
            self.stacked[n].grad = None

    def step(self, loss: Tensor, member_params: list[dict[str, nn.Parameter]]) -> Tensor:
        """Backpropagate the ``(E,)`` member losses (summed: each member's gradient is its own), clip and update
        each member. Returns the ``(E,)`` global gradient norms before clipping (NaN/inf: that member skipped)."""
        self.zero_grad()
        loss.sum().backward()
        return self.update(member_params)

    @torch.no_grad()
    def update(self, member_params: list[dict[str, nn.Parameter]]) -> Tensor:
        """:meth:`step` from the gradients already in the stacks' ``.grad``."""
        self.updates += 1
        self._n.add_(1)
        names = [n for n in self.names if self.stacked[n].grad is not None]
        e = self.nonfinite_count.shape[0]
        if not names:
            self._publish(member_params)
            return torch.zeros(e, device=self.nonfinite_count.device)
        grads = [self.stacked[n].grad for n in names]
        norms = {n: torch.linalg.vector_norm(g.flatten(1).float(), dim=1) for n, g in zip(names, grads, strict=True)}
        table = torch.stack([norms[n] for n in names])  # (tensors, E)
        norm = torch.linalg.vector_norm(table, dim=0)  # (E,)
        self.part_norms = {part: torch.linalg.vector_norm(torch.stack([norms[n] for n in ns if n in norms]), dim=0)
                           for part, ns in self.parts.items() if any(n in norms for n in ns)}
        found = ~torch.isfinite(norm) & ~self.frozen
        self.first_nonfinite = torch.where(found & (self.nonfinite_count == 0), self._n, self.first_nonfinite)
        self.nonfinite_count = self.nonfinite_count + found
        scale = torch.ones_like(table)
        if self.agc > 0:
            pnorm = torch.stack([torch.linalg.vector_norm(self.stacked[n].detach().flatten(1).float(), dim=1)
                                 for n in names])
            scale = 1.0 / torch.clamp(table / (self.agc * torch.clamp(pnorm, min=AGC_PMIN)), min=1.0)
        if self.clip > 0:
            scale = scale * torch.clamp(self.clip / (norm + 1e-6), max=1.0)
        self.step_count += 1
        self._t.add_(1.0)
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - torch.pow(b1, self._t), 1.0 - torch.pow(b2, self._t)
        lr_scale = torch.clamp(self._n.to(torch.float32) / self.warmup, max=1.0) if self.warmup > 0 else 1.0
        group_of = {n: lr for ns, lr in self.groups for n in ns}
        for i, (n, g) in enumerate(zip(names, grads, strict=True)):
            shape = (e,) + (1,) * (g.ndim - 1)
            skip = (found | self.frozen).view(shape)
            g = torch.where(skip, 0.0, g * scale[i].to(g.dtype).view(shape))
            p, m, v = self.stacked[n], self.m[n], self.v[n]
            v.mul_(torch.where(skip, 1.0, b2)).addcmul_(g, g, value=1 - b2)
            denom = (v / bc2).sqrt_().add_(self.eps)
            m.mul_(torch.where(skip, 1.0, b1)).addcdiv_(g, denom, value=1 - b1)
            p.add_(torch.where(skip, 0.0, m) * (-group_of[n] * lr_scale / bc1))
        self._publish(member_params)
        return norm

    def flags(self) -> tuple[Tensor, Tensor]:
        """``(nonfinite_count, first_nonfinite)``, each ``(E,)`` int64: updates skipped per member and the first
        one's number (1-based; -1 if none)."""
        return self.nonfinite_count, self.first_nonfinite


class MemberBatch(GraphedUpdates):
    """``E`` DreamerV3 agents, one per seed, updated together (module docstring).

    Args:
        cfg: the shared configuration (its ``seed`` is ignored: member ``e`` gets ``seeds[e]``).
        seeds: the members' seeds (distinct, >= 0).
        action_dim, state_dim: as :class:`mbrl.agent.Agent`.
        device: where the members live.

    Attributes:
        members: the ``E`` member agents (act, evaluate and checkpoint each like a single agent).
        stacked: ``{agent tensor name: (E, ...) tensor}``, the members' trainable weights, slow critic and buffers.

    Raises:
        ConfigError: what :func:`check_members` refuses.
    """

    def __init__(self, cfg: Config, seeds: list[int], action_dim: int, state_dim: int = 0,
                 device: torch.device | str = "cpu") -> None:
        check_members(cfg, seeds)
        self.cfg, self.seeds = cfg, list(seeds)
        self.members: list[Agent] = []
        for s in seeds:
            torch.manual_seed(s)
            self.members.append(Agent(dataclasses.replace(cfg, seed=s), action_dim, state_dim).to(device))
        with torch.random.fork_rng(devices=[]):  # the template's init draws do not move the members' streams
            self.template = Agent(dataclasses.replace(cfg, compile="off"), action_dim, state_dim).to(device)
        self.template.requires_grad_(False)
        self.action_dim, self.state_dim = action_dim, state_dim
        self.stacked: dict[str, Tensor] = {}
        self._member_tensors: list[dict[str, Tensor]] = []
        self._build_optimizers()
        self.bind()
        self._regions: dict[str, Callable[..., Any]] = {}
        # compile=on: which of the update's regions run compiled (all on CUDA; on CPU those that pay off)
        self._compiled = set(compile_regions(resolve_device(cfg.device))) if cfg.compile == "on" else set()
        if self._compiled:
            use_inductor_cache()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    # --- stacking ---------------------------------------------------------------------------------------------

    def _names(self) -> tuple[list[str], list[str]]:
        agent = self.members[0]
        others = [dict(m.named_parameters()) for m in self.members[1:]]
        # frozen weights are shared unless the members' differ (a seed-initialised random encoder, random-cnn)
        params = [n for n, p in agent.named_parameters() if _stack_key(n, p, True)
                  or any(not torch.equal(p, o[n]) for o in others)]
        buffers = [n for n, b in agent.named_buffers() if _stack_key(n, b, False)]
        return params, buffers

    def _build_optimizers(self) -> None:
        params, _ = self._names()
        a = self.members[0]

        def names_of(opt: Any) -> list[tuple[list[str], float]]:
            ids = {id(p): n for n, p in a.named_parameters()}
            return [([ids[id(p)] for p in g["params"]], g["base_lr"]) for g in opt.opt.param_groups] if opt.opt \
                else []

        o = self.cfg.optim
        betas = (o.beta1, o.beta2)
        ids = {id(p): n for n, p in a.named_parameters()}
        parts = {part: [ids[id(p)] for p in ps if p.requires_grad] for part, ps in a.wm_opt.parts.items()}
        self.wm_opt = MemberOptimizer(names_of(a.wm_opt), self.stacked, [m.wm_opt for m in self.members], o.eps,
                                      betas, o.agc, o.clip, o.warmup, parts)
        self.actor_opt = MemberOptimizer(names_of(a.actor_opt), self.stacked, [m.actor_opt for m in self.members],
                                         o.ac_eps, betas, o.agc, o.ac_clip, o.warmup)
        self.critic_opt = MemberOptimizer(names_of(a.critic_opt), self.stacked,
                                          [m.critic_opt for m in self.members], o.ac_eps, betas, o.agc, o.ac_clip,
                                          o.warmup)

    def bind(self) -> None:
        """Stack the members' current tensors and optimiser state (after building, or after loading member
        checkpoints) and make each member's parameters, buffers and moments views of its rows."""
        params, buffers = self._names()
        self.stacked.clear()
        per_member = [dict(m.named_parameters()) for m in self.members]
        per_member_buf = [dict(m.named_buffers()) for m in self.members]
        for n in params:
            rows = [d[n].detach() for d in per_member]
            self.stacked[n] = torch.stack(rows).requires_grad_(per_member[0][n].requires_grad)
        for n in buffers:
            self.stacked[n] = torch.stack([d[n].detach() for d in per_member_buf])
        for e, m in enumerate(self.members):
            for n in params:
                per_member[e][n].data = self.stacked[n].data[e]
            for n in buffers:
                owner, _, leaf = n.rpartition(".")
                m.get_submodule(owner)._buffers[leaf] = self.stacked[n][e]
        self._params = per_member
        for opt in (self.wm_opt, self.actor_opt, self.critic_opt):
            opt.stacked = self.stacked
            opt.bind(per_member)

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """The stacked tensors whose names start with ``prefix``, keyed for :func:`functional_call` of a
        :class:`_Bound` template (``agent.<name>``)."""
        return {f"agent.{n}": t for n, t in self.stacked.items() if n.startswith(prefix)}

    # --- the update -------------------------------------------------------------------------------------------

    def _region(self, name: str, fn: Callable[..., Any], in_dims: Any = 0, compile: str | None = None) -> Callable:
        """``vmap`` over members of ``fn(template_agent, *args)`` with the stacked tensors as the first argument,
        ``torch.compile``'d when ``compile`` names one of :data:`mbrl.agent.COMPILE_REGIONS` that ``compile=on``
        compiles on this device (:func:`mbrl.agent.compile_regions`); cached per name."""
        if name not in self._regions:
            bound = _Bound(self.template, fn)

            def call(tensors: dict[str, Tensor], *args: Any) -> Any:
                return functional_call(bound, tensors, args, strict=False)

            region = vmap(call, in_dims=in_dims, randomness="different")
            if compile in self._compiled:
                region = torch.compile(region, dynamic=False)
            self._regions[name] = region
        return self._regions[name]

    def _observe(self, tensors: dict[str, Tensor], embed: Tensor, prev_action: Tensor, is_first: Tensor,
                 state: dict[str, Tensor] | None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The members' posterior filter (:meth:`mbrl.rssm.RSSM.observe`) on ``(E, B, T, ...)`` inputs, in chunks of
        :data:`mbrl.agent.OBSERVE_CHUNK` steps with ``compile=on`` (each chunk one compiled graph for all members)."""
        rssm = self.template.wm.rssm
        kind = embed.device.type
        if rssm.observe_fp32_on_cpu and kind == "cpu" and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                state = None if state is None else {k: v.to(torch.float32) for k, v in state.items()}
                return self._observe(tensors, embed.to(torch.float32), prev_action.to(torch.float32), is_first,
                                     state)
        e, b, t = embed.shape[:3]
        if state is None:
            state = {k: einops.repeat(v, "b ... -> e b ...", e=e) for k, v in rssm.initial(b, embed.device).items()}
        step = OBSERVE_CHUNK if "observe" in self._compiled else t
        if step < t:
            state = chunk_start(state)  # one compiled graph for every chunk
        chunk = self._region("observe", lambda a, s, pa, em, f: a.wm.rssm.observe_steps(s, pa, em, f),
                             compile="observe")
        posts, priors = [], []
        for i in range(0, t, step):
            state, post, prior = chunk(tensors, state, prev_action[:, :, i:i + step], embed[:, :, i:i + step],
                                       is_first[:, :, i:i + step])
            posts.append(post)
            priors.append(prior)
        if len(posts) == 1:
            return posts[0], priors[0]
        return ({k: torch.cat([p[k] for p in posts], 2) for k in posts[0]},
                {k: torch.cat([p[k] for p in priors], 2) for k in priors[0]})

    def _wm_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``(E,)`` world-model losses, ``(E, B, T, ...)`` posteriors and ``(E,)`` metrics (vmapped
        :meth:`mbrl.world_model.WorldModel.loss`, its filter as :meth:`_observe`)."""
        wm = self.tensors("wm.")
        inputs = self._region("filter_inputs", lambda a, d: a.wm.filter_inputs(d)[:2])
        embed, prev_action = inputs(wm, batch)
        state = context_state(batch) if "start_deter" in batch else None  # elementwise: members stay apart
        post, prior = self._observe(wm, embed, prev_action, batch["is_first"], state)
        terms = self._region("loss_terms", lambda a, d, po, pr: a.wm.loss_terms(d, po, pr))
        loss, metrics = terms(wm, batch, post, prior)
        return loss, post, metrics

    def train_step(self, batch: dict[str, Tensor], out: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One update of every member on its own replay batch: :meth:`mbrl.agent.Agent.train_step` per member.

        Args:
            batch: the members' batches stacked: each entry ``(E, B, T, ...)`` (layout of :mod:`mbrl.world_model`).
            out: if given, receives ``deter`` ``(E, B, T, D)`` and ``stoch`` ``(E, B, T, S, C)`` (replay context).

        Returns:
            metrics as detached ``(E,)`` tensors (row ``e``: member ``e``'s value of the single agent's metric).
        """
        for m in (*self.members, self.template):
            m.train()
        agent, lcfg = self.template, self.cfg.loss
        with agent.autocast():
            wm_loss, post, metrics = self._wm_loss(batch)
        if out is not None:
            out["deter"], out["stoch"] = post["deter"].detach(), post["stoch"].detach()
        joint = lcfg.repval > 0 and lcfg.repval_grad
        if not joint:
            metrics["wm/grad_norm"] = self.wm_opt.step(wm_loss, self._params)
        start = {k: einops.rearrange(v.detach(), "e b t ... -> e (b t) ...") for k, v in post.items()}
        start_cont = einops.rearrange(1.0 - batch["is_terminal"].to(torch.float32), "e b t -> e (b t)")
        horizon = lcfg.imag_horizon
        everything = self.tensors()
        with agent.autocast():
            if lcfg.actor_grad == "backprop":
                loss_all = self._region("ac_backprop", lambda a, s, c: _imagine_and_loss(a, s, c, horizon))
                actor_loss, critic_loss, ac_metrics, ret = loss_all(everything, start, start_cont)
            else:
                imagine = self._region("imagine", lambda a, s, c: a.ac.imagine(a.wm, s, c, horizon),
                                       compile="imagine")
                with torch.no_grad():
                    traj = imagine(everything, start, start_cont)
                feat, weight = traj["feat"].detach(), traj["weight"]
                critic = self._region("critic_terms", lambda a, f, r, c, w: a.ac.critic_terms(f, r, c, w),
                                      compile="losses")
                critic_loss, ret, adv, ac_metrics = critic(everything, feat, traj["reward"].detach(),
                                                           traj["cont"].detach(), weight)
                actor = self._region("actor_terms", lambda a, f, act, ad, w: a.ac.actor_terms(f, act, ad, w),
                                     compile="losses")
                actor_loss, actor_metrics = actor(everything, feat[:, :-1], traj["action"][:, :-1].detach(), adv,
                                                  weight[:, :-1])
                ac_metrics.update(actor_metrics)
            if lcfg.repval > 0:
                b = batch["reward"].shape[1]
                boot = einops.rearrange(ret[:, 0], "e (b t) -> e b t", b=b)
                last = episode_last({k: einops.rearrange(v, "e b t -> (e b) t") for k, v in batch.items()
                                     if k in ("is_first", "is_terminal", "is_last")})
                last = einops.rearrange(last, "(e b) t -> e b t", b=b)
                # compiled only without repval_grad: joint, its two losses come out of one compiled graph that
                # the world model's step and then the critic's would each backpropagate through (the second fails)
                repval = self._region(f"repval{int(joint)}", lambda a, f, r, term, la, bo: _repval(
                    a, f, r, term, la, bo, joint), compile=None if joint else "losses")
                rv_critic, rv_wm, rv_metrics = repval(everything, post, batch["reward"], batch["is_terminal"], last,
                                                      boot)
                critic_loss = critic_loss + lcfg.repval * rv_critic
                ac_metrics.update(rv_metrics)
        metrics.update(ac_metrics)
        metrics["ac/actor_grad_norm"] = self.actor_opt.step(actor_loss, self._params)
        if joint:
            metrics["wm/grad_norm"] = self.wm_opt.step(wm_loss + lcfg.repval * rv_wm, self._params)
        metrics["ac/critic_grad_norm"] = self.critic_opt.step(critic_loss, self._params)
        metrics.update({f"wm/grad_norm/{name}": n for name, n in self.wm_opt.part_norms.items()})
        self._update_slow_critic()
        return metrics

    def wants_graphs(self) -> bool:
        """Whether :meth:`update` captures the members' update as one CUDA graph (:mod:`mbrl.graphs`)."""
        return graphs_enabled(self.cfg.cuda_graphs, self.cfg.compile, self.device)

    def host_step(self) -> None:
        """Advance the host counters of the three optimisers after a replayed update."""
        for opt in (self.wm_opt, self.actor_opt, self.critic_opt):
            opt.host_step(self._params)

    @torch.no_grad()
    def _update_slow_critic(self) -> None:
        """Each member's ``slow <- (1 - rate) * slow + rate * critic`` on the stacks."""
        rate = self.cfg.loss.slow_rate
        for n, slow in self.stacked.items():
            if n.startswith("ac.slow_critic."):
                slow.lerp_(self.stacked["ac.critic." + n[len("ac.slow_critic."):]], rate)

    def stop(self, e: int) -> None:
        """Never step member ``e`` again (it diverged): its rows stay in the batch, its weights as they are."""
        for opt in (self.wm_opt, self.actor_opt, self.critic_opt):
            opt.frozen[e] = True

    def nonfinite(self) -> list[tuple[str, int] | None]:
        """Per member: None, or ``(module, update)`` of its first non-finite loss or gradient (reads the device)."""
        out: list[tuple[str, int] | None] = [None] * self.size
        for name, opt in (("world model", self.wm_opt), ("actor", self.actor_opt), ("critic", self.critic_opt)):
            count, first = opt.flags()
            for e, (c, f) in enumerate(zip(count.tolist(), first.tolist(), strict=True)):
                if c and out[e] is None:
                    out[e] = (name, f)
        return out


def _imagine_and_loss(agent: Agent, start: dict[str, Tensor], start_cont: Tensor,
                      horizon: int) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
    """``actor_grad=backprop``: imagination with gradients and the actor-critic loss of one member."""
    traj = agent.ac.imagine(agent.wm, start, start_cont, horizon)
    actor_loss, critic_loss, metrics = agent.ac.loss(traj)
    return actor_loss, critic_loss, metrics, traj["ret"]


def _repval(agent: Agent, post: dict[str, Tensor], reward: Tensor, is_terminal: Tensor, is_last: Tensor,
            boot: Tensor, joint: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One member's :meth:`mbrl.actor_critic.ActorCritic.repval_loss` (its world-model copy a zero when not
    ``joint``: ``vmap`` returns tensors only)."""
    critic, wm, metrics = agent.ac.repval_loss(agent.wm.rssm.features(post), reward, is_terminal, is_last, boot,
                                               wm_grad=joint)
    return critic, wm if wm is not None else torch.zeros_like(critic), metrics


def stack_batches(batches: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The members' replay batches as one: every entry ``(E, ...)`` (each batch's keys must agree)."""
    return {k: torch.stack([b[k] for b in batches]) for k in batches[0]}


def member_metrics(history: list[dict[str, Tensor]], e: int) -> list[dict[str, Tensor]]:
    """Member ``e``'s metrics of each update (row ``e`` of every ``(E,)`` metric)."""
    return [{k: v[e] for k, v in m.items()} for m in history]
