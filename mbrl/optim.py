"""Optimisers: LaProp with adaptive gradient clipping and warm-up (current DreamerV3 reference code,
``opt: {lr: 4e-5, agc: 0.3, eps: 1e-20, beta1: 0.9, beta2: 0.999, warmup: 1000}``), or Adam with global-norm
clipping (the 2023 paper).

LaProp (Ziyin et al. 2020, "LaProp: Separating Momentum and Adaptivity in Adam", Alg. 1) normalises the
gradient by the RMS estimate *before* the momentum average. Torch ships no LaProp, so it lives here.

Everything in an update runs as multi-tensor (``torch._foreach_*``) operations over whole parameter lists and
nothing reads a value back to the host: :meth:`Optimizer.step` returns the gradient norm as a device tensor and
records non-finite gradients on the device; :meth:`Optimizer.check_finite` is the one call that synchronises
(on the CPU, where there is no device to wait for, the non-finite flag is read directly).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from envs.errors import ConfigError, DreamshiftError

AGC_PMIN = 1e-3  # DreamerV3 ``clip_by_agc(pmin=1e-3)``: parameter norms below this count as this


class NonFiniteError(DreamshiftError):
    """A loss or gradient became NaN/inf during training (raised by :meth:`Optimizer.check_finite`)."""


class LaProp(torch.optim.Optimizer):
    """LaProp: ``v = b2 v + (1-b2) g^2``; ``m = b1 m + (1-b1) g / (sqrt(v / (1-b2^t)) + eps)``;
    ``p -= lr * m / (1 - b1^t)``, with multi-tensor operations per parameter group.

    The state per parameter is ``{"step": int, "m": Tensor, "v": Tensor}`` (``step`` counts the updates this
    parameter took part in, so bias corrections are exact even when a parameter misses a gradient).

    Like torch's fused optimisers (and ``torch.amp.GradScaler``), a ``found_inf`` attribute set by the caller (a
    0-d float tensor, 1.0 = skip) makes :meth:`step` leave parameters, ``m`` and ``v`` unchanged on the device,
    without a host sync. The gradients must then be finite (zeroed where not): :class:`Optimizer` ensures this.
    ``step`` still advances on a skipped update (the host cannot know), so later bias corrections are one update
    ahead; :class:`Optimizer` treats any skipped update as an error at the next :meth:`Optimizer.check_finite`.

    ``capturable`` (for CUDA graphs, :mod:`mbrl.graphs`): every per-update number lives on the device, so one
    captured update replays correctly: ``step`` is a 0-d float32 tensor per parameter, the bias corrections are
    computed from it on the device and a group's ``lr`` may be a 0-d tensor (changed in place by the warm-up). The
    parameters of a group then step together (one bias correction per group and device, from its first
    parameter's ``step``), which holds whenever every parameter gets a gradient each update.

    Args:
        params: parameters or parameter groups (each group may set its own ``lr``).
        lr: learning rate; betas: ``(b1, b2)``; eps: added to the RMS (1e-20 in the reference code).
        capturable: keep ``step`` and the bias corrections on the device (above).
    """

    def __init__(self, params: Iterable, lr: float = 4e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-20, capturable: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.capturable = capturable

    def set_capturable(self, on: bool) -> None:
        """Switch the mode, converting every parameter's ``step`` (int <-> 0-d float32 tensor on its device)."""
        self.capturable = on
        for p, state in self.state.items():
            if "step" in state:
                state["step"] = (torch.as_tensor(float(state["step"]), dtype=torch.float32, device=p.device)
                                 if on else int(state["step"]))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            for key, (ps, gs, ms, vs, steps) in self._buckets(group).items():
                device = key[0]
                skip = None if found_inf is None else found_inf.to(device, non_blocking=True) > 0
                if self.capturable:
                    torch._foreach_add_(steps, 1.0)
                    lr = group["lr"]
                    lr = lr.to(device) if torch.is_tensor(lr) else torch.as_tensor(lr, device=device)
                    _laprop_update_tensors(ps, gs, ms, vs, steps[0], lr, *group["betas"], group["eps"], skip)
                else:
                    _laprop_update(ps, gs, ms, vs, key[2], group["lr"], *group["betas"], group["eps"], skip)
        return loss

    def _buckets(self, group: dict) -> dict[tuple, tuple[list[Tensor], ...]]:
        """The group's parameters that have a gradient with their gradients, moments and steps, bucketed so that
        each foreach call has one bias correction: by (device, dtype, step) with host steps (advanced here), by
        (device, dtype) when capturable (device steps, advanced by the caller). Normally a group is one bucket."""
        buckets: dict[tuple, tuple[list[Tensor], ...]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device) if self.capturable else 0
                state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif self.capturable and not torch.is_tensor(state["step"]):
                state["step"] = torch.as_tensor(float(state["step"]), dtype=torch.float32, device=p.device)
            if not self.capturable:
                state["step"] += 1
            key = (p.device, p.dtype) if self.capturable else (p.device, p.dtype, state["step"])
            bucket = buckets.setdefault(key, ([], [], [], [], []))
            for lst, t in zip(bucket, (p, p.grad, state["m"], state["v"], state["step"]), strict=True):
                lst.append(t)
        return buckets


def _laprop_update(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], t: int, lr: float,
                   b1: float, b2: float, eps: float, skip: Tensor | None) -> None:
    """One LaProp update of tensors that share step ``t``; ``skip`` (0-d bool on their device, or None) turns the
    update into a no-op: decays become 1 and the parameter step is multiplied by 0 (``gs`` must be finite)."""
    torch._foreach_mul_(vs, b2 if skip is None else torch.where(skip, 1.0, b2))
    torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
    denom = torch._foreach_div(vs, 1 - b2**t)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(ms, b1 if skip is None else torch.where(skip, 1.0, b1))
    torch._foreach_addcdiv_(ms, gs, denom, value=1 - b1)
    del denom
    step = ms if skip is None else torch._foreach_mul(ms, torch.where(skip, 0.0, 1.0))
    torch._foreach_add_(ps, step, alpha=-lr / (1 - b1**t))


def _laprop_update_tensors(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], t: Tensor,
                           lr: Tensor, b1: float, b2: float, eps: float, skip: Tensor | None) -> None:
    """:func:`_laprop_update` with the step ``t`` and ``lr`` as 0-d device tensors (nothing read on the host): the
    same operations, the bias corrections ``1 - b^t`` computed in float64 on the device."""
    t = t.to(torch.float64)
    torch._foreach_mul_(vs, b2 if skip is None else torch.where(skip, 1.0, b2))
    torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
    denom = torch._foreach_div(vs, 1.0 - torch.pow(b2, t))
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(ms, b1 if skip is None else torch.where(skip, 1.0, b1))
    torch._foreach_addcdiv_(ms, gs, denom, value=1 - b1)
    del denom
    scale = -lr / (1.0 - torch.pow(b1, t))
    if skip is not None:
        scale = torch.where(skip, 0.0, scale)
    torch._foreach_add_(ps, torch._foreach_mul(ms, scale))


@torch.no_grad()
def adaptive_clip_(params: Iterable[Tensor], agc: float, pmin: float = AGC_PMIN,
                   grad_norms: list[Tensor] | None = None) -> None:
    """Adaptive gradient clipping per parameter tensor, as DreamerV3's ``clip_by_agc``:
    ``g *= 1 / max(1, |g| / (agc * max(pmin, |p|)))`` (Brock et al. 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization", Sec. 4; unit-wise variant simplified to tensor-wise).

    Multi-tensor and without host sync. ``grad_norms``: the per-tensor gradient norms of the parameters that have
    a gradient, if already computed (in that order)."""
    params = [p for p in params if p.grad is not None]
    if not params or agc <= 0:
        return
    grads = [p.grad for p in params]
    gnorm = torch.stack(torch._foreach_norm(grads) if grad_norms is None else grad_norms)
    pnorm = torch.stack(torch._foreach_norm([p.detach() for p in params]))
    upper = agc * torch.clamp(pnorm, min=pmin)
    scale = 1.0 / torch.clamp(gnorm / upper, min=1.0)
    torch._foreach_mul_(grads, list(scale.to(grads[0].dtype).unbind(0)))


class _GradZeroer:
    """Zeroes the gradients of a parameter list where a 0-d bool flag is true.

    On an accelerator (or with ``flat=True``) without a host sync: :func:`torch.where` has no multi-tensor form (and
    ``0 * nan`` is ``nan``), so the gradients are copied into a persistent flat scratch buffer per (device, dtype),
    zeroed there by one kernel and copied back: three kernel launches and no per-parameter Python work (the
    buffer's views, laid out like the gradients, are cached for the parameter set). On the CPU (``flat=False``,
    the default there) reading the flag costs nothing, so the gradients are zeroed only when it is set.
    """

    def __init__(self, flat: bool | None = None) -> None:
        self.flat = flat
        self._key: tuple | None = None
        self._buckets: list[tuple[Tensor, list[Tensor], list[int]]] = []

    def __call__(self, grads: list[Tensor], found: Tensor) -> bool:
        """Zero ``grads`` if ``found``; returns False when the flag was read on the host and is false (then the
        update needs no device-side skip), else True."""
        flat = self.flat if self.flat is not None else any(g.device.type != "cpu" for g in grads)
        if not flat:
            if not bool(found):  # a CPU tensor: no device to wait for
                return False
            torch._foreach_zero_(grads)
            return True
        key = tuple((g.shape, g.stride(), g.dtype, g.device) for g in grads)
        if key != self._key:
            self._build(grads)
            self._key = key
        for buf, views, idx in self._buckets:
            ours = grads if len(idx) == len(grads) else [grads[i] for i in idx]
            torch._foreach_copy_(views, ours)
            buf.masked_fill_(found.to(buf.device), 0.0)
            torch._foreach_copy_(ours, views)
        return True

    def _build(self, grads: list[Tensor]) -> None:
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(grads):
            groups.setdefault((g.device, g.dtype), []).append(i)
        self._buckets = []
        for (device, dtype), idx in groups.items():
            buf = torch.empty(sum(grads[i].numel() for i in idx), device=device, dtype=dtype)
            views, offset = [], 0
            for i in idx:
                # the gradient's own strides where they are dense (e.g. channels-last), else contiguous ones,
                # so that the copies stay on the multi-tensor fast path
                stride = torch.empty_like(grads[i], device="meta").stride()
                views.append(buf.as_strided(grads[i].shape, stride, offset))
                offset += grads[i].numel()
            self._buckets.append((buf, views, idx))


def _fused_adam_supported(params: list[nn.Parameter]) -> bool:
    """Whether torch's fused Adam (which can skip an update on a device flag) runs on all ``params``."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


class Optimizer:
    """One optimiser for a set of modules with clipping, linear warm-up and non-finite-update protection.

    An update whose gradient norm is NaN/inf is not applied (parameters and moments stay as they were: LaProp via
    0/1 factors on the device, Adam via the fused kernel's ``found_inf``; the non-fused Adam fallback only gets
    zeroed gradients, so its moments decay and the momentum still moves the weights, which stay finite) and is
    counted on the device; :meth:`check_finite` raises :class:`NonFiniteError` for it later.

    All parameters live on one device. Per update on an accelerator: about 110 kernel launches for LaProp with
    AGC (60 of them torch's per-tensor fallback of ``_foreach_mul_`` with per-tensor scales) on the world model of
    size S, and no host sync.

    Args:
        groups: ``[(params, lr), ...]``; parameters that do not require grad are skipped.
        name: ``laprop`` or ``adam`` (torch's fused Adam where the devices support it, else foreach Adam).
        agc: adaptive clipping factor (0 disables); clip: global-norm clipping (0 disables).
        warmup: linear warm-up of the learning rate over this many updates (0 disables).

    Attributes:
        parts: optional ``{module name: parameters}`` set by the caller; each update then fills ``part_norms``
            (``{module name: 0-d tensor}``, the pre-clipping gradient norm of those parameters, on the device).
        updates: updates attempted so far (host int; skipped ones included).
        nonfinite: 0-d bool device tensor, whether the last gradient norm was non-finite (None before the first
            update); nonfinite_count: 0-d int64, updates skipped so far; first_nonfinite: 0-d int64, the update
            number (1-based) of the first skipped one, -1 if none.
    """

    def __init__(self, groups: list[tuple[list[nn.Parameter], float]], name: str, eps: float,
                 betas: tuple[float, float], agc: float, clip: float, warmup: int) -> None:
        param_groups = []
        for params, lr in groups:
            params = [p for p in params if p.requires_grad]
            if params:
                param_groups.append({"params": params, "lr": lr, "base_lr": lr})
        self.params = [p for g in param_groups for p in g["params"]]
        self.parts: dict[str, list[nn.Parameter]] = {}
        self.part_norms: dict[str, Tensor] = {}
        self.agc, self.clip, self.warmup = agc, clip, warmup
        self.updates = 0
        self.nonfinite: Tensor | None = None
        self.nonfinite_count: Tensor | None = None
        self.first_nonfinite: Tensor | None = None
        self.fused = False
        self.capturable = False
        self._count: Tensor | None = None  # capturable: the update counter on the device
        self._zero_if = _GradZeroer()
        if not param_groups:
            self.opt = None
        elif name == "laprop":
            self.opt = LaProp(param_groups, betas=betas, eps=eps)
        else:
            self.fused = _fused_adam_supported(self.params)
            self.opt = torch.optim.Adam(param_groups, betas=betas, eps=eps, fused=self.fused or None,
                                        foreach=None if self.fused else True)

    def set_capturable(self, on: bool) -> None:
        """Keep every per-update number on the device (CUDA graphs, :mod:`mbrl.graphs`): the update counter of the
        warm-up and of the non-finite flags, the learning rates (0-d tensors changed in place) and LaProp's steps
        and bias corrections. The host's :attr:`updates` is then advanced by :meth:`host_step` for updates that a
        graph replays.

        Raises:
            ConfigError: ``on`` with Adam (its fused kernel takes host learning rates; graphs need LaProp).
        """
        if on and self.opt is not None and not isinstance(self.opt, LaProp):
            raise ConfigError("CUDA graphs need optim.name=laprop (cuda_graphs=off runs Adam without graphs)")
        self.capturable = on
        self._count = None
        if isinstance(self.opt, LaProp):
            self.opt.set_capturable(on)

    def host_step(self) -> None:
        """Advance the host's update counter for an update that ran as a replayed graph (no Python ran)."""
        self.updates += 1

    def step(self, loss: Tensor) -> Tensor:
        """Backpropagate ``loss``, clip, apply one update (skipped if the gradient is not finite).

        Returns:
            the global gradient norm before clipping, a 0-d tensor on the parameters' device (NaN/inf for a
            skipped update). Nothing here synchronises with the host.
        """
        if self.opt is None:
            return torch.zeros((), device=loss.device)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self.update()

    def update(self) -> Tensor:
        """Clip and apply one update from the gradients already in ``p.grad`` (:meth:`step` without the
        backward pass); returns the pre-clipping global gradient norm as :meth:`step` does."""
        if self.opt is None:
            return torch.zeros(())
        self.updates += 1
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return torch.zeros((), device=self.params[0].device)
        count: int | Tensor = self.updates
        if self.capturable:
            if self._count is None or self._count.device != params[0].device:
                self._count = torch.full((), self.updates - 1, dtype=torch.int64, device=params[0].device)
            self._count.add_(1)
            count = self._count
        with torch.no_grad():
            grads = [p.grad for p in params]
            grad_norms = list(torch._foreach_norm(grads))
            stacked = torch.stack(grad_norms)
            norm = torch.linalg.vector_norm(stacked)
            if self.parts:
                where = {id(p): i for i, p in enumerate(params)}
                picked = {name: [grad_norms[where[id(p)]] for p in ps if id(p) in where]
                          for name, ps in self.parts.items()}
                self.part_norms = {name: torch.linalg.vector_norm(torch.stack(ns)) for name, ns in picked.items() if ns}
            found = ~torch.isfinite(norm)
            self._record(found, count)
            if self.agc > 0:
                adaptive_clip_(params, self.agc, grad_norms=grad_norms)
            if self.clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.clip, norm)
            # LaProp (and non-fused Adam) need finite gradients; fused Adam skips on its own
            device_skip = self.fused or self._zero_if([p.grad for p in params], found)
        if self.capturable:
            with torch.no_grad():
                scale_t = torch.clamp(count.to(torch.float32) / self.warmup, max=1.0) if self.warmup > 0 else None
                for group in self.opt.param_groups:
                    if not torch.is_tensor(group["lr"]) or group["lr"].device != count.device:
                        group["lr"] = torch.zeros((), dtype=torch.float32, device=count.device)
                    group["lr"].copy_(group["base_lr"] * scale_t if scale_t is not None
                                      else torch.as_tensor(group["base_lr"]))
        else:
            scale = min(1.0, self.updates / self.warmup) if self.warmup > 0 else 1.0
            for group in self.opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        if device_skip and (isinstance(self.opt, LaProp) or self.fused):
            self.opt.found_inf = found.to(torch.float32)
        try:
            self.opt.step()
        finally:
            self.opt.found_inf = None
        return norm

    def _record(self, found: Tensor, count: int | Tensor) -> None:
        """Update the device-side non-finite flags with this update's ``found`` (0-d bool); ``count``: this
        update's number (a host int, or the device counter when capturable)."""
        if self.nonfinite_count is None or self.nonfinite_count.device != found.device:
            self.nonfinite_count = torch.zeros((), dtype=torch.int64, device=found.device)
            self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=found.device)
        self.first_nonfinite = torch.where(found & (self.nonfinite_count == 0), count, self.first_nonfinite)
        self.nonfinite_count = self.nonfinite_count + found
        self.nonfinite = found

    def check_finite(self, name: str) -> None:
        """Raise :class:`NonFiniteError` if any update so far had a non-finite gradient (reads device flags: call
        at log or checkpoint time only). ``name``: the module in the message, e.g. ``"world model"``."""
        if self.nonfinite_count is None:
            return
        count = int(self.nonfinite_count)
        if count:
            raise NonFiniteError(
                f"non-finite gradient in the {name} at update {int(self.first_nonfinite)} (loss or gradient is "
                f"NaN/inf; {count} of {self.updates} updates skipped, weights left finite); the last checkpoint "
                f"stays loadable")

    def state_dict(self) -> dict:
        """Optimiser state plus the update counter (for checkpoints)."""
        return {"opt": self.opt.state_dict() if self.opt else None, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output, also one written by the earlier per-parameter LaProp (same per-
        parameter state ``step``/``m``/``v``) or by the earlier non-fused Adam (its group flags and CPU step
        counters are adapted to this optimiser's fused/foreach mode)."""
        if self.opt is not None and state["opt"] is not None:
            self.opt.load_state_dict(state["opt"])
            if isinstance(self.opt, torch.optim.Adam):
                for group in self.opt.param_groups:
                    group["fused"], group["foreach"] = self.fused or None, None if self.fused else True
                    for p in group["params"]:
                        st = self.opt.state.get(p)
                        if st and self.fused:
                            st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(p.device)
                        elif st:
                            st["step"] = torch.as_tensor(st["step"], dtype=torch.float32, device="cpu")
            if isinstance(self.opt, LaProp):
                self.opt.set_capturable(self.capturable)  # steps as ints or device tensors, whichever was saved
                for group in self.opt.param_groups:
                    if torch.is_tensor(group["lr"]) and not self.capturable:
                        group["lr"] = float(group["lr"])
        self.updates = state["updates"]
        self._count = None
