"""Registry of image encoders by name.

Names: ``cnn`` (DreamerV3 CNN, from scratch), ``dinov2[:small|base|large]``, ``clip[:b32|b16]``,
``efficientnet-lite0``, ``dreamshift-vit`` (the bundled DINO-pretrained ViT, :func:`_dreamshift_vit`) and
``hf:<model-id or local dir>``. The part after the first ``:`` is the variant passed
to the factory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encoders.base import Encoder
from encoders.cnn import ConvEncoder
from encoders.finetune import parse_mode
from envs.errors import ConfigError

EncoderFactory = Callable[..., Encoder]

_REGISTRY: dict[str, EncoderFactory] = {}
_HELP: dict[str, str] = {}


def register(name: str, factory: EncoderFactory, help: str = "") -> None:
    """Register ``factory(variant=str, image_size=int, cfg=Config) -> Encoder`` under ``name``."""
    _REGISTRY[name] = factory
    _HELP[name] = help or name


def available() -> list[str]:
    """Registered encoder names with their variants (for error messages and listings)."""
    _load_plugins()
    return [_HELP[k] for k in sorted(_REGISTRY)]


def split_name(name: str) -> tuple[str, str]:
    """``"dinov2:base"`` -> ``("dinov2", "base")``; ``"cnn"`` -> ``("cnn", "")``."""
    base, _, variant = name.partition(":")
    return base, variant


def check_name(name: str) -> None:
    """Raise :class:`ConfigError` listing the registered encoders if ``name`` is not one of them."""
    _load_plugins()
    if split_name(name)[0] not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r}; allowed: {', '.join(available())}")


def resolve_mode(cfg: Any) -> str:
    """The effective fine-tuning mode string: ``auto`` is ``full`` for ``cnn`` and ``frozen`` otherwise."""
    if cfg.encoder_mode != "auto":
        return cfg.encoder_mode
    return "full" if split_name(cfg.encoder)[0] == "cnn" else "frozen"


def build_encoder(name: str, *, image_size: int, cfg: Any) -> Encoder:
    """Build encoder ``name`` for ``(N, 3, image_size, image_size)`` uint8 inputs.

    Args:
        cfg: the run's :class:`mbrl.config.Config` (model sizes, ``encoder_*`` settings).

    Raises:
        ConfigError: unknown encoder name or mode, or a mode the encoder does not support; missing weights.
    """
    check_name(name)
    base, variant = split_name(name)
    return _REGISTRY[base](variant=variant, image_size=image_size, cfg=cfg)


def _cnn(variant: str, image_size: int, cfg: Any) -> Encoder:
    if variant:
        raise ConfigError(f"encoder cnn takes no variant, got cnn:{variant}")
    mode = parse_mode(resolve_mode(cfg))
    if mode.kind not in ("full", "frozen"):
        raise ConfigError(f"encoder cnn supports encoder_mode full or frozen (random features), got {mode}")
    m = cfg.model
    enc = ConvEncoder(image_size, m.cnn_depth, tuple(m.cnn_mults), m.cnn_norm)
    if mode.kind == "frozen":
        enc.requires_grad_(False)
    return enc


register("cnn", _cnn, "cnn")

DREAMSHIFT_VIT_DIR = Path(__file__).resolve().parent / "weights" / "dreamshift-vit-tiny"


def _dreamshift_vit(variant: str, image_size: int, cfg: Any) -> Encoder:
    """The bundled ViT (``encoders/weights/dreamshift-vit-tiny``: a 1.2 M-parameter ``Dinov2Model`` pretrained
    with DINO on dreamshift's own env frames by ``dreamshift pretrain``; see its MODEL_CARD.md), built like
    ``hf:<that dir>`` (every fine-tuning mode works).

    - Input size: the model's own ``image_size`` (64 px, 8 px patches -> 64 tokens), whatever
      ``encoder_input_size`` says (its 224 default is for ImageNet backbones; a ViT pretrained at 64 px gains
      nothing from upsampling and would cost 12x the tokens).
    - Default feature ``cls`` for a DINO checkpoint: DINO trains exactly the (layer-normed) CLS token through its
      projection head, so it is the representation the objective shaped. An MAE checkpoint (objective read from
      its ``pretrain_summary.json``) defaults to ``mean``: MAE never trains the CLS token towards anything (He et
      al. 2022 probe the average-pooled tokens). ``cls`` / ``mean`` / ``patch`` all remain available.
    - ``encoder_path=DIR`` swaps in another ``dreamshift pretrain`` output of the same kind.

    Raises:
        ConfigError: a variant is given, the weights are missing or a mode is unsupported.
    """
    import json

    from encoders.hf import HFEncoder

    if variant:
        raise ConfigError(f"encoder dreamshift-vit takes no variant, got dreamshift-vit:{variant}")
    source = os.path.expanduser(cfg.encoder_path) if cfg.encoder_path else str(DREAMSHIFT_VIT_DIR)
    try:
        input_size = int(json.loads((Path(source) / "config.json").read_text())["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"encoder dreamshift-vit: no readable config.json with image_size in {source!r} (the "
                          f"bundled weights ship in encoders/weights/; reinstall dreamshift or pass encoder_path)"
                          ) from None
    try:  # the objective the directory was pretrained with (dreamshift pretrain's summary)
        objective = json.loads((Path(source) / "pretrain_summary.json").read_text())["args"]["objective"]
    except (OSError, ValueError, KeyError, TypeError):
        objective = "dino"
    default = "cls" if objective == "dino" else "mean"
    feature = default if cfg.encoder_feature == "auto" else cfg.encoder_feature
    return HFEncoder("hf", source, source, parse_mode(resolve_mode(cfg)), feature, input_size,
                     cfg.encoder_token_dim, cfg.encoder_adapter_dim)


register("dreamshift-vit", _dreamshift_vit, "dreamshift-vit")

_PLUGINS = ("encoders.hf", "encoders.efficientnet")
_loaded = False


def _load_plugins() -> None:
    """Import the modules that register pretrained backbones (lazily: they import transformers)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _PLUGINS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # plugins import heavy dependencies lazily; anything else is a bug
                raise
