"""Typed configuration of a training run, model-size presets and dotted overrides.

A run is described by :class:`Config`; its nested sections :class:`ModelConfig`, :class:`LossConfig` and
:class:`OptimConfig` hold the agent's hyper-parameters. ``size`` and ``algo`` name presets that fill those
sections; explicit dotted overrides (``model.deter=128``) win over presets.

Budgets: ``steps``, ``prefill``, ``log_every``, ``save_every`` and ``eval_every`` count **env steps** (physics
control steps, the x-axis of DreamerV3's published DMC curves); one agent (policy) step is ``action_repeat`` env
steps. ``train_ratio`` counts replayed agent steps per agent step, as in DreamerV3. ``replay_capacity`` counts
agent steps.

Presets:

- ``size``: the 2023 paper's ``XS``/``S``/``M``/``L``/``XL`` (Hafner et al. 2023, Table B.1) and the current
  reference code's ``size1m`` ... ``size400m`` (danijar/dreamerv3 ``configs.yaml``; Jones et al. 2025 used
  ``size200m``).
- ``algo``: ``dreamerv3`` follows the current reference code (block GRU, RMSNorm + SiLU, LaProp with adaptive
  gradient clipping 0.3, lr 4e-5, KL scales dyn 1.0 / rep 0.1, REINFORCE actor gradients);
  ``dreamerv3_2023`` the paper (dyn 0.5 / rep 0.1, Adam, lr 1e-4 world model / 3e-5 actor-critic, global-norm
  clipping 1000 / 100, dynamics backprop for continuous actions).

``replay_context`` (replayed sequences start from the stored posterior latent of the step before; reference code
``replay_context: 1``) is in neither preset and defaults to 0 (no replay context, as the 2023 code and every run
stored before the key existed): such a run's config (without the key) resumes as 0 with its config hash
unchanged (:data:`_HASH_OMIT_AT`). docs/configuration.md ("Replay context") lists where we differ from the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from envs.errors import ConfigError


@dataclass
class ModelConfig:
    """Network sizes and latent structure (filled by the ``size`` preset)."""

    deter: int = 512  # GRU (deterministic) state size
    hidden: int = 512  # RSSM hidden layer width
    stoch: int = 32  # number of categorical latents
    classes: int = 32  # classes per categorical latent
    blocks: int = 8  # block-diagonal GRU groups (reference code); 1 = dense GRU
    units: int = 512  # width of MLP heads (reward, continue, actor, critic)
    head_layers: int = 1  # hidden layers of the reward/continue heads
    ac_layers: int = 2  # hidden layers of the actor/critic
    cnn_depth: int = 32  # CNN base channel count
    cnn_mults: tuple[int, ...] = (1, 2, 4, 8)  # channel multipliers per stride-2 stage
    norm: str = "rms"  # rms | layer | none (dense layers)
    cnn_norm: str = "layer"  # channel norm of CNN encoder/decoder stages (2023 paper: LayerNorm); rms | layer | none
    mlp_layers: int = 3  # hidden layers of the state (vector) encoder and decoder (reference enc/dec ``layers: 3``)
    unimix: float = 0.01  # uniform mixture of categorical latents and discrete policies
    bins: int = 255  # two-hot bins of reward/critic heads
    minstd: float = 0.1  # policy std bounds
    maxstd: float = 1.0
    # reward/critic two-hot: symexp (reference: raw-space bins, expectation and target interpolation in raw
    # space) | symlog (2023 paper/code: symlog-space bins, prediction symexp of the symlog-space expectation)
    twohot: str = "symexp"
    outscale_mode: str = "weight"  # output-layer init: weight (reference: W *= outscale) | variance (2023 code)
    actor_outscale: float = 0.01  # init scale of the policy's output layer (reference 0.01; 2023 code 1.0)


@dataclass
class LossConfig:
    """World-model and actor-critic loss settings (DreamerV3 Sec. 2-3)."""

    rec: float = 1.0  # pixel reconstruction (sum of squared errors)
    rew: float = 1.0  # reward two-hot
    con: float = 1.0  # continue flag
    dyn: float = 1.0  # KL balancing: dynamics term KL(sg(post) || prior)
    rep: float = 0.1  # KL balancing: representation term KL(post || sg(prior))
    free_nats: float = 1.0  # free bits, clipped per time step on the summed KL
    imag_horizon: int = 15  # imagination horizon H
    lam: float = 0.95  # lambda-return
    horizon: float = 333.0  # discount gamma = 1 - 1/horizon
    actent: float = 3e-4  # policy entropy scale eta
    slowreg: float = 1.0  # critic regulariser towards the slow critic
    slow_rate: float = 0.02  # slow critic EMA mix per update
    retnorm_rate: float = 0.01  # EMA rate of the 5th/95th return percentiles
    retnorm_limit: float = 1.0  # max(limit, P95 - P5)
    perclo: float = 5.0
    perchi: float = 95.0
    actor_grad: str = "reinforce"  # reinforce | backprop (continuous actions)
    # imagined continue flags: prob (reference con.prob(1), the start state's too) | mode (2023 code: logit > 0,
    # the start state's from the replayed is_terminal)
    imag_cont: str = "prob"
    repval: float = 0.3  # scale of the critic's replay value loss (reference loss_scales.repval; 2023: 0 = off)
    repval_grad: bool = True  # the repval loss also trains the world model via the posterior (reference)
    # decoder=features: loss of the feature reconstruction (mbrl.world_model.FeatureDecoder has the comparison)
    feat_loss: str = "symlog_mse"  # symlog_mse (squared error of symlog features, summed) | cosine (F * (1 - cos))


@dataclass
class OptimConfig:
    """Optimisers of the world model, actor and critic."""

    name: str = "laprop"  # laprop | adam
    lr: float = 4e-5  # world model
    encoder_lr: float = -1.0  # < 0: lr for cnn, 0.1 * lr for pretrained backbones (Jones et al. 2025: 4e-6 vs 4e-5)
    actor_lr: float = 4e-5
    critic_lr: float = 4e-5
    eps: float = 1e-20
    ac_eps: float = 1e-20
    beta1: float = 0.9
    beta2: float = 0.999
    agc: float = 0.3  # adaptive gradient clipping (per parameter); 0 disables
    clip: float = 0.0  # global-norm clipping of world-model grads; 0 disables
    ac_clip: float = 0.0  # global-norm clipping of actor/critic grads; 0 disables
    warmup: int = 1000  # linear learning-rate warm-up, updates


@dataclass
class Config:
    """A training run. See the module docstring for units."""

    env: str = "dmc:cartpole_balance"
    obs: str = "pixels"  # pixels | state (proprioceptive vector, DreamerV3's dmc_proprio) | pixels+state
    encoder: str = "cnn"  # cnn | dinov2[:small|base|large] | clip[:b32|b16] | efficientnet-lite0 | hf:<id or dir>
    # auto (cnn: full, pretrained: frozen) | frozen | partial:k | full | adapter[:where] | lora[:rank]
    encoder_mode: str = "auto"
    encoder_feature: str = "auto"  # auto (per encoder) | cls | mean | patch | patch_flatten
    encoder_path: str = ""  # local dir with pretrained weights (else HF cache / hub); efficientnet-lite0: a .pth
    encoder_input_size: int = 224  # side images are resized to inside a pretrained encoder
    encoder_token_dim: int = 32  # per-token projection size of encoder_feature=patch
    encoder_adapter_dim: int = 64  # bottleneck size of adapters
    encoder_cache: bool = True  # frozen encoders: store features in replay instead of re-running the backbone
    # pixels (ConvDecoder reconstructs the image, every encoder) | features (an MLP reconstructs the cached backbone
    # features; frozen cacheable pretrained encoders only, mbrl.world_model.check_decoder)
    decoder: str = "pixels"
    size: str = "S"
    algo: str = "dreamerv3"
    steps: int = 100_000  # env steps
    seed: int = 0
    image_size: int = 64
    action_repeat: int = 2
    time_limit: int = 0  # env steps per episode; 0 = the suite's standard (dm_control 1000, Meta-World 500)
    camera: int = -1  # -1: the env's default camera
    num_envs: int = 1
    batch_size: int = 16
    batch_length: int = 64
    train_ratio: float = 512.0
    # env steps of uniform random actions before training; 2048 = DreamerV3's fill (uniform random actions until
    # replay holds batch_size x batch_length = 16 x 64 agent steps, at action repeat 2; 2023 code, train.py)
    prefill: int = 2048
    replay_capacity: int = 1_000_000  # agent steps
    # 0: replayed sequences start from the zero state (this repo's earlier runs); K >= 1: sample K more
    # steps and start from the stored posterior latent of the last of them (reference code replay_context: 1)
    replay_context: int = 0
    log_every: int = 1000  # env steps
    save_every: int = 10_000  # env steps; 0 = only at the end
    eval_every: int = 0  # env steps; 0 = no periodic evaluation
    eval_episodes: int = 5
    # the policy's actions in evaluation: sample (the reference code samples in every mode) | mode (deterministic)
    eval_policy: str = "sample"
    run_dir: str = ""  # empty: runs/<env>-<encoder>-<size>-s<seed>-<timestamp>
    wandb_mode: str = "offline"  # offline | online | disabled
    wandb_project: str = "dreamshift"
    wandb_group: str = ""  # wandb run group (sweeps: env/encoder/mode); empty = none
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = torch default
    precision: str = "fp32"  # fp32 | bf16 (autocast; fp32 master weights, optimiser state and distributions)
    compile: str = "off"  # off | on: torch.compile of the RSSM observe/imagine steps and the MLP heads
    # auto: on CUDA with compile=on each update is captured once as a CUDA graph and replayed (mbrl.graphs);
    # on: graphs on CUDA whatever compile is; off: today's eager/compiled update on every device
    cuda_graphs: str = "auto"
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# Hafner et al. 2023, Table B.1: GRU units, CNN multiplier, dense units, MLP layers.
_PAPER_SIZES = {"XS": (256, 24, 256, 1), "S": (512, 32, 512, 2), "M": (1024, 48, 640, 3),
                "L": (2048, 64, 768, 4), "XL": (4096, 96, 1024, 5)}
# danijar/dreamerv3 configs.yaml: (deter, hidden, classes, depth, units); CNN mults (2, 3, 4, 4).
_CODE_SIZES = {"size1m": (512, 64, 4, 4, 64), "size12m": (2048, 256, 16, 16, 256),
               "size25m": (3072, 384, 24, 24, 384), "size50m": (4096, 512, 32, 32, 512),
               "size100m": (6144, 768, 48, 48, 768), "size200m": (8192, 1024, 64, 64, 1024),
               "size400m": (12288, 1536, 96, 96, 1536)}
SIZES: tuple[str, ...] = tuple(_PAPER_SIZES) + tuple(_CODE_SIZES)
ALGOS: tuple[str, ...] = ("dreamerv3", "dreamerv3_2023")


def size_preset(name: str) -> dict[str, Any]:
    """Model fields set by the size preset ``name``; raises :class:`ConfigError` for an unknown name."""
    if name in _PAPER_SIZES:
        gru, mult, units, layers = _PAPER_SIZES[name]
        return dict(deter=gru, hidden=units, stoch=32, classes=32, units=units, head_layers=layers,
                    ac_layers=layers, cnn_depth=mult, cnn_mults=(1, 2, 4, 8))
    if name in _CODE_SIZES:
        deter, hidden, classes, depth, units = _CODE_SIZES[name]
        return dict(deter=deter, hidden=hidden, stoch=32, classes=classes, units=units, head_layers=1,
                    ac_layers=3, cnn_depth=depth, cnn_mults=(2, 3, 4, 4))
    raise ConfigError(f"unknown size {name!r}; allowed: {', '.join(SIZES)}")


def algo_preset(name: str) -> dict[str, dict[str, Any]]:
    """Model/loss/optimiser fields set by the ``algo`` preset; raises :class:`ConfigError` for an unknown name."""
    if name == "dreamerv3":
        return {"model": dict(twohot="symexp", outscale_mode="weight", actor_outscale=0.01),
                "loss": dict(dyn=1.0, rep=0.1, actor_grad="reinforce", imag_cont="prob", repval=0.3,
                             repval_grad=True),
                "optim": dict(name="laprop", lr=4e-5, actor_lr=4e-5, critic_lr=4e-5, eps=1e-20, ac_eps=1e-20,
                              agc=0.3, clip=0.0, ac_clip=0.0, warmup=1000)}
    if name == "dreamerv3_2023":
        return {"model": dict(twohot="symlog", outscale_mode="variance", actor_outscale=1.0),
                "loss": dict(dyn=0.5, rep=0.1, actor_grad="backprop", imag_cont="mode", repval=0.0,
                             repval_grad=False),
                "optim": dict(name="adam", lr=1e-4, actor_lr=3e-5, critic_lr=3e-5, eps=1e-8, ac_eps=1e-5,
                              agc=0.0, clip=1000.0, ac_clip=100.0, warmup=0)}
    raise ConfigError(f"unknown algo {name!r}; allowed: {', '.join(ALGOS)}")


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig}
OBS: tuple[str, ...] = ("pixels", "state", "pixels+state")
#: How a policy acts (:meth:`mbrl.agent.Agent.act`, ``eval_policy``): ``sample`` draws from it, ``mode`` takes its mode.
POLICY_MODES: tuple[str, ...] = ("sample", "mode")
_CHOICES = {"algo": ALGOS, "size": SIZES, "wandb_mode": ("offline", "online", "disabled"), "obs": OBS,
            "eval_policy": POLICY_MODES,
            "decoder": ("pixels", "features"), "loss.feat_loss": ("symlog_mse", "cosine"),
            "precision": ("fp32", "bf16"), "compile": ("off", "on"), "cuda_graphs": ("auto", "on", "off"),
            "device": ("auto", "cpu", "cuda"), "model.norm": ("rms", "layer", "none"),
            "model.cnn_norm": ("rms", "layer", "none"), "model.twohot": ("symexp", "symlog"),
            "model.outscale_mode": ("weight", "variance"), "loss.imag_cont": ("prob", "mode"),
            "loss.actor_grad": ("reinforce", "backprop"), "optim.name": ("laprop", "adam"),
            "encoder_feature": ("auto", "cls", "mean", "patch", "patch_flatten")}


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric config key: ``lo`` .. ``hi``, each bound inclusive unless ``lo_open`` /
    ``hi_open``; a float must also be finite (NaN and +-inf are never allowed). ``note`` says why, or what a
    special value means, and ends the error message. A ``tuple[int, ...]`` key's range applies to each element."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""

    def contains(self, value: float) -> bool:
        """Whether ``value`` (an int or a finite float) lies in the range."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def describe(self) -> str:
        """``"> 0"``, ``">= 1"``, ``"in [0, 1)"`` or ``"a finite number"``."""
        lo, hi = self.lo != -math.inf, self.hi != math.inf
        if lo and hi:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if lo:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if hi:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "a finite number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


_POS = Range(0, lo_open=True)
_NONNEG = Range(0)
_ONE = Range(1)
_SCALE = Range(0, note="a loss scale; 0 turns the term off")
_RATE = Range(0, lo_open=True)
_FRACTION = Range(0, 1)
# Seeds derived from ``seed`` must stay within dm_control's 2**32 - 1: sub-env i gets seed + i, periodic evaluation
# 10000 + seed, a resumed run resets with seed + 7919 x episodes; 2**31 - 1 leaves them 2**31 of room.
MAX_SEED = 2**31 - 1

#: The allowed range of every numeric (int, float, tuple-of-int) key of :class:`Config` and its sections;
#: :func:`validate` checks each, then the cross-field rules (``model.minstd < model.maxstd``,
#: ``loss.perclo < loss.perchi``, ``model.deter % model.blocks == 0``, ``image_size`` a power of two,
#: ``replay_capacity >= (batch_length + replay_context) x num_envs``, ``seed + num_envs - 1 <= MAX_SEED``).
RANGES: dict[str, Range] = {
    "encoder_input_size": Range(8), "encoder_token_dim": _ONE, "encoder_adapter_dim": _ONE,
    "steps": _ONE,
    "seed": Range(0, MAX_SEED, note="derived env seeds must stay below dm_control's 2**32"),
    "image_size": Range(8, note="a power of two"),
    "action_repeat": _ONE,
    "time_limit": Range(0, note="0 = the suite's standard episode length"),
    "camera": Range(-1, note="-1 = the env's default camera"),
    "num_envs": _ONE, "batch_size": _ONE,
    "batch_length": Range(2, note="the replayed value loss needs a next step"),
    "train_ratio": Range(0, lo_open=True, note="replayed agent steps per agent step"),
    "prefill": _NONNEG, "replay_capacity": _ONE, "log_every": _ONE,
    "replay_context": Range(0, note="0 = off (sequences start from the zero state); K >= 1 = sample K more steps "
                                    "and start from the stored posterior latent of the step before the sequence"),
    "save_every": Range(0, note="0 = only at the end"), "eval_every": Range(0, note="0 = no periodic evaluation"),
    "eval_episodes": _ONE, "threads": Range(0, 1024, note="0 = torch's default"),
    # model
    "model.deter": _ONE, "model.hidden": _ONE, "model.stoch": _ONE, "model.classes": _ONE, "model.blocks": _ONE,
    "model.units": _ONE, "model.head_layers": _NONNEG, "model.ac_layers": _NONNEG, "model.cnn_depth": _ONE,
    "model.cnn_mults": Range(1, note="each multiplier"), "model.mlp_layers": _NONNEG,
    "model.unimix": Range(0, 1, hi_open=True), "model.bins": Range(2, note="two-hot needs two bins"),
    "model.minstd": _POS, "model.maxstd": _POS, "model.actor_outscale": _NONNEG,
    # loss
    "loss.rec": _SCALE, "loss.rew": _SCALE, "loss.con": _SCALE, "loss.dyn": _SCALE, "loss.rep": _SCALE,
    "loss.free_nats": _NONNEG, "loss.imag_horizon": _ONE, "loss.lam": _FRACTION,
    "loss.horizon": Range(1, lo_open=True, note="the discount 1 - 1/horizon must be in (0, 1)"),
    "loss.actent": _SCALE, "loss.slowreg": _SCALE, "loss.slow_rate": _FRACTION, "loss.retnorm_rate": _FRACTION,
    "loss.retnorm_limit": Range(0, lo_open=True, note="returns are divided by max(limit, P95 - P5)"),
    "loss.perclo": Range(0, 100), "loss.perchi": Range(0, 100), "loss.repval": _SCALE,
    # optim
    "optim.lr": _RATE, "optim.actor_lr": _RATE, "optim.critic_lr": _RATE,
    "optim.encoder_lr": Range(note="< 0 = automatic: lr for cnn, 0.1 x lr for pretrained backbones"),
    "optim.eps": _POS, "optim.ac_eps": _POS,
    "optim.beta1": Range(0, 1, hi_open=True), "optim.beta2": Range(0, 1, hi_open=True),
    "optim.agc": Range(0, note="0 disables"), "optim.clip": Range(0, note="0 disables"),
    "optim.ac_clip": Range(0, note="0 disables"), "optim.warmup": Range(0, note="updates; 0 = none"),
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(key: str, raw: str, typ: Any) -> Any:
    """Parse the string ``raw`` as ``typ``; raises :class:`ConfigError` naming the key and expected type."""
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            try:  # exact for any size (float() would round 2**53 + 1)
                return int(raw)
            except ValueError:
                pass
            value = float(raw)  # "1e5"
            if not value.is_integer():
                raise ValueError(raw)
            return int(value)
        if typ is float:
            return float(raw)
        if typ is str:
            return raw
        if typing.get_origin(typ) is tuple:
            parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
            return tuple(int(p) for p in parts)
    except ValueError:
        name = getattr(typ, "__name__", str(typ))
        if typing.get_origin(typ) is tuple:
            name = "comma-separated ints"
        raise ConfigError(f"override {key}={raw!r}: expected {name}") from None
    raise ConfigError(f"override {key}: unsupported type {typ}")


def parse_overrides(tokens: list[str]) -> dict[str, str]:
    """Split ``key=value`` tokens into a dict; raises :class:`ConfigError` for a token without ``=`` or a key
    given twice (``seed=1 seed=2``: which one was meant cannot be told, so neither silently wins)."""
    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for tok in tokens:
        if "=" not in tok or tok.startswith("="):
            raise ConfigError(f"bad override {tok!r}; expected key=value, e.g. env=dmc:walker_walk steps=100000")
        key, value = tok.split("=", 1)
        key = key.strip()
        if key in given:
            raise ConfigError(f"{key} is given twice ({given[key]} and {tok}); give each key once")
        given[key] = tok
        out[key] = value
    return out


def allowed_keys() -> list[str]:
    """Every key an override may set (top-level and dotted section keys)."""
    keys = [f.name for f in dataclasses.fields(Config) if f.name not in _SECTIONS]
    for sec, cls in _SECTIONS.items():
        keys += [f"{sec}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def build_config(overrides: dict[str, str] | list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, the ``size``/``algo`` presets and overrides.

    Args:
        overrides: ``{"env": "dmc:walker_walk", "model.deter": "128"}`` or ``["env=dmc:walker_walk", ...]``.

    Raises:
        ConfigError: unknown key (the message lists the allowed ones), value of the wrong type, a value outside
            its allowed choices or range.
    """
    if overrides is None:
        overrides = {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    allowed = set(allowed_keys())
    for key in overrides:
        if key not in allowed:
            sections = ", ".join(f"{s}.*" for s in _SECTIONS)
            top = ", ".join(k for k in allowed_keys() if "." not in k)
            raise ConfigError(f"unknown config key {key!r}; allowed: {top}, {sections} "
                              f"(`dreamshift config` prints them with their values)")
    cfg = Config()
    top_types = _field_types(Config)
    for key, raw in overrides.items():
        if "." not in key:
            setattr(cfg, key, _convert(key, raw, top_types[key]))
    _check_choice("size", cfg.size)
    _check_choice("algo", cfg.algo)
    for k, v in size_preset(cfg.size).items():
        setattr(cfg.model, k, v)
    for sec, values in algo_preset(cfg.algo).items():
        for k, v in values.items():
            setattr(getattr(cfg, sec), k, v)
    for key, raw in overrides.items():
        if "." in key:
            sec, name = key.split(".", 1)
            obj = getattr(cfg, sec)
            setattr(obj, name, _convert(key, raw, _field_types(type(obj))[name]))
    validate(cfg)
    return cfg


def _check_choice(key: str, value: Any) -> None:
    if value not in _CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(_CHOICES[key])}")


def numeric_keys() -> list[str]:
    """Every int, float and tuple-of-int key of :class:`Config` and its sections (each has a :data:`RANGES` entry)."""
    out = []
    sections = [("", Config), *((f"{sec}.", cls) for sec, cls in _SECTIONS.items())]
    for prefix, cls in sections:
        for name, typ in _field_types(cls).items():
            if typ in (int, float) or (typing.get_origin(typ) is tuple and typing.get_args(typ)[0] is int):
                out.append(prefix + name)
    return out


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _check_range(key: str, value: Any) -> None:
    rng = RANGES[key]
    values = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and not value:
        raise ConfigError(f"{key}=() must hold at least one value, e.g. 1,2,4,8")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number {rng.describe()}")
        if not rng.contains(v):
            allowed = rng.describe()
            if isinstance(v, float) and not math.isfinite(v) and allowed != "a finite number":
                allowed = f"a finite number {allowed}"
            note = f" ({rng.note})" if rng.note else ""
            raise ConfigError(f"{key}={value} must be {allowed}{note}")


def validate(cfg: Config) -> None:
    """Check every choice (:data:`_CHOICES`), every numeric range (:data:`RANGES`: NaN and +-inf are refused for
    every float) and the cross-field rules; raises :class:`ConfigError` naming the key and what is allowed."""
    for key in _CHOICES:
        _check_choice(key, _get(cfg, key))
    for key in RANGES:
        _check_range(key, _get(cfg, key))
    m, loss = cfg.model, cfg.loss
    if m.deter % m.blocks:
        raise ConfigError(f"model.deter={m.deter} must be divisible by model.blocks={m.blocks}")
    if cfg.image_size & (cfg.image_size - 1):
        raise ConfigError(f"image_size={cfg.image_size} must be a power of two >= 8 (the CNN encoder and the "
                          f"pixel decoder halve/double it down to 4x4), e.g. 64")
    if m.minstd >= m.maxstd:
        raise ConfigError(f"model.minstd={m.minstd} must be < model.maxstd={m.maxstd} (the policy's std bounds)")
    if loss.perclo >= loss.perchi:
        raise ConfigError(f"loss.perclo={loss.perclo} must be < loss.perchi={loss.perchi} (the return "
                          f"normaliser's percentiles, in [0, 100])")
    if cfg.seed + cfg.num_envs - 1 > MAX_SEED:
        raise ConfigError(f"seed={cfg.seed} with num_envs={cfg.num_envs}: seed + num_envs - 1 must be <= {MAX_SEED} "
                          f"(sub-env i is seeded seed + i)")
    if cfg.replay_capacity < (cfg.batch_length + cfg.replay_context) * cfg.num_envs:
        need = "(batch_length + replay_context)" if cfg.replay_context else "batch_length"
        raise ConfigError(f"replay_capacity={cfg.replay_capacity} must hold at least {need} x num_envs steps")


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-serialisable dict of ``cfg``."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`to_dict` output (no presets applied)."""
    data = dict(data)
    sections = {sec: cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop(sec).items()})
                for sec, cls in _SECTIONS.items()}
    return Config(**data, **sections)


# Keys that may differ between a run and its resumption (budgets, logging, hardware).
_RESUMABLE = {"steps", "log_every", "save_every", "eval_every", "eval_episodes", "eval_policy", "run_dir",
              "wandb_mode", "wandb_project", "wandb_group", "device", "threads", "progress", "compile", "precision",
              "cuda_graphs"}


# Keys added after runs were stored, with the value those runs had: left out of the hash while they hold it, so
# an older run keeps its hash (and its wandb run id) when resumed.
_HASH_OMIT_AT = {"replay_context": 0}


def model_hash(cfg: Config) -> str:
    """Short hash of everything that defines the experiment (not budgets, logging or hardware; a key of
    ``_HASH_OMIT_AT`` only when it differs from the value runs stored before it existed had)."""
    data = {k: v for k, v in to_dict(cfg).items()
            if k not in _RESUMABLE and not (k in _HASH_OMIT_AT and v == _HASH_OMIT_AT[k])}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def incompatible_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between ``old`` and ``new`` and that a resume cannot change."""
    a, b = to_dict(old), to_dict(new)
    out = []
    for key in a:
        if key in _RESUMABLE:
            continue
        if isinstance(a[key], dict):
            out += [f"{key}.{k}" for k in a[key] if a[key][k] != b[key][k]]
        elif a[key] != b[key]:
            out.append(key)
    return out
