r"""A CLIP in miniature (Radford et al. 2021): captions, a tokenizer, a bag-of-words text encoder and a small image
encoder trained so that matching image and text embeddings align; chapter 10 conditions a generator on its text
embeddings (guidance itself is :mod:`minidiff.diffusion.guidance`).

Two encoders map images and texts into one space; for a batch of :math:`N` matching pairs the loss is the symmetric
cross-entropy of the :math:`N \times N` cosine-similarity matrix (their fig. 3):

.. math:: \mathcal L = \tfrac12\big[\mathrm{CE}(S, \mathrm{diag}) + \mathrm{CE}(S^\top, \mathrm{diag})\big],\qquad S_{ij} = \frac{\langle u_i, v_j\rangle}{\tau\,\|u_i\|\,\|v_j\|} .
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_tensor
from .resnet import ConvNet


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of ``image_emb`` and ``text_emb`` (N, d) (see module docstring)."""
    check_tensor(image_emb, "image_emb", ndim=2, floating=True)
    check_tensor(text_emb, "text_emb", ndim=2, floating=True)
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must have the same shape (N, d), got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    u, v = F.normalize(image_emb, dim=1), F.normalize(text_emb, dim=1)
    logits = u @ v.T / temperature
    target = torch.arange(u.shape[0], device=u.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


_SIZES = ["a small", "a large", "a thin", "a bold", "a neat", "a messy"]
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_captions(labels: torch.Tensor, generator: torch.Generator | None = None) -> list[str]:
    """Short captions built from labels, e.g. ``"a thin handwritten seven"``: the second modality for the chapter's
    CLIP-style model (the adjective is random, so only the digit name carries information about the image)."""
    idx = torch.randint(0, len(_SIZES), (labels.shape[0],), generator=generator)
    return [f"{_SIZES[i]} handwritten {DIGIT_NAMES[int(y)]}" for i, y in zip(idx.tolist(), labels.tolist())]


def tokenize(captions: list[str], vocab: dict[str, int] | None = None, max_len: int = 6) -> tuple[torch.Tensor, dict]:
    """Whitespace tokenisation into an int64 tensor (N, max_len), 0 = padding. Builds the vocabulary when ``vocab``
    is None (index 1 = unknown word). Returns ``(tokens, vocab)``."""
    if vocab is None:
        words = sorted({w for c in captions for w in c.lower().split()})
        vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    out = torch.zeros(len(captions), max_len, dtype=torch.long)
    for i, c in enumerate(captions):
        ids = [vocab.get(w, 1) for w in c.lower().split()][:max_len]
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out, vocab


class BagOfWordsEncoder(torch.nn.Module):
    """A text encoder small enough for a CPU: the mean of learned word embeddings (padding ignored), then an MLP."""

    def __init__(self, vocab_size: int, dim: int = 64, out_dim: int = 32):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, dim, padding_idx=0)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.GELU(), torch.nn.Linear(dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens > 0).float().unsqueeze(-1)
        h = (self.embed(tokens) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.mlp(h)


class CLIPModel(torch.nn.Module):
    """A CLIP in miniature: an image encoder (a small ConvNet) and a bag-of-words text encoder, each followed by a
    linear map into a shared ``dim``-dimensional space, trained with :func:`clip_loss`.

    ``condition(tokens)`` is what a generator is conditioned on: the unit text embedding times
    :math:`\\sqrt{\\text{dim}}` (entries of about unit size, whatever the encoder's raw scale)."""

    def __init__(self, vocab: dict, dim: int = 32, width: int = 8, temperature: float = 0.07):
        super().__init__()
        if dim < 2:
            raise ValueError(f"embedding dim must be >= 2, got {dim}")
        self.vocab, self.dim, self.temperature = dict(vocab), dim, temperature
        self.image_encoder = ConvNet(1, width)
        self.image_proj = torch.nn.Linear(self.image_encoder.feature_dim, dim)
        self.text_encoder = BagOfWordsEncoder(len(self.vocab), dim=2 * dim, out_dim=dim)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_encoder(x)), dim=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tensor(tokens, "tokens", ndim=2, dtype=torch.long)
        return F.normalize(self.text_encoder(tokens), dim=1)

    def tokens(self, captions: list[str]) -> torch.Tensor:
        """Token ids of ``captions`` in this model's vocabulary, on the model's device."""
        return tokenize(captions, self.vocab)[0].to(self.image_proj.weight.device)

    def loss(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return clip_loss(self.encode_image(x), self.encode_text(tokens), self.temperature)

    @torch.no_grad()
    def condition(self, captions: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokens(captions)) * self.dim ** 0.5

    @torch.no_grad()
    def token_condition(self, captions: list[str]) -> torch.Tensor:
        """The words of ``captions`` one by one, for a generator that reads them by cross-attention
        (:class:`minidiff.nets.unet.CrossAttentionBlock`): the text encoder's word embeddings (B, max_len, 2 dim),
        each scaled to norm :math:`\\sqrt{2\\,\\text{dim}}` (entries of about unit size); padding stays zero, so
        the all-zero sequence is the empty caption."""
        e = self.text_encoder.embed(self.tokens(captions))
        return F.normalize(e, dim=-1) * e.shape[-1] ** 0.5 * (e.abs().sum(-1, keepdim=True) > 0)

    @torch.no_grad()
    def zero_shot(self, x: torch.Tensor, prompts: list[str], batch_size: int = 500) -> torch.Tensor:
        """Index of the prompt whose embedding is closest (cosine) to each image: zero-shot classification."""
        text = self.encode_text(self.tokens(prompts))
        dev = text.device
        return torch.cat([(self.encode_image(x[i:i + batch_size].to(dev)) @ text.T).argmax(1).cpu()
                          for i in range(0, x.shape[0], batch_size)])
