"""Pretrained vision transformers from Hugging Face ``transformers`` as world-model encoders.

Registered encoders (the part after ``:`` is the variant):

- ``dinov2[:small|base|large]`` -> ``facebook/dinov2-{small,base,large}`` (``Dinov2Model``). Pooled = CLS token of
  the final (layer-normed) hidden state; tokens = the patch tokens without CLS (Jones et al. 2025). Default
  feature ``patch``. ImageNet mean/std. LoRA on the attention ``q_proj``/``v_proj``.
- ``clip[:b32|b16]`` -> ``openai/clip-vit-base-patch32`` / ``-patch16`` (``CLIPVisionModel``). Pooled =
  ``pooler_output`` (post-layernorm CLS); tokens = ``last_hidden_state[:, 1:]``. Default feature ``cls``. CLIP
  mean/std. LoRA on ``q_proj``/``v_proj``.
- ``hf:<model id or local dir>`` -> ``AutoModel`` (its ``vision_model`` submodule if it has one, e.g. full
  CLIP/SigLIP models). Default feature ``mean``. Structure found by heuristics, see :func:`find_blocks`,
  :func:`modules_after` and :meth:`HFEncoder._generic`.

Weights come from ``cfg.encoder_path`` (a local directory with ``config.json`` + weights) when set, else from the
model id through ``from_pretrained`` (the Hugging Face cache, downloading when online). Loading never hangs
without network: the cache is tried first (``local_files_only``); if that misses and ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` is set, or the Hub does not answer within a few seconds, a one-line
:class:`envs.errors.ConfigError` says how to get the weights.

``transformers`` / ``peft`` / ``huggingface_hub`` are imported lazily inside functions, so importing this module
is cheap and never fails.

Images are resized to ``cfg.encoder_input_size`` (a multiple of the patch size; 224 -> 16 x 16 = 256 DINOv2
tokens) inside the encoder. Attention: the backbone is loaded with the default attention implementation (sdpa),
which does not return attention maps; analyses that need them must load with ``attn_implementation="eager"``.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encoders.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneEncoder
from encoders.finetune import FinetuneMode, apply_mode, parse_mode
from encoders.registry import register, resolve_mode
from envs.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DINOV2_VARIANTS = {"small": "facebook/dinov2-small", "base": "facebook/dinov2-base",
                   "large": "facebook/dinov2-large"}
CLIP_VARIANTS = {"b32": "openai/clip-vit-base-patch32", "b16": "openai/clip-vit-base-patch16"}
LORA_NAMES = ("q_proj", "v_proj", "query", "value")  # attention projections LoRA targets (those that exist)
HUB_TIMEOUT_S = 3.0  # reachability probe of the Hub before a download is attempted
_TRUE = ("1", "ON", "YES", "TRUE")


# ----------------------------------------------------------------------------------------------- loading


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (read at call time, so setting them later works too)."""
    if any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    import huggingface_hub

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _hub_reachable() -> bool:
    """One HEAD request to the Hub endpoint (no retries, short timeout, proxies from the environment)."""
    import huggingface_hub

    try:
        huggingface_hub.get_session().head(huggingface_hub.constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception:  # any transport failure (DNS, refused, timeout, offline mode) means "not reachable"
        return False
    return True


def _load_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "weights missing / not downloadable" (not bugs)."""
    import huggingface_hub.errors as hub_errors

    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError, hub_errors.HfHubHTTPError,
                                         hub_errors.HFValidationError, hub_errors.OfflineModeIsEnabled]
    for module in ("httpx", "httpx2"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        errors.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    return tuple(errors)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing_message(model_id: str, source: str, reason: str, is_path: bool) -> str:
    if is_path and source == model_id:  # hf:<dir>
        return (f"pretrained weights for {model_id!r} are not available ({reason}); the directory needs config.json "
                f"and the weights, e.g. from `hf download <model id> --local-dir {source}` on a machine with network")
    if is_path:  # encoder_path
        return (f"pretrained weights for {model_id!r} are not available in encoder_path {source!r} ({reason}); on a "
                f"machine with network run `hf download {model_id} --local-dir DIR` (or `huggingface-cli download "
                f"...`) and pass encoder_path=DIR, or leave encoder_path empty to use the Hugging Face cache")
    return (f"pretrained weights for {model_id!r} are not available offline ({reason}); on a machine with network "
            f"run `hf download {model_id}` (or `huggingface-cli download {model_id}`) and copy ~/.cache/huggingface "
            f"(or $HF_HOME), or pass encoder_path=/dir/with/config.json+weights")


def check_source(model_id: str, source: str) -> None:
    """What :func:`load_pretrained` refuses without loading anything: a local source (an existing directory, or
    a path starting ``/``, ``.`` or ``~``) that is not a directory or has no ``config.json``. A Hub id is not
    looked up (that needs the network or the cache).

    Raises:
        ConfigError: the line :func:`load_pretrained` would give.
    """
    is_path = os.path.isdir(source) or source.startswith(("/", ".", "~"))
    if not is_path:
        return
    if not os.path.isdir(source):
        raise ConfigError(_missing_message(model_id, source, "no such directory", True))
    if not os.path.isfile(os.path.join(source, "config.json")):
        raise ConfigError(_missing_message(model_id, source, "no config.json in it", True))


def check_hf_name(variant: str, cfg: Any) -> None:
    """Check ``encoder=hf:<variant>`` up front (``dreamshift config``/``train``/sweeps, before any work): a
    model id or directory is given, and a local directory (or ``encoder_path``) holds a model
    (:func:`check_source`).

    Raises:
        ConfigError: no variant, or a local source that cannot hold the weights.
    """
    if not variant:
        raise ConfigError("encoder hf needs a model id or local directory: hf:<model id or dir>, "
                          "e.g. hf:facebook/dinov2-small")
    check_source(variant, os.path.expanduser(cfg.encoder_path or variant))


def load_pretrained(model_id: str, source: str, load: Callable[..., Any]) -> tuple[nn.Module, set[str]]:
    """Load a model without hanging when there is no network.

    Args:
        model_id: the name reported in errors (Hub id or directory).
        source: what ``from_pretrained`` gets: a local directory or a Hub model id.
        load: ``load(source, **kwargs) -> (model, loading_info)`` (a ``from_pretrained`` with
            ``output_loading_info=True``).

    Returns:
        ``(model, missing_keys)``: the model in float32 and the keys that were initialised randomly.

    Raises:
        ConfigError: one line naming ``model_id`` and how to download the weights.
    """
    errors = _load_errors()
    is_path = os.path.isdir(source) or source.startswith(("/", ".", "~"))
    if is_path and not os.path.isdir(source):
        raise ConfigError(_missing_message(model_id, source, "no such directory", True))
    try:
        model, info = load(source, local_files_only=True)
    except errors as exc:
        if is_path:
            raise ConfigError(_missing_message(model_id, source, _one_line(exc), True)) from None
        if _offline():
            raise ConfigError(_missing_message(model_id, source, "not in the Hugging Face cache and HF_HUB_OFFLINE "
                                               "or TRANSFORMERS_OFFLINE is set", False)) from None
        if not _hub_reachable():
            raise ConfigError(_missing_message(model_id, source, "not in the Hugging Face cache and "
                                               "huggingface.co is unreachable", False)) from None
        try:
            model, info = load(source)
        except errors as exc2:
            raise ConfigError(f"could not load pretrained weights for {model_id!r} from the Hugging Face Hub "
                              f"({_one_line(exc2)}); check the model id, or run `hf download {model_id}` and "
                              f"pass encoder_path=/dir/with/config.json+weights") from None
    return model, set(info.get("missing_keys", ()))


def _from_pretrained(cls: Any) -> Callable[..., Any]:
    def load(source: str, **kwargs: Any) -> Any:
        if kwargs.get("local_files_only"):  # AutoModel does not pass it on to its adapter_config.json look-up,
            kwargs["adapter_kwargs"] = {"local_files_only": True}  # which otherwise retries the Hub for ~25 s
        return cls.from_pretrained(source, dtype=torch.float32, output_loading_info=True, **kwargs)

    return load


def _read_mean_std(source: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``image_mean``/``image_std`` of ``preprocessor_config.json`` in a local dir or the HF cache (no network)."""
    path: Any = os.path.join(source, "preprocessor_config.json")
    if not os.path.isdir(source):
        try:
            import huggingface_hub

            path = huggingface_hub.try_to_load_from_cache(source, "preprocessor_config.json")
        except Exception:  # invalid repo id etc.: no local preprocessor config
            return None
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        mean, std = tuple(float(v) for v in data["image_mean"]), tuple(float(v) for v in data["image_std"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (mean, std) if len(mean) == 3 and len(std) == 3 else None


# --------------------------------------------------------------------------------------------- structure


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """The model's block list: the longest ``nn.ModuleList`` whose entries all have the same type and own
    parameters (``encoder.layer``, ``encoder.layers``, ``blocks`` ...; ties go to the first registered).

    Raises:
        ConfigError: no such list.
    """
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if (isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1
                and any(True for _ in module.parameters()) and (best is None or len(module) > len(best[1]))):
            best = (name, module)
    if best is None:
        raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__} (no nn.ModuleList of "
                          f"identical blocks)")
    return best[0], list(best[1])


def modules_after(model: nn.Module, path: str) -> list[nn.Module]:
    """Modules that run after the block list at ``path`` (heuristic: registration order = execution order).

    Walking from the block list up to the root, every sibling registered after the child on that path that owns
    parameters is "after" (innermost first): e.g. ``layernorm`` of DINOv2, ``post_layernorm`` of CLIP,
    ``layernorm`` + ``pooler`` of ViT, later stages + final norm of hierarchical models.
    """
    parts = path.split(".") if path else []
    after: list[nn.Module] = []
    for depth in range(len(parts), 0, -1):
        parent = model.get_submodule(".".join(parts[: depth - 1]))
        names = list(parent._modules)
        for name in names[names.index(parts[depth - 1]) + 1:]:
            module = parent._modules[name]
            if module is not None and any(True for _ in module.parameters()):
                after.append(module)
    return after


def _patch_size(config: Any) -> int | None:
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0] if len(set(patch)) == 1 else None
    return patch if isinstance(patch, int) and patch > 0 else None


def _check_patch(model_id: str, input_size: int, patch: int) -> int:
    if input_size % patch:
        raise ConfigError(f"encoder_input_size={input_size} must be divisible by the patch size {patch} of "
                          f"{model_id!r} (e.g. {max(1, round(input_size / patch)) * patch})")
    return (input_size // patch) ** 2


def _raw_key(peft_key: str) -> str:
    """``base_model.model.encoder.layer.0.attention.q_proj.base_layer.weight`` -> the unwrapped model's key."""
    key = peft_key.removeprefix("base_model.model.")
    return key.replace(".base_layer.", ".")


# ----------------------------------------------------------------------------------------------- encoder


class HFEncoder(BackboneEncoder):
    """A ``transformers`` vision backbone as a :class:`~encoders.backbone.BackboneEncoder`.

    Args:
        kind: ``dinov2`` | ``clip`` | ``hf`` (how the structure is found, see the module docstring).
        model_id: Hub id (or directory for ``hf:<dir>``), reported in errors and stored as :attr:`model_id`.
        source: where the weights are loaded from (``cfg.encoder_path`` or ``model_id``).
        mode: fine-tuning mode; feature: a choice of :data:`encoders.backbone.FEATURES`.
        input_size: side the images are resized to.

    Attributes:
        backbone: the module that runs (a ``peft.PeftModel`` wrapping the transformer in ``lora`` mode).
        blocks, after_modules: the transformer blocks and the modules after them (``partial:k``).
        lora_targets: module names LoRA wraps; num_prefix_tokens: CLS/register tokens dropped from ``tokens``.

    Raises:
        ConfigError: missing weights, an input size the patch size does not divide, an unsupported mode.
    """

    def __init__(self, kind: str, model_id: str, source: str, mode: FinetuneMode, feature: str, input_size: int,
                 token_dim: int = 32, adapter_dim: int = 64) -> None:
        self.kind, self.model_id, self.source = kind, model_id, source
        model, self.config, self._initial_missing = self._load_raw()
        if kind == "dinov2":
            arch = self._dinov2(model, input_size)
        elif kind == "clip":
            arch = self._clip(model, input_size)
        else:
            arch = self._generic(model, input_size)
        super().__init__(mode, feature, arch["width"], arch["num_tokens"], input_size, arch["mean"], arch["std"],
                         token_dim)
        self.num_prefix_tokens: int = arch["prefix"]
        self.pooled_from: str = arch["pooled"]  # pooler | first | mean
        self.lora_targets: list[str] = arch["lora"]
        self._call_kwargs: dict[str, Any] = arch["call_kwargs"]
        self.blocks: list[nn.Module] = arch["blocks"]
        self.after_modules: list[nn.Module] = arch["after"]
        backbone, adapters = apply_mode(model, self.blocks, self.after_modules, mode, block_dim=arch["block_dim"],
                                        lora_targets=self.lora_targets, adapter_dim=adapter_dim)
        self.backbone = backbone
        self.adapters = adapters
        self.train(self.training)

    # --- loading ------------------------------------------------------------------------------------------
    def _load_raw(self) -> tuple[nn.Module, Any, dict[str, Tensor]]:
        """Load the unwrapped backbone (float32, eval mode).

        Returns:
            ``(model, config, initial)``: the model (its ``vision_model`` for ``hf`` models that have one), its
            config, and the tensors the checkpoint lacked (e.g. an untrained ViT pooler) as initialised, so that
            :meth:`pretrained_state_dict` reproduces the starting point exactly.
        """
        import transformers

        cls = {"dinov2": transformers.Dinov2Model, "clip": transformers.CLIPVisionModel,
               "hf": transformers.AutoModel}[self.kind]
        model, missing = load_pretrained(self.model_id, self.source, _from_pretrained(cls))
        config = model.config
        vision = getattr(model, "vision_model", None) if self.kind == "hf" else None
        if isinstance(vision, nn.Module):
            config = getattr(model.config, "vision_config", None) or getattr(vision, "config", model.config)
            missing = {k.removeprefix("vision_model.") for k in missing if k.startswith("vision_model.")}
            model = vision
        state = model.state_dict()
        return model.eval(), config, {k: state[k].detach().clone() for k in missing if k in state}

    def pretrained_state_dict(self) -> dict[str, Tensor]:
        """The pretrained backbone weights, reloaded from the same source, keyed like ``self.backbone.state_dict()``.

        For ``merge_weights(pretrained, finetuned, alpha)`` (WiSE-FT). In ``lora`` mode the keys follow the peft
        wrapper: base weights are the pretrained ones, ``lora_B`` tensors are zero (LoRA's starting point) and
        ``lora_A`` tensors are left out (``merge_weights`` then takes them from the fine-tuned model), so the merge
        scales the learned low-rank update ``B A`` by ``alpha``.
        """
        fresh, _, _ = self._load_raw()
        state = fresh.state_dict()
        state.update(self._initial_missing)
        current = self.backbone.state_dict()
        out: dict[str, Tensor] = {}
        for key, value in current.items():
            if "lora_B" in key:
                out[key] = torch.zeros_like(value)
            elif "lora_" in key:
                continue
            else:
                raw = _raw_key(key) if self.mode.kind == "lora" else key
                out[key] = state[raw].to(device=value.device, dtype=value.dtype)
        return out

    # --- structure ----------------------------------------------------------------------------------------
    def _dinov2(self, model: nn.Module, input_size: int) -> dict[str, Any]:
        cfg = self.config
        num_tokens = _check_patch(self.model_id, input_size, cfg.patch_size)
        blocks = list(model.encoder.layer)
        return {"width": cfg.hidden_size, "num_tokens": num_tokens, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "prefix": 1 + int(getattr(cfg, "num_register_tokens", 0) or 0), "pooled": "first",
                "lora": ["q_proj", "v_proj"], "call_kwargs": {}, "blocks": blocks, "after": [model.layernorm],
                "block_dim": cfg.hidden_size}

    def _clip(self, model: nn.Module, input_size: int) -> dict[str, Any]:
        cfg = self.config
        num_tokens = _check_patch(self.model_id, input_size, cfg.patch_size)
        root = getattr(model, "vision_model", model)  # transformers < 5 nests CLIPVisionTransformer
        return {"width": cfg.hidden_size, "num_tokens": num_tokens, "mean": CLIP_MEAN, "std": CLIP_STD,
                "prefix": 1, "pooled": "pooler", "lora": ["q_proj", "v_proj"],
                "call_kwargs": {"interpolate_pos_encoding": True} if input_size != cfg.image_size else {},
                "blocks": list(root.encoder.layers), "after": [root.post_layernorm], "block_dim": cfg.hidden_size}

    def _generic(self, model: nn.Module, input_size: int) -> dict[str, Any]:
        """Structure of an arbitrary model, from :func:`find_blocks`, :func:`modules_after` and one probe
        forward pass of a blank image at ``input_size``:

        - tokens: 3-D ``last_hidden_state`` ``(N, T, D)`` minus its ``T - P`` leading CLS/register tokens, ``P``
          = ``(input_size / patch_size)^2`` from the config (all ``T`` tokens if that does not fit, e.g.
          hierarchical models); 4-D ``(N, C, H, W)`` (CNNs): the ``H * W`` positions.
        - pooled: ``pooler_output`` when present, else the first token when there is a CLS token, else the mean.
        - block dim (for adapters): the last dim (channels for 4-D) of the last block's output.
        """
        cfg = self.config
        patch = _patch_size(cfg)
        if patch is not None:
            _check_patch(self.model_id, input_size, patch)
        path, blocks = find_blocks(model)
        call_kwargs: dict[str, Any] = {}
        params = inspect.signature(model.forward).parameters
        if "interpolate_pos_encoding" in params and input_size != getattr(cfg, "image_size", input_size):
            call_kwargs["interpolate_pos_encoding"] = True
        seen: dict[str, int] = {}

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, Tensor):
                seen["dim"] = out.shape[1] if out.dim() == 4 else out.shape[-1]

        handle = blocks[-1].register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = model(pixel_values=torch.zeros(1, 3, input_size, input_size), **call_kwargs)
        except Exception as exc:  # the model cannot run at this size / is not a vision model
            raise ConfigError(f"encoder {self.model_id!r} cannot encode {input_size}x{input_size} images "
                              f"(encoder_input_size): {_one_line(exc)}") from None
        finally:
            handle.remove()
        lhs = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", None)
        if not isinstance(lhs, Tensor) or lhs.dim() not in (3, 4):
            raise ConfigError(f"encoder {self.model_id!r} returns no (N, T, D) or (N, C, H, W) last_hidden_state")
        pooler = out[1] if isinstance(out, tuple) and len(out) > 1 else getattr(out, "pooler_output", None)
        if lhs.dim() == 4:
            width, num_tokens, prefix = lhs.shape[1], lhs.shape[2] * lhs.shape[3], 0
        else:
            width, total = lhs.shape[2], lhs.shape[1]
            num_patches = (input_size // patch) ** 2 if patch else total
            prefix = total - num_patches if 0 <= total - num_patches <= 16 else 0
            num_tokens = total - prefix
        pooler_ok = (isinstance(pooler, Tensor) and pooler.flatten(1).shape[1] == width
                     and not any(k.startswith("pooler.") for k in self._initial_missing))  # untrained pooler
        pooled = "pooler" if pooler_ok else "first" if prefix > 0 else "mean"
        found = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        mean_std = _read_mean_std(self.source) or (IMAGENET_MEAN, IMAGENET_STD)
        return {"width": int(width), "num_tokens": int(num_tokens), "mean": mean_std[0], "std": mean_std[1],
                "prefix": int(prefix), "pooled": pooled, "lora": [n for n in LORA_NAMES if n in found],
                "call_kwargs": call_kwargs, "blocks": blocks, "after": modules_after(model, path),
                "block_dim": int(seen.get("dim", width))}

    # --- forward ------------------------------------------------------------------------------------------
    def backbone_tokens(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, 3, S, S)`` normalised pixels -> ``(pooled (N, D), patch tokens (N, P, D))``."""
        out = self.backbone(pixel_values=pixels, **self._call_kwargs)
        lhs = out[0] if isinstance(out, tuple) else out.last_hidden_state
        if lhs.dim() == 4:
            tokens = lhs.flatten(2).transpose(1, 2)
        else:
            tokens = lhs[:, self.num_prefix_tokens:]
        if self.pooled_from == "pooler":
            pooled = (out[1] if isinstance(out, tuple) else out.pooler_output).flatten(1)
        elif self.pooled_from == "first":
            pooled = lhs[:, 0]
        else:
            pooled = tokens.mean(1)
        return pooled, tokens


# ---------------------------------------------------------------------------------------------- factories


def _build(kind: str, model_id: str, default_feature: str, cfg: Any) -> HFEncoder:
    mode = parse_mode(resolve_mode(cfg))
    feature = default_feature if cfg.encoder_feature == "auto" else cfg.encoder_feature
    source = os.path.expanduser(cfg.encoder_path or model_id)
    return HFEncoder(kind, model_id, source, mode, feature, cfg.encoder_input_size, cfg.encoder_token_dim,
                     cfg.encoder_adapter_dim)


def _variant(name: str, variant: str, variants: dict[str, str], default: str) -> str:
    if (variant or default) not in variants:
        raise ConfigError(f"unknown {name} variant {variant!r}; allowed: {', '.join(variants)}")
    return variants[variant or default]


def _dinov2(variant: str, image_size: int, cfg: Any) -> HFEncoder:
    return _build("dinov2", _variant("dinov2", variant, DINOV2_VARIANTS, "small"), "patch", cfg)


def _clip(variant: str, image_size: int, cfg: Any) -> HFEncoder:
    return _build("clip", _variant("clip", variant, CLIP_VARIANTS, "b32"), "cls", cfg)


def _hf(variant: str, image_size: int, cfg: Any) -> HFEncoder:
    check_hf_name(variant, cfg)
    return _build("hf", variant, "mean", cfg)


register("dinov2", _dinov2, "dinov2[:small|base|large]")
register("clip", _clip, "clip[:b32|b16]")
register("hf", _hf, "hf:<model id or dir>")

DREAMSHIFT_VIT_DIR = Path(__file__).resolve().parent / "weights" / "dreamshift-vit-tiny"


def _dreamshift_vit(variant: str, image_size: int, cfg: Any) -> HFEncoder:
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
