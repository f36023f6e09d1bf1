"""Fine-tuning levels of a pretrained backbone: ``frozen``, ``partial:k``, ``full``, ``adapter``, ``lora``.

- ``frozen``: no parameter of the backbone trains; it runs in eval mode (dropout/BN statistics fixed), its
  weights stay bit-identical, and its features may be cached in replay.
- ``partial:k``: exactly the last ``k`` blocks and every module after them (final norm, pooler) train
  (Jones et al. 2025: last 4 of 12 ViT blocks). For CNN backbones a block is a stage.
- ``full``: every backbone parameter trains.
- ``adapter``: bottleneck adapters (down-projection, GELU, zero-initialised up-projection, residual) after the
  chosen blocks; the backbone is frozen ("lossless adaptation", Sharma et al. 2023, Sec. 3). Placement
  ``bottom`` / ``middle`` / ``top`` (a third of the blocks each) or ``all``.
- ``lora``: low-rank updates of the attention projections through peft (Hu et al. 2021, "LoRA", Eq. 3); the
  backbone weights are frozen.

Mode strings: ``frozen``, ``full``, ``partial`` (k = 4), ``partial:K``, ``adapter``, ``adapter:PLACEMENT``,
``lora``, ``lora:RANK``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from envs.errors import ConfigError

MODES = ("frozen", "partial:k", "full", "adapter[:bottom|middle|top|all]", "lora[:rank]")
PLACEMENTS = ("bottom", "middle", "top", "all")


@dataclass(frozen=True)
class FinetuneMode:
    """A parsed fine-tuning mode (see the module docstring)."""

    kind: str  # frozen | partial | full | adapter | lora
    k: int = 4  # partial: number of trainable last blocks
    placement: str = "all"  # adapter placement
    rank: int = 8  # lora rank

    @property
    def backbone_frozen(self) -> bool:
        """Whether the original backbone weights stay fixed (frozen, adapter, lora)."""
        return self.kind in ("frozen", "adapter", "lora")

    def __str__(self) -> str:
        return {"partial": f"partial:{self.k}", "adapter": f"adapter:{self.placement}",
                "lora": f"lora:{self.rank}"}.get(self.kind, self.kind)


def parse_mode(text: str) -> FinetuneMode:
    """Parse a mode string; raises :class:`ConfigError` naming the allowed forms."""
    kind, _, arg = text.partition(":")
    try:
        if kind in ("frozen", "full") and not arg:
            return FinetuneMode(kind)
        if kind == "partial":
            k = int(arg) if arg else 4
            if k < 1:
                raise ValueError
            return FinetuneMode("partial", k=k)
        if kind == "adapter" and (not arg or arg in PLACEMENTS):
            return FinetuneMode("adapter", placement=arg or "all")
        if kind == "lora":
            rank = int(arg) if arg else 8
            if rank < 1:
                raise ValueError
            return FinetuneMode("lora", rank=rank)
    except ValueError:
        pass
    raise ConfigError(f"unknown encoder_mode {text!r}; allowed: {', '.join(MODES)}")


class Adapter(nn.Module):
    """Bottleneck adapter ``x + up(gelu(down(x)))`` on the last dim, ``up`` zero-initialised so the adapted
    network starts as the pretrained one. ``(..., D) -> (..., D)``."""

    def __init__(self, dim: int, bottleneck: int = 64) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


def adapter_blocks(num_blocks: int, placement: str) -> list[int]:
    """Indices of the blocks that get an adapter: ``bottom``/``middle``/``top`` third, or ``all``."""
    if placement == "all":
        return list(range(num_blocks))
    third = max(1, num_blocks // 3)
    start = {"bottom": 0, "middle": (num_blocks - third) // 2, "top": num_blocks - third}[placement]
    return list(range(start, start + third))


class _AdapterHook:
    """Forward hook applying an adapter to a block's output (first element if it returns a tuple)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def __call__(self, module: nn.Module, args: tuple, output: Tensor | tuple) -> Tensor | tuple:
        if isinstance(output, tuple):
            return (self.adapter(output[0]), *output[1:])
        if hasattr(output, "last_hidden_state") or not isinstance(output, Tensor):
            raise TypeError(f"adapter hook cannot handle block output {type(output).__name__}")
        if output.dim() == 4:  # CNN stage: (N, C, H, W), adapt over channels
            return self.adapter(output.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.adapter(output)


def apply_mode(backbone: nn.Module, blocks: list[nn.Module], after: list[nn.Module], mode: FinetuneMode,
               block_dim: int, lora_targets: list[str] | None = None,
               adapter_dim: int = 64) -> tuple[nn.Module, nn.ModuleList]:
    """Set ``requires_grad`` of ``backbone`` for ``mode`` and add adapters / LoRA.

    Args:
        backbone: the pretrained network.
        blocks: its blocks (transformer layers or CNN stages), input to output order.
        after: modules after the last block that train with ``partial:k`` (final norm, pooler, head conv).
        block_dim: channel/hidden size at block outputs (for adapters).
        lora_targets: module names peft wraps with LoRA (e.g. ``["q_proj", "v_proj"]``).

    Returns:
        ``(backbone, adapters)``: the (possibly peft-wrapped) backbone and the adapters added (empty unless
        ``adapter``).

    Raises:
        ConfigError: ``partial:k`` with ``k`` larger than the number of blocks, or ``lora`` without targets.
    """
    adapters = nn.ModuleList()
    backbone.requires_grad_(mode.kind == "full")
    if mode.kind == "partial":
        if mode.k > len(blocks):
            raise ConfigError(f"encoder_mode partial:{mode.k} but the backbone has only {len(blocks)} blocks")
        for block in blocks[len(blocks) - mode.k:]:
            block.requires_grad_(True)
        for module in after:
            module.requires_grad_(True)
    elif mode.kind == "adapter":
        for i in adapter_blocks(len(blocks), mode.placement):
            adapter = Adapter(block_dim, adapter_dim)
            blocks[i].register_forward_hook(_AdapterHook(adapter))
            adapters.append(adapter)
    elif mode.kind == "lora":
        if not lora_targets:
            raise ConfigError("encoder_mode lora needs attention projections to target; this backbone has none")
        import peft

        config = peft.LoraConfig(r=mode.rank, lora_alpha=mode.rank, target_modules=lora_targets, lora_dropout=0.0,
                                 bias="none")
        backbone = peft.get_peft_model(backbone, config)
    return backbone, adapters


def count_trainable(module: nn.Module) -> int:
    """Number of parameters of ``module`` that require grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def merge_weights(pretrained: dict[str, Tensor], finetuned: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """Weight interpolation ``(1 - alpha) * pretrained + alpha * finetuned`` per tensor (WiSE-FT, Wortsman et
    al. 2022, Eq. 1; RETAIN, Yadav et al. 2025). Non-float tensors and keys missing from ``pretrained`` are
    taken from ``finetuned``.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]`` or a shape mismatch.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    out = {}
    for key, ft in finetuned.items():
        pre = pretrained.get(key)
        if pre is None or not torch.is_floating_point(ft):
            out[key] = ft.clone()
            continue
        if pre.shape != ft.shape:
            raise ValueError(f"cannot merge {key}: shapes {tuple(pre.shape)} vs {tuple(ft.shape)}")
        out[key] = ft.clone() if alpha == 1.0 else pre.clone() if alpha == 0.0 else torch.lerp(pre, ft, alpha)
    return out
