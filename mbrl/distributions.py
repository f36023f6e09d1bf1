"""Distributions and transforms of DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World
Models", arXiv 2301.04104, Sec. 2 and App. B).

- :func:`symlog` / :func:`symexp` (Eq. 9): squash targets of unknown scale.
- :class:`TwoHot`: discrete regression over exponentially spaced bins used by the reward and critic heads. Two
  variants (``ModelConfig.twohot``): ``symexp`` (current reference code, danijar/dreamerv3
  ``embodied/jax/heads.py`` ``Head.symexp_twohot`` + ``embodied/jax/outs.py`` ``TwoHot``): the bins are
  ``symexp`` of an even grid, the prediction is the expectation ``sum_i p_i b_i`` in raw space and targets are
  interpolated linearly between the two neighbouring raw-space bins; ``symlog`` (2023 paper Eq. 9-10 and its
  code, ``jaxutils.DiscDist``): the bins are the even grid in symlog space, the prediction is
  ``symexp(sum_i p_i b_i)`` and targets are ``symlog``'ed and interpolated in symlog space.
- :class:`OneHotCategorical`: the RSSM's categorical latent with 1 % uniform mixture ("unimix") and
  straight-through gradients.
- :class:`BoundedNormal`: the continuous policy (mean squashed by tanh, std in ``[minstd, maxstd]``), as the
  reference code's ``bounded_normal``.
- :func:`categorical_kl`: KL between two factorised categoricals, summed over the latent groups.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)`` (DreamerV3 Eq. 9); any shape, float."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``; any shape, float."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def twohot_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> Tensor:
    """Even bin grid in symlog space, ``(num_bins,)`` float32 over ``[low, high]`` (DreamerV3 App. B).

    For a symmetric range (``low == -high``) the grid is made exactly antisymmetric (``torch.linspace`` is
    not, by a few ulps), so that ``symexp(grid)`` is too and a uniform distribution predicts exactly 0, as the
    reference builds its bins from one half (``heads.py`` ``symexp_twohot``). An odd count has an exact 0 bin.
    """
    grid = torch.linspace(low, high, num_bins)
    if low == -high:
        grid = (grid - grid.flip(0)) / 2
    return grid


def twohot_encode(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot encode ``x`` over ``bins`` (both in the same space: symlog or raw).

    Same weights as the reference ``outs.TwoHot.loss``: a value between bins ``b_i <= x <= b_{i+1}`` puts
    ``(b_{i+1} - x) / (b_{i+1} - b_i)`` on ``b_i`` and the rest on ``b_{i+1}``; a value on a bin is one-hot.

    Args:
        x: ``(...)`` float targets; values outside the bin range are clipped to the edge bins.
        bins: ``(K,)`` increasing bin centres.

    Returns:
        ``(..., K)`` float weights: the two neighbouring bins share the mass linearly; each row sums to 1.
    """
    k = bins.shape[0]
    x = x.clamp(bins[0], bins[-1])
    above = torch.searchsorted(bins, x.contiguous(), right=False).clamp(1, k - 1)
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    out = torch.zeros(*x.shape, k, dtype=x.dtype, device=x.device)
    # out of place, so that the same code runs under ``torch.func.vmap`` (seeds as a batch, mbrl.members)
    out = out.scatter(-1, below.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
    return out.scatter_add(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))


def _symmetric_sum(probs: Tensor, bins: Tensor) -> Tensor:
    """``sum_i probs_i * bins_i`` over the last dim, summing mirrored pairs first (reference
    ``outs.TwoHot.pred``): with antisymmetric bins and uniform probabilities the result is exactly 0."""
    k = bins.shape[-1]
    m = k // 2
    pb = probs * bins
    pairs = (pb[..., :m].flip(-1) + pb[..., k - m:]).sum(-1)
    return pairs + pb[..., m] if k % 2 else pairs


TWOHOT_MODES = ("symexp", "symlog")


class TwoHot:
    """Categorical over exponentially spaced bins with two-hot targets (reward and critic heads).

    Args:
        logits: ``(..., K)`` float logits (cast to float32).
        bins: ``(K,)`` bin grid in symlog space (:func:`twohot_bins`), whatever the mode.
        mode: ``symexp`` (reference ``embodied/jax/outs.py`` ``TwoHot`` with the ``symexp_twohot`` bins of
            ``heads.py``): bins ``symexp(grid)``; :attr:`mean` ``= sum_i p_i symexp(grid_i)``; targets are two-hot
            encoded in raw space. ``symlog`` (2023 paper Eq. 10, 2023 code ``jaxutils.DiscDist``): :attr:`mean`
            ``= symexp(sum_i p_i grid_i)``; targets are ``symlog``'ed and two-hot encoded over the grid.
    """

    def __init__(self, logits: Tensor, bins: Tensor, mode: str = "symexp") -> None:
        if mode not in TWOHOT_MODES:
            raise ValueError(f"unknown two-hot mode {mode!r}; allowed: {', '.join(TWOHOT_MODES)}")
        self.logits = logits.to(torch.float32)
        self.mode = mode
        self.bins = symexp(bins) if mode == "symexp" else bins  # the space predictions/targets live in
        self.log_probs = F.log_softmax(self.logits, dim=-1)

    @property
    def mean(self) -> Tensor:
        """``(...)`` predicted value in raw (reward/return) units."""
        wavg = _symmetric_sum(self.log_probs.exp(), self.bins)
        return wavg if self.mode == "symexp" else symexp(wavg)

    def log_prob(self, target: Tensor) -> Tensor:
        """``(...)`` log-likelihood of raw (not symlog'ed) targets ``(...)`` under their two-hot encoding,
        i.e. minus the reference ``TwoHot.loss`` (cross-entropy against the two-hot target)."""
        target = target.detach().to(torch.float32)
        if self.mode == "symlog":
            target = symlog(target)
        return (twohot_encode(target, self.bins) * self.log_probs).sum(-1)


class OneHotCategorical:
    """Factorised categorical latent with unimix and straight-through samples (DreamerV3 Sec. 2, "unimix").

    Args:
        logits: ``(..., S, K)`` raw logits for ``S`` categoricals of ``K`` classes.
        unimix: fraction of the uniform distribution mixed into the probabilities (0.01 in DreamerV3).
    """

    def __init__(self, logits: Tensor, unimix: float = 0.01) -> None:
        probs = F.softmax(logits, dim=-1)
        if unimix > 0:
            probs = (1.0 - unimix) * probs + unimix / probs.shape[-1]
        self.probs = probs
        self.logits = torch.log(probs)

    def sample(self) -> Tensor:
        """``(..., S, K)`` one-hot sample with straight-through gradients to ``probs``."""
        # Inverse-CDF sampling: one uniform per categorical (cheaper than torch.multinomial on CPU).
        cdf = self.probs.detach().cumsum(-1)
        u = torch.rand(cdf.shape[:-1] + (1,), device=cdf.device, dtype=cdf.dtype) * cdf[..., -1:]
        idx = (cdf < u).sum(-1).clamp(max=self.probs.shape[-1] - 1)
        onehot = F.one_hot(idx, self.probs.shape[-1]).to(self.probs.dtype)
        return onehot + self.probs - self.probs.detach()

    def mode(self) -> Tensor:
        """``(..., S, K)`` one-hot of the most likely class, straight-through."""
        onehot = F.one_hot(self.probs.argmax(-1), self.probs.shape[-1]).to(self.probs.dtype)
        return onehot + self.probs - self.probs.detach()

    def entropy(self) -> Tensor:
        """``(...)`` entropy summed over the ``S`` categoricals, nats."""
        return -(self.probs * self.logits).sum((-2, -1))


def categorical_kl(lhs_logits: Tensor, rhs_logits: Tensor) -> Tensor:
    """KL(lhs || rhs) of factorised categoricals given as normalised log-probabilities.

    Args:
        lhs_logits, rhs_logits: ``(..., S, K)`` log-probabilities (e.g. :attr:`OneHotCategorical.logits`).

    Returns:
        ``(...)`` KL in nats, summed over the ``S`` categoricals.
    """
    return (lhs_logits.exp() * (lhs_logits - rhs_logits)).sum((-2, -1))


class BoundedNormal:
    """Diagonal Normal policy for actions in ``[-1, 1]`` (reference code ``bounded_normal``).

    ``mean = tanh(m)``, ``std = (maxstd - minstd) * sigmoid(s + 2) + minstd``; samples are not squashed, the
    env clips them to the action bounds.

    Args:
        out: ``(..., 2A)`` raw network output, first half mean, second half std.
    """

    def __init__(self, out: Tensor, minstd: float = 0.1, maxstd: float = 1.0) -> None:
        mean, std = out.chunk(2, dim=-1)
        self.mean = torch.tanh(mean)
        self.std = (maxstd - minstd) * torch.sigmoid(std + 2.0) + minstd
        self.minstd, self.maxstd = minstd, maxstd

    def sample(self) -> Tensor:
        """``(..., A)`` reparameterised sample."""
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        """``(..., A)`` the mean action."""
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        """``(...)`` log-density of ``(..., A)`` actions, summed over action dims."""
        z = (action - self.mean) / self.std
        return (-0.5 * z.pow(2) - torch.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> Tensor:
        """``(...)`` differential entropy, summed over action dims, nats."""
        return (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(self.std)).sum(-1)
