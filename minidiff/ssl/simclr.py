r"""SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1).

For a batch of :math:`N` images, two augmented views give :math:`2N` embeddings :math:`z_1 \dots z_{2N}`; view
:math:`i` and its partner :math:`j(i)` form the positive pair, the other :math:`2N-2` embeddings are negatives:

.. math::

    \ell_{i} = -\log \frac{\exp(\mathrm{sim}(z_i, z_{j(i)})/\tau)}{\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k)/\tau)},
    \qquad \mathrm{sim}(u, v) = \frac{u^\top v}{\lVert u\rVert\,\lVert v\rVert},
    \qquad \mathcal L = \frac{1}{2N}\sum_{i=1}^{2N} \ell_i .

At initialisation, with random embeddings in many dimensions, all similarities are near 0 and the loss is near
:math:`\log(2N-1)`: a sanity check worth printing before training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_tensor


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of two views ``z1``, ``z2`` (N, d): mean over the 2N anchors (see module docstring)."""
    check_tensor(z1, "z1", ndim=2, floating=True)
    check_tensor(z2, "z2", ndim=2, floating=True)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape (N, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"NT-Xent needs at least 2 pairs (negatives come from the batch), got N={z1.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # k != i
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def projection_head(in_dim: int, hidden: int = 512, out_dim: int = 128) -> nn.Module:
    """SimCLR's projection head g(h) = W2 ReLU(BN(W1 h)) (Chen et al. 2020, sec. 2.1). The loss is computed on
    g(h); the representation used afterwards is h, before the head, which the paper found keeps more information
    (the head learns to discard what the augmentations vary, such as colour or position)."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class SimCLR(nn.Module):
    """Encoder f + projection head g. ``forward(x1, x2)`` returns the NT-Xent loss of two views;
    ``features(x)`` returns the representation h = f(x) used for evaluation."""

    def __init__(self, encoder: nn.Module, proj_hidden: int = 512, proj_dim: int = 128, temperature: float = 0.5):
        super().__init__()
        if not hasattr(encoder, "feature_dim"):
            raise TypeError("encoder must expose feature_dim (use minidiff.nets.resnet.ConvNet or ResNet)")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, proj_hidden, proj_dim)
        self.temperature = temperature

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape != x2.shape:
            raise ValueError(f"the two views must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        z = self.head(self.encoder(torch.cat([x1, x2])))  # one pass: BatchNorm sees both views
        z1, z2 = z.chunk(2)
        return nt_xent(z1, z2, self.temperature)
