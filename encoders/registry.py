"""Registry of image encoders by name.

Names: ``cnn`` (DreamerV3 CNN, from scratch), ``dinov2[:small|base|large]``, ``clip[:b32|b16]``,
``efficientnet-lite0``, ``dreamshift-vit`` (the bundled DINO-pretrained ViT, :func:`encoders.hf._dreamshift_vit`) and
``hf:<model-id or local dir>``. The part after the first ``:`` is the variant passed
to the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from encoders.base import Encoder
from encoders.cnn import ConvEncoder, RandomCNN
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


def _random_cnn(variant: str, image_size: int, cfg: Any) -> Encoder:
    if variant:
        raise ConfigError(f"encoder random-cnn takes no variant, got random-cnn:{variant}")
    mode = parse_mode(resolve_mode(cfg))
    if mode.kind != "frozen":
        raise ConfigError(f"encoder random-cnn is a frozen random CNN; encoder_mode must be frozen (or auto), got "
                          f"{mode}; use encoder=cnn to train the CNN")
    m = cfg.model
    return RandomCNN(image_size, m.cnn_depth, tuple(m.cnn_mults), m.cnn_norm)


register("random-cnn", _random_cnn, "random-cnn")

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
