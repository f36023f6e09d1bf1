"""Optimiser update speed: the earlier per-parameter LaProp / adaptive clipping / ``float(norm)`` (copied below)
against the multi-tensor :class:`mbrl.optim.Optimizer`, on the world-model parameters of a real agent with random
gradients, measured in the same run.

    python benchmarks/optim_speed.py                      # size S, CPU, LaProp (agc 0.3) and Adam (clip 1000)
    python benchmarks/optim_speed.py --device cuda --iters 200

Times one update from gradients already in ``p.grad`` (clipping + optimiser step, no backward pass); prints
ms/update of each and the ratio old / new. No assertions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


# ------------------------------------------------------------------ the earlier per-parameter implementation
class OldLaProp(torch.optim.Optimizer):
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


def old_adaptive_clip_(params: Iterable[Tensor], agc: float, pmin: float = 1e-3) -> None:
    for p in params:
        if p.grad is None:
            continue
        limit = agc * p.detach().norm().clamp(min=pmin)
        norm = p.grad.norm()
        p.grad.mul_((limit / norm.clamp(min=1e-12)).clamp(max=1.0))


class OldOptimizer:
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
        if name == "laprop":
            self.opt = OldLaProp(param_groups, betas=betas, eps=eps)
        else:
            self.opt = torch.optim.Adam(param_groups, betas=betas, eps=eps)

    def update(self) -> float:
        """The earlier ``Optimizer.step`` after ``loss.backward()``."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if self.agc > 0:
            old_adaptive_clip_(self.params, self.agc)
        if self.clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm)
        self.updates += 1
        scale = min(1.0, self.updates / self.warmup) if self.warmup > 0 else 1.0
        for group in self.opt.param_groups:
            group["lr"] = group["base_lr"] * scale
        self.opt.step()
        return float(norm)


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(update: Callable[[], object], params: list[nn.Parameter], grads: list[Tensor], iters: int,
          device: torch.device) -> float:
    """ms per ``update()`` with ``grads`` put in ``p.grad`` before each (warm-up first)."""

    def one() -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        update()

    for _ in range(5):
        one()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        one()
    _sync(device)
    return (time.perf_counter() - start) / iters * 1e3


def main() -> None:
    from mbrl.agent import Agent
    from mbrl.config import build_config
    from mbrl.optim import Optimizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="S")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = build_config([f"size={args.size}"])
    o = cfg.optim
    settings = {"laprop": dict(eps=1e-20, agc=o.agc, clip=0.0), "adam": dict(eps=1e-8, agc=0.0, clip=1000.0)}
    agent = Agent(cfg, action_dim=6).to(device)
    params = [p for p in agent.wm.parameters() if p.requires_grad]
    torch.manual_seed(0)
    grads = [torch.randn_like(p) * 1e-3 for p in params]  # laid out like the parameters, as autograd's are
    print(f"world model, size {args.size}: {len(params)} tensors, {sum(p.numel() for p in params):,} parameters, "
          f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name, kw in settings.items():
        results = {}
        for label, cls in (("old per-parameter", OldOptimizer), ("new multi-tensor", Optimizer)):
            saved = [p.detach().clone() for p in params]
            opt = cls([(params, o.lr)], name, kw["eps"], (o.beta1, o.beta2), kw["agc"], kw["clip"], o.warmup)
            results[label] = _time(opt.update, params, grads, args.iters, device)
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)
            for p in params:
                p.grad = None
        old, new = results.values()
        print(f"{name:>6} (agc {kw['agc']}, clip {kw['clip']}): old {old:8.3f} ms/update   new {new:8.3f} ms/update"
              f"   old/new {old / new:5.2f}x")


if __name__ == "__main__":
    main()
