"""What a run's config resolves to on this machine, before and while it runs: the env and encoder names checked
against their registries (:func:`check_env_encoder`), the torch device (:func:`resolve_device`) and the keyword
arguments of :func:`envs.make_env` (:func:`env_kwargs`). Training, evaluation, adaptation and the analyses share
them.
"""

from __future__ import annotations

import os
from typing import Any

import torch

import envs.registry
import envs.validation
from encoders.finetune import parse_mode
from encoders.hf import check_hf_name
from encoders.registry import check_name, resolve_mode, split_name
from envs.errors import ConfigError
from mbrl.config import Config
from mbrl.world_model import check_decoder


def check_env_encoder(cfg: Config) -> None:
    """Check the names a run refers to, as ``dreamshift train`` does before it writes anything: ``env`` (a known
    ``suite:task`` whose suite is installed), ``obs`` on that suite, ``encoder`` (a registered name),
    ``encoder_mode`` (a valid mode for it; ``cnn``: full or frozen), ``hf:<dir>`` a directory holding a model
    (:func:`encoders.hf.check_hf_name`), ``decoder`` with that encoder
    (:func:`mbrl.world_model.check_decoder`) and ``encoder_path`` (exists, if given). :func:`mbrl.config.validate`
    leaves these out: they need the env and encoder registries (torch, gym), so they are checked here, a layer
    above the config (``import mbrl.config`` stays light).

    Raises:
        ConfigError, envs.EnvError: the first bad name, with what is allowed.
    """
    envs.registry.parse_env_name(cfg.env)
    envs.validation.check_obs(cfg.obs)
    envs.registry.check_state_obs(cfg.obs, cfg.env)
    check_name(cfg.encoder)
    if split_name(cfg.encoder)[0] == "hf":  # a local directory without a model: as building the encoder would say
        check_hf_name(split_name(cfg.encoder)[1], cfg)
    mode = parse_mode(resolve_mode(cfg))
    if split_name(cfg.encoder)[0] == "cnn" and mode.kind not in ("full", "frozen"):
        raise ConfigError(f"encoder cnn supports encoder_mode full or frozen (random features), got {mode}")
    check_decoder(cfg)
    if cfg.encoder_path and not os.path.exists(os.path.expanduser(cfg.encoder_path)):
        raise ConfigError(f"encoder_path={cfg.encoder_path!r} does not exist; give a local directory (or a .pth "
                          f"file for efficientnet-lite0) of pretrained weights, or leave it empty")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; raises :class:`ConfigError` for cuda without a GPU or another
    name."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not allowed; allowed: auto, cpu, cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def env_kwargs(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of :func:`envs.make_env` for a run."""
    return dict(size=cfg.image_size, action_repeat=cfg.action_repeat, time_limit=cfg.time_limit or None,
                camera=None if cfg.camera < 0 else cfg.camera, obs=cfg.obs)
