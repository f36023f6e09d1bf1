"""DreamerV3 world model: encoders -> RSSM -> decoders, reward and continue heads (Hafner et al. 2023,
Sec. 2, Eq. 4-5).

Observations (``cfg.obs``): ``pixels`` (an image encoder and the pixel decoder), ``state`` (the proprioceptive
vector through an MLP encoder with symlog inputs and an MLP decoder with symlog squared error: the reference
code's ``mlp_keys`` path, DreamerV3's ``dmc_proprio``) or ``pixels+state`` (both encoded, embeddings
concatenated, both reconstructed), as danijar/dreamerv3 ``rssm.Encoder``/``rssm.Decoder``.

Batch layout (from :class:`mbrl.replay.Replay`), ``B`` sequences of ``T`` steps:

- ``image`` ``(B, T, H, W, 3)`` uint8: observation x_t (pixel runs).
- ``state`` ``(B, T, D)`` float32: proprioceptive observation (state runs).
- ``action`` ``(B, T, A)`` float: action a_t taken after seeing x_t.
- ``reward`` ``(B, T)`` float: reward r_t received on arriving at x_t (0 at an episode start).
- ``is_first`` ``(B, T)`` bool, ``is_terminal`` ``(B, T)`` bool.
- optional ``features`` ``(B, T, F)``: cached backbone features of a frozen encoder (used instead of ``image``
  for the embedding; with ``decoder=pixels`` the decoder still reconstructs ``image``, with ``decoder=features``
  the :class:`FeatureDecoder` reconstructs ``features`` and ``image`` is not read by the loss).
- optional replay context (``replay_context`` >= 1, :meth:`mbrl.replay.Replay.sample`): ``start_deter``
  ``(B, D)``, ``start_stoch`` ``(B, S, C)`` and ``start_action`` ``(B, A)``, the stored posterior latent and the
  action of the step before the sequence; the posterior filter starts from them instead of the zero state (rows
  with ``is_first`` at their first step still reset to zeros).

Decoders (``cfg.decoder``): ``pixels`` (default, every encoder; Jones et al. 2025 reconstruct pixels for every
encoder) or ``features`` (frozen cacheable pretrained encoders only, :func:`check_decoder`): an MLP reconstructs
the cached backbone features instead of the image, so an update skips the transposed-convolution decoder.

Precision: under ``torch.autocast`` (``precision=bf16``) the networks run in bf16 while every distribution, the
KL, the two-hot and the reconstruction errors are computed from fp32 casts of the network outputs.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor, nn

from encoders.base import Encoder
from encoders.registry import resolve_mode, split_name
from envs.errors import ConfigError
from mbrl.config import Config, LossConfig, ModelConfig
from mbrl.distributions import TwoHot, symlog, twohot_bins
from mbrl.nets import MLP, ConvDecoder, DenseBlock
from mbrl.rssm import RSSM, State


class StateEncoder(nn.Module):
    """MLP encoder of proprioceptive vectors: ``symlog`` then ``layers`` x (linear, norm, SiLU) of ``units``
    (reference ``rssm.Encoder`` vector branch, ``symlog: True``).

    Forward: ``(..., D)`` float -> ``(..., units)`` float.
    """

    def __init__(self, state_dim: int, units: int, layers: int, norm: str = "rms") -> None:
        super().__init__()
        dims = [state_dim] + [units] * layers
        self.net = nn.Sequential(*[DenseBlock(a, b, norm) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.out_dim = units

    def forward(self, state: Tensor) -> Tensor:
        return self.net(symlog(state.to(torch.float32)))


class StateDecoder(nn.Module):
    """MLP decoder of proprioceptive vectors predicting ``symlog(state)`` (reference ``rssm.Decoder`` vector
    branch with ``symlog_mse``).

    Forward: ``(..., F)`` model features -> ``(..., D)`` prediction in symlog space.
    """

    def __init__(self, feat_dim: int, state_dim: int, units: int, layers: int, norm: str = "rms") -> None:
        super().__init__()
        self.net = MLP(feat_dim, state_dim, units, layers, norm)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)

    def loss(self, feat: Tensor, target: Tensor) -> Tensor:
        """Symlog squared error summed over the ``D`` dims: ``(..., F), (..., D) -> (...)`` (reference
        ``outs.MSE(pred, symlog)`` aggregated by sum)."""
        pred = self(feat).to(torch.float32)
        return (pred - symlog(target.to(torch.float32))).pow(2).sum(-1)


DECODERS = ("pixels", "features")
FEAT_LOSSES = ("symlog_mse", "cosine")


def check_decoder(cfg: Config) -> None:
    """Refuse ``decoder=features`` where there are no cached frozen backbone features to reconstruct.

    ``decoder=features`` needs ``obs`` with ``pixels``, a pretrained encoder (not ``cnn``), the ``frozen`` mode
    (``encoder_mode=frozen``, or ``auto`` for a pretrained encoder) and ``encoder_cache=true``. Call before anything
    is written (:func:`mbrl.runs.train._prepare_run`) and when an agent is built.

    Raises:
        ConfigError: one line naming what was given and what is allowed.
    """
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"decoder={cfg.decoder!r} is not allowed; allowed: {', '.join(DECODERS)}")
    if cfg.decoder == "pixels":
        return
    mode = resolve_mode(cfg)
    problems = []
    if "pixels" not in cfg.obs:
        problems.append(f"obs={cfg.obs}")
    if split_name(cfg.encoder)[0] == "cnn":
        problems.append(f"encoder={cfg.encoder}")
    if mode != "frozen":
        problems.append(f"encoder_mode={mode}")
    if not cfg.encoder_cache:
        problems.append("encoder_cache=false")
    if problems:
        raise ConfigError(f"decoder=features reconstructs the cached features of a frozen pretrained encoder, but "
                          f"got {', '.join(problems)}; allowed: obs=pixels or pixels+state, encoder="
                          f"efficientnet-lite0|dreamshift-vit|dinov2|clip|hf:<id> with encoder_mode=frozen (or auto) "
                          f"and encoder_cache=true; otherwise use decoder=pixels")


class FeatureDecoder(nn.Module):
    """MLP decoder of a frozen encoder's cached backbone features (``decoder=features``): ``mlp_layers`` x
    (linear, norm, SiLU) of ``units``, then a linear layer to ``F``.

    Forward: ``(..., feat_dim)`` model state -> ``(..., F)`` prediction (in symlog space for ``symlog_mse``).

    Losses (``loss.feat_loss``), both ``(...)`` per step:

    - ``symlog_mse``: squared error to ``symlog(features)`` summed over ``F`` (as :class:`StateDecoder`).
    - ``cosine``: ``F * (1 - cos(pred, features))``. The factor ``F`` is fixed per encoder: it is half the summed
      squared error of the two vectors after each is rescaled to unit RMS per dim (``||a - b||^2 = 2F(1 - cos)``),
      so the term weighs like a sum over ``F`` dims, as the pixel and ``symlog_mse`` terms do.

    Default ``symlog_mse``, measured (``benchmarks/feature_decoder.py --episodes 4 --length 32 --updates 600
    --variants symlog_mse,cosine,pixels --seeds 0,1``, and ``--updates 300``: ``dmc:cartpole_swingup``,
    ``efficientnet-lite0`` frozen, ``mean`` features (F = 1280) at 224 px, ``size1m``, lr 3e-4, world-model updates
    of 16 x 32 windows of 3 random-action episodes, scored on a 4th held out; means of 2 seeds; probe: ``1 - MSE /
    Var`` of a ridge probe from the model state to the true physics state):

    ===============================  ==========  ======  ===================  ===============
    metric, after N updates          symlog_mse  cosine  decoder=pixels, 600  untrained (N=0)
    ===============================  ==========  ======  ===================  ===============
    state probe, posterior, 600           0.205   0.069                0.171            0.210
    state probe, posterior, 300           0.100   0.122
    state probe, 10-step open, 600       -0.294  -0.250                0.279           -0.290
    state probe, 10-step open, 300        0.100  -0.086
    reward MAE, 600                       0.036   0.036                0.074            0.070
    feature cosine, 600                   0.950   0.965
    ===============================  ==========  ======  ===================  ===============

    Reward and open-loop prediction tie within the seed spread; the posterior keeps more of the scene with
    ``symlog_mse`` once trained longer (both seeds 0.20 vs 0.11 and 0.03), while ``cosine`` only wins on its own
    objective. ``symlog_mse`` is also the reference's loss for vector targets (as :class:`StateDecoder`) and keeps
    the features' magnitude, which ``cosine`` ignores; so it is the default. Short runs on one task: the pixel
    decoder's open-loop states stay better, and pooled features (``mean``/``cls``) carry little position
    information (cart position probes <= 0 with either loss); ``decoder=pixels`` stays the default (``patch``
    features keep the token grid, not measured here). ``patch_flatten`` makes ``F`` large (``P * D``, 98 304 for
    DINOv2-S), and this decoder's output layer with it.
    """

    def __init__(self, feat_dim: int, feature_dim: int, units: int, layers: int, norm: str = "rms",
                 loss: str = "symlog_mse") -> None:
        super().__init__()
        if loss not in FEAT_LOSSES:
            raise ConfigError(f"loss.feat_loss={loss!r} is not allowed; allowed: {', '.join(FEAT_LOSSES)}")
        self.net = MLP(feat_dim, feature_dim, units, layers, norm)
        self.feature_dim, self.kind = feature_dim, loss

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)

    def loss(self, feat: Tensor, target: Tensor) -> Tensor:
        """``(..., feat_dim), (..., F) -> (...)`` fp32 reconstruction loss of the backbone features."""
        pred = self(feat).to(torch.float32)
        target = target.to(torch.float32)
        if self.kind == "cosine":
            return self.feature_dim * (1.0 - nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-6))
        return (pred - symlog(target)).pow(2).sum(-1)


class WorldModel(nn.Module):
    """Encoders, RSSM, decoders and heads, with the world-model loss.

    Args:
        encoder: an :class:`encoders.base.Encoder` (``(N, 3, H, W) uint8 -> (N, E)``), or None for a run without
            pixels (``obs=state``).
        action_dim: ``A``.
        image_size: side of the square images in pixels.
        state_dim: ``D`` of the proprioceptive observation; 0 for a run without it.
        decoder: ``pixels`` (a :class:`~mbrl.nets.ConvDecoder` of the image) or ``features`` (a
            :class:`FeatureDecoder` of the encoder's ``feature_dim`` backbone features, which every batch must then
            carry as ``features``).

    Raises:
        ValueError: neither an image encoder nor a state dimension; ``decoder=features`` without an image encoder
            that has backbone features.
    """

    def __init__(self, encoder: Encoder | None, action_dim: int, image_size: int, model: ModelConfig,
                 loss: LossConfig, state_dim: int = 0, decoder: str = "pixels") -> None:
        super().__init__()
        if encoder is None and state_dim <= 0:
            raise ValueError("a world model needs an image encoder, a state vector or both")
        self.encoder = encoder
        self.loss_cfg = loss
        self.state_dim = state_dim
        self.state_encoder = StateEncoder(state_dim, model.units, model.mlp_layers, model.norm) if state_dim else None
        embed_dim = (encoder.out_dim if encoder is not None else 0) + (model.units if state_dim else 0)
        self.rssm = RSSM(action_dim, embed_dim, model.deter, model.hidden, model.stoch, model.classes,
                         model.blocks, model.norm, model.unimix)
        feat = self.rssm.feat_dim
        self.decoder = None
        self.feature_decoder = None
        if decoder == "features":
            feature_dim = getattr(encoder, "feature_dim", 0)
            if not feature_dim:
                raise ValueError("decoder=features needs an image encoder with backbone features (feature_dim)")
            self.feature_decoder = FeatureDecoder(feat, feature_dim, model.units, model.mlp_layers, model.norm,
                                                  loss.feat_loss)
        elif encoder is not None:
            self.decoder = ConvDecoder(feat, image_size, model.cnn_depth, tuple(model.cnn_mults), model.cnn_norm)
        self.state_decoder = StateDecoder(feat, state_dim, model.units, model.mlp_layers, model.norm) \
            if state_dim else None
        self.reward_head = MLP(feat, model.bins, model.units, model.head_layers, model.norm, outscale=0.0)
        self.cont_head = MLP(feat, 1, model.units, model.head_layers, model.norm)
        self.twohot = model.twohot
        self.register_buffer("bins", twohot_bins(model.bins), persistent=False)

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """Observation keys this model reads: ``image`` and/or ``state``."""
        return (("image",) if self.encoder is not None else ()) + (("state",) if self.state_dim else ())

    def embed(self, obs: dict[str, Tensor] | Tensor) -> Tensor:
        """Embeddings of observations with any leading dims ``...``.

        Args:
            obs: ``image`` ``(..., H, W, 3)`` uint8 and/or ``state`` ``(..., D)`` float; optionally
                ``features`` ``(..., F)`` (the frozen encoder's cached backbone output, then only the encoder's
                trainable head runs). A bare tensor is taken as ``image``.

        Returns:
            ``(..., E)`` embeddings (image and state embeddings concatenated).
        """
        if isinstance(obs, Tensor):
            obs = {"image": obs}
        parts = []
        if self.encoder is not None:
            features = obs.get("features")
            if features is not None:
                lead = features.shape[:-1]
                x = self.encoder.head(features.reshape(-1, features.shape[-1]))
            else:
                image = obs["image"]
                lead = image.shape[:-3]
                x = self.encoder(einops.rearrange(image.reshape(-1, *image.shape[-3:]), "n h w c -> n c h w"))
            parts.append(x.reshape(*lead, x.shape[-1]))
        if self.state_encoder is not None:
            parts.append(self.state_encoder(obs["state"]))
        return parts[0] if len(parts) == 1 else torch.cat([p.to(parts[-1].dtype) for p in parts], -1)

    def reward(self, feat: Tensor) -> TwoHot:
        """Reward distribution for ``(..., F)`` features (logits cast to fp32)."""
        return TwoHot(self.reward_head(feat).to(torch.float32), self.bins, self.twohot)

    def cont_logits(self, feat: Tensor) -> Tensor:
        """``(...)`` fp32 logits of the continue flag (1 - terminal)."""
        return self.cont_head(feat).squeeze(-1).to(torch.float32)

    def loss(self, data: dict[str, Tensor], state: State | None = None) -> tuple[Tensor, State, dict[str, Tensor]]:
        """World-model loss (DreamerV3 Eq. 4-5) on a batch (see the module docstring for the layout). The filter
        starts from ``state`` if given, else from the batch's replay context if it has one, else from zeros.

        Returns:
            ``(loss, post, metrics)``: scalar loss (mean over ``B, T`` of the scaled terms), posterior states
            ``(B, T, ...)`` and metrics as detached 0-d tensors (fetched by the caller at log time, so an update
            never waits for the device).
        """
        embed, prev_action, state = self.filter_inputs(data, state)
        post, prior = self.rssm.observe(embed, prev_action, data["is_first"], state)
        total, metrics = self.loss_terms(data, post, prior)
        return total, post, metrics

    def filter_inputs(self, data: dict[str, Tensor], state: State | None = None) -> tuple[Tensor, Tensor, State | None]:
        """What :meth:`loss` feeds the posterior filter: ``(embed (B, T, E), prev_action (B, T, A), start state)``;
        the start state is ``state`` if given, else the batch's replay context if it has one, else None (zeros)."""
        action = data["action"]
        embed = self.embed(data)
        if "start_deter" in data:  # replay context: start from the stored latent and action of the step before
            first = data["start_action"].to(action.dtype)[:, None]
            if state is None:
                state = context_state(data)
        else:
            first = torch.zeros_like(action[:, :1])
        return embed, torch.cat([first, action[:, :-1]], 1), state

    def loss_terms(self, data: dict[str, Tensor], post: State, prior: State) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of :meth:`loss` from the filter's ``(B, T, ...)`` posterior and prior states: ``(scalar loss,
        metrics)``. Split from :meth:`loss` so that a batch of seeds (:mod:`mbrl.members`) can run the filter as
        its own compiled region."""
        cfg = self.loss_cfg
        action = data["action"]
        feat = self.rssm.features(post)
        b = action.shape[0]
        rec = torch.zeros(action.shape[:2], device=action.device)
        metrics: dict[str, Tensor] = {}
        if self.decoder is not None:
            recon = self.decoder(einops.rearrange(feat, "b t f -> (b t) f")).to(torch.float32)
            target = einops.rearrange(data["image"], "b t h w c -> (b t) c h w").to(torch.float32) / 255.0
            rec_image = einops.rearrange((recon - target).pow(2).sum((1, 2, 3)), "(b t) -> b t", b=b)
            rec = rec + rec_image
            metrics["wm/rec_image"] = rec_image.detach().mean()
        if self.feature_decoder is not None:
            if "features" not in data:
                raise KeyError("decoder=features needs the cached backbone features in the batch (key 'features')")
            rec_feat = self.feature_decoder.loss(feat, data["features"])
            rec = rec + rec_feat
            metrics["wm/rec_features"] = rec_feat.detach().mean()
        if self.state_decoder is not None:
            rec_state = self.state_decoder.loss(feat, data["state"])
            rec = rec + rec_state
            metrics["wm/rec_state"] = rec_state.detach().mean()
        rew = -self.reward(feat).log_prob(data["reward"])
        cont = 1.0 - data["is_terminal"].to(torch.float32)
        con = nn.functional.binary_cross_entropy_with_logits(self.cont_logits(feat), cont, reduction="none")
        dyn, rep, kl = self.rssm.kl_loss(post, prior, cfg.free_nats)
        total = cfg.rec * rec + cfg.rew * rew + cfg.con * con + cfg.dyn * dyn + cfg.rep * rep
        metrics.update({"wm/loss": total.detach().mean(), "wm/rec": rec.detach().mean(),
                        "wm/rew": rew.detach().mean(), "wm/con": con.detach().mean(), "wm/kl": kl.mean(),
                        "wm/dyn": dyn.detach().mean(), "wm/rep": rep.detach().mean(),
                        "wm/prior_ent": self.rssm.entropy(prior).detach().mean(),
                        "wm/post_ent": self.rssm.entropy(post).detach().mean()})
        return total.mean(), metrics


def context_state(data: dict[str, Tensor]) -> State:
    """The RSSM start state of a batch with replay context: ``deter`` ``(B, D)`` and ``stoch`` ``(B, S, C)`` float32
    from ``start_deter``/``start_stoch``, ``logits`` zeros (not read by the filter step)."""
    deter = data["start_deter"].to(torch.float32)
    stoch = data["start_stoch"].to(torch.float32)
    return {"deter": deter, "stoch": stoch, "logits": torch.zeros_like(stoch)}
