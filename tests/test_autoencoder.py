"""The latent-diffusion autoencoder: shapes, the scale factor, and learning to reconstruct."""

import pytest
import torch

from minidiff import data
from minidiff.nets.autoencoder import AutoencoderKL
from minidiff.train import TrainConfig, train


def test_shapes_scale_and_bad_inputs():
    ae = AutoencoderKL(1, latent_channels=3, width=8)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (5, 3, 7, 7)
    assert ae.decode(mean).shape == x.shape
    s = ae.fit_scale(x)
    assert s == pytest.approx(mean.std().item(), rel=1e-5)
    assert ae.to_latent(x).std().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(ae.from_latent(ae.to_latent(x)), ae.decode(ae.encode(x)[0]), atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.encode(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 3"):
        ae.decode(torch.randn(1, 4, 7, 7))


def test_autoencoder_learns_to_reconstruct_held_out_digits():
    tr, te = data.mnist5k("train"), data.mnist5k("test")
    torch.manual_seed(0)
    ae = AutoencoderKL(1, latent_channels=2, width=8)
    with torch.no_grad():
        before = (ae.decode(ae.encode(te.x[:500])[0]) - te.x[:500]).abs().mean().item()
    train(ae, lambda m, x: m.loss(x), data.TensorSampler(tr.x, batch_size=64),
          TrainConfig(steps=150, lr=3e-3, ema_decay=None, progress=False))
    ae.eval()
    with torch.no_grad():
        after = (ae.decode(ae.encode(te.x[:500])[0]) - te.x[:500]).abs().mean().item()
    # predicting the mean image gives about 0.35; a working autoencoder does far better
    mean_img = (tr.x.mean(0, keepdim=True) - te.x[:500]).abs().mean().item()
    assert after < 0.5 * before and after < 0.6 * mean_img, (before, after, mean_img)


def test_one_kl_term():
    """The autoencoder's KL-reg is the VAE's gaussian_kl (issue 17, item 4): one definition, equal to the old inline
    formula, and no second copy of it in nets/autoencoder.py."""
    import inspect

    from minidiff.nets import autoencoder
    from minidiff.ssl import vae

    assert autoencoder.gaussian_kl is vae.gaussian_kl
    assert "logvar.exp() - logvar" not in inspect.getsource(autoencoder)
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 7, 7, generator=g), torch.randn(3, 4, 7, 7, generator=g)
    assert torch.equal(vae.gaussian_kl(mean, logvar, reduction="mean"),
                       0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).mean())
    assert torch.allclose(vae.gaussian_kl(mean, logvar, reduction="none").sum(-1), vae.gaussian_kl(mean, logvar))
    torch.manual_seed(1)
    ae = autoencoder.AutoencoderKL(latent_channels=2, width=8)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    torch.manual_seed(2)
    total = ae.loss(x, kl_weight=1.0)
    torch.manual_seed(2)
    rec = ae.loss(x, kl_weight=0.0)
    m, lv = ae.encode(x)
    assert torch.allclose(total - rec, vae.gaussian_kl(m, lv, reduction="mean"), atol=1e-6)
