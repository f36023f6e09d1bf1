"""Tests for :mod:`mbrl.optim`: the multi-tensor LaProp and adaptive clipping against per-parameter references,
the Adam path, device-side non-finite handling and checkpoint round trips (also from the per-parameter LaProp)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from envs.errors import DreamshiftError
from mbrl.optim import LaProp, NonFiniteError, Optimizer, _GradZeroer, adaptive_clip_

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPES = [(7, 5), (5,), (), (3, 4, 2), (11,)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


# ------------------------------------------------------------------------------------------- references
class RefLaProp(torch.optim.Optimizer):
    """The earlier per-parameter LaProp of mbrl/optim.py, kept verbatim as the reference (its checkpoints have
    per-parameter state ``step`` (int), ``m``, ``v``)."""

    def __init__(self, params, lr=4e-5, betas=(0.9, 0.999), eps=1e-20):  # noqa: ANN001
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
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


@torch.no_grad()
def ref_agc_(params, agc, pmin=1e-3):  # noqa: ANN001, ANN201
    """Per-parameter DreamerV3 ``clip_by_agc``: ``g * 1 / max(1, |g| / (agc * max(pmin, |p|)))``."""
    for p in params:
        if p.grad is None:
            continue
        upper = agc * torch.clamp(p.norm(), min=pmin)
        p.grad.mul_(1.0 / torch.clamp(p.grad.norm() / upper, min=1.0))


@torch.no_grad()
def old_agc_(params, agc, pmin=1e-3):  # noqa: ANN001, ANN201
    """The earlier per-parameter ``adaptive_clip_`` (``min(1, limit / |g|)``, same value up to rounding)."""
    for p in params:
        if p.grad is None:
            continue
        limit = agc * p.detach().norm().clamp(min=pmin)
        p.grad.mul_((limit / p.grad.norm().clamp(min=1e-12)).clamp(max=1.0))


# ----------------------------------------------------------------------------------------------- helpers
def _params(seed: int, shapes=SHAPES, device: str = "cpu") -> list[nn.Parameter]:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]


def _set_grads(params: list[nn.Parameter], seed: int, none: tuple[int, ...] = ()) -> None:
    g = torch.Generator().manual_seed(seed)
    for i, p in enumerate(params):
        grad = torch.randn(p.shape, generator=g).to(p.device) * 10.0 ** (i % 3 - 1)
        p.grad = None if i in none else grad


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-8)  # addcdiv vs add(div): ~1 ulp


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 16)
        self.b = nn.Linear(16, 16)
        self.c = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


def _loss(net: Net, i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + i)
    x, y = torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)
    return (net(x) - y).square().mean()


def _opt(net: Net, name: str = "laprop", agc: float = 0.3, clip: float = 0.0, warmup: int = 3) -> Optimizer:
    eps = 1e-20 if name == "laprop" else 1e-8
    return Optimizer([(list(net.a.parameters()), 1e-2), (list(net.b.parameters()) + list(net.c.parameters()), 3e-3)],
                     name, eps, (0.9, 0.999), agc, clip, warmup)


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# ------------------------------------------------------------------------------------------------ LaProp
@pytest.mark.parametrize("device", DEVICES)
def test_laprop_matches_per_parameter_reference(device: str):
    new, ref = _params(0, device=device), _params(0, device=device)
    groups = lambda ps: [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:4], "lr": 3e-3},  # noqa: E731
                         {"params": ps[4:], "lr": 1e-4, "betas": (0.8, 0.99), "eps": 1e-8}]
    opt, ref_opt = LaProp(groups(new), eps=1e-20), RefLaProp(groups(ref), eps=1e-20)
    for step in range(6):
        none = (1,) if step in (2, 3) else ()  # a parameter without gradient keeps its own step count
        _set_grads(new, step, none)
        _set_grads(ref, step, none)
        opt.step()
        ref_opt.step()
        _close(new, ref)
    for p, q in zip(new, ref, strict=True):
        assert opt.state[p]["step"] == ref_opt.state[q]["step"]
        _close([opt.state[p]["m"], opt.state[p]["v"]], [ref_opt.state[q]["m"], ref_opt.state[q]["v"]])
    assert opt.state[new[1]]["step"] == 4 and opt.state[new[0]]["step"] == 6


@pytest.mark.parametrize("device", DEVICES)
def test_adaptive_clip_matches_per_parameter_reference(device: str):
    new, ref, old = _params(1, device=device), _params(1, device=device), _params(1, device=device)
    with torch.no_grad():
        new[3].mul_(1e-5), ref[3].mul_(1e-5), old[3].mul_(1e-5)  # |p| < pmin: the limit is agc * pmin
    for ps in (new, ref, old):
        _set_grads(ps, 5, none=(2,))
        ps[4].grad.mul_(1e-4)  # small enough to stay unclipped
    adaptive_clip_(new, 0.3)
    ref_agc_(ref, 0.3)
    old_agc_(old, 0.3)
    assert new[2].grad is None
    for p, q, o in zip(new, ref, old, strict=True):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
            torch.testing.assert_close(p.grad, o.grad, rtol=1e-5, atol=0)
    torch.testing.assert_close(new[4].grad.norm().cpu(), _grad_norm_before(4), rtol=1e-6, atol=0)
    assert new[0].grad.norm() <= 0.3 * new[0].norm() * (1 + 1e-5)


def _grad_norm_before(i: int) -> torch.Tensor:
    ps = _params(1)
    _set_grads(ps, 5)
    return ps[i].grad.norm() * 1e-4


def test_optimizer_laprop_agc_warmup_matches_reference():
    net, ref = Net(), Net()
    opt = _opt(net, agc=0.3, warmup=3)
    lrs = [1e-2, 3e-3]
    ref_opt = RefLaProp([{"params": list(ref.a.parameters()), "lr": lrs[0]},
                         {"params": list(ref.b.parameters()) + list(ref.c.parameters()), "lr": lrs[1]}], eps=1e-20)
    for i in range(5):
        norm = opt.step(_loss(net, i))
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_norm = torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()])
        ref_agc_(ref.parameters(), 0.3)
        for group, lr in zip(ref_opt.param_groups, lrs, strict=True):
            group["lr"] = lr * min(1.0, (i + 1) / 3)
        ref_opt.step()
        torch.testing.assert_close(norm, ref_norm, rtol=1e-6, atol=0)
        _close(_weights(net), _weights(ref))
    assert opt.updates == 5 and [g["lr"] for g in opt.opt.param_groups] == lrs


def test_step_returns_device_tensor_norm():
    net = Net()
    opt = _opt(net)
    norm = opt.step(_loss(net, 0))
    assert isinstance(norm, torch.Tensor) and norm.shape == () and norm.device == net.a.weight.device
    assert norm.item() > 0 and not bool(opt.nonfinite)
    opt.check_finite("world model")  # nothing to report
    empty = Optimizer([([], 1e-3)], "laprop", 1e-20, (0.9, 0.999), 0.3, 0.0, 0)
    assert float(empty.step(torch.zeros((), requires_grad=True))) == 0.0


# ------------------------------------------------------------------------------------------------- Adam
def test_adam_matches_torch_adam_with_clipping():
    net, ref = Net(), Net()
    opt = _opt(net, name="adam", agc=0.0, clip=0.5, warmup=0)
    lrs = [1e-2, 3e-3]
    ref_opt = torch.optim.Adam([{"params": list(ref.a.parameters()), "lr": lrs[0]},
                                {"params": list(ref.b.parameters()) + list(ref.c.parameters()), "lr": lrs[1]}],
                               eps=1e-8, foreach=False)
    for i in range(5):
        norm = opt.step(_loss(net, i))
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
        torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=0)
        for p, q in zip(_weights(net), _weights(ref), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert opt.fused  # torch's fused Adam runs on the CPU too


# ------------------------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("name", ["laprop", "adam"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_skips_update_and_check_finite_raises(name: str, bad: float):
    net = Net()
    opt = _opt(net, name=name, clip=0.0 if name == "laprop" else 0.5)
    for i in range(2):
        opt.step(_loss(net, i))
    before, state_before = _weights(net), copy.deepcopy(opt.opt.state_dict()["state"])
    norm = opt.step(_loss(net, 2) * bad)  # update 3: every gradient NaN/inf
    assert not torch.isfinite(norm) and bool(opt.nonfinite)
    assert all(torch.equal(p, q) for p, q in zip(_weights(net), before, strict=True))
    state = opt.opt.state_dict()["state"]
    for k, st in state.items():
        for key in ("m", "v", "exp_avg", "exp_avg_sq"):
            if key in st:
                assert torch.equal(st[key], state_before[k][key])
    with pytest.raises(NonFiniteError, match=r"in the world model at update 3 \(") as err:
        opt.check_finite("world model")
    assert isinstance(err.value, DreamshiftError) and "\n" not in str(err.value)
    assert "1 of 3 updates skipped" in str(err.value)
    # later finite updates apply again; the first bad update number is kept
    opt.step(_loss(net, 3))
    assert not bool(opt.nonfinite)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(_weights(net), before, strict=True))
    with pytest.raises(NonFiniteError, match="at update 3 "):
        opt.check_finite("world model")


def test_partly_nonfinite_gradient_is_skipped_for_all_parameters():
    net = Net()
    opt = _opt(net)
    opt.step(_loss(net, 0))
    before = _weights(net)
    loss = _loss(net, 1) + net.c.bias.sum() * float("nan")  # only one tensor's gradient is NaN
    opt.step(loss)
    assert all(torch.equal(p, q) for p, q in zip(_weights(net), before, strict=True))
    assert int(opt.nonfinite_count) == 1 and int(opt.first_nonfinite) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_grad_zeroer_flat_buffer_keeps_layouts(device: str):
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g), torch.randn(4, 3, generator=g),
             torch.randn((), generator=g)]
    grads[1] = grads[1].to(memory_format=torch.channels_last)
    grads[2] = grads[2].t()
    grads = [x.to(device) for x in grads]
    before = [x.clone() for x in grads]
    zero = _GradZeroer(flat=True)
    zero(grads, torch.tensor(False, device=device))
    assert all(torch.equal(x, y) and x.stride() == y.stride() for x, y in zip(grads, before, strict=True))
    assert [v.stride() for v in zero._buckets[0][1]] == [x.stride() for x in grads]
    grads[1][0, 0, 0, 0] = float("nan")
    zero(grads, torch.tensor(True, device=device))
    assert all(not x.any() for x in grads)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("flat", [False, True])
def test_laprop_skip_with_either_zeroing_strategy(flat: bool):
    """The flat scratch buffer (the accelerator default) and in-place zeroing (the CPU default) give the same
    updates, and both skip a NaN update, with channels-last weights too."""
    nets = [ConvNet(), ConvNet()]
    opts = [Optimizer([(list(n.parameters()), 1e-2)], "laprop", 1e-20, (0.9, 0.999), 0.3, 0.0, 0) for n in nets]
    opts[1]._zero_if = _GradZeroer(flat=flat)
    x = torch.randn(2, 3, 8, 8)
    for i in range(4):
        kept = [_weights(n) for n in nets]
        for net, opt in zip(nets, opts, strict=True):
            opt.step(net(x).square().mean() * (float("nan") if i == 2 else 1.0))
        if i == 2:
            assert all(torch.equal(p, q) for n, k in zip(nets, kept, strict=True) for p, q in zip(_weights(n), k,
                                                                                                     strict=True))
        assert all(torch.equal(p, q) for p, q in zip(_weights(nets[0]), _weights(nets[1]), strict=True))
    assert nets[1].conv.weight.grad.stride() == nets[1].conv.weight.stride()


# ------------------------------------------------------------------------------------------- checkpoints
def _roundtrip(obj: dict) -> dict:
    """Through a run checkpoint's storage: tensors via safetensors bytes, the rest via JSON text."""
    import json

    from safetensors.torch import load, save

    from mbrl import safe_state

    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(safe_state.split(obj, "x", tensors))
    return safe_state.join(json.loads(text), load(save(safe_state.cpu_tensors(tensors))))


@pytest.mark.parametrize("name", ["laprop", "adam"])
def test_state_dict_round_trip_continues_identically(name: str):
    net = Net()
    opt = _opt(net, name=name, warmup=4)
    for i in range(3):
        opt.step(_loss(net, i))
    saved_net, saved_opt = _roundtrip(net.state_dict()), _roundtrip(opt.state_dict())
    net2 = Net()
    net2.load_state_dict(saved_net)
    opt2 = _opt(net2, name=name, warmup=4)
    opt2.load_state_dict(saved_opt)
    assert opt2.updates == 3
    for i in range(3, 6):
        n1, n2 = opt.step(_loss(net, i)), opt2.step(_loss(net2, i))
        assert torch.equal(n1, n2)
        assert all(torch.equal(p, q) for p, q in zip(_weights(net), _weights(net2), strict=True))


def test_checkpoint_of_per_parameter_laprop_loads():
    """A state written by the earlier Optimizer (``{"opt": RefLaProp.state_dict(), "updates": n}``) loads and
    continues as the earlier optimiser would."""
    net, ref = Net(), Net()
    lrs = [1e-2, 3e-3]
    ref_opt = RefLaProp([{"params": list(ref.a.parameters()), "lr": lrs[0], "base_lr": lrs[0]},
                         {"params": list(ref.b.parameters()) + list(ref.c.parameters()), "lr": lrs[1],
                          "base_lr": lrs[1]}], eps=1e-20)
    for i in range(3):
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_opt.step()
    net.load_state_dict(ref.state_dict())
    opt = _opt(net, agc=0.0, warmup=0)
    opt.load_state_dict(_roundtrip({"opt": ref_opt.state_dict(), "updates": 3}))
    for i in range(3, 6):
        opt.step(_loss(net, i))
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_opt.step()
        _close(_weights(net), _weights(ref))
    assert opt.opt.state[net.a.weight]["step"] == 6


def test_checkpoint_of_non_fused_adam_loads():
    net, ref = Net(), Net()
    lrs = [1e-2, 3e-3]
    ref_opt = torch.optim.Adam([{"params": list(ref.a.parameters()), "lr": lrs[0], "base_lr": lrs[0]},
                                {"params": list(ref.b.parameters()) + list(ref.c.parameters()), "lr": lrs[1],
                                 "base_lr": lrs[1]}], eps=1e-8, foreach=False)
    for i in range(3):
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_opt.step()
    net.load_state_dict(ref.state_dict())
    opt = _opt(net, name="adam", agc=0.0, warmup=0)
    opt.load_state_dict(_roundtrip({"opt": ref_opt.state_dict(), "updates": 3}))
    assert all(g["fused"] for g in opt.opt.param_groups)
    for i in range(3, 6):
        opt.step(_loss(net, i))
        ref_opt.zero_grad()
        _loss(ref, i).backward()
        ref_opt.step()
        for p, q in zip(_weights(net), _weights(ref), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------- sync
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["laprop", "adam"])
def test_step_does_not_sync_on_cuda(name: str):
    net = Net().cuda()
    opt = _opt(net, name=name, clip=0.0 if name == "laprop" else 0.5)
    x = torch.randn(32, 6, device="cuda")
    opt.step(net(x).square().mean())  # state allocation on the first step
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            norm = opt.step(net(x).square().mean())
        opt.step(net(x).square().mean() * float("nan"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert norm.is_cuda and torch.isfinite(norm)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(NonFiniteError, match="at update 5 "):
        opt.check_finite("actor")
