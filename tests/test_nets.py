"""Tests for :mod:`mbrl.nets`, the CNN encoder, :class:`mbrl.rssm.RSSM` shapes/resets and :mod:`mbrl.optim`."""

from __future__ import annotations

import pytest
import torch

from encoders.cnn import ConvEncoder
from encoders.layers import init_linear_, make_norm
from encoders.registry import available, build_encoder
from envs.errors import ConfigError
from mbrl.nets import MLP, BlockLinear, ConvDecoder, Linear
from mbrl.optim import LaProp, Optimizer, adaptive_clip_
from mbrl.rssm import RSSM

pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------- layers


def test_block_linear_equals_block_diagonal_dense():
    torch.manual_seed(0)
    layer = BlockLinear(12, 8, groups=4)
    assert layer.weight.shape == (4, 3, 2)
    with torch.no_grad():
        layer.bias.normal_()
    dense = torch.block_diag(*layer.weight.detach())  # (12, 8)
    assert dense.shape == (12, 8)
    x = torch.randn(5, 7, 12)
    torch.testing.assert_close(layer(x), x @ dense + layer.bias.detach())
    # block structure: input group g only affects output group g
    x2 = x.clone()
    x2[..., 0:3] += 1.0
    diff = (layer(x2) - layer(x)).abs().amax((0, 1))
    assert torch.all(diff[:2] > 0) and torch.all(diff[2:] == 0)


@pytest.mark.parametrize("inp,out,groups", [(10, 8, 4), (12, 6, 4), (7, 7, 2)])
def test_block_linear_rejects_indivisible_sizes(inp, out, groups):
    with pytest.raises(ValueError, match="divisible"):
        BlockLinear(inp, out, groups)


def test_mlp_shapes_and_zero_outscale():
    torch.manual_seed(0)
    mlp = MLP(10, 7, units=16, layers=2)
    assert mlp(torch.randn(3, 4, 10)).shape == (3, 4, 7)
    assert len(mlp.hidden) == 2
    zero = MLP(10, 5, units=16, layers=1, outscale=0.0)
    assert torch.equal(zero(torch.randn(6, 10)), torch.zeros(6, 5))
    with pytest.raises(ValueError):
        make_norm("batch", 4)


def _init(shape, fan_in, scale, mode, seed=0):
    w = torch.empty(shape)
    torch.manual_seed(seed)
    init_linear_(w, fan_in, scale, mode)
    return w


def test_init_linear_unit_scale_std_and_truncation():
    fan_in = 400
    w = _init((400, 500), fan_in, 1.0, "weight")
    # reference Initializer('trunc_normal', 'in'): truncated_normal(-2, 2) * 1.1368 * sqrt(1 / fan_in) has std
    # sqrt(1 / fan_in) = 0.05 and is bounded by 2 * 0.05 / 0.8796 (1.1368 = 1 / 0.8796, the std of a unit normal
    # truncated at 2 sigma)
    assert w.std().item() == pytest.approx(0.05, rel=0.02)
    assert w.abs().max().item() <= 2 * 0.05 / 0.87962566103423978 + 1e-6
    assert torch.equal(_init((400, 500), fan_in, 1.0, "variance"), w)  # the modes agree at scale 1


def test_init_linear_outscale_multiplies_weights():
    unit = _init((64, 32), 32, 1.0, "weight")
    # reference nets.Linear._scaled_winit: init(winit)(...) * outscale
    torch.testing.assert_close(_init((64, 32), 32, 0.01, "weight"), 0.01 * unit)
    # 2023 code Initializer(scale=outscale): variance scale / fan, i.e. std sqrt(0.01) = 0.1 times the unit draw
    torch.testing.assert_close(_init((64, 32), 32, 0.01, "variance"), 0.1 * unit)
    assert torch.equal(_init((4, 3), 3, 0.0, "weight"), torch.zeros(4, 3))
    assert torch.equal(_init((4, 3), 3, 0.0, "variance"), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="weight"):
        _init((4, 3), 3, 1.0, "fan_avg")


def test_linear_outscale_std():
    torch.manual_seed(0)
    layer = Linear(1024, 2048, outscale=0.01)  # the policy output layer of a 1024-unit actor
    assert layer.weight.std().item() == pytest.approx(0.01 / 32, rel=0.02)  # 0.01 * sqrt(1 / 1024)
    assert torch.equal(layer.bias, torch.zeros(2048))
    old = Linear(1024, 2048, outscale=0.01, outscale_mode="variance")
    assert old.weight.std().item() == pytest.approx(0.1 / 32, rel=0.02)  # sqrt(0.01 / 1024): 10x larger
    mlp = MLP(8, 4, units=1024, layers=1, outscale=0.01)
    assert mlp.out.weight.std().item() == pytest.approx(0.01 / 32, rel=0.05)


# ---------------------------------------------------------------- encoder / decoder


@pytest.mark.parametrize("size,expected_dim", [(32, 16 * 4 * 4), (64, 16 * 8 * 4)])
def test_conv_encoder_shapes(size, expected_dim):
    torch.manual_seed(0)
    enc = ConvEncoder(size, depth=4, mults=(1, 2, 4, 8), norm="layer")
    assert enc.out_dim == expected_dim
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out = enc(images)
    assert out.shape == (2, expected_dim)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(enc(images.float()), out)  # float in [0, 255] is accepted too


@pytest.mark.parametrize("size", [48, 2, 100])
def test_conv_encoder_rejects_bad_size(size):
    with pytest.raises(ValueError):
        ConvEncoder(size, depth=4)


def test_encoder_registry(tiny_cfg):
    cfg = tiny_cfg()
    assert "cnn" in available()
    enc = build_encoder("cnn", image_size=32, cfg=cfg)
    assert enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, enc.out_dim)
    assert len(enc.encoder_parameters()) == len(list(enc.parameters())) > 0
    with pytest.raises(ConfigError, match="cnn"):
        build_encoder("nope", image_size=32, cfg=cfg)


@pytest.mark.parametrize("size", [32, 64])
def test_conv_decoder_shape(size):
    torch.manual_seed(0)
    dec = ConvDecoder(20, size, depth=4, mults=(1, 2, 4, 8))
    out = dec(torch.randn(3, 20))
    assert out.shape == (3, 3, size, size)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        ConvDecoder(20, 48, depth=4, mults=(1, 2))


# ---------------------------------------------------------------- RSSM

B, T, A, E, D, S, K = 3, 5, 2, 10, 16, 4, 3


@pytest.fixture
def rssm():
    torch.manual_seed(0)
    return RSSM(action_dim=A, embed_dim=E, deter=D, hidden=8, stoch=S, classes=K, blocks=4)


def _assert_one_hot(stoch):
    assert torch.allclose(stoch, stoch.round(), atol=1e-6)
    torch.testing.assert_close(stoch.sum(-1), torch.ones(stoch.shape[:-1]))


def _random_state(batch):
    stoch = torch.nn.functional.one_hot(torch.randint(0, K, (batch, S)), K).float()
    return {"deter": torch.randn(batch, D), "stoch": stoch, "logits": torch.log_softmax(torch.randn(batch, S, K), -1)}


def test_rssm_initial_and_features(rssm):
    state = rssm.initial(B)
    assert state["deter"].shape == (B, D)
    assert state["stoch"].shape == state["logits"].shape == (B, S, K)
    assert all(torch.all(v == 0) for v in state.values())
    assert rssm.feat_dim == D + S * K
    assert rssm.features(state).shape == (B, D + S * K)


def test_rssm_img_and_obs_step_shapes(rssm):
    torch.manual_seed(1)
    state = _random_state(B)
    prior = rssm.img_step(state, torch.randn(B, A))
    assert prior["deter"].shape == (B, D) and prior["stoch"].shape == (B, S, K)
    _assert_one_hot(prior["stoch"])
    torch.testing.assert_close(prior["logits"].exp().sum(-1), torch.ones(B, S))  # normalised log-probs
    assert torch.all(prior["deter"].abs() <= state["deter"].abs().clamp(min=1.0))  # GRU interpolates with tanh
    mode = rssm.img_step(state, torch.randn(B, A), sample=False)
    assert torch.equal(mode["stoch"].round(), torch.nn.functional.one_hot(mode["logits"].argmax(-1), K).float())

    post, prior = rssm.obs_step(state, torch.randn(B, A), torch.randn(B, E), torch.zeros(B, dtype=torch.bool))
    assert torch.equal(post["deter"], prior["deter"])
    assert post["stoch"].shape == post["logits"].shape == (B, S, K)
    _assert_one_hot(post["stoch"])


def test_rssm_observe_shapes_and_matches_steps(rssm):
    embed, action = torch.randn(B, T, E), torch.randn(B, T, A)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    torch.manual_seed(5)
    post, prior = rssm.observe(embed, action, is_first)
    for s in (post, prior):
        assert s["deter"].shape == (B, T, D)
        assert s["stoch"].shape == s["logits"].shape == (B, T, S, K)
        _assert_one_hot(s["stoch"])
    assert rssm.features(post).shape == (B, T, D + S * K)
    # observe is the loop of obs_step from the zero state
    torch.manual_seed(5)
    state = rssm.initial(B)
    for t in range(T):
        state, _ = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
    torch.testing.assert_close(post["deter"][:, -1], state["deter"])
    torch.testing.assert_close(post["stoch"][:, -1], state["stoch"])


def test_rssm_is_first_resets_state(rssm):
    torch.manual_seed(2)
    state = _random_state(B)
    action, embed = torch.randn(B, A), torch.randn(B, E)
    first = torch.ones(B, dtype=torch.bool)

    torch.manual_seed(7)
    post_reset, prior_reset = rssm.obs_step(state, action, embed, first)
    torch.manual_seed(7)
    post_zero, prior_zero = rssm.obs_step(rssm.initial(B), torch.zeros(B, A), embed, first)
    for k in ("deter", "stoch", "logits"):
        torch.testing.assert_close(post_reset[k], post_zero[k])
        torch.testing.assert_close(prior_reset[k], prior_zero[k])

    # without the reset, the previous state matters
    torch.manual_seed(7)
    post_keep, _ = rssm.obs_step(state, action, embed, torch.zeros(B, dtype=torch.bool))
    assert not torch.allclose(post_keep["deter"], post_reset["deter"])

    # a mixed batch resets only the flagged rows
    mixed = torch.tensor([True, False, True])
    torch.manual_seed(7)
    post_mixed, _ = rssm.obs_step(state, action, embed, mixed)
    torch.testing.assert_close(post_mixed["deter"][mixed], post_reset["deter"][mixed])
    torch.testing.assert_close(post_mixed["deter"][~mixed], post_keep["deter"][~mixed])


def test_rssm_gradients_reach_inputs(rssm):
    embed = torch.randn(B, T, E, requires_grad=True)
    post, prior = rssm.observe(embed, torch.randn(B, T, A), torch.zeros(B, T, dtype=torch.bool))
    (rssm.features(post).pow(2).sum() + prior["logits"].sum()).backward()
    assert embed.grad.abs().sum() > 0
    assert rssm.dyngru.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- optimisers


def test_laprop_decreases_quadratic():
    p = torch.nn.Parameter(torch.tensor([3.0]))
    opt = LaProp([p], lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = (p - 1.0).pow(2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(losses[:20], losses[1:21], strict=True))  # monotone early on


def test_laprop_first_step_is_lr_times_sign():
    # step 1: v_hat = g^2, m_hat = g / |g| -> p -= lr * sign(g)
    p = torch.nn.Parameter(torch.tensor([2.0, -5.0]))
    opt = LaProp([p], lr=0.1)
    p.grad = torch.tensor([4.0, -0.01])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.9, -4.9]))


def test_adaptive_clip_caps_grad_norm():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |p| = 5
    p.grad = torch.tensor([30.0, 40.0])  # |g| = 50
    adaptive_clip_([p], agc=0.3)  # limit 0.3 * 5 = 1.5 -> g * 1.5 / 50
    torch.testing.assert_close(p.grad, torch.tensor([0.9, 1.2]))
    assert p.grad.norm().item() == pytest.approx(1.5, rel=1e-6)

    small = torch.nn.Parameter(torch.tensor([0.2, 0.0]))
    small.grad = torch.tensor([0.01, 0.02])  # below the limit 0.06: unchanged
    adaptive_clip_([small], agc=0.3)
    torch.testing.assert_close(small.grad, torch.tensor([0.01, 0.02]))

    zero = torch.nn.Parameter(torch.zeros(3))  # |p| = 0 -> limit agc * 1e-3
    zero.grad = torch.tensor([0.0, 3.0, 4.0])
    adaptive_clip_([zero], agc=0.3)
    assert zero.grad.norm().item() == pytest.approx(0.3 * 1e-3, rel=1e-5)
    torch.testing.assert_close(zero.grad / zero.grad.norm(), torch.tensor([0.0, 0.6, 0.8]))


@pytest.mark.parametrize("name", ["adam", "laprop"])
def test_optimizer_warmup_lr(name):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = Optimizer([([p], 0.1)], name, eps=1e-8, betas=(0.9, 0.999), agc=0.0, clip=0.0, warmup=10)
    norm = opt.step((p * torch.tensor([3.0, 4.0])).sum())
    assert norm == pytest.approx(5.0)  # gradient norm before clipping
    assert opt.opt.param_groups[0]["lr"] == pytest.approx(0.1 / 10)
    # first Adam/LaProp step moves each coordinate by ~lr * sign(g)
    torch.testing.assert_close(p.detach(), torch.tensor([0.99, -2.01]), atol=1e-6, rtol=0)
    for _ in range(15):
        opt.step((p * p).sum())
    assert opt.opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert opt.updates == 16
    assert opt.state_dict()["updates"] == 16


def test_optimizer_global_clip_and_frozen_params():
    p = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    opt = Optimizer([([p, frozen], 1.0)], "adam", eps=1e-8, betas=(0.9, 0.999), agc=0.0, clip=1.0, warmup=0)
    assert opt.params == [p]
    norm = opt.step((p * torch.tensor([30.0, 40.0])).sum())
    assert norm == pytest.approx(50.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    empty = Optimizer([([frozen], 1.0)], "adam", eps=1e-8, betas=(0.9, 0.999), agc=0.0, clip=0.0, warmup=0)
    assert empty.opt is None and empty.step(torch.zeros(())) == 0.0


def test_rms_norm_under_bf16_autocast_is_float32_math_in_the_input_dtype():
    """The reference normalises in float32 and casts back: under bf16 autocast the output is bf16, equals the
    float32 computation on the same input rounded to bf16, its weight gets the same gradient, and PyTorch emits
    no dtype-mismatch warning (plain ``nn.RMSNorm`` does)."""
    import warnings

    torch.manual_seed(0)
    norm = make_norm("rms", 32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(8, 32).to(torch.bfloat16)
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-4) * norm.weight
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the test
        y = norm(x)
        y.float().sum().backward()
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, expected.to(torch.bfloat16))
    grad = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-4)).sum(0)
    torch.testing.assert_close(norm.weight.grad, grad, rtol=1e-5, atol=1e-5)
    plain = torch.nn.RMSNorm(32, eps=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain(x)
    assert any("Mismatch dtype" in str(w.message) for w in caught)
