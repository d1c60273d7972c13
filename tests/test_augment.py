"""Batched augmentations: each op against its definition on hand-made images, and per-image randomness."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from minidiff.ssl import augment as A


def ramp(b=1, c=1, h=16, w=16):
    """An image whose value is a linear function of the x pixel-centre coordinate in [-1, 1]."""
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    return xs.view(1, 1, 1, w).expand(b, c, h, w).clone() * 0.9


def test_identity_box_is_identity_and_flip_is_mirror():
    x = torch.rand(3, 2, 8, 8) * 2 - 1
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(3, 1)
    assert torch.allclose(A.resized_crop(x, boxes), x, atol=1e-6)
    flip = torch.tensor([True, False, True])
    y = A.resized_crop(x, boxes, flip)
    assert torch.allclose(y[0], x[0].flip(-1), atol=1e-6) and torch.allclose(y[1], x[1], atol=1e-6)


def test_crop_of_a_ramp_is_the_analytic_ramp():
    # bilinear interpolation is exact on a linear function: the right half of a ramp, resized to full width,
    # is the ramp on [0, 1] sampled at the output pixel centres
    x = ramp(h=16, w=16)
    box = torch.tensor([[0.5, 0.0, 1.0, 2.0]])          # centre x=0.5, width 1 -> x in [0, 1]
    y = A.resized_crop(x, box)
    u = (torch.arange(16) + 0.5) / 16 * 2 - 1           # output pixel centres in [-1, 1]
    expected = 0.9 * (0.5 + 0.5 * u)                     # mapped into [0, 1]
    inner = slice(1, 15)                                 # the outermost samples clamp at the border
    assert torch.allclose(y[0, 0, 4, inner], expected[inner], atol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    g = torch.Generator().manual_seed(0)
    boxes = A.sample_crop_boxes(5000, scale=(0.2, 0.6), ratio=(0.75, 4 / 3), generator=g)
    cx, cy, w, h = boxes.unbind(1)
    area = (w / 2) * (h / 2)
    assert (area >= 0.2 - 1e-5).all() and (area <= 0.6 + 1e-5).all()
    assert ((w / h) >= 0.75 - 1e-4).all() and ((w / h) <= 4 / 3 + 1e-4).all()
    assert (cx - w / 2 >= -1 - 1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1 - 1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    assert area.std() > 0.05  # parameters really vary


@pytest.mark.parametrize("factor", [0.5, 1.3])
def test_colour_ops_match_torchvision(factor):
    g = torch.Generator().manual_seed(1)
    x01 = torch.rand(2, 3, 5, 7, generator=g)
    x = x01 * 2 - 1
    to01 = lambda y: (y + 1) / 2
    assert torch.allclose(to01(A.adjust_brightness(x, factor)), TF.adjust_brightness(x01, factor), atol=1e-5)
    assert torch.allclose(to01(A.adjust_contrast(x, factor)), TF.adjust_contrast(x01, factor), atol=1e-5)
    assert torch.allclose(to01(A.adjust_saturation(x, factor)), TF.adjust_saturation(x01, factor), atol=1e-5)
    hue = (factor - 1) / 2  # in [-0.5, 0.5]
    assert torch.allclose(to01(A.adjust_hue(x, hue)), TF.adjust_hue(x01, hue), atol=1e-4)
    assert torch.allclose(to01(A.grayscale(x))[:, :1], TF.rgb_to_grayscale(x01), atol=1e-5)


def test_hand_made_pixels():
    # one red pixel, one grey pixel: values computed by hand from the definitions
    x01 = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]], [[0.0, 0.5]]]])  # (1, 3, 1, 2)
    x = x01 * 2 - 1
    g = (A.grayscale(x) + 1) / 2
    assert torch.allclose(g[0, :, 0, 0], torch.full((3,), 0.2989)) and torch.allclose(g[0, :, 0, 1], torch.full((3,), 0.5 * 0.9999))
    # hue +1/3: red -> green; grey is unchanged
    y = (A.adjust_hue(x, 1 / 3) + 1) / 2
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(y[0, :, 0, 1], torch.full((3,), 0.5), atol=1e-5)
    # saturation 0 gives the grey image
    assert torch.allclose(A.adjust_saturation(x, 0.0), A.grayscale(x), atol=1e-6)


def test_blur_matches_torchvision_and_sigma_zero_is_identity():
    x = torch.rand(2, 1, 12, 12) * 2 - 1
    y = A.gaussian_blur(x, torch.tensor([1.0, 0.0]), kernel_size=7, padding="reflect")
    ref = TF.gaussian_blur(x[:1], kernel_size=7, sigma=1.0)
    assert torch.allclose(y[:1], ref, atol=1e-5)
    assert torch.allclose(y[1], x[1], atol=1e-6)
    # a constant image stays constant; the blur conserves the mean of a periodic-free interior impulse
    c = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(A.gaussian_blur(c, 1.5), c, atol=1e-6)


def test_one_gaussian_blur():
    """The package has one Gaussian blur: metrics re-exports the augmentation's (issue 17, item 4)."""
    from minidiff import metrics
    assert metrics.gaussian_blur is A.gaussian_blur
    # the metrics baseline's behaviour, as it was before the merge: replicate padding, radius ceil(3 sigma)
    x = torch.rand(2, 1, 10, 10) * 2 - 1
    r = 3
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / 2)
    k = k / k.sum()
    h = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(h, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    assert torch.allclose(A.gaussian_blur(x, 1.0), ref, atol=1e-6)
    with pytest.raises(ValueError, match="padding"):
        A.gaussian_blur(x, 1.0, padding="zeros")


def test_per_image_parameters_differ_and_views_are_independent():
    x = ramp(b=1, c=3, h=16, w=16).repeat(8, 1, 1, 1) + 0.05 * torch.randn(1, 3, 16, 16)
    aug = A.Augment(blur_p=0.5)
    g = torch.Generator().manual_seed(0)
    y = aug(x, g)
    diffs = [(y[i] - y[j]).abs().max().item() for i in range(8) for j in range(i + 1, 8)]
    assert min(diffs) > 1e-3, "two copies of the same image got the same augmentation"
    v1, v2 = aug.two_views(x, g)
    assert (v1 - v2).flatten(1).abs().max(1).values.min() > 1e-3
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_augment_is_reproducible_with_a_generator_and_identity_at_zero_strength():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    aug = A.digits_augment(1.0)
    y1 = aug(x, torch.Generator().manual_seed(3))
    y2 = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2)
    assert torch.allclose(A.digits_augment(0.0)(x), x, atol=1e-5)


def test_grayscale_images_pass_colour_ops():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(A.adjust_saturation(x, 0.3), x) and torch.equal(A.adjust_hue(x, 0.2), x)
    y = A.Augment()(x)
    assert y.shape == x.shape


def test_bad_inputs():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"boxes must be a tensor of shape \(2, 4\)"):
        A.resized_crop(x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one value per image"):
        A.adjust_brightness(x, torch.ones(3))
    with pytest.raises(ValueError, match="hue shift"):
        A.adjust_hue(x, 0.7)
    with pytest.raises(ValueError, match="jitter_p"):
        A.Augment(jitter_p=1.5)
    with pytest.raises(ValueError, match="scale"):
        A.sample_crop_boxes(4, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="4 dimensions"):
        A.Augment()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        A.gaussian_blur(x, 1.0, kernel_size=4)
    assert math.isfinite(float(A.Augment()(x).sum()))
