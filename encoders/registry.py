"""Registry of image encoders by name. This issue ships ``cnn``; pretrained backbones register here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from encoders.base import Encoder
from encoders.cnn import ConvEncoder
from mbrl.errors import ConfigError

EncoderFactory = Callable[..., Encoder]

_REGISTRY: dict[str, EncoderFactory] = {}


def register(name: str, factory: EncoderFactory) -> None:
    """Register ``factory(image_size=..., model_cfg=...) -> Encoder`` under ``name``."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Names of registered encoders."""
    return sorted(_REGISTRY)


def build_encoder(name: str, *, image_size: int, model_cfg: Any) -> Encoder:
    """Build the encoder ``name`` for ``(N, 3, image_size, image_size)`` inputs.

    Args:
        model_cfg: the run's :class:`mbrl.config.ModelConfig` (sizes of the ``cnn``).

    Raises:
        ConfigError: unknown encoder name (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r}; allowed: {', '.join(available())}")
    return _REGISTRY[name](image_size=image_size, model_cfg=model_cfg)


def _cnn(image_size: int, model_cfg: Any) -> Encoder:
    return ConvEncoder(image_size, model_cfg.cnn_depth, tuple(model_cfg.cnn_mults), model_cfg.cnn_norm)


register("cnn", _cnn)
