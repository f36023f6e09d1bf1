"""The encoders an analysis compares, by role (``weights``):

- ``pretrained``: the encoder's pretrained end point, exactly what :func:`mbrl.runs.merge.pretrained_encoder_state`
  gives WiSE-FT merging (backbone reloaded from its source, adapters/LoRA at their identity start).
- ``finetuned``: the run's encoder as stored in ``RUN_DIR/checkpoint/`` (only with a run).
- ``random``: the same architecture at random initialisation (a control: what the analysis gives without any
  pretraining). Hugging Face models are rebuilt from their config (``type(model)(config)``, the library's own
  initialisation); other backbones get ``reset_parameters()`` on every module (PyTorch defaults) and a
  truncated normal (std 0.02) for parameters owned by no such module.

Without a run, the encoder is built from ``key=value`` settings (``encoder=hf:DIR encoder_input_size=224 ...``)
as ``dreamshift train`` would build it, and ``pretrained`` is compared with ``random``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.registry import build_encoder, resolve_mode
from envs.errors import ConfigError
from mbrl.config import build_config, model_hash
from mbrl.runs import checkpoint
from mbrl.runs.merge import pretrained_encoder_state

# the random-init control is seeded RANDOM_INIT_SEED + seed: not 0, the seed a tiny test model may have been made with
RANDOM_INIT_SEED = 1_000_003
PRETRAINED_ENCODERS = ("dinov2[:small|base|large], clip[:b32|b16], efficientnet-lite0, dreamshift-vit, "
                       "hf:<model id or dir>")


@dataclass
class EncoderSet:
    """Encoders by role plus what identifies them in records.

    Attributes:
        encoders: ``{"pretrained": enc, "finetuned": enc, "random": enc}`` (roles that exist), each a
            :class:`encoders.backbone.BackboneEncoder` in eval mode without gradients, on the CPU.
        cfg: the run's (or the settings') :class:`mbrl.config.Config`.
        base: ``{"env", "encoder", "encoder_mode", "config_hash"}`` for records (``config_hash`` is ``None``
            without a run).
        run_dir: the run directory, or ``None``.
        agent: the loaded :class:`mbrl.agent.Agent` of a run (``None`` without a run).
    """

    encoders: dict[str, Any]
    cfg: Any
    base: dict[str, Any]
    run_dir: Path | None = None
    agent: Any = field(default=None, repr=False)


def require_pretrained(encoder: Any, name: str, analysis: str) -> None:
    """Raise :class:`ConfigError` unless ``encoder`` has pretrained weights (a ``BackboneEncoder``)."""
    if not hasattr(encoder, "pretrained_state_dict") or not hasattr(encoder, "backbone_tokens"):
        raise ConfigError(f"analysis {analysis!r} compares an encoder with its pretrained weights, but encoder "
                          f"{name!r} has none; allowed encoders: {PRETRAINED_ENCODERS}")


def _freeze(encoder: nn.Module) -> nn.Module:
    encoder.requires_grad_(False)
    return encoder.eval().cpu()


def random_init(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``encoder`` whose backbone is re-initialised at random (see the module docstring), seeded with
    ``RANDOM_INIT_SEED + seed``; the global torch RNG is left untouched."""
    enc = copy.deepcopy(encoder)
    backbone = enc.backbone
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED + seed)
        try:
            import transformers

            is_hf = isinstance(base, transformers.PreTrainedModel)
        except ImportError:
            is_hf = False
        if is_hf:
            fresh = type(base)(base.config).state_dict()
            own = base.state_dict()
            # peft (lora) renames wrapped weights ``x.base_layer.weight``; LoRA tensors keep their own values
            base.load_state_dict({k: fresh.get(k.replace(".base_layer.", "."), v).to(v.dtype)
                                  for k, v in own.items()})
        else:
            done: set[int] = set()
            for module in base.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
                    done.update(id(p) for p in module.parameters(recurse=False))
            with torch.no_grad():
                for p in base.parameters():
                    if id(p) not in done:
                        nn.init.trunc_normal_(p, std=0.02)
    return _freeze(enc)


def from_run(run_dir: Path | str, analysis: str, with_random: bool = False, seed: int = 0) -> EncoderSet:
    """Pretrained and fine-tuned encoders of a trained run (and a random-init control if ``with_random``).

    Raises:
        CheckpointError: no run directory / checkpoint.
        ConfigError: the run's encoder has no pretrained weights (``cnn``).
    """
    run = checkpoint.load_run(run_dir)  # on the CPU, in eval mode
    cfg, agent = run.config, run.agent
    cfg.device = "cpu"
    require_pretrained(agent.wm.encoder, cfg.encoder, analysis)
    finetuned = agent.wm.encoder
    pretrained = copy.deepcopy(finetuned)
    pretrained.load_state_dict(pretrained_encoder_state(agent))
    encoders = {"pretrained": _freeze(pretrained), "finetuned": _freeze(copy.deepcopy(finetuned))}
    if with_random:
        encoders["random"] = random_init(pretrained, seed)
    base = {"env": cfg.env, "encoder": cfg.encoder, "encoder_mode": resolve_mode(cfg),
            "config_hash": model_hash(cfg), "env_steps_trained": int(run.counters.get("env_steps", 0))}
    return EncoderSet(encoders, cfg, base, Path(run_dir), agent)


def from_settings(overrides: dict[str, str], analysis: str, seed: int = 0) -> EncoderSet:
    """The pretrained encoder built from ``key=value`` settings (``encoder=`` required) and its random-init
    control.

    Raises:
        ConfigError: no ``encoder=``, bad settings, an encoder without pretrained weights, missing weights.
    """
    if "encoder" not in overrides:
        raise ConfigError(f"analysis {analysis!r} needs RUN_DIR or encoder=NAME (one of: {PRETRAINED_ENCODERS})")
    cfg = build_config(overrides)
    if cfg.encoder.split(":", 1)[0] == "cnn":
        raise ConfigError(f"analysis {analysis!r} compares an encoder with its pretrained weights, but encoder "
                          f"'cnn' has none; allowed encoders: {PRETRAINED_ENCODERS}")
    encoder = build_encoder(cfg.encoder, image_size=cfg.image_size, cfg=cfg)
    require_pretrained(encoder, cfg.encoder, analysis)
    encoder = _freeze(encoder)
    base = {"env": cfg.env, "encoder": cfg.encoder, "encoder_mode": resolve_mode(cfg), "config_hash": None}
    return EncoderSet({"pretrained": encoder, "random": random_init(encoder, seed)}, cfg, base)
