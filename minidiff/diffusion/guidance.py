r"""Steering generation: classifier-free guidance and CLIP-style contrastive alignment.

**Classifier-free guidance** (Ho & Salimans 2022). Train one network both conditionally and unconditionally by
replacing the label with a "null" label with probability :math:`p_\text{uncond}` (:func:`drop_labels`; in training,
:func:`minidiff.diffusion.ddpm.train_ddpm` with ``p_uncond`` is the one place that does it, for every model). At
sampling time extrapolate from the unconditional towards the conditional prediction with a guidance scale :math:`w`
(their eq. 6, written with :math:`w = 1 + \text{their } w`):

.. math:: \tilde\epsilon(x_t, y) = \epsilon_\theta(x_t, \varnothing) + w\,\big(\epsilon_\theta(x_t, y) - \epsilon_\theta(x_t, \varnothing)\big),

so :math:`w = 0` is unconditional, :math:`w = 1` plainly conditional, and :math:`w > 1` sharpens
:math:`p(y \mid x_t)^{w}`-like: samples become more typical of their class and less diverse. :func:`guided` does both
predictions in **one** batched forward pass.

**CLIP** (Radford et al. 2021). Two encoders map images and texts into one space; for a batch of :math:`N` matching
pairs the loss is the symmetric cross-entropy of the :math:`N \times N` cosine-similarity matrix (their fig. 3):

.. math:: \mathcal L = \tfrac12\big[\mathrm{CE}(S, \mathrm{diag}) + \mathrm{CE}(S^\top, \mathrm{diag})\big],\qquad S_{ij} = \frac{\langle u_i, v_j\rangle}{\tau\,\|u_i\|\,\|v_j\|} .
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_tensor


def drop_labels(y: torch.Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p_uncond`` (classifier-free guidance training)."""
    check_tensor(y, "y", ndim=1)
    if y.dtype != torch.long:
        raise TypeError(f"labels must be int64, got {y.dtype}")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    u = torch.rand(y.shape[0], generator=generator).to(y.device)
    return torch.where(u < p_uncond, torch.full_like(y, null_label), y)


def drop_condition(y: torch.Tensor, p_uncond: float, null=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`drop_labels` for labels (``null`` an int) and for condition vectors (B, d), whose rows are replaced by
    ``null`` (a (d,) tensor, default the zero vector) with probability ``p_uncond``."""
    check_tensor(y, "y", ndim=(1, 2))
    if not y.is_floating_point():
        if not isinstance(null, int):
            raise ValueError(f"labels need an int null label, got {null!r}")
        return drop_labels(y, p_uncond, null, generator)
    if y.ndim != 2:
        raise ValueError(f"condition vectors must have shape (B, d), got {tuple(y.shape)}")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    null_vec = torch.zeros(y.shape[1], dtype=y.dtype, device=y.device) if null is None else \
        torch.as_tensor(null, dtype=y.dtype, device=y.device)
    if null_vec.shape != (y.shape[1],):
        raise ValueError(f"null vector must have shape ({y.shape[1]},), got {tuple(null_vec.shape)}")
    u = torch.rand(y.shape[0], generator=generator).to(y.device)
    return torch.where((u < p_uncond)[:, None], null_vec.expand_as(y), y)


def guided(model: Callable, scale: float, null_label: int | torch.Tensor) -> Callable:
    r"""Wrap a conditional ``model(x, t, y)`` into the guided prediction
    :math:`\epsilon_\varnothing + w(\epsilon_y - \epsilon_\varnothing)`, computed with a single forward pass on the doubled
    batch ``[x, x]`` with conditions ``[y, null]``. ``y`` are int64 labels with ``null_label`` an int, or condition
    vectors (B, d) with ``null_label`` a (d,) tensor (e.g. zeros). Returns ``fn(x, t, y)``."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")

    def fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise ValueError("guidance needs the condition y (labels or vectors) to steer towards; pass it through "
                             "model_kwargs={'y': y} when sampling")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} rows to match x, got shape {tuple(y.shape)}")
        if scale == 1.0:
            return model(x, t, y)
        if isinstance(null_label, torch.Tensor):
            null = null_label.to(y).expand_as(y)
        else:
            null = torch.full_like(y, null_label)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return uncond + scale * (cond - uncond)

    return fn


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
        from ..nets.resnet import ConvNet

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
    def zero_shot(self, x: torch.Tensor, prompts: list[str], batch_size: int = 500) -> torch.Tensor:
        """Index of the prompt whose embedding is closest (cosine) to each image: zero-shot classification."""
        text = self.encode_text(self.tokens(prompts))
        dev = text.device
        return torch.cat([(self.encode_image(x[i:i + batch_size].to(dev)) @ text.T).argmax(1).cpu()
                          for i in range(0, x.shape[0], batch_size)])
