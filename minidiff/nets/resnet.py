r"""Encoders for self-supervised learning: a small ConvNet for 28x28 digits and a ResNet-18 with the CIFAR stem.

Both map images ``(B, C, H, W)`` to a feature vector ``(B, feature_dim)`` by global average pooling, and both can
return the pooled features of an earlier stage (``features(x, depth=k)``): RotNet (Gidaris et al. 2018) found that
the most transferable features of a pretext task sit in the middle of the network, because the last layers
specialise in the pretext task itself.

**Why a CIFAR stem.** ImageNet's ResNet (He et al. 2016) starts with a 7x7 stride-2 convolution and a stride-2
max-pool, shrinking a 224x224 image 4x before the first residual block. On a 32x32 CIFAR image that would leave
8x8 maps after the stem and 1x1 before pooling: most spatial detail is thrown away in the first two layers. The
CIFAR variant used by SimCLR (Chen et al. 2020, appendix B.9) replaces the stem by one 3x3 stride-1 convolution and
drops the max-pool, so the four stages see 32, 16, 8 and 4 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_images


def _norm(c: int, kind: str) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "group":
        return nn.GroupNorm(min(8, c), c)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class _StagedEncoder(nn.Module):
    """Shared by the encoders: ``stem`` then ``stages``; :meth:`features` pools the output of stage ``depth``."""

    stem: nn.Module
    stages: nn.ModuleList
    widths: tuple[int, ...]
    in_channels: int

    def feature_dims(self) -> tuple[int, ...]:
        return self.widths

    def features(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Global-average-pooled output of stage ``depth`` (1..number of stages; default the last)."""
        check_images(x, "x", channels=self.in_channels)
        depth = len(self.stages) if depth is None else depth
        if not 1 <= depth <= len(self.stages):
            raise ValueError(f"depth must be in 1..{len(self.stages)}, got {depth}")
        x = self.stem(x)
        for stage in self.stages[:depth]:
            x = stage(x)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ConvNet(_StagedEncoder):
    """A small VGG-style encoder for 28x28 digits: stages of (conv3x3-norm-ReLU) x2, the first conv of stages 2, 3
    strided; widths ``(w, 2w, 4w)``; feature dim ``4w``.

    ``features(x, depth)`` returns the global-average-pooled output of stage ``depth`` (1..3)."""

    def __init__(self, in_channels: int = 1, width: int = 32, norm: str = "batch"):
        super().__init__()
        if width <= 0 or in_channels <= 0:
            raise ValueError(f"in_channels and width must be positive, got {in_channels}, {width}")
        self.in_channels = in_channels
        widths = (width, 2 * width, 4 * width)
        stages, c_in = [], in_channels
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, stride, 1, bias=False), _norm(c, norm), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), _norm(c, norm), nn.ReLU(inplace=True),
            ))
            c_in = c
        self.stem = nn.Identity()
        self.stages = nn.ModuleList(stages)
        self.widths = widths
        self.feature_dim = widths[-1]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016, fig. 2); a 1x1 projection when the shape
    changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm(c_out, norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm(c_out, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out, norm))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(_StagedEncoder):
    """ResNet with the CIFAR stem (3x3 stride-1 conv, no max-pool) and no classifier: returns pooled features.

    ``blocks=(2, 2, 2, 2)``, ``width=64`` is ResNet-18 (11.17 M parameters with 3 input channels). ``width``
    scales all stages (``width * (1, 2, 4, 8)``) for smaller experiments."""

    def __init__(self, blocks=(2, 2, 2, 2), in_channels: int = 3, width: int = 64, norm: str = "batch"):
        super().__init__()
        if len(blocks) == 0 or any(b <= 0 for b in blocks):
            raise ValueError(f"blocks must be a non-empty sequence of positive ints, got {blocks}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), _norm(width, norm),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], width
        self.widths = tuple(width * 2 ** i for i in range(len(blocks)))
        for i, (n, c) in enumerate(zip(blocks, self.widths)):
            layers = [BasicBlock(c_in, c, 1 if i == 0 else 2, norm)]
            layers += [BasicBlock(c, c, 1, norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.feature_dim = self.widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet18(in_channels: int = 3, width: int = 64, norm: str = "batch") -> ResNet:
    """ResNet-18 with the CIFAR stem (see the module docstring)."""
    return ResNet((2, 2, 2, 2), in_channels, width, norm)


def make_encoder(name: str, in_channels: int = 1, width: int | None = None) -> nn.Module:
    """``"convnet"`` (digits) or ``"resnet18"`` (CIFAR stem), by name, as the profiles choose."""
    if name == "convnet":
        return ConvNet(in_channels, width or 32)
    if name == "resnet18":
        return resnet18(in_channels, width or 64)
    raise ValueError(f"unknown encoder {name!r}; expected 'convnet' or 'resnet18'")
