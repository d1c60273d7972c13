"""The VQ-VAE (chapter 03): nearest-code assignment against brute force, the straight-through gradient against the
identity's, the codebook loss pulling codes towards the encoder's outputs, usage and perplexity on cases with a known
answer, clear errors, and a model that learns on digits."""

import math

import pytest
import torch

from minidiff.ssl.vqvae import VQVAE, VectorQuantizer, codebook_stats, nearest_code


def test_nearest_code_is_the_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(200, 8, generator=g), torch.randn(32, 8, generator=g)
    naive = torch.tensor([min(range(32), key=lambda k: float(((z[i] - e[k]) ** 2).sum())) for i in range(200)])
    assert torch.equal(nearest_code(z, e), naive)


def test_quantized_output_is_the_chosen_code_and_its_gradient_is_the_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = vq(z)
    want = vq.codebook[q.indices].permute(0, 3, 1, 2)
    assert torch.allclose(q.z_q, want)                                     # forward: the codes (eq. VQ-1)
    w = torch.randn_like(z)
    (q.z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)                                       # backward: d z_q / d z_e = I (eq. VQ-2)
    z2 = z.detach().clone().requires_grad_()
    (z2 * w).sum().backward()
    assert torch.equal(z.grad, z2.grad)


def test_codebook_loss_moves_the_codes_towards_the_encoder_outputs():
    torch.manual_seed(1)
    vq = VectorQuantizer(8, 2)
    z = torch.randn(500, 2) * 2 + 3                 # far from the initial codes in [-1/8, 1/8]
    before = vq(z).error.item()
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        vq(z).codebook.backward()
        opt.step()
    after = vq(z).error.item()
    assert after < 0.5 * before, (before, after)
    # the commitment term, by contrast, gives the codes no gradient
    vq.zero_grad()
    vq(z.requires_grad_()).commitment.backward()
    assert vq.codebook.grad is None or vq.codebook.grad.abs().max() == 0


def test_init_from_data_uses_every_code():
    torch.manual_seed(2)
    vq = VectorQuantizer(16, 2)
    z = torch.randn(400, 2) * 3 + 5
    assert codebook_stats(vq(z).indices, 16)["usage"] < 0.5                # the uniform start: most codes dead
    vq.init_from(z, generator=torch.Generator().manual_seed(0))
    assert codebook_stats(vq(z).indices, 16)["usage"] == 1.0


def test_usage_and_perplexity_on_known_cases():
    uniform = codebook_stats(torch.arange(8).repeat(10), 8)
    assert uniform["usage"] == 1.0 and math.isclose(uniform["perplexity"], 8.0, rel_tol=1e-9)
    single = codebook_stats(torch.zeros(50, dtype=torch.long), 8)
    assert single["usage"] == 1 / 8 and math.isclose(single["perplexity"], 1.0)
    half = codebook_stats(torch.tensor([0, 1] * 5), 4)                     # two codes, equally: exp(log 2) = 2
    assert half["usage"] == 0.5 and math.isclose(half["perplexity"], 2.0)


def test_bad_input_gets_a_clear_error():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="z_e must be"):
        vq(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="channels"):
        nearest_code(torch.randn(4, 3), torch.randn(8, 4))
    with pytest.raises(ValueError, match="at least 2 codes"):
        VectorQuantizer(1, 4)
    with pytest.raises(ValueError, match="non-negative integer"):
        codebook_stats(torch.tensor([0, -1]), 4)
    with pytest.raises(ValueError, match="more than num_codes"):
        codebook_stats(torch.tensor([0, 9]), 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAE(size=30)
    with pytest.raises(ValueError, match="need at least"):
        vq.init_from(torch.randn(3, 4))


def test_vqvae_learns_to_reconstruct_digits():
    from minidiff import data

    torch.manual_seed(0)
    x = data.load_images("mnist5k", "train", profile="ci").x[:1000]
    model = VQVAE(num_codes=32, code_dim=8, width=16)
    with torch.no_grad():
        model.quantizer.init_from(model.encode(x[:256]), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = model.loss(x[:256]).recon.item()
    for _ in range(150):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        model.loss(x[idx]).loss.backward()
        opt.step()
    with torch.no_grad():
        t = model.loss(x[:256])
    mean_image = ((x[:256] - x.mean(0)) ** 2).mean().item()                # the best constant reconstruction
    assert t.recon.item() < 0.5 * first and t.recon.item() < 0.6 * mean_image, (first, t.recon.item(), mean_image)
    assert codebook_stats(t.indices, 32)["perplexity"] > 4
    rec = model.decode_indices(t.indices)
    assert torch.allclose(rec, model(x[:256]), atol=1e-5)                  # indices carry the whole code
