r"""Rotation prediction, the RotNet pretext task (Gidaris, Singh & Komodakis 2018).

Each image is shown in all four rotations :math:`r \in \{0°, 90°, 180°, 270°\}` and the network must say which
one it sees, a 4-way classification with the cross-entropy

.. math::

    \mathcal L(\theta) = -\frac{1}{4N} \sum_{i=1}^{N} \sum_{r=0}^{3} \log p_\theta\big(r \mid \mathrm{rot}_r(x_i)\big).

The labels are free, yet to solve the task the network has to find the digit's (or object's) parts and their
orientation, which is what a classifier needs too. All four rotations of an image go into the *same* batch
(the paper found this better than one random rotation per image): the network cannot use batch statistics or
low-level artefacts to tell rotations apart, only the content.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate a batch by ``k`` x 90 degrees counter-clockwise (``torch.rot90`` over the last two dims)."""
    return torch.rot90(x, k, dims=(-2, -1))


def rotation_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image in one batch: ``(4B, C, H, W)`` images and ``int64 (4B,)`` labels 0..3,
    where images ``[kB:(k+1)B]`` are the batch rotated by ``k`` x 90 degrees. Needs square images."""
    check_images(x, "x")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images so that all rotations share a shape, got {tuple(x.shape)}")
    b = x.shape[0]
    images = torch.cat([rotate(x, k) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(b)
    return images, labels


class RotationNet(nn.Module):
    """Encoder + linear 4-way classifier on its pooled features. ``forward(x)`` returns the rotation logits;
    :meth:`loss` takes a batch of upright images and builds the rotations itself; :meth:`features` returns the
    encoder's pooled features at ``depth`` (default: the last stage)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not hasattr(encoder, "feature_dim"):
            raise TypeError("encoder must expose feature_dim (use minidiff.nets.resnet.ConvNet or ResNet)")
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.feature_dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        images, labels = rotation_batch(x)
        return F.cross_entropy(self(images), labels)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, batch_size: int = 500) -> float:
        """Pretext accuracy: the fraction of rotated images whose rotation is predicted correctly (chance 0.25)."""
        was = self.training
        self.eval()
        correct = total = 0
        for i in range(0, x.shape[0], batch_size):
            images, labels = rotation_batch(x[i:i + batch_size])
            correct += (self(images).argmax(1) == labels).sum().item()
            total += labels.numel()
        self.train(was)
        return correct / total

    def features(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        return self.encoder.features(x, depth)
