"""Linear centred kernel alignment (CKA; Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network
Representations Revisited", Eq. 5 with the linear kernel):

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

for ``X`` ``(n, p1)`` and ``Y`` ``(n, p2)`` holding the representations of the same ``n`` examples, ``Xc``, ``Yc``
column-centred. It is 1 for identical representations, invariant to orthogonal transforms and isotropic
scaling of either side (not to arbitrary invertible linear maps), and in ``[0, 1]``. Computed in float64; when
``n`` is smaller than the widths, through the ``n x n`` Gram matrices (``||Yc^T Xc||_F^2 = <Xc Xc^T, Yc Yc^T>``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from envs.errors import ConfigError


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x`` ``(n, p1)`` and ``y`` ``(n, p2)`` (rows = the same examples; more dims are flattened).

    Returns:
        CKA in ``[0, 1]``; ``nan`` when either representation is constant over the examples.

    Raises:
        ConfigError: fewer than 2 examples or different example counts.
    """
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"CKA needs the same examples on both sides, got {x.shape[0]} vs {y.shape[0]}")
    if x.shape[0] < 2:
        raise ConfigError("CKA needs at least 2 examples")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    if x.shape[0] < min(x.shape[1], y.shape[1]):
        gx, gy = x @ x.T, y @ y.T
        cross, nx, ny = (gx * gy).sum(), torch.linalg.norm(gx), torch.linalg.norm(gy)
    else:
        cross = torch.linalg.norm(y.T @ x).pow(2)
        nx, ny = torch.linalg.norm(x.T @ x), torch.linalg.norm(y.T @ y)
    denom = nx * ny
    return float("nan") if denom == 0 else float(cross / denom)
