"""Image encoders that plug into the world model (see :mod:`encoders.base` for the interface)."""

from encoders.base import Encoder
from encoders.cnn import ConvEncoder
from encoders.registry import available, build_encoder, register

__all__ = ["ConvEncoder", "Encoder", "available", "build_encoder", "register"]
