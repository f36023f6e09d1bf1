"""The DreamerV3 agent: world model + actor-critic + optimisers, one training update and the acting policy.

Speed settings (``cfg.precision``, ``cfg.compile``):

- ``precision=bf16``: the forward passes of an update run under ``torch.autocast`` with bfloat16 (CPU and CUDA);
  weights, gradients and optimiser state stay fp32, and distributions, KL, two-hot, lambda-returns and return
  statistics are computed from fp32 casts. On CPU the world model's filter (:meth:`mbrl.rssm.RSSM.observe`, ``B``
  rows per step) stays fp32: bf16 matmuls that small are slower there than fp32 ones.
- ``compile=on``: ``torch.compile`` (static shapes, :meth:`Agent.compile_steps`) of the regions of
  :data:`COMPILE_REGIONS`: the RSSM's observe and imagine steps and the MLP heads (``steps``: acting, other
  callers), the world model's observe loop in chunks of :data:`OBSERVE_CHUNK` filter steps (``observe``: forward
  and backward, one graph per chunk) and, with REINFORCE actor gradients (the default), the whole no-grad
  imagination rollout (``imagine``: ``H`` policy samples and prior steps, reward and continue heads) and the
  critic's and the actor's halves of the actor-critic loss (``losses``:
  :meth:`mbrl.actor_critic.ActorCritic.critic_terms` / ``actor_terms``, their backward passes through
  AOTAutograd). All four on CUDA, :data:`CPU_COMPILE_REGIONS` on a CPU. Sampling inside compiled code (the
  latents' categoricals, the policy's Normal) draws from
  inductor's own random stream (seeded from torch's generator), not eager's, so a compiled run is reproducible
  with itself but does not repeat an eager run's draws; ``compile=off`` is unchanged. The inductor cache lives in
  ``$TORCHINDUCTOR_CACHE_DIR`` (default ``~/.cache/dreamshift/inductor``), so a second trial or a resumed run
  skips most of the compile.
- Metrics stay on the device as 0-d tensors; the caller fetches them at log steps, so an update does not wait
  for the device.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import einops
import torch
from torch import Tensor, nn

from encoders.registry import build_encoder
from envs.errors import ConfigError
from mbrl.actor_critic import ActorCritic, episode_last
from mbrl.config import POLICY_MODES, Config
from mbrl.graphs import GraphedUpdates, graphs_enabled
from mbrl.optim import NonFiniteError, Optimizer
from mbrl.rssm import State
from mbrl.runtime import resolve_device
from mbrl.world_model import WorldModel, check_decoder

PolicyState = tuple[State, Tensor]

#: ``compile=on``: filter steps per compiled :meth:`mbrl.rssm.RSSM.observe_steps` graph (measured on size1m state,
#: B x T 16 x 64: chunks of 4 give most of the gain of 8 for half the compile time).
OBSERVE_CHUNK = 4

#: What ``compile=on`` can compile (:meth:`Agent.compile_steps`): per-step functions and heads, the update's filter
#: chunks, the imagination rollout, the actor-critic loss halves.
COMPILE_REGIONS = ("steps", "observe", "imagine", "losses")

#: ``compile=on`` on a CPU: the regions whose compile time pays off there (``benchmarks/compile_regions.py``,
#: size1m state fp32, 1 thread, docs/benchmarks.md): with these three the update runs as fast as with all four
#: (0.925 vs 0.933 s, paired) and the cold first update takes 243-290 s instead of 520 s; ``steps`` would save
#: 1.7 ms per policy step when acting, ~42 s over a 50k-env-step run, for ~230 s more of compiling.
CPU_COMPILE_REGIONS = ("observe", "imagine", "losses")


def compile_regions(device: torch.device) -> tuple[str, ...]:
    """The regions ``compile=on`` compiles on ``device``: all of :data:`COMPILE_REGIONS` on CUDA, where every
    launch saved counts, and :data:`CPU_COMPILE_REGIONS` elsewhere."""
    return COMPILE_REGIONS if device.type == "cuda" else CPU_COMPILE_REGIONS


def use_inductor_cache() -> str:
    """Point inductor's compile cache at ``~/.cache/dreamshift/inductor`` unless ``$TORCHINDUCTOR_CACHE_DIR``
    names another (call before the first ``torch.compile``); returns the directory in use. torch's own default,
    ``/tmp/torchinductor_<user>``, does not outlive a reboot, so a resumed run would compile cold again."""
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                                 os.path.join(os.path.expanduser("~"), ".cache", "dreamshift", "inductor"))


def nonfinite_tensors(weights: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``weights`` holding a NaN or an infinity."""
    return [name for name, t in weights.items() if t.is_floating_point() and not bool(t.isfinite().all())]


def module_of(name: str) -> str:
    """The agent module a state-dict key belongs to: ``world model``, ``actor``, ``critic`` (also the slow
    critic and return normaliser), else the key's first part."""
    if name.startswith("wm."):
        return "world model"
    if name.startswith("ac.actor"):
        return "actor"
    if name.startswith("ac."):
        return "critic"
    return name.split(".", 1)[0]


class Agent(GraphedUpdates, nn.Module):
    """DreamerV3 agent for continuous actions in ``[-1, 1]^A`` and square RGB images.

    Args:
        cfg: the run's configuration (``encoder``, ``obs``, ``image_size``, ``model``, ``loss``, ``optim``).
        action_dim: ``A``.
        state_dim: ``D`` of the proprioceptive observation; required (> 0) when ``cfg.obs`` includes ``state``.

    Raises:
        ConfigError: ``cfg.obs`` includes ``state`` but ``state_dim`` is 0; ``decoder=features`` without a frozen
            encoder whose features are cached (:func:`mbrl.world_model.check_decoder`).
    """

    def __init__(self, cfg: Config, action_dim: int, state_dim: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        pixels, state = "pixels" in cfg.obs, "state" in cfg.obs
        if state and state_dim <= 0:
            raise ConfigError(f"obs={cfg.obs} needs the env's state dimension (got {state_dim})")
        check_decoder(cfg)
        self.state_dim = state_dim if state else 0
        encoder = build_encoder(cfg.encoder, image_size=cfg.image_size, cfg=cfg) if pixels else None
        if cfg.decoder == "features" and not getattr(encoder, "cacheable", False):
            raise ConfigError(f"decoder=features needs an encoder whose frozen backbone features can be cached; "
                              f"encoder {cfg.encoder} has none; use decoder=pixels")
        self.wm = WorldModel(encoder, action_dim, cfg.image_size, cfg.model, cfg.loss, self.state_dim, cfg.decoder)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, action_dim, cfg.model, cfg.loss)
        self.wm.rssm.observe_fp32_on_cpu = cfg.precision == "bf16"
        o = cfg.optim
        enc_list = encoder.encoder_parameters() if encoder is not None else []
        enc_params = {id(p) for p in enc_list}
        rest = [p for p in self.wm.parameters() if id(p) not in enc_params and p.requires_grad]
        enc_lr = o.encoder_lr if o.encoder_lr >= 0 else o.lr if cfg.encoder == "cnn" else 0.1 * o.lr
        betas = (o.beta1, o.beta2)
        self.wm_opt = Optimizer([(enc_list, enc_lr), (rest, o.lr)], o.name, o.eps, betas,
                                o.agc, o.clip, o.warmup)
        self.wm_opt.parts = {name: list(module.parameters()) for name, module in (
            ("encoder", encoder), ("state_encoder", self.wm.state_encoder), ("rssm", self.wm.rssm),
            ("decoder", self.wm.decoder), ("state_decoder", self.wm.state_decoder),
            ("reward_head", self.wm.reward_head), ("cont_head", self.wm.cont_head)) if module is not None}
        self.actor_opt = Optimizer([(list(self.ac.actor.parameters()), o.actor_lr)], o.name, o.ac_eps, betas,
                                   o.agc, o.ac_clip, o.warmup)
        self.critic_opt = Optimizer([(list(self.ac.critic.parameters()), o.critic_lr)], o.name, o.ac_eps, betas,
                                    o.agc, o.ac_clip, o.warmup)

        self._compiled = False
        self.compiled_regions: tuple[str, ...] = ()
        if cfg.compile == "on":
            self.compile_steps()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def autocast(self) -> AbstractContextManager:
        """The mixed-precision context of an update's forward passes (``precision=bf16``), else a no-op."""
        if self.cfg.precision != "bf16":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def compile_steps(self, regions: tuple[str, ...] | None = None, backend: str = "inductor") -> None:
        """``torch.compile`` the hot paths, static shapes, default mode. Idempotent.

        Args:
            regions: which of :data:`COMPILE_REGIONS` to compile; ``None``: :func:`compile_regions` for this
                agent's device, ``cfg.device`` (all of them on CUDA; on CPU those whose compile time pays off).
            backend: the ``torch.compile`` backend; runs use ``inductor``. Graph breaks are dynamo's and the same
                for every backend, so a test that only checks them may use ``aot_eager`` (no code generation).

        ``steps``: the RSSM observe/imagine steps, the actor and critic MLPs, the reward and continue heads (acting
        and other per-step callers). ``observe``: :meth:`mbrl.rssm.RSSM.observe_steps` (the update's filter in
        chunks of :data:`OBSERVE_CHUNK` steps, forward and backward). ``imagine`` (``loss.actor_grad=reinforce``):
        :meth:`ActorCritic.imagine` (called under ``no_grad``). ``losses`` (``reinforce``):
        :meth:`ActorCritic.critic_terms` and :meth:`ActorCritic.actor_terms`. None of them has a graph break
        (``tests/test_speed_paths.py``). Random draws inside compiled regions come from inductor's RNG stream,
        not eager's (same distributions, different samples)."""
        if self._compiled:
            return
        regions = compile_regions(resolve_device(self.cfg.device)) if regions is None else regions
        unknown = sorted(set(regions) - set(COMPILE_REGIONS))
        if unknown:
            raise ValueError(f"unknown compile regions {unknown}; allowed: {', '.join(COMPILE_REGIONS)}")
        use_inductor_cache()
        # Each compiled function is specialised per input shape, grad mode and autocast state (acting, observing,
        # imagining, the losses); all MLP heads share one ``forward`` code object, so the default limit of 8
        # variants would silently fall back to eager.
        dynamo = torch._dynamo.config
        for key in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo, key):
                setattr(dynamo, key, max(getattr(dynamo, key), 64))
        rssm = self.wm.rssm
        if "steps" in regions:
            rssm.obs_step = torch.compile(rssm.obs_step, dynamic=False, backend=backend)
            rssm.img_step = torch.compile(rssm.img_step, dynamic=False, backend=backend)
            for module in (self.ac.actor, self.ac.critic, self.ac.slow_critic, self.wm.reward_head,
                           self.wm.cont_head):
                module.compile(dynamic=False, backend=backend)
        if "observe" in regions:
            # The observe loop in chunks of OBSERVE_CHUNK steps, one graph each (forward and backward): an update's
            # B x T filter steps are launch-bound (B rows per step), and the whole T-step loop as one graph
            # compiles for many minutes.
            rssm.observe_chunk = OBSERVE_CHUNK
            rssm.observe_steps = torch.compile(rssm.observe_steps, dynamic=False, backend=backend)
        if self.cfg.loss.actor_grad == "reinforce":
            # Larger regions: the whole no-grad imagination rollout (H steps of policy sample + prior step, the
            # reward and continue heads) and the two differentiable halves of the actor-critic loss, each one graph.
            ac = self.ac
            if "imagine" in regions:
                ac.imagine = torch.compile(ac.imagine, dynamic=False, backend=backend)
            if "losses" in regions:
                ac.critic_terms = torch.compile(ac.critic_terms, dynamic=False, backend=backend)
                ac.actor_terms = torch.compile(ac.actor_terms, dynamic=False, backend=backend)
        self.compiled_regions = tuple(r for r in COMPILE_REGIONS if r in regions)
        self._compiled = True

    def train_step(self, batch: dict[str, Tensor], out: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One update of world model, critic and actor on a replay batch (layout: :mod:`mbrl.world_model`; with
        replay context the filter starts from the batch's stored latent).

        Args:
            out: if given, receives ``deter`` ``(B, T, D)`` and ``stoch`` ``(B, T, S, C)``: the posterior latents
                of the batch's steps computed by this update's world-model pass (before its parameter step, as the
                reference's replay write-back), detached; the caller writes them back into replay.

        Returns:
            metrics (losses, gradient norms, return statistics) as detached 0-d tensors on the agent's device;
            fetch them at log steps (:func:`fetch_metrics`), not every update.
        """
        self.train()
        lcfg = self.cfg.loss
        with self.autocast():
            wm_loss, post, metrics = self.wm.loss(batch)
        if out is not None:
            out["deter"], out["stoch"] = post["deter"].detach(), post["stoch"].detach()
        # repval_grad (reference): every loss from the same parameters; the world model steps once the replay
        # value loss's gradient has joined its own, after the actor (whose backprop graph runs through it).
        joint = lcfg.repval > 0 and lcfg.repval_grad
        if not joint:
            metrics["wm/grad_norm"] = self.wm_opt.step(wm_loss)
        start = {k: einops.rearrange(v.detach(), "b t ... -> (b t) ...") for k, v in post.items()}
        start_cont = einops.rearrange(1.0 - batch["is_terminal"].to(torch.float32), "b t -> (b t)")
        with self.autocast():
            if self.cfg.loss.actor_grad == "backprop":
                traj = self.ac.imagine(self.wm, start, start_cont, self.cfg.loss.imag_horizon)
            else:
                with torch.no_grad():
                    traj = self.ac.imagine(self.wm, start, start_cont, self.cfg.loss.imag_horizon)
            actor_loss, critic_loss, ac_metrics = self.ac.loss(traj)
            if lcfg.repval > 0:  # replay value loss (mbrl.actor_critic.ActorCritic.repval_loss)
                boot = einops.rearrange(traj["ret"][0], "(b t) -> b t", b=batch["reward"].shape[0])
                rv_critic, rv_wm, rv_metrics = self.ac.repval_loss(
                    self.wm.rssm.features(post), batch["reward"], batch["is_terminal"], episode_last(batch), boot,
                    wm_grad=joint)
                critic_loss = critic_loss + lcfg.repval * rv_critic
                ac_metrics.update(rv_metrics)
        metrics.update(ac_metrics)
        metrics["ac/actor_grad_norm"] = self.actor_opt.step(actor_loss)
        if joint:
            metrics["wm/grad_norm"] = self.wm_opt.step(wm_loss + lcfg.repval * rv_wm)
        metrics["ac/critic_grad_norm"] = self.critic_opt.step(critic_loss)
        metrics.update({f"wm/grad_norm/{name}": n for name, n in self.wm_opt.part_norms.items()})
        self.ac.update_slow_critic()
        return metrics

    def wants_graphs(self) -> bool:
        """Whether :meth:`update` captures CUDA graphs (:mod:`mbrl.graphs`: ``cuda_graphs=auto`` with ``compile=on``
        on CUDA, LaProp); if so, the optimisers switch to device-side numbers."""
        on = graphs_enabled(self.cfg.cuda_graphs, self.cfg.compile, self.device) and self.cfg.optim.name == "laprop"
        if on:
            for opt in (self.wm_opt, self.actor_opt, self.critic_opt):
                opt.set_capturable(True)
        return on

    def host_step(self) -> None:
        """Advance the optimisers' host counters after an update a CUDA graph replayed."""
        for opt in (self.wm_opt, self.actor_opt, self.critic_opt):
            opt.host_step()

    def check_finite(self) -> None:
        """Raise :class:`mbrl.optim.NonFiniteError` (one line: the module and the update) if any optimiser met a
        non-finite loss or gradient since the start. Synchronises with the device: call at log/checkpoint time."""
        for name, opt in (("world model", self.wm_opt), ("actor", self.actor_opt), ("critic", self.critic_opt)):
            opt.check_finite(name)

    def check_weights(self, when: str = "") -> None:
        """Raise :class:`mbrl.optim.NonFiniteError` (one line naming the module and the first tensor, then
        ``when``, e.g. ``" at env step 104 (update 13)"``) if a weight or buffer is NaN/inf. Synchronises with
        the device: call at log/checkpoint time or after a non-finite action."""
        bad = nonfinite_tensors(self.state_dict())
        if bad:
            raise NonFiniteError(f"non-finite weights in the {module_of(bad[0])} ({bad[0]}"
                                 f"{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}){when}")

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
    def act(self, obs: Tensor | dict[str, Tensor], is_first: Tensor, state: PolicyState, mode: str = "sample",
            out: dict[str, Tensor] | None = None) -> tuple[Tensor, PolicyState]:
        """One policy step for ``N`` envs.

        Args:
            obs: current observations: ``image`` ``(N, H, W, 3)`` uint8 and/or ``state`` ``(N, D)`` float (the
                keys of :attr:`WorldModel.obs_keys`); a bare tensor is the image.
            is_first: ``(N,)`` bool, True where the observation starts an episode (state is reset).
            state: from :meth:`initial_state` or the previous call.
            mode: :data:`POLICY_MODES`: ``sample`` draws from the policy (what training collects with, and what the
                reference code does in every mode: danijar/dreamerv3 ``agent.py`` ``policy`` calls ``sample``); ``mode``
                takes the policy's mode (its clipped mean: deterministic).
            out: if given, receives what replay stores with the step besides the observation: ``features``
                ``(N, F)`` (the backbone features of ``image``, computed once) when the agent caches features, and
                ``deter`` ``(N, D)`` / ``stoch`` ``(N, S, C)`` (the posterior latent of this step) with
                ``replay_context`` >= 1.

        Returns:
            ``(action, state)``: ``(N, A)`` float actions in ``[-1, 1]`` and the new policy state.

        Raises:
            ValueError: ``mode`` not in :data:`POLICY_MODES`.
        """
        if mode not in POLICY_MODES:
            raise ValueError(f"policy mode {mode!r} is not one of {', '.join(POLICY_MODES)}")
        self.eval()
        latent, prev_action = state
        if isinstance(obs, Tensor):
            obs = {"image": obs}
        inputs = {k: obs[k].to(self.device) for k in self.wm.obs_keys}
        if self.caches_features:
            inputs["features"] = self.encode_features(inputs["image"])
            if out is not None:
                out["features"] = inputs["features"]
        embed = self.wm.embed(inputs)
        latent, _ = self.wm.rssm.obs_step(latent, prev_action, embed, is_first.to(self.device))
        if out is not None and self.cfg.replay_context:
            out["deter"], out["stoch"] = latent["deter"], latent["stoch"]
        dist = self.ac.policy(self.wm.rssm.features(latent))
        action = (dist.sample() if mode == "sample" else dist.mode()).clamp(-1.0, 1.0)
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


def fetch_metrics(history: list[dict[str, Tensor | float]]) -> dict[str, float]:
    """Means over updates of :meth:`Agent.train_step` metrics, fetched from the device in one transfer.

    Args:
        history: one metrics dict (0-d tensors or floats) per update.

    Returns:
        ``{name: mean}`` as Python floats (empty for an empty history).
    """
    if not history:
        return {}
    keys = sorted({k for m in history for k in m})
    dev = next((v.device for m in history for v in m.values() if isinstance(v, Tensor)), torch.device("cpu"))
    means = [torch.stack([torch.as_tensor(m[k], dtype=torch.float32, device=dev) for m in history if k in m]).mean()
             for k in keys]
    return dict(zip(keys, torch.stack(means).tolist(), strict=True))
