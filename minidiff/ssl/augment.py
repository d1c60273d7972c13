r"""Batched, on-device image augmentations for self-supervised learning.

Every op works on a whole batch ``(B, C, H, W)`` in ``[-1, 1]`` on whatever device it lives on, with *independent*
random parameters per image; there is no per-image PIL loop. Each random op is split in two:

- a deterministic op that takes explicit per-image parameters (``resized_crop(x, boxes)``,
  ``adjust_brightness(x, factor)``, ...), tested against its definition on hand-made images, and
- a sampler that draws those parameters (``sample_crop_boxes``, ...), used by :class:`Augment`.

The recipe follows SimCLR (Chen et al. 2020, appendix A): random resized crop, horizontal flip, colour jitter
(brightness, contrast, saturation, hue) applied with probability 0.8, random grayscale with probability 0.2,
and Gaussian blur. For 28x28 digits, flips change what a digit is (a mirrored 7 is not a 7) and there is no
colour, so :func:`digits_augment` uses crops, brightness/contrast and a light blur only.

Colour ops follow the definitions torchvision uses (``torchvision.transforms.functional``) on images in
``[0, 1]``: brightness multiplies, contrast blends with the mean grey level, saturation blends with the
grayscale image, hue rotates the hue channel in HSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import check_images

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, with the 4-digit red weight torchvision uses


def _per_image(v, x: torch.Tensor, name: str) -> torch.Tensor:
    """A per-image parameter: a number or a (B,) tensor, returned as float (B, 1, 1, 1) on x's device."""
    b = x.shape[0]
    v = torch.as_tensor(v, dtype=torch.float32, device=x.device)
    if v.ndim == 0:
        v = v.expand(b)
    if v.shape != (b,):
        raise ValueError(f"{name} must be a number or a tensor of shape ({b},), one value per image; got {tuple(v.shape)}")
    return v.to(x.dtype).view(b, 1, 1, 1)


def _to01(x):
    return (x + 1) / 2


def _from01(x):
    return (x * 2 - 1).clamp(-1, 1)


# ------------------------------------------------------------------------------------------------------------------
# geometry


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor | None = None,
                 size: int | tuple[int, int] | None = None) -> torch.Tensor:
    r"""Crop one box per image and resize it to ``size`` (default: the input size), bilinearly.

    ``boxes`` is ``(B, 4)`` = (centre x, centre y, width, height) in normalised coordinates, where the whole image is
    the square :math:`[-1, 1]^2`, so ``(0, 0, 2, 2)`` is the identity. ``flip`` (bool ``(B,)``) mirrors the chosen
    images horizontally. Implemented as one affine ``grid_sample`` for the whole batch; pixels that fall outside
    the image are filled with the border value.
    """
    check_images(x, "x")
    b = x.shape[0]
    if not isinstance(boxes, torch.Tensor) or boxes.shape != (b, 4):
        raise ValueError(f"boxes must be a tensor of shape ({b}, 4) = (cx, cy, w, h), got {getattr(boxes, 'shape', boxes)}")
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    if (boxes[:, 2:] <= 0).any():
        raise ValueError("box widths and heights must be positive")
    sx = boxes[:, 2] / 2
    if flip is not None:
        if flip.shape != (b,):
            raise ValueError(f"flip must be a bool tensor of shape ({b},), got {tuple(flip.shape)}")
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, boxes[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = boxes[:, 3] / 2, boxes[:, 1]
    if size is None:
        out_hw = x.shape[-2:]
    else:
        out_hw = (size, size) if isinstance(size, int) else tuple(size)
    grid = F.affine_grid(theta, [b, x.shape[1], *out_hw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_crop_boxes(b: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), generator: torch.Generator | None = None,
                      device="cpu") -> torch.Tensor:
    r"""Random resized crop boxes (Szegedy et al. 2015, as in SimCLR): the area fraction is uniform in ``scale``,
    the log aspect ratio uniform in ``log(ratio)``, and the box lies inside the image. Returns ``(b, 4)``."""
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    u = torch.rand(b, 4, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = logr.exp()
    w = (area * r).sqrt().clamp(max=1.0)   # fraction of the image width
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - w)        # centre so that the box stays inside [-1, 1]
    cy = (2 * u[:, 3] - 1) * (1 - h)
    return torch.stack([cx, cy, 2 * w, 2 * h], 1).to(device)


# ------------------------------------------------------------------------------------------------------------------
# colour (definitions as in torchvision, on [0, 1])


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` (ITU-R 601-2), kept with C channels; grayscale input is returned as is."""
    check_images(x, "x")
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"grayscale needs 1 or 3 channels, got shape {tuple(x.shape)}")
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return _from01((_to01(x) * w).sum(1, keepdim=True)).expand_as(x).contiguous()  # weights sum to 0.9999: work in [0, 1]


def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """``clip(x01 * factor)`` per image (``factor`` a number or ``(B,)``); x in [-1, 1]."""
    check_images(x, "x")
    return _from01((_to01(x) * _per_image(factor, x, "factor")).clamp(0, 1))


def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with the image's mean grey level: ``clip(m + factor (x01 - m))``, m = mean of the grayscale image."""
    check_images(x, "x")
    x01 = _to01(x)
    m = _to01(grayscale(x))[:, :1].mean((1, 2, 3), keepdim=True)
    f = _per_image(factor, x, "factor")
    return _from01((m + f * (x01 - m)).clamp(0, 1))


def adjust_saturation(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with the grayscale image: ``clip(g + factor (x01 - g))``; identity for 1-channel images."""
    check_images(x, "x")
    if x.shape[1] == 1:
        return x
    x01 = _to01(x)
    g = _to01(grayscale(x))
    return _from01((g + _per_image(factor, x, "factor") * (x01 - g)).clamp(0, 1))


def rgb_to_hsv(x01: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with hue in [0, 1) (the hexcone model)."""
    r, g, b = x01.unbind(1)
    maxc, _ = x01.max(1)
    minc, _ = x01.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    k = lambda n: (n + h * 6) % 6
    f = lambda n: v - v * s * (torch.minimum(k(n), 4 - k(n)).clamp(0, 1))
    return torch.stack([f(5), f(3), f(1)], 1)


def adjust_hue(x: torch.Tensor, shift) -> torch.Tensor:
    """Rotate the hue by ``shift`` (a fraction of the colour wheel in [-0.5, 0.5]) per image; identity for
    1-channel images."""
    check_images(x, "x")
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"adjust_hue needs 1 or 3 channels, got shape {tuple(x.shape)}")
    s = _per_image(shift, x, "shift")
    if (s.abs() > 0.5).any():
        raise ValueError("hue shift must lie in [-0.5, 0.5]")
    hsv = rgb_to_hsv(_to01(x).clamp(0, 1))
    hsv = torch.cat([(hsv[:, :1] + s) % 1.0, hsv[:, 1:]], 1)
    return _from01(hsv_to_rgb(hsv))


def gaussian_blur(x: torch.Tensor, sigma, kernel_size: int | None = None, padding: str = "replicate") -> torch.Tensor:
    r"""Separable Gaussian blur with one ``sigma`` (pixels) per image, or one for all: the kernel
    :math:`k_i \propto \exp(-i^2/2\sigma^2)`, :math:`|i| \le r`, normalised to sum 1, applied along rows then columns,
    with radius :math:`r = \lceil 3\sigma_\max\rceil` (at least 1) unless ``kernel_size = 2r + 1`` is given.
    ``sigma = 0`` leaves an image as is. ``padding`` is ``"replicate"`` (the default: the "blurred digits" baseline
    of :mod:`minidiff.metrics`, which re-exports this function) or ``"reflect"`` (torchvision's, used by
    :class:`Augment`). The package's one Gaussian blur."""
    check_images(x, "x")
    if padding not in ("replicate", "reflect"):
        raise ValueError(f"padding must be 'replicate' or 'reflect', got {padding!r}")
    b, c, h, w = x.shape
    sig = _per_image(sigma, x, "sigma").view(b)
    if (sig < 0).any():
        raise ValueError("sigma must be >= 0")
    if kernel_size is None:
        kernel_size = 2 * max(1, math.ceil(3 * float(sig.max()))) + 1
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    r = kernel_size // 2
    pos = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-pos[None] ** 2 / (2 * sig[:, None].clamp_min(1e-6) ** 2))
    k = torch.where(sig[:, None] > 1e-6, k, (pos[None] == 0).to(x.dtype))
    k = k / k.sum(1, keepdim=True)                         # (B, K)
    kk = k.repeat_interleave(c, 0)                          # one kernel per (image, channel)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=padding), kk.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=padding), kk.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


# ------------------------------------------------------------------------------------------------------------------
# the random pipeline


@dataclass(frozen=True)
class Augment:
    """A random augmentation pipeline with independent parameters per image (SimCLR's recipe by default).

    ``Augment()(x)`` augments a batch; :meth:`two_views` returns two independent augmentations of the same batch.
    Strengths are the ranges of torchvision's ``ColorJitter``: brightness ``b`` draws a factor in
    ``[1-b, 1+b]``, hue a shift in ``[-hue, hue]``.
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self):
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} strength must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue strength must be in [0, 0.5], got {self.hue}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(x, "x")
        b, dev = x.shape[0], x.device

        def rand(*shape):
            return torch.rand(*shape, generator=generator).to(dev)

        boxes = sample_crop_boxes(b, self.crop_scale, self.crop_ratio, generator=generator, device=dev)
        flip = rand(b) < 0.5 if self.flip else None
        x = resized_crop(x, boxes, flip)
        if self.jitter_p > 0:
            on = rand(b) < self.jitter_p
            u = rand(4, b) * 2 - 1
            ones = torch.ones(b, device=dev)
            # SimCLR applies the four jitters in a random order; a fixed order keeps the batch a single pass
            x = adjust_brightness(x, torch.where(on, 1 + self.brightness * u[0], ones))
            x = adjust_contrast(x, torch.where(on, 1 + self.contrast * u[1], ones))
            if x.shape[1] == 3:
                x = adjust_saturation(x, torch.where(on, 1 + self.saturation * u[2], ones))
                if self.hue > 0:
                    x = adjust_hue(x, torch.where(on, self.hue * u[3], 0 * ones))
        if self.grayscale_p > 0 and x.shape[1] == 3:
            g = (rand(b) < self.grayscale_p).view(b, 1, 1, 1)
            x = torch.where(g, grayscale(x), x)
        if self.blur_p > 0:
            lo, hi = self.blur_sigma
            sig = lo + (hi - lo) * rand(b)
            x = gaussian_blur(x, torch.where(rand(b) < self.blur_p, sig, torch.zeros_like(sig)), padding="reflect")
        return x

    def two_views(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of the same batch (the positive pairs of SimCLR and MoCo)."""
        return self(x, generator), self(x, generator)


def digits_augment(strength: float = 1.0) -> Augment:
    """Augmentations for 28x28 grayscale digits: crops that keep most of the digit, brightness/contrast, light blur,
    no flips. ``strength`` scales all ranges (0 = identity); chapter 02's exercise varies it."""
    if not 0 <= strength <= 1.5:
        raise ValueError(f"strength must be in [0, 1.5], got {strength}")
    lo = max(0.05, 1 - 0.7 * strength)
    return Augment(crop_scale=(lo, 1.0), crop_ratio=(1 - 0.25 * min(strength, 1), 1 / (1 - 0.25 * min(strength, 1))),
                   flip=False, brightness=min(0.6 * strength, 0.9), contrast=min(0.6 * strength, 0.9), saturation=0.0,
                   hue=0.0, jitter_p=0.8 if strength > 0 else 0.0, grayscale_p=0.0,
                   blur_p=0.5 if strength > 0 else 0.0, blur_sigma=(0.1, 1.0 * max(strength, 0.1)))


def cifar_augment() -> Augment:
    """SimCLR's CIFAR-10 recipe: crop scale (0.2, 1), flip, jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale
    p=0.2, no blur (the paper drops blur at 32x32)."""
    return Augment()
