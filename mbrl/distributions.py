"""Distributions and transforms of DreamerV3 (Hafner et al. 2023, "Mastering Diverse Domains through World
Models", arXiv 2301.04104, Sec. 2 and App. B).

- :func:`symlog` / :func:`symexp` (Eq. 9): squash targets of unknown scale.
- :class:`TwoHot`: discrete regression over exponentially spaced bins ("two-hot symlog", Eq. 10) used by the
  reward and critic heads.
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
    """Bin centres in symlog space, ``(num_bins,)`` float32, evenly spaced in ``[low, high]`` (DreamerV3 App. B)."""
    return torch.linspace(low, high, num_bins)


def twohot_encode(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot encode ``x`` (already in symlog space) over ``bins``.

    Args:
        x: ``(...)`` float targets in symlog space; values outside the bin range are clipped to the edge bins.
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
    out.scatter_(-1, below.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


class TwoHot:
    """Categorical over symlog-spaced bins with two-hot targets (DreamerV3 Eq. 10).

    Args:
        logits: ``(..., K)`` float logits.
        bins: ``(K,)`` bin centres in symlog space (:func:`twohot_bins`).
    """

    def __init__(self, logits: Tensor, bins: Tensor) -> None:
        self.logits = logits
        self.bins = bins
        self.log_probs = F.log_softmax(logits, dim=-1)

    @property
    def mean(self) -> Tensor:
        """``(...)`` expected value in the original (symexp) space."""
        return symexp((self.log_probs.exp() * self.bins).sum(-1))

    def log_prob(self, target: Tensor) -> Tensor:
        """``(...)`` log-likelihood of raw (not symlog'ed) targets ``(...)`` under the two-hot encoding."""
        return (twohot_encode(symlog(target), self.bins) * self.log_probs).sum(-1)


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
