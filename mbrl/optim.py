"""Optimisers: LaProp with adaptive gradient clipping and warm-up (current DreamerV3 reference code,
``opt: {lr: 4e-5, agc: 0.3, eps: 1e-20, beta1: 0.9, beta2: 0.999, warmup: 1000}``), or Adam with global-norm
clipping (the 2023 paper).

LaProp (Ziyin et al. 2020, "LaProp: Separating Momentum and Adaptivity in Adam", Alg. 1) normalises the
gradient by the RMS estimate *before* the momentum average. Torch ships no LaProp, so it lives here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class LaProp(torch.optim.Optimizer):
    """LaProp: ``v = b2 v + (1-b2) g^2``; ``m = b1 m + (1-b1) g / (sqrt(v / (1-b2^t)) + eps)``;
    ``p -= lr * m / (1 - b1^t)``.

    Args:
        params: parameters or parameter groups (each group may set its own ``lr``).
        lr: learning rate; betas: ``(b1, b2)``; eps: added to the RMS (1e-20 in the reference code).
    """

    def __init__(self, params: Iterable, lr: float = 4e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-20) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch signature
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (state["v"] / (1 - b2**t)).sqrt_().add_(group["eps"])
                state["m"].mul_(b1).add_(p.grad / denom, alpha=1 - b1)
                p.add_(state["m"], alpha=-group["lr"] / (1 - b1**t))


def adaptive_clip_(params: Iterable[Tensor], agc: float, pmin: float = 1e-3) -> None:
    """Adaptive gradient clipping per parameter tensor: scale ``g`` so ``|g| <= agc * max(|p|, pmin)``
    (Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without Normalization", Sec. 4; unit-wise
    variant simplified to tensor-wise as in the DreamerV3 reference code)."""
    for p in params:
        if p.grad is None:
            continue
        limit = agc * p.detach().norm().clamp(min=pmin)
        norm = p.grad.norm()
        p.grad.mul_((limit / norm.clamp(min=1e-12)).clamp(max=1.0))


class Optimizer:
    """One optimiser for a set of modules with clipping and linear warm-up.

    Args:
        groups: ``[(params, lr), ...]``; parameters that do not require grad are skipped.
        name: ``laprop`` or ``adam``.
        agc: adaptive clipping factor (0 disables); clip: global-norm clipping (0 disables).
        warmup: linear warm-up of the learning rate over this many updates (0 disables).
    """

    def __init__(self, groups: list[tuple[list[nn.Parameter], float]], name: str, eps: float,
                 betas: tuple[float, float], agc: float, clip: float, warmup: int) -> None:
        param_groups = []
        for params, lr in groups:
            params = [p for p in params if p.requires_grad]
            if params:
                param_groups.append({"params": params, "lr": lr, "base_lr": lr})
        self.params = [p for g in param_groups for p in g["params"]]
        self.agc, self.clip, self.warmup = agc, clip, warmup
        self.updates = 0
        if not param_groups:
            self.opt = None
        elif name == "laprop":
            self.opt = LaProp(param_groups, betas=betas, eps=eps)
        else:
            self.opt = torch.optim.Adam(param_groups, betas=betas, eps=eps)

    def step(self, loss: Tensor) -> float:
        """Backpropagate ``loss``, clip, apply one update; returns the gradient norm before clipping."""
        if self.opt is None:
            return 0.0
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if self.agc > 0:
            adaptive_clip_(self.params, self.agc)
        if self.clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm)
        self.updates += 1
        scale = min(1.0, self.updates / self.warmup) if self.warmup > 0 else 1.0
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * scale
        self.opt.step()
        return float(norm)

    def state_dict(self) -> dict:
        """Optimiser state plus the update counter (for checkpoints)."""
        return {"opt": self.opt.state_dict() if self.opt else None, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        if self.opt is not None and state["opt"] is not None:
            self.opt.load_state_dict(state["opt"])
        self.updates = state["updates"]
