"""Cosine k-nearest-neighbour classification of frozen features (the k-NN protocol of Wu et al. 2018 / DINO,
Caron et al. 2021, with a plain majority vote): a test feature takes the label most common among its ``k``
training features of highest cosine similarity; ties go to the label whose neighbours have the larger summed
similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from envs.errors import ConfigError


@torch.no_grad()
def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, k: int = 5, batch_size: int = 1024) -> Tensor:
    """Labels of ``test_x`` by cosine k-NN over ``(train_x, train_y)``.

    Args:
        train_x: ``(N, D)`` features; train_y: ``(N,)`` int64 labels in ``[0, C)``.
        test_x: ``(M, D)`` features.
        k: neighbours (``min(k, N)`` are used).

    Returns:
        ``(M,)`` int64 predicted labels.

    Raises:
        ConfigError: ``k`` < 1, an empty training set, or feature widths that differ.
    """
    if k < 1:
        raise ConfigError(f"k-NN needs k >= 1, got {k}")
    if len(train_x) == 0:
        raise ConfigError("k-NN needs at least one training example")
    if train_x.shape[1] != test_x.shape[1]:
        raise ConfigError(f"feature widths differ: train {train_x.shape[1]} vs test {test_x.shape[1]}")
    k = min(k, len(train_x))
    classes = int(train_y.max()) + 1
    train_n = F.normalize(train_x.double(), dim=1)
    preds = []
    for i in range(0, len(test_x), batch_size):
        sims = F.normalize(test_x[i: i + batch_size].double(), dim=1) @ train_n.T
        top, idx = sims.topk(k, dim=1)
        labels = train_y[idx]
        votes = torch.zeros(len(sims), classes, dtype=torch.float64)
        votes.scatter_add_(1, labels, torch.ones_like(top))
        tie = torch.zeros_like(votes).scatter_add_(1, labels, top) / (10.0 * k)  # |tie| < 0.1 < one vote
        preds.append((votes + tie).argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, k: int = 5) -> float:
    """Top-1 accuracy in ``[0, 1]`` of :func:`knn_predict` on ``(test_x, test_y)``."""
    return float((knn_predict(train_x, train_y, test_x, k) == test_y).double().mean())
