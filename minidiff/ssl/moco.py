r"""MoCo building blocks (He et al. 2020; Chen et al. 2020, "MoCo v2"): the momentum encoder update, the FIFO queue
of negative keys, and the InfoNCE loss with the positive in column 0.

- momentum update (He et al. 2020, eq. 2): :math:`\theta_k \leftarrow m\,\theta_k + (1-m)\,\theta_q`;
- InfoNCE (eq. 1): :math:`\mathcal L_q = -\log\frac{\exp(q\cdot k_+/\tau)}{\exp(q\cdot k_+/\tau) + \sum_{k_-}\exp(q\cdot k_-/\tau)}`
  with :math:`q, k` L2-normalised and the negatives :math:`k_-` taken from the queue.

Note on BatchNorm: on several GPUs MoCo shuffles the keys' batch across devices so that BatchNorm statistics
cannot leak which key matches which query. On one GPU or a CPU the same effect is had by splitting the key
batch into chunks that are normalised separately, or by using GroupNorm/LayerNorm in the encoder.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_tensor


@torch.no_grad()
def momentum_update(key_params: Iterable[torch.Tensor], query_params: Iterable[torch.Tensor], m: float) -> None:
    r""":math:`\theta_k \leftarrow m\,\theta_k + (1-m)\,\theta_q` in place (``m=0`` copies, ``m=1`` keeps)."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    key_params, query_params = list(key_params), list(query_params)
    if len(key_params) != len(query_params):
        raise ValueError(f"key and query encoders differ: {len(key_params)} vs {len(query_params)} parameter tensors")
    for k, q in zip(key_params, query_params):
        if k.shape != q.shape:
            raise ValueError(f"parameter shapes differ: {tuple(k.shape)} vs {tuple(q.shape)}")
        k.mul_(m).add_(q.detach(), alpha=1 - m)


def infonce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE with the positive logit in column 0 and the queue's keys as negatives; mean over the batch."""
    check_tensor(q, "q", ndim=2, floating=True)
    if k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (B, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    check_tensor(negatives, "negatives", ndim=2, floating=True)
    if negatives.shape[1] != q.shape[1]:
        raise ValueError(f"negatives must have {q.shape[1]} columns, got shape {tuple(negatives.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    q, k, negatives = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(negatives, dim=1)
    pos = (q * k).sum(1, keepdim=True)
    logits = torch.cat([pos, q @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(nn.Module):
    """MoCo v2 (Chen, Fan, Girshick & He 2020): a query encoder (encoder + MLP head) trained by gradient, a key
    encoder that is its exponential moving average (:func:`momentum_update`), and a queue of past keys as negatives.

    ``forward(x_q, x_k)`` does one MoCo step's forward pass: momentum update of the key encoder, keys computed
    without gradient (with the batch shuffled and normalised in ``bn_splits`` chunks, the single-device stand-in
    for shuffling BN), the InfoNCE loss against the queue, then the keys are enqueued. The queue is a buffer, so it
    is saved and restored with the model's ``state_dict`` by :func:`minidiff.train.train`'s checkpoints.
    """

    def __init__(self, encoder: nn.Module, proj_hidden: int = 512, proj_dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.99, temperature: float = 0.2, bn_splits: int = 2):
        super().__init__()
        import copy

        from .simclr import projection_head

        if not hasattr(encoder, "feature_dim"):
            raise TypeError("encoder must expose feature_dim (use minidiff.nets.resnet.ConvNet or ResNet)")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if queue_size <= 0 or bn_splits <= 0:
            raise ValueError(f"queue_size and bn_splits must be positive, got {queue_size}, {bn_splits}")
        self.encoder = encoder
        self.head = projection_head(encoder.feature_dim, proj_hidden, proj_dim)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_head = copy.deepcopy(self.head)
        for p in list(self.key_encoder.parameters()) + list(self.key_head.parameters()):
            p.requires_grad_(False)
        self.momentum, self.temperature, self.bn_splits = momentum, temperature, bn_splits
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def _query_params(self):
        return list(self.encoder.parameters()) + list(self.head.parameters())

    def _key_params(self):
        return list(self.key_encoder.parameters()) + list(self.key_head.parameters())

    @torch.no_grad()
    def _keys(self, x_k: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(x_k.shape[0], device=x_k.device)
        chunks = [self.key_head(self.key_encoder(c)) for c in x_k[perm].chunk(self.bn_splits)]
        k = torch.empty_like(torch.cat(chunks))
        k[perm] = torch.cat(chunks)
        return F.normalize(k, dim=1)

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        """The FIFO queue of negatives (the package's one MoCo queue): a ring buffer ``queue`` of ``queue_size`` keys
        whose write position is ``queue_ptr``; the newest keys overwrite the oldest, wrapping around the end (only the
        newest ``queue_size`` of a larger batch are kept). Both are buffers, so checkpoints carry the queue."""
        k = k[-self.queue.shape[0]:]
        idx = (self.queue_ptr + torch.arange(k.shape[0], device=k.device)) % self.queue.shape[0]
        self.queue[idx] = k.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + k.shape[0]) % self.queue.shape[0])

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        if x_q.shape != x_k.shape:
            raise ValueError(f"the two views must have the same shape, got {tuple(x_q.shape)} and {tuple(x_k.shape)}")
        q = self.head(self.encoder(x_q))
        if self.training:
            momentum_update(self._key_params(), self._query_params(), self.momentum)
        k = self._keys(x_k)
        loss = infonce(q, k, self.queue.clone().detach(), self.temperature)
        if self.training:
            self._enqueue(k)
        return loss
