"""Self-supervised pretraining of a small ViT on our env frames: DINO and MAE.

``dreamshift pretrain`` (:mod:`dreamshift.pretrain`) calls :func:`pretrain`. Frames come from
:mod:`encoders.pretrain_data` (random actions under randomised visual shifts); the result is a
``transformers`` ``Dinov2Model`` directory (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``
with the data's mean/std) that loads through the normal encoder path ``encoder=hf:<dir>`` (and, for the bundled
checkpoint, ``encoder=dreamshift-vit``).

Architecture (:data:`ARCHS`): a ``Dinov2Config`` ViT (pre-norm blocks, LayerScale 1.0, CLS token, no register
tokens, learned position embeddings that ``Dinov2Model`` interpolates for other input sizes), 64 px input,
8 px patches (64 patch tokens). ``vit-tiny``: width 192, 4 blocks, 3 heads, MLP ratio 2 (1.24 M parameters,
5.0 MB float32) -- ViT-Ti's width at a third of its depth, sized for a shared 2-core CPU (a 6-block, MLP-ratio-3
variant ran ~1.6x slower per step); ``vit-micro`` (width 64, 2 blocks) is for tests.

Objectives:

- ``dino`` -- self-distillation with no labels (Caron et al. 2021, "Emerging Properties in Self-Supervised
  Vision Transformers", Algorithm 1 and Sec. 3.1). A student network ``g_s`` (backbone + projection head) and a
  teacher ``g_t`` of the same architecture see different augmented views; the teacher's CLS output, centered
  (``c``) and sharpened (temperature ``tau_t``), is the target of the student's (temperature ``tau_s``)::

      P_t(x) = softmax((g_t(x) - c) / tau_t),  P_s(x) = softmax(g_s(x) / tau_s)
      L = mean over pairs (x in global views, x' in all views, x' != x) of  H(P_t(x), P_s(x'))   (Eq. 1-3)
      theta_t <- lambda theta_t + (1 - lambda) theta_s,  lambda: cosine 0.99 -> 1                 (Sec. 3.1)
      c <- m c + (1 - m) mean_batch g_t(x),  m = 0.9                                                (Eq. 4)

  Head (paper Appendix): 3-layer MLP (hidden 512 here vs 2048, GELU) -> 128-d bottleneck -> L2 normalisation
  -> weight-normalised linear layer to ``K`` = 2048 prototypes (65 536 in the paper) with its norm fixed to 1,
  frozen for the first 1 % of steps. ``tau_s = 0.1``; ``tau_t`` warms up linearly from 0.04 to ``teacher_temp``
  (default 0.04, the paper's default: constant) over the first 30 % of steps; AdamW, lr linear warm-up
  (10 % of steps) then cosine to 1e-6, weight decay cosine 0.04 -> 0.4
  (not on biases and norms), gradient clipping 3.0. Multi-crop: 2 global crops at 64 px (scale 0.4-1) and
  ``n_local`` local crops at 32 px (scale 0.1-0.4). Augmentations (paper, BYOL's recipe): colour jitter
  (brightness/contrast 0.4, saturation 0.2, p 0.8; no hue), grayscale p 0.2, Gaussian blur (p 1.0 / 0.1 /
  0.5 for global 1 / global 2 / local), solarisation p 0.2 on global 2. No horizontal flip (deviation): a
  mirrored control frame shows a different state (e.g. the sign of the pole angle), and invariance to it would
  erase that state. The saved backbone is the **teacher** (the paper evaluates the teacher).
- ``mae`` -- masked autoencoding (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
  Sec. 3): 75 % of the 64 patches are masked at random per image, the encoder sees only the visible patches
  (+ CLS), a light decoder (width 128, 2 pre-norm transformer blocks, fixed 2-D sin-cos position embeddings,
  shared learned mask token) reconstructs the pixels of the masked patches; loss = MSE on masked patches
  against per-patch normalised pixels (``norm_pix_loss``). Augmentation: random resized crop (scale 0.5-1, no
  flip). AdamW betas (0.9, 0.95), weight decay 0.05, same lr schedule as DINO.

Deviations from the papers, for a ~30 min CPU budget: a 4-block ViT (``vit-tiny``) at 64 px, small heads, few
thousand steps, lr 5e-4 regardless of batch size (the papers scale a base lr by batch/256 over hundreds of
epochs).

Output directory ``OUT`` (see :func:`pretrain`): ``config.json``, ``model.safetensors``,
``preprocessor_config.json``, ``train_log.jsonl`` (one record per logged step), ``loss_curve.png``,
``pretrain_summary.json`` (arguments, data size, wall time, CPU load, final loss; ``finished: true`` marks a
finished model), ``MODEL_CARD.md``. While training: ``frames.npz`` (the collected data) and a checkpoint
(every ``save_every`` steps): ``checkpoint-<step>.safetensors`` (model, optimiser and RNG tensors) and
``checkpoint.json`` (arguments, optimiser step counts and hyper-parameters, log records, counters, written last:
it names the tensor file), all written atomically (temp file + rename) and removed when the run finishes
(``keep_cache`` keeps them). No pickle is written or read; an older ``checkpoint.pt`` (a pickle) is refused,
not opened. A ``frames.npz`` collected with the same ``envs``, ``frames``,
``diversity``, ``seed`` and ``episode_len`` is reused (also by a fresh, non-resumed run into the same ``OUT``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.pretrain_data import FrameSet, collect_frames, expand_envs
from envs.errors import ConfigError
from envs.files import atomic_write, check_output_dir, write_json
from mbrl import safe_state

ARCHS: dict[str, dict[str, Any]] = {
    "vit-tiny": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "mlp_ratio": 2},
    "vit-micro": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2},
}
OBJECTIVES = ("dino", "mae")
IMAGE_SIZE = 64
PATCH_SIZE = 8
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
SUMMARY = "pretrain_summary.json"
CHECKPOINT = "checkpoint.json"  # the commit point of a checkpoint; it names its tensor file
CHECKPOINT_TENSORS = "checkpoint-{step}.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"  # a pickle written by earlier versions: never opened
CHECKPOINT_FORMAT = "dreamshift-pretrain-checkpoint"
FRAMES = "frames.npz"
LOG = "train_log.jsonl"
CURVE = "loss_curve.png"
CARD = "MODEL_CARD.md"
# the arguments a resumed run must share with the checkpoint
_RESUME_KEYS = ("envs", "frames", "arch", "objective", "diversity", "seed", "steps", "batch_size", "lr",
                "n_local", "out_dim", "episode_len", "teacher_temp")


@dataclass
class PretrainConfig:
    """Arguments of :func:`pretrain` (the CLI flags of ``dreamshift pretrain``).

    Attributes:
        envs: env names/globs (:func:`encoders.pretrain_data.expand_envs`).
        frames: number of frames to collect (>= 1).
        arch: a key of :data:`ARCHS`; objective: ``dino`` | ``mae``.
        out: output directory.
        diversity: probability that a collection episode is shifted, ``[0, 1]``.
        seed: seed of collection, initialisation, augmentations and batches.
        steps: optimiser steps (0: derived from ``epochs``); epochs: passes over the frames when ``steps == 0``.
        batch_size: images per step; lr: peak learning rate.
        n_local: DINO local crops per image; out_dim: DINO prototypes ``K``; teacher_temp: DINO's final
            teacher temperature (linear warm-up from 0.04 over 30 % of the steps).
        episode_len: agent steps per collection episode.
        log_every, save_every: steps between log records / checkpoints.
        threads: ``torch.set_num_threads``; resume: continue from the checkpoint in ``OUT``.
        keep_cache: keep ``frames.npz`` and the checkpoint after finishing.
        progress: show a rich progress bar (``None``: when stderr is a terminal; else a text line per log).
        command: the command line recorded in the summary and model card.
    """

    envs: str = "dmc:*,metaworld:*"
    frames: int = 10000
    arch: str = "vit-tiny"
    objective: str = "dino"
    out: str = "pretrain-out"
    diversity: float = 0.5
    seed: int = 0
    steps: int = 0
    epochs: float = 10.0
    batch_size: int = 64
    lr: float = 5e-4
    n_local: int = 2
    out_dim: int = 2048
    teacher_temp: float = 0.04
    episode_len: int = 50
    log_every: int = 10
    save_every: int = 100
    threads: int = 2
    resume: bool = False
    keep_cache: bool = False
    progress: bool | None = None
    command: str = ""


def validate(cfg: PretrainConfig) -> list[str]:
    """Check ``cfg`` and the output directory; returns the expanded env names.

    Raises:
        ConfigError: unknown arch/objective/env pattern, ``frames < 1``, bad numbers, an ``out`` that holds a
            finished model (without ``resume``: refuses to overwrite; with it: nothing left to do) or an
            unfinished run without ``resume``, ``resume`` without a checkpoint or with different arguments.
    """
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown --arch {cfg.arch!r}; allowed: {', '.join(ARCHS)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"unknown --objective {cfg.objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if cfg.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {cfg.frames}")
    if not 0.0 <= cfg.diversity <= 1.0:
        raise ConfigError(f"--diversity must be in [0, 1] (fraction of shifted episodes), got {cfg.diversity}")
    for name in ("batch_size", "log_every", "save_every", "threads", "out_dim", "episode_len"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.steps < 0 or (cfg.steps == 0 and cfg.epochs <= 0):
        raise ConfigError(f"need --steps >= 1 or --epochs > 0, got steps={cfg.steps} epochs={cfg.epochs}")
    if not 0 < cfg.teacher_temp <= 1:
        raise ConfigError(f"--teacher-temp must be in (0, 1], got {cfg.teacher_temp}")
    if cfg.n_local < 0 or not cfg.lr > 0:
        raise ConfigError(f"--n-local must be >= 0 and --lr > 0, got {cfg.n_local} and {cfg.lr}")
    envs = expand_envs(cfg.envs)
    out = check_output_dir(cfg.out, "--out")  # a file, a file parent or an unwritable directory
    if is_finished(out):
        if cfg.resume:
            raise ConfigError(f"--out {cfg.out!r} already holds a finished model; nothing to resume (choose "
                              f"another --out)")
        raise ConfigError(f"--out {cfg.out!r} already holds a finished model; choose another --out or delete it")
    ckpt = out / CHECKPOINT
    legacy = out / LEGACY_CHECKPOINT
    if legacy.is_file() and not ckpt.is_file():
        raise ConfigError(f"{str(legacy)!r} is an old-format checkpoint (a pickle, which can run arbitrary code when "
                          f"opened); it was not opened. Delete it and run without --resume (the collected "
                          f"{FRAMES} is reused), or choose another --out")
    if cfg.resume:
        if not ckpt.is_file():
            raise ConfigError(f"--resume: no checkpoint {str(ckpt)!r} to resume from")
    elif ckpt.is_file():
        raise ConfigError(f"--out {cfg.out!r} holds an unfinished run ({CHECKPOINT}); pass --resume to continue "
                          f"it or choose another --out")
    return envs


def is_finished(out: Path | str) -> bool:
    """Whether ``out`` holds a finished model (its summary says so and the weights exist)."""
    out = Path(out)
    try:
        finished = json.loads((out / SUMMARY).read_text()).get("finished", False)
    except (OSError, ValueError):
        return False
    return bool(finished) and (out / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- backbone


def build_backbone(arch: str, seed: int = 0) -> nn.Module:
    """A randomly initialised ``transformers.Dinov2Model`` of ``arch`` for 64 px images (patch 8).

    ``(B, 3, S, S)`` normalised float -> ``last_hidden_state (B, 1 + (S/8)^2, D)``, ``pooler_output (B, D)`` (the
    layer-normed CLS token). ``seed`` makes the initialisation reproducible.

    Raises:
        ConfigError: unknown ``arch``.
    """
    import transformers

    if arch not in ARCHS:
        raise ConfigError(f"unknown --arch {arch!r}; allowed: {', '.join(ARCHS)}")
    a = ARCHS[arch]
    config = transformers.Dinov2Config(
        hidden_size=a["hidden_size"], num_hidden_layers=a["num_hidden_layers"],
        num_attention_heads=a["num_attention_heads"], mlp_ratio=a["mlp_ratio"], image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE, layerscale_value=1.0, drop_path_rate=0.0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, use_swiglu_ffn=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.Dinov2Model(config)
    return model


# ---------------------------------------------------------------------------------------------- augment


def random_resized_crop(x: Tensor, size: int, scale: tuple[float, float], gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Per-image random resized crop (Szegedy et al. 2015; torchvision's ``RandomResizedCrop``) by an affine
    sampling grid: area fraction ~ U(scale), aspect ratio log-uniform in ``ratio``, position uniform.

    ``(B, C, H, W)`` float -> ``(B, C, size, size)`` float (bilinear).
    """
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=gen)
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    w = torch.sqrt(area * logr.exp()).clamp(max=1.0)
    h = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _bern(b: int, p: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1)


def color_augment(x: Tensor, gen: torch.Generator, blur_p: float, solarize_p: float) -> Tensor:
    """DINO's photometric augmentations on ``(B, 3, H, W)`` float images in ``[0, 1]`` (same shape out):
    colour jitter p 0.8 (brightness, contrast x U(0.6, 1.4); saturation x U(0.8, 1.2)), grayscale p 0.2,
    Gaussian blur p ``blur_p`` (5x5, sigma U(0.1, 1.0) px: the paper's 0.1-2.0 at 224 px, scaled), solarisation
    p ``solarize_p`` (threshold 0.5)."""
    b = x.shape[0]
    jitter = _bern(b, 0.8, gen)
    f = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    y = x * f
    f = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * f + y.mean((1, 2, 3), keepdim=True)
    f = torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2, generator=gen)
    y = (y - _gray(y)) * f + _gray(y)
    x = torch.where(jitter, y.clamp(0, 1), x)
    x = torch.where(_bern(b, 0.2, gen), _gray(x), x)
    if blur_p > 0:
        sigma = torch.empty(b).uniform_(0.1, 1.0, generator=gen)
        k = torch.exp(-(torch.arange(-2, 3, dtype=torch.float32)[None] ** 2) / (2 * sigma[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (B*3, 5)
        h, w = x.shape[-2:]
        flat = F.pad(x.reshape(1, b * 3, h, w), (2, 2, 2, 2), mode="reflect")
        flat = F.conv2d(flat, k.view(b * 3, 1, 1, 5), groups=b * 3)
        flat = F.conv2d(flat, k.view(b * 3, 1, 5, 1), groups=b * 3)
        x = torch.where(_bern(b, blur_p, gen), flat.view(b, 3, h, w), x)
    if solarize_p > 0:
        x = torch.where(_bern(b, solarize_p, gen) & (x >= 0.5), 1 - x, x)
    return x


# ------------------------------------------------------------------------------------------------- DINO


class DINOHead(nn.Module):
    """DINO projection head (Caron et al. 2021, Appendix): MLP ``D -> hidden -> hidden -> bottleneck`` (GELU),
    L2 normalisation, then a weight-normalised linear layer (norm fixed to 1, no bias) to ``out_dim``
    prototypes. ``(B, D) -> (B, out_dim)`` logits."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = nn.Parameter(torch.randn(out_dim, bottleneck) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.last, dim=-1).t()


class DINO(nn.Module):
    """DINO self-distillation objective (see the module docstring for the equations and hyper-parameters).

    Args:
        backbone: a ``Dinov2Model`` (the student; the teacher is a deep copy).
        out_dim: prototypes ``K``; n_local: local crops per image.
        mean, std: per-channel normalisation ``(3,)`` applied after augmentation.
    """

    student_temp = 0.1
    center_momentum = 0.9

    def __init__(self, backbone: nn.Module, out_dim: int, n_local: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        dim = backbone.config.hidden_size
        self.student = nn.ModuleDict({"backbone": backbone, "head": DINOHead(dim, out_dim)})
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.n_local = n_local
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("mean", mean.view(1, 3, 1, 1).float())
        self.register_buffer("std", std.view(1, 3, 1, 1).float())

    def trainable(self) -> nn.Module:
        """The module the optimiser updates (the student)."""
        return self.student

    def export_backbone(self) -> nn.Module:
        """The backbone to save: the teacher's (paper Sec. 3.1, "the teacher performs better")."""
        return self.teacher["backbone"]

    def views(self, images: Tensor, gen: torch.Generator) -> list[Tensor]:
        """``(B, 3, 64, 64) uint8`` -> 2 global ``(B, 3, 64, 64)`` + ``n_local`` local ``(B, 3, 32, 32)`` normalised
        float views."""
        x = images.float() / 255.0
        out = [color_augment(random_resized_crop(x, IMAGE_SIZE, (0.4, 1.0), gen), gen, 1.0, 0.0),
               color_augment(random_resized_crop(x, IMAGE_SIZE, (0.4, 1.0), gen), gen, 0.1, 0.2)]
        out += [color_augment(random_resized_crop(x, IMAGE_SIZE // 2, (0.1, 0.4), gen), gen, 0.5, 0.0)
                for _ in range(self.n_local)]
        return [(v - self.mean) / self.std for v in out]

    @staticmethod
    def _embed(net: nn.ModuleDict, views: list[Tensor]) -> list[Tensor]:
        """Head outputs per view; views of one resolution run as one batch (as the paper's MultiCropWrapper)."""
        outs: list[Tensor] = []
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            cls = net["backbone"](pixel_values=torch.cat(views[i:j])).pooler_output
            outs += list(net["head"](cls).chunk(j - i))
            i = j
        return outs

    def loss(self, images: Tensor, gen: torch.Generator, teacher_temp: float) -> tuple[Tensor, dict[str, float]]:
        """DINO loss (Eq. 1-3) of a batch of ``(B, 3, 64, 64) uint8`` images; updates the center (Eq. 4).

        Returns:
            ``(loss, stats)``: scalar loss and diagnostics in nats: ``teacher_entropy`` of the mean teacher
            distribution (near 0: collapse to one prototype) and ``teacher_sample_entropy``, the mean per-image
            teacher entropy (near ``log K``: collapse to the uniform distribution; the paper's Fig. 7).
        """
        views = self.views(images, gen)
        with torch.no_grad():
            t_out = self._embed(self.teacher, views[:2])
            t_prob = [F.softmax((t - self.center) / teacher_temp, dim=-1) for t in t_out]
        s_out = self._embed(self.student, views)
        total, pairs = images.new_zeros((), dtype=torch.float32), 0
        for ti, q in enumerate(t_prob):
            for vi, s in enumerate(s_out):
                if vi == ti:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s / self.student_temp, dim=-1), dim=-1).mean()
                pairs += 1
        with torch.no_grad():
            batch_center = torch.cat(t_out).mean(0, keepdim=True)
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
            mean_p = torch.cat(t_prob).mean(0)
            entropy = float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum())
            probs = torch.cat(t_prob)
            sample_entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
        return total / pairs, {"teacher_entropy": entropy, "teacher_sample_entropy": sample_entropy}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA ``theta_t <- m theta_t + (1 - m) theta_s`` (paper Sec. 3.1)."""
        for pt, ps in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


# -------------------------------------------------------------------------------------------------- MAE


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE, He et al. 2022; ``get_2d_sincos_pos_embed``):
    ``(grid * grid, dim)``, half the channels encode the row, half the column."""
    assert dim % 4 == 0, dim
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ys.flatten(), xs.flatten()):
        out = pos[:, None] * omega[None]
        parts += [out.sin(), out.cos()]
    return torch.cat(parts, 1).float()


def patchify(x: Tensor, p: int = PATCH_SIZE) -> Tensor:
    """``(B, 3, H, W)`` -> ``(B, (H/p)(W/p), p*p*3)`` row-major patches (MAE's ``patchify``)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


class MAE(nn.Module):
    """Masked autoencoder objective (He et al. 2022, Sec. 3; see the module docstring).

    Args:
        backbone: a ``Dinov2Model`` (the encoder; only visible patches + CLS go through its blocks).
        mean, std: per-channel normalisation ``(3,)``.
        mask_ratio: fraction of patches masked (0.75 in the paper).
        dec_dim, dec_depth: decoder width and blocks (512 / 8 in the paper; 128 / 2 here).
    """

    def __init__(self, backbone: nn.Module, mean: Tensor, std: Tensor, mask_ratio: float = 0.75,
                 dec_dim: int = 128, dec_depth: int = 2) -> None:
        super().__init__()
        self.backbone, self.mask_ratio = backbone, mask_ratio
        dim = backbone.config.hidden_size
        grid = IMAGE_SIZE // PATCH_SIZE
        self.num_patches = grid * grid
        self.dec_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("dec_pos", torch.cat([torch.zeros(1, dec_dim), sincos_2d(dec_dim, grid)])[None])
        layer = nn.TransformerEncoderLayer(dec_dim, max(1, dec_dim // 32), 4 * dec_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, dec_depth, enable_nested_tensor=False)
        self.dec_norm = nn.LayerNorm(dec_dim)
        self.dec_pred = nn.Linear(dec_dim, PATCH_SIZE * PATCH_SIZE * 3)
        self.register_buffer("mean", mean.view(1, 3, 1, 1).float())
        self.register_buffer("std", std.view(1, 3, 1, 1).float())

    def trainable(self) -> nn.Module:
        """The module the optimiser updates (encoder + decoder)."""
        return self

    def export_backbone(self) -> nn.Module:
        """The encoder to save."""
        return self.backbone

    def loss(self, images: Tensor, gen: torch.Generator, teacher_temp: float = 0.0) -> tuple[Tensor, dict[str, float]]:
        """MAE loss of ``(B, 3, 64, 64) uint8`` images: MSE on masked patches vs per-patch normalised pixels."""
        x = random_resized_crop(images.float() / 255.0, IMAGE_SIZE, (0.5, 1.0), gen)
        target = patchify(x)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        b, n = x.shape[0], self.num_patches
        keep = int(round(n * (1 - self.mask_ratio)))
        order = torch.rand(b, n, generator=gen).argsort(1)  # random masking by shuffling (MAE Sec. 3)
        visible = order[:, :keep]
        tokens = self.backbone.embeddings((x - self.mean) / self.std)  # (B, 1 + n, D) incl. pos embeddings
        patches = tokens[:, 1:].gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        enc = self.backbone.encoder(torch.cat([tokens[:, :1], patches], 1)).last_hidden_state
        enc = self.dec_embed(self.backbone.layernorm(enc))
        full = self.mask_token.expand(b, n, -1).clone()
        full.scatter_(1, visible[..., None].expand(-1, -1, full.shape[-1]), enc[:, 1:])
        dec = self.decoder(torch.cat([enc[:, :1], full], 1) + self.dec_pos)
        pred = self.dec_pred(self.dec_norm(dec))[:, 1:]
        masked = torch.ones(b, n)
        masked.scatter_(1, visible, 0.0)
        per_patch = ((pred - target) ** 2).mean(-1)
        loss = (per_patch * masked).sum() / masked.sum()
        return loss, {}

    def update_teacher(self, momentum: float) -> None:
        """No teacher (interface parity with :class:`DINO`)."""


# ------------------------------------------------------------------------------------------------ schedules


def cosine(step: int, total: int, start: float, end: float, warmup: int = 0) -> float:
    """Linear warm-up ``0 -> start`` over ``warmup`` steps, then cosine ``start -> end``."""
    if step < warmup:
        return start * step / warmup
    t = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, t)))


def _param_groups(module: nn.Module) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("position_embeddings", "cls_token", "mask_token"))
         else decay).append(p)
    return [{"params": decay, "wd": True}, {"params": no_decay, "wd": False, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------- training


def make_objective(cfg: PretrainConfig, mean: Tensor, std: Tensor) -> DINO | MAE:
    """The objective module for ``cfg`` with a fresh backbone seeded by ``cfg.seed``."""
    backbone = build_backbone(cfg.arch, cfg.seed)
    torch.manual_seed(cfg.seed + 1)
    if cfg.objective == "dino":
        return DINO(backbone, cfg.out_dim, cfg.n_local, mean, std)
    return MAE(backbone, mean, std)


def save_model(backbone: nn.Module, out: Path, mean: list[float], std: list[float]) -> None:
    """``save_pretrained`` (safetensors) + a ``ViTImageProcessor`` config with ``mean``/``std`` (on ``[0, 1]``)
    into ``out``; each file is written in a temp dir next to it and renamed into place."""
    import transformers

    tmp = out / ".save-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        backbone.save_pretrained(tmp, safe_serialization=True)
        proc = transformers.ViTImageProcessor(do_resize=True, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                              image_mean=mean, image_std=std)
        proc.save_pretrained(tmp)
        for name in MODEL_FILES:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_log(out: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write(out / LOG, lambda f: f.write(text.encode()))


def plot_curve(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss (and DINO teacher entropy) vs step as a PNG (matplotlib, written atomically); ``None`` when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], color="C0", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="C0")
    ax.set_title(title, fontsize=9)
    if records and "teacher_entropy" in records[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["teacher_entropy"] for r in records], color="C1", alpha=0.7)
        ax2.set_ylabel("teacher entropy (nats)", color="C1")
    fig.tight_layout()

    def write(f: Any) -> None:
        fig.savefig(f, format="png")

    atomic_write(path, write)
    plt.close(fig)
    return path


def _progress(enabled: bool | None) -> tuple[Any, bool]:
    """A rich progress bar on stderr (disabled unless ``enabled``, or stderr is a terminal when ``None``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if enabled is None:
        enabled = sys.stderr.isatty()
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True),
                    disable=not enabled)
    return prog, enabled


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Collect frames, train ``cfg.objective`` and save the backbone into ``cfg.out`` (see the module docstring).

    Resumable: ``cfg.resume`` continues from the checkpoint in ``OUT`` (model, optimiser, DINO center, RNG
    states, log) with the collected ``OUT/frames.npz``; the result equals that of an uninterrupted run up to float
    non-associativity across thread counts.

    Returns:
        The summary dict also written to ``OUT/pretrain_summary.json``.

    Raises:
        ConfigError: see :func:`validate`.
    """
    env_names = validate(cfg)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    load_samples = [os.getloadavg()[0]]
    args = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        ckpt = load_checkpoint(out)
        diff = [k for k in _RESUME_KEYS if ckpt["args"].get(k) != args.get(k)]
        if diff:
            raise ConfigError("--resume with different arguments than the checkpoint: " + ", ".join(
                f"{k}={args.get(k)!r} (checkpoint {ckpt['args'].get(k)!r})" for k in diff))

    # --- data (cached in OUT/frames.npz; reused when collected with the same arguments) ---
    frames_path = out / FRAMES
    collect_args = {k: args[k] for k in ("envs", "frames", "diversity", "seed", "episode_len")}
    data = FrameSet.load(str(frames_path)) if frames_path.is_file() else None
    if data is not None and (data.meta or {}).get("args") == collect_args:
        collect_s = float(data.meta["collect_s"])
        print(f"reusing {len(data.frames)} collected frames from {frames_path} (collected in {collect_s:.0f} s)",
              file=sys.stderr, flush=True)
    else:
        t0 = time.time()
        prog, interactive = _progress(cfg.progress)
        with prog:
            task = prog.add_task("collect", total=cfg.frames, info=f"{len(env_names)} envs")
            data = collect_frames(env_names, cfg.frames, diversity=cfg.diversity, seed=cfg.seed,
                                  episode_len=cfg.episode_len, progress=lambda n: prog.advance(task, n))
        collect_s = time.time() - t0
        data.meta = {"args": collect_args, "collect_s": round(collect_s, 1)}
        data.save(str(frames_path))
        if not interactive:
            print(f"collected {len(data.frames)} frames from {len(env_names)} envs in {collect_s:.0f} s",
                  file=sys.stderr, flush=True)
    n = len(data.frames)
    frames = torch.from_numpy(data.frames).permute(0, 3, 1, 2).contiguous()  # (N, 3, 64, 64) uint8
    flat = frames.float().div_(255).transpose(0, 1).reshape(3, -1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-3)
    del flat

    # --- model, optimiser ---
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    obj = make_objective(cfg, mean, std)
    betas = (0.9, 0.999) if cfg.objective == "dino" else (0.9, 0.95)
    wd = (0.04, 0.4) if cfg.objective == "dino" else (0.05, 0.05)
    opt = torch.optim.AdamW(_param_groups(obj.trainable()), lr=cfg.lr, betas=betas)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    records: list[dict[str, Any]] = []
    step, train_s = 0, 0.0
    if ckpt is not None:
        obj.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        gen.set_state(ckpt["gen"])
        torch.set_rng_state(ckpt["torch_rng"])
        records, step, train_s = ckpt["records"], ckpt["step"], ckpt["train_s"]
        load_samples = ckpt["load_samples"] + load_samples
    warmup = max(1, total // 10)
    freeze_last = total // 100

    def save_checkpoint() -> None:
        write_checkpoint(out, {"args": args, "model": obj.state_dict(), "optim": opt.state_dict(),
                               "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                               "records": records, "step": step, "train_s": train_s,
                               "collect_s": collect_s, "load_samples": load_samples})
        _write_log(out, records)

    prog, interactive = _progress(cfg.progress)
    obj.train()
    with prog:
        task = prog.add_task(cfg.objective, total=total, completed=step, info="")
        t_seg, acc, acc_n = time.time(), 0.0, 0
        while step < total:
            epoch, pos = divmod(step * cfg.batch_size, steps_per_epoch * cfg.batch_size)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
            idx = perm[pos:pos + cfg.batch_size] if n >= cfg.batch_size else \
                torch.randint(n, (cfg.batch_size,), generator=gen)
            lr = cosine(step, total, cfg.lr, 1e-6, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
                if group.get("wd"):
                    group["weight_decay"] = cosine(step, total, wd[0], wd[1])
            teacher_temp = 0.04 + (cfg.teacher_temp - 0.04) * min(1.0, step / max(1, int(0.3 * total)))
            loss, stats = obj.loss(frames[idx], gen, teacher_temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if isinstance(obj, DINO) and step < freeze_last:
                obj.student["head"].last.grad = None
            gnorm = float(torch.nn.utils.clip_grad_norm_(obj.trainable().parameters(), 3.0))
            opt.step()
            obj.update_teacher(cosine(step, total, 0.99, 1.0))
            step += 1
            acc, acc_n = acc + loss.item(), acc_n + 1
            if step % cfg.log_every == 0 or step == total:
                now = time.time()
                train_s += now - t_seg
                t_seg = now
                load_samples.append(os.getloadavg()[0])
                rec = {"step": step, "loss": acc / acc_n, "lr": lr, "grad_norm": gnorm, "time_s": round(train_s, 2),
                       "epoch": round(step / steps_per_epoch, 3), **stats}
                records.append(rec)
                acc, acc_n = 0.0, 0
                info = f"loss {rec['loss']:.4f}" + (f" H {stats['teacher_entropy']:.2f} "
                                                    f"Hs {stats['teacher_sample_entropy']:.2f}" if stats else "")
                prog.update(task, completed=step, info=info)
                if not interactive:
                    print(f"step {step}/{total} {info} lr {lr:.2e} {train_s:.0f}s load {load_samples[-1]:.2f}",
                          file=sys.stderr, flush=True)
            else:
                prog.update(task, completed=step)
            if step % cfg.save_every == 0 and step < total:
                save_checkpoint()

    # --- outputs ---
    save_model(obj.export_backbone(), out, mean.tolist(), std.tolist())
    _write_log(out, records)
    plot_curve(records, out / CURVE, f"{cfg.objective} {cfg.arch}, {n} frames, {total} steps")
    load_samples.append(os.getloadavg()[0])
    summary = {"args": args, "envs": env_names, "num_envs": len(env_names), "num_frames": n,
               "shifted_fraction": float((data.kinds > 0).mean()), "steps": total, "epochs": total / steps_per_epoch,
               "final_loss": records[-1]["loss"] if records else None,
               "first_loss": records[0]["loss"] if records else None,
               "collect_s": round(collect_s, 1), "train_s": round(train_s, 1),
               "wall_s": round(collect_s + train_s, 1), "session_wall_s": round(time.time() - t_start, 1),
               "load1_mean": round(float(np.mean(load_samples)), 2), "load1_max": round(float(max(load_samples)), 2),
               "cpu_count": os.cpu_count(), "threads": cfg.threads, "mean": mean.tolist(), "std": std.tolist(),
               "parameters": sum(p.numel() for p in obj.export_backbone().parameters()),
               "torch": torch.__version__, "finished": True}
    write_model_card(out, summary)
    write_json(out / SUMMARY, summary)
    if not cfg.keep_cache:
        for name in (CHECKPOINT, FRAMES):
            (out / name).unlink(missing_ok=True)
        for path in out.glob(CHECKPOINT_TENSORS.format(step="*")):
            path.unlink()
    return summary


def write_checkpoint(out: Path, state: dict[str, Any]) -> Path:
    """Write a pretraining checkpoint without pickle: every tensor of ``state`` (model, optimiser, RNG states)
    into ``OUT/checkpoint-<step>.safetensors``, the rest (arguments, optimiser step counts and hyper-parameters,
    records, counters) with tensor references into ``OUT/checkpoint.json``, written last (the commit point); the
    tensor files it no longer names are removed. Returns the JSON's path."""
    tensors: dict[str, Tensor] = {}
    name = CHECKPOINT_TENSORS.format(step=int(state["step"]))
    doc = {"format": CHECKPOINT_FORMAT, "version": 1, "tensors_file": name,
           "state": safe_state.split(state, "state", tensors)}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    safe_state.write_tensors(out / name, tensors, metadata={"format": CHECKPOINT_FORMAT})
    path = atomic_write(out / CHECKPOINT, lambda f: f.write(text.encode()))
    for old in out.glob(CHECKPOINT_TENSORS.format(step="*")):
        if old.name != name:
            old.unlink()
    return path


def load_checkpoint(out: Path) -> dict[str, Any]:
    """Read what :func:`write_checkpoint` wrote (nothing in it can run code).

    Raises:
        ConfigError: a missing, unreadable or damaged checkpoint (the message names the file).
    """
    path = out / CHECKPOINT
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT or doc.get("version") != 1:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} version 1")
        name = doc["tensors_file"]
        if not isinstance(name, str) or "/" in name or "\\" in name or not name.startswith("checkpoint-"):
            raise ValueError(f"bad tensors_file {name!r}")
        state = safe_state.join(doc["state"], safe_state.read_tensors(out / name))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"pretraining checkpoint {str(path)!r} is unreadable or damaged ({exc}); run without "
                          f"--resume (the collected {FRAMES} is reused)") from None
    return state


PROBE_BEGIN, PROBE_END = "<!-- probe:begin -->", "<!-- probe:end -->"


def write_model_card(out: Path, s: dict[str, Any]) -> Path:
    """Write ``OUT/MODEL_CARD.md`` from a summary (keeps an existing probe section, see ``benchmarks/probe.py``)."""
    a = s["args"]
    probe = f"{PROBE_BEGIN}\nNot measured yet: run `python benchmarks/probe.py --model {out}`.\n{PROBE_END}"
    old = out / CARD
    if old.is_file():
        text = old.read_text()
        if PROBE_BEGIN in text and PROBE_END in text:
            probe = text[text.index(PROBE_BEGIN):text.index(PROBE_END) + len(PROBE_END)]
    objective = ("DINO self-distillation (Caron et al. 2021)" if a["objective"] == "dino"
                 else "masked autoencoding (He et al. 2022)")
    arch = ARCHS[a["arch"]]
    card = f"""# dreamshift {a['arch']} ({a['objective']})

A small ViT pretrained with {objective} on frames of dreamshift's own envs under randomised visual shifts,
so that a pretrained encoder exists without network access. Load it with `encoder=hf:<this dir>`
(or `encoder=dreamshift-vit` for the bundled copy); every fine-tuning mode works.

## Model

- `transformers.Dinov2Model`: width {arch['hidden_size']}, {arch['num_hidden_layers']} blocks,
  {arch['num_attention_heads']} heads, MLP ratio {arch['mlp_ratio']}, 64x64 input, 8x8 patches (64 tokens + CLS),
  {s['parameters']:,} parameters (float32 safetensors).
- Normalisation (`preprocessor_config.json`): the training frames' per-channel mean {_fmt(s['mean'])} and
  std {_fmt(s['std'])} on `[0, 1]`.
- Saved backbone: {'the EMA teacher' if a['objective'] == 'dino' else 'the encoder'}. Hyper-parameters and sources:
  the docstring of `mbrl/runs/pretrain.py`.

## Training

```
{s['args']['command'] or '(command not recorded)'}
```

- Data: {s['num_frames']:,} frames (64x64 RGB) from {s['num_envs']} envs (`{a['envs']}`), random actions, episodes of
  {a['episode_len']} agent steps (action repeat 2); {100 * s['shifted_fraction']:.0f} % of the frames shifted
  (`--diversity {a['diversity']}`: each episode is shifted with that probability, by one kind drawn uniformly
  from those that apply to the env, severity 1-5).
- {s['steps']} steps of batch {a['batch_size']} ({s['epochs']:.1f} epochs), peak lr {a['lr']}, seed {a['seed']}
  {f"(teacher temperature {a['teacher_temp']}, {a['out_dim']} prototypes, {a['n_local']} local crops)"
   if a['objective'] == 'dino' else ''}.
- Loss: {_num(s['first_loss'])} (first log) -> {_num(s['final_loss'])} (final); curve: `{CURVE}`, per-step log:
  `{LOG}`.
- Wall time: {s['wall_s'] / 60:.1f} min ({s['collect_s']:.0f} s collection + {s['train_s']:.0f} s training) on
  {s['threads']} threads of a {s['cpu_count']}-core CPU; 1-min load average mean {s['load1_mean']}, max
  {s['load1_max']} (the CPU was shared with other jobs). torch {s['torch']}.

![loss curve]({CURVE})

## Probe

{probe}
"""
    return atomic_write(out / CARD, lambda f: f.write(card.encode()))


def _fmt(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
