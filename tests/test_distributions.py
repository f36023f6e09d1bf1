"""Tests for :mod:`mbrl.distributions` and the KL balancing / free bits of :meth:`mbrl.rssm.RSSM.kl_loss`."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl.distributions import (
    BoundedNormal,
    OneHotCategorical,
    TwoHot,
    categorical_kl,
    symexp,
    symlog,
    twohot_bins,
    twohot_encode,
)
from mbrl.rssm import RSSM

pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------- symlog / symexp


def test_symlog_hand_computed_points():
    x = torch.tensor([0.0, 1.0, -1.0, math.e - 1.0, -(math.e**2 - 1.0), 9.0], dtype=torch.float64)
    expected = torch.tensor([0.0, math.log(2.0), -math.log(2.0), 1.0, -2.0, math.log(10.0)], dtype=torch.float64)
    torch.testing.assert_close(symlog(x), expected)
    assert symlog(torch.tensor(0.0)).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symlog_symexp_round_trip(dtype):
    x = torch.tensor([-1e4, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 7.0, 1e4], dtype=dtype)
    y = symlog(x)
    assert torch.all(torch.sign(y) == torch.sign(x))
    assert torch.all(y.abs() <= x.abs())  # log1p(|x|) <= |x|: symlog compresses
    torch.testing.assert_close(symexp(y), x, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7)
    torch.testing.assert_close(symlog(symexp(y)), y, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- two-hot


BINS5 = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])


def test_twohot_bins_layout():
    bins = twohot_bins(255)
    assert bins.shape == (255,)
    assert bins[0].item() == -20.0 and bins[-1].item() == 20.0
    assert bins[127].item() == 0.0  # zero is exactly a bin for an odd count
    assert torch.equal(bins, -bins.flip(0))  # exactly antisymmetric (torch.linspace alone is not)
    assert torch.all(bins[1:] > bins[:-1])
    torch.testing.assert_close(bins, torch.linspace(-20.0, 20.0, 255))  # the even grid, up to rounding
    raw = symexp(bins)
    assert torch.equal(raw, -raw.flip(0))
    assert raw[-1].item() == pytest.approx(math.expm1(20.0), rel=1e-6)  # reference bins reach symexp(20)
    assert raw[128].item() == pytest.approx(math.expm1(20.0 / 127), rel=1e-5)  # linspace(-20, 0, 128) steps


def test_twohot_weights_sum_to_one():
    x = torch.linspace(-3.0, 3.0, 101)
    w = twohot_encode(x, BINS5)
    assert w.shape == (101, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(101))
    assert torch.all(w >= 0)
    assert torch.all((w > 0).sum(-1) <= 2)  # at most two neighbouring bins carry mass


@pytest.mark.parametrize("idx", range(5))
def test_twohot_exact_bin_is_one_hot(idx):
    w = twohot_encode(BINS5[idx].reshape(1), BINS5)[0]
    expected = torch.zeros(5)
    expected[idx] = 1.0
    assert torch.equal(w, expected)


def test_twohot_between_bins_splits_linearly():
    w = twohot_encode(torch.tensor([0.25, -1.5, 1.9]), BINS5)
    expected = torch.tensor([[0.0, 0.0, 0.75, 0.25, 0.0],
                             [0.5, 0.5, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 0.0, 0.1, 0.9]])
    torch.testing.assert_close(w, expected)
    # the expectation under the weights recovers the value (linear interpolation)
    torch.testing.assert_close((w * BINS5).sum(-1), torch.tensor([0.25, -1.5, 1.9]))


def test_twohot_out_of_range_clips_to_edges():
    w = twohot_encode(torch.tensor([-7.0, 5.0, -2.0000001, 1e9]), BINS5)
    expected = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]])
    assert torch.equal(w, expected)


def test_twohot_batch_shape():
    w = twohot_encode(torch.zeros(2, 3, 4), BINS5)
    assert w.shape == (2, 3, 4, 5)


GRID3 = torch.tensor([-1.0, 0.0, 1.0])  # symlog-space grid; raw bins symexp(.) = [-(e - 1), 0, e - 1]
PROBS3 = torch.tensor([0.25, 0.25, 0.5])


def test_twohot_symexp_mean_is_raw_space_expectation():
    # reference outs.TwoHot.pred: sum_i p_i * symexp(grid_i) = 0.25 * -(e - 1) + 0.5 * (e - 1) = 0.25 (e - 1)
    dist = TwoHot(torch.log(PROBS3), GRID3, "symexp")
    assert dist.mean.item() == pytest.approx(0.25 * (math.e - 1.0), rel=1e-6)
    torch.testing.assert_close(dist.bins, torch.tensor([-(math.e - 1.0), 0.0, math.e - 1.0]))
    assert TwoHot(torch.log(PROBS3), GRID3).mode == "symexp"  # the reference semantics are the default


def test_twohot_symlog_mean_is_symexp_of_symlog_expectation():
    # 2023 paper/code: symexp(sum_i p_i * grid_i) = symexp(0.25) = e^0.25 - 1
    dist = TwoHot(torch.log(PROBS3), GRID3, "symlog")
    assert dist.mean.item() == pytest.approx(math.exp(0.25) - 1.0, rel=1e-6)


def test_twohot_symexp_log_prob_interpolates_in_raw_space():
    # target 1.0 lies between raw bins 0 and e - 1: weight 1 / (e - 1) on the upper bin
    w_hi = 1.0 / (math.e - 1.0)
    expected = (1.0 - w_hi) * math.log(0.25) + w_hi * math.log(0.5)
    lp = TwoHot(torch.log(PROBS3), GRID3, "symexp").log_prob(torch.tensor(1.0))
    assert lp.item() == pytest.approx(expected, rel=1e-6)
    # a target beyond the last raw bin is one-hot on it
    assert TwoHot(torch.log(PROBS3), GRID3, "symexp").log_prob(torch.tensor(5.0)).item() == pytest.approx(
        math.log(0.5), rel=1e-6)


def test_twohot_symlog_log_prob_interpolates_in_symlog_space():
    # symlog(1.0) = ln 2 lies between grid bins 0 and 1: weight ln 2 on the upper bin
    w_hi = math.log(2.0)
    expected = (1.0 - w_hi) * math.log(0.25) + w_hi * math.log(0.5)
    lp = TwoHot(torch.log(PROBS3), GRID3, "symlog").log_prob(torch.tensor(1.0))
    assert lp.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", ["symexp", "symlog"])
def test_twohot_uniform_predicts_exactly_zero(mode):
    # zero-initialised heads predict exactly 0 (reference: symmetric summation in outs.TwoHot.pred)
    dist = TwoHot(torch.zeros(4, 255), twohot_bins(255), mode)
    assert torch.equal(dist.mean, torch.zeros(4))


def test_twohot_rejects_unknown_mode():
    with pytest.raises(ValueError, match="symexp"):
        TwoHot(torch.zeros(3), GRID3, "linear")


@pytest.mark.parametrize("mode", ["symexp", "symlog"])
def test_twohot_mean_round_trip(mode):
    bins = twohot_bins(255)
    x = torch.tensor([-1000.0, -3.5, -0.01, 0.0, 0.7, 12.0, 5e4])
    space = symexp(bins) if mode == "symexp" else bins
    target = x if mode == "symexp" else symlog(x)
    logits = torch.log(twohot_encode(target, space).clamp(min=1e-30))
    mean = TwoHot(logits, bins, mode).mean
    assert mean.shape == x.shape
    # the two-hot target's expectation is the value itself in the space it was interpolated in
    torch.testing.assert_close(mean, x, rtol=1e-4, atol=1e-5)


def test_twohot_modes_differ_between_bins():
    # the same two-hot logits mean different values: the target 0.7 encoded in symlog space and read as raw-space
    # probabilities overshoots, since raw bins are convex in the grid
    bins = twohot_bins(255)
    logits = torch.log(twohot_encode(symlog(torch.tensor(0.7)), bins).clamp(min=1e-30))
    assert TwoHot(logits, bins, "symlog").mean.item() == pytest.approx(0.7, rel=1e-4)
    assert TwoHot(logits, bins, "symexp").mean.item() > 0.7 + 1e-3


@pytest.mark.parametrize("mode", ["symexp", "symlog"])
def test_twohot_log_prob_maximised_at_target(mode):
    bins = twohot_bins(31)
    space = symexp(bins) if mode == "symexp" else bins
    fwd = (lambda v: v) if mode == "symexp" else symlog
    target = torch.tensor(3.0)
    best = torch.log(twohot_encode(fwd(target), space).clamp(min=1e-30))
    best_lp = TwoHot(best, bins, mode).log_prob(target)
    # Gibbs: any other distribution gives a lower log-likelihood of the target.
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        other = best.clamp(min=-20) + 0.5 * torch.randn(31, generator=gen)
        assert TwoHot(other, bins, mode).log_prob(target) < best_lp
    # For a peaked distribution, the log-likelihood over candidate targets peaks at the peak bin.
    logits = torch.zeros(31)
    logits[20] = 10.0
    candidates = symexp(torch.linspace(bins[0].item(), bins[-1].item(), 301))
    lp = TwoHot(logits, bins, mode).log_prob(candidates)
    assert lp.shape == (301,)
    assert candidates[lp.argmax()].item() == pytest.approx(symexp(bins[20]).item(), rel=1e-4)


@pytest.mark.parametrize("mode", ["symexp", "symlog"])
def test_twohot_log_prob_is_minus_cross_entropy(mode):
    bins = twohot_bins(31)
    logits = torch.randn(4, 31, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([-2.0, 0.0, 0.3, 40.0])
    q = twohot_encode(target, symexp(bins)) if mode == "symexp" else twohot_encode(symlog(target), bins)
    expected = (q * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(TwoHot(logits, bins, mode).log_prob(target), expected)


# ---------------------------------------------------------------- one-hot categorical


def test_unimix_floor():
    unimix, k = 0.01, 4
    logits = torch.tensor([[[50.0, -50.0, -50.0, -50.0], [0.0, 0.0, 0.0, 0.0]]])  # (1, S=2, K=4)
    dist = OneHotCategorical(logits, unimix)
    assert torch.all(dist.probs >= unimix / k - 1e-7)
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(1, 2))
    assert dist.probs[0, 0, 0].item() == pytest.approx(1 - unimix + unimix / k, abs=1e-6)
    torch.testing.assert_close(dist.logits.exp(), dist.probs)  # logits are normalised log-probs
    no_mix = OneHotCategorical(logits, 0.0)
    assert no_mix.probs[0, 0, 1].item() < 1e-20


def test_onehot_samples_are_one_hot_and_follow_probs():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(4000, 1, 3)
    dist = OneHotCategorical(logits, unimix=0.0)
    s = dist.sample()
    assert s.shape == (4000, 1, 3)
    assert torch.allclose(s, s.round(), atol=1e-6)  # forward value is exactly 0/1 up to rounding
    torch.testing.assert_close(s.sum(-1), torch.ones(4000, 1))
    freq = s.detach().round().mean(0)[0]
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.03, rtol=0)
    mode = dist.mode()
    assert torch.equal(mode.round()[0, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_onehot_straight_through_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 4, requires_grad=True)
    dist = OneHotCategorical(logits)
    weights = torch.randn(5, 3, 4)
    (dist.sample() * weights).sum().backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0
    # straight-through: the gradient is that of (probs * weights).sum()
    logits2 = logits.detach().clone().requires_grad_(True)
    (OneHotCategorical(logits2).probs * weights).sum().backward()
    torch.testing.assert_close(logits.grad, logits2.grad)


def test_onehot_entropy():
    uniform = OneHotCategorical(torch.zeros(2, 3, 4), unimix=0.0)
    torch.testing.assert_close(uniform.entropy(), torch.full((2,), 3 * math.log(4)))


# ---------------------------------------------------------------- categorical KL


def _logp(p):
    return torch.log(torch.tensor(p, dtype=torch.float64))


def test_categorical_kl_zero_for_identical():
    logp = torch.log_softmax(torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0)), -1)
    kl = categorical_kl(logp, logp)
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, torch.zeros(3))


def test_categorical_kl_two_class_hand_computed():
    p, q = _logp([[0.5, 0.5]]), _logp([[0.25, 0.75]])  # (S=1, K=2)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3)
    assert categorical_kl(p, q).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.5 * math.log(4.0 / 3.0))
    expected_rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert categorical_kl(q, p).item() == pytest.approx(expected_rev, rel=1e-12)


def test_categorical_kl_sums_over_groups():
    p1, q1 = _logp([[0.5, 0.5]]), _logp([[0.25, 0.75]])
    p2, q2 = _logp([[0.9, 0.1]]), _logp([[0.6, 0.4]])
    p, q = torch.cat([p1, p2, p1]), torch.cat([q1, q2, q1])  # (S=3, K=2)
    expected = 2 * categorical_kl(p1, q1) + categorical_kl(p2, q2)
    torch.testing.assert_close(categorical_kl(p, q), expected)


# ---------------------------------------------------------------- bounded normal


def test_bounded_normal_matches_torch_normal():
    gen = torch.Generator().manual_seed(0)
    out = 3 * torch.randn(7, 6, generator=gen)
    dist = BoundedNormal(out, minstd=0.1, maxstd=1.0)
    ref = torch.distributions.Normal(dist.mean, dist.std)
    action = torch.randn(7, 3, generator=gen)
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    assert dist.mode().shape == (7, 3)
    assert dist.sample().shape == (7, 3)


def test_bounded_normal_parameterisation_and_bounds():
    out = torch.tensor([[100.0, -100.0, 0.0, 100.0, -100.0, -2.0]])
    dist = BoundedNormal(out, minstd=0.1, maxstd=1.0)
    assert torch.all(dist.mean.abs() <= 1.0)
    assert torch.all((dist.std >= 0.1) & (dist.std <= 1.0))
    torch.testing.assert_close(dist.mean, torch.tanh(torch.tensor([[100.0, -100.0, 0.0]])))
    # std = (max - min) * sigmoid(s + 2) + min; s = -2 gives the midpoint
    torch.testing.assert_close(dist.std, torch.tensor([[1.0, 0.1, 0.55]]))
    wide = BoundedNormal(1e3 * torch.randn(50, 8, generator=torch.Generator().manual_seed(3)), 0.2, 0.7)
    assert torch.all(wide.mean.abs() <= 1.0)
    assert torch.all((wide.std >= 0.2) & (wide.std <= 0.7))


def test_bounded_normal_sample_is_reparameterised():
    torch.manual_seed(0)
    out = torch.zeros(1000, 2, requires_grad=True)
    dist = BoundedNormal(out)
    s = dist.sample()
    assert s.mean(0).abs().max() < 0.15  # mean tanh(0) = 0
    s.sum().backward()
    assert out.grad[:, 0].abs().min() > 0  # gradient reaches the mean half


# ---------------------------------------------------------------- KL balancing and free bits (RSSM.kl_loss)


@pytest.fixture
def rssm():
    torch.manual_seed(0)
    return RSSM(action_dim=2, embed_dim=8, deter=16, hidden=8, stoch=2, classes=2, blocks=2)


def _leaf(p):
    return torch.log(torch.tensor(p)).requires_grad_(True)


def test_kl_below_free_nats_gives_free_nats(rssm):
    post, prior = _leaf([[[0.5, 0.5], [0.5, 0.5]]]), _leaf([[[0.25, 0.75], [0.25, 0.75]]])  # (B=1, S=2, K=2)
    kl_true = 2 * 0.5 * math.log(4.0 / 3.0)
    dyn, rep, kl = rssm.kl_loss({"logits": post}, {"logits": prior}, free_nats=1.0)
    assert dyn.shape == rep.shape == kl.shape == (1,)
    assert dyn.item() == 1.0 and rep.item() == 1.0
    assert kl.item() == pytest.approx(kl_true, rel=1e-5)
    (dyn + rep).sum().backward()  # clipped: no gradient at all
    assert prior.grad is not None and torch.all(prior.grad == 0)
    assert post.grad is not None and torch.all(post.grad == 0)


def test_kl_above_free_nats_equals_kl_and_gradients_are_balanced(rssm):
    p_post, p_prior = [[[0.9, 0.1], [0.9, 0.1]]], [[[0.1, 0.9], [0.1, 0.9]]]
    kl_true = 2 * 0.8 * math.log(9.0)  # per group 0.9 ln 9 + 0.1 ln(1/9)
    free = 1.0
    assert kl_true > free

    # dyn = KL(sg(post) || prior): gradient only to the prior
    post, prior = _leaf(p_post), _leaf(p_prior)
    dyn, rep, kl = rssm.kl_loss({"logits": post}, {"logits": prior}, free)
    assert dyn.item() == pytest.approx(kl_true, rel=1e-5)
    assert rep.item() == pytest.approx(kl_true, rel=1e-5)
    assert kl.item() == pytest.approx(kl_true, rel=1e-5)
    assert not kl.requires_grad
    dyn.sum().backward()
    assert post.grad is None
    # d/d(log q_k) of -sum_k p_k log q_k is -p_k
    torch.testing.assert_close(prior.grad, -torch.tensor(p_post))

    # rep = KL(post || sg(prior)): gradient only to the posterior
    post, prior = _leaf(p_post), _leaf(p_prior)
    _, rep, _ = rssm.kl_loss({"logits": post}, {"logits": prior}, free)
    rep.sum().backward()
    assert prior.grad is None
    p, q = torch.tensor(p_post), torch.tensor(p_prior)
    torch.testing.assert_close(post.grad, p * (torch.log(p / q) + 1.0))


def test_kl_free_nats_applies_per_step(rssm):
    # one step below, one step above the free nats: clipping is per element, not on the batch mean
    post = torch.log(torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]]))
    prior = torch.log(torch.tensor([[[0.25, 0.75]], [[0.1, 0.9]]]))
    dyn, rep, kl = rssm.kl_loss({"logits": post}, {"logits": prior}, free_nats=1.0)
    assert dyn[0].item() == 1.0 and rep[0].item() == 1.0
    assert dyn[1].item() == pytest.approx(0.8 * math.log(9.0), rel=1e-5)
    assert kl[0].item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-5)
