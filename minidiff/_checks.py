"""Small input checks shared by the public API: each raises a ValueError/TypeError that says what
was wrong and what was expected."""

from __future__ import annotations

import torch


def check_tensor(x, name: str, *, ndim: int | tuple[int, ...] | None = None, floating: bool | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {x.dtype}")
    return x


def check_images(x, name: str = "x", channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """A float image batch (B, C, H, W)."""
    check_tensor(x, name, ndim=4, floating=True)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) in dim 1 (B, C, H, W), got shape {tuple(x.shape)}")
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"{name} must be {size}x{size} images, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    return x


def check_positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def check_timesteps(t, batch: int, T: int, name: str = "t") -> torch.Tensor:
    """Discrete time steps: int64 (B,) with values in [0, T-1]."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int64 tensor of shape ({batch},), got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer (int64) tensor of time indices, got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    if batch and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(f"{name} must lie in [0, {T - 1}] for a schedule of T={T} steps, "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    return t


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def condition_vector(y, x: torch.Tensor, dim: int) -> torch.Tensor:
    """A condition vector for a batch ``x``: ``y`` checked to be float (B, dim), or the null (zero) vector if None."""
    if y is None:
        return torch.zeros(x.shape[0], dim, device=x.device, dtype=x.dtype)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.shape != (x.shape[0], dim):
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"condition y must be a float tensor ({x.shape[0]}, {dim}), got {got}")
    return y
