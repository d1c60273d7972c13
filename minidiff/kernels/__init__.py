"""Fused kernels: Triton on CUDA, the pure-torch reference (:mod:`minidiff.kernels.reference`) everywhere else.

Three operations, each a single pass over memory on the GPU:

- :func:`sampler_update`: the DDPM ancestral step and the DDIM step (used by
  :func:`minidiff.diffusion.ddpm.p_sample_step` and :func:`minidiff.diffusion.ddim.ddim_step`);
- :func:`layernorm_modulate`: LayerNorm + adaLN modulate, forward and backward (used by the DiT blocks);
- :func:`groupnorm_silu`: GroupNorm + SiLU, forward and backward (used by the U-Net residual blocks).

Dispatch is chosen by :func:`set_backend` or ``$MINIDIFF_KERNELS``:

- ``"auto"`` (default): Triton for CUDA tensors in float32, float16 or bfloat16 when Triton is installed *and* the
  kernel passed its self-check (:func:`self_check`) for that dtype on that kind of GPU, else the torch reference.
  The self-check runs once per (kernel, dtype, device capability), on a small input, forward and (for the two
  autograd kernels) backward, against the reference. A kernel that fails to compile or launch, or whose numbers
  differ from the reference by more than :data:`SELF_CHECK_TOLERANCES`, is reported by one
  :class:`KernelFallbackWarning` and replaced by the torch reference from then on for that key. CPU tensors (and
  float64) always use the reference under ``"auto"``.
- ``"triton"``: always Triton, with no self-check and no fallback (a broken kernel raises or gives its wrong numbers,
  which is what the tests want); on CPU only through Triton's interpreter, ``TRITON_INTERPRET=1`` set before
  ``triton`` is imported, which is how the tests run the kernels.
- ``"torch"``: always the reference.

The Triton implementations are looked up in :data:`triton_implementations` first (empty by default: the kernels of
:mod:`minidiff.kernels.triton_ops`), so a test can put a deliberately broken kernel there and watch the self-check
reject it; call :func:`reset_self_checks` after changing it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import warnings
from typing import Callable

import torch

from . import reference
from .reference import COEFFS, ddim_coefficients, ddpm_coefficients  # noqa: F401

BACKENDS = ("auto", "triton", "torch")
#: the fused kernels, by name (each has a Triton implementation and a reference in :mod:`.reference`)
KERNELS = ("sampler_update", "layernorm_modulate", "groupnorm_silu")
_backend = os.environ.get("MINIDIFF_KERNELS", "auto").strip().lower() or "auto"
if _backend not in BACKENDS:
    raise ValueError(f"MINIDIFF_KERNELS={_backend!r} is not a kernel backend; expected one of {', '.join(BACKENDS)}")

#: Relative tolerance of the self-check per dtype. The absolute tolerance is the same number times the largest
#: magnitude of the reference output (at least 1): rounding and the cancellation inside a normalisation's backward
#: make errors proportional to the size of the terms, not to each (possibly tiny) output element. The self-check
#: inputs are O(1), so this is an absolute tolerance of about 1e-5 (fp32), 2e-3 (fp16) and 2e-2 (bf16). The
#: low-precision tolerances leave room for one rounding of an fp32 result to the dtype (half an ulp is 4.9e-4 in
#: fp16 and 3.9e-3 in bf16): the kernels compute in fp32, and the reference they are checked against is computed
#: in fp32 from the same low-precision inputs.
SELF_CHECK_TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}

#: Device types on which ``"auto"`` considers Triton (self-check first). Tests add ``"cpu"`` to exercise this path
#: through Triton's interpreter.
AUTO_TRITON_DEVICES: tuple[str, ...] = ("cuda",)

#: Triton implementations by kernel name, overriding :mod:`minidiff.kernels.triton_ops` (empty by default). Each
#: takes the arguments of the dispatch function of the same name (``groupnorm_silu`` with non-None weight and bias).
triton_implementations: dict[str, Callable] = {}

_self_checks: dict[tuple, bool] = {}


class KernelFallbackWarning(RuntimeWarning):
    """A Triton kernel failed its self-check: the torch reference replaces it for that dtype on that device."""


def set_backend(name: str) -> None:
    """Force the kernels: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The current backend: ``"auto"``, ``"triton"`` or ``"torch"``."""
    return _backend


@functools.lru_cache(maxsize=None)
def triton_import_error() -> str | None:
    """Why Triton cannot be imported here (``None`` when it can)."""
    if importlib.util.find_spec("triton") is None:
        return "no module named 'triton' is installed"
    try:
        import triton  # noqa: F401
    except Exception as exc:   # a broken install raises anything from ImportError to RuntimeError
        return f"import triton raised {type(exc).__name__}: {exc}"
    return None


def triton_available() -> bool:
    """True when Triton can be imported."""
    return triton_import_error() is None


def torch_triton_requirement(requires: list[str] | None = None, environment: dict | None = None) -> str | None:
    """The Triton the installed torch wheel requires on this platform (e.g. ``"triton~=3.8.0"``), or ``None``.

    ``requires`` defaults to ``importlib.metadata.requires("torch")``; a requirement counts when its environment
    marker holds for ``environment`` (default: this interpreter and platform; torch's Linux wheels declare
    ``triton ...; platform_system == "Linux"``), never one that only an extra asks for. Where this returns a
    requirement, pip installed Triton together with torch, so a Triton that does not import is a broken
    installation, not an optional feature that is missing. Needs ``packaging`` (a dependency of pip and pytest).
    """
    from packaging.requirements import InvalidRequirement, Requirement

    if requires is None:
        try:
            requires = importlib.metadata.requires("torch") or []
        except importlib.metadata.PackageNotFoundError:   # a torch built from source, without metadata
            return None
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower() != "triton":
            continue
        env = {"extra": "", **(environment or {})}
        if req.marker is None or req.marker.evaluate(env):
            return f"{req.name}{req.specifier}"
    return None


def diagnose_triton(import_error: str | None, requirement: str | None, torch_version: str) -> tuple[str, str] | None:
    """What a missing Triton means: ``None`` if it imports, ``("broken", message)`` when torch requires it here
    (see :func:`torch_triton_requirement`), ``("absent", message)`` when it is an optional extra that is not there."""
    if import_error is None:
        return None
    if requirement:
        torch_release = torch_version.split("+")[0]
        return ("broken", f"torch {torch_version} requires {requirement} on this platform, but Triton cannot be used: "
                          f"{import_error}. The Triton kernels cannot run or be tested. Fix: pip install "
                          f"'{requirement}' (the Triton this torch was built with) into this environment, or reinstall "
                          f"torch (pip install --force-reinstall torch=={torch_release} with your index URL).")
    return ("absent", f"Triton is not installed ({import_error}) and torch {torch_version} does not require it on this "
                      f"platform: the kernels use the torch reference here")


def triton_problem() -> tuple[str, str] | None:
    """:func:`diagnose_triton` for this environment."""
    err = triton_import_error()
    return diagnose_triton(err, torch_triton_requirement() if err else None, torch.__version__)


def interpreter_on() -> bool:
    """Whether Triton's interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def uses_triton(x: torch.Tensor, kernel: str | None = None) -> bool:
    """Whether an operation on ``x`` runs a Triton kernel under the current backend.

    With ``kernel`` (one of :data:`KERNELS`), under ``"auto"`` this also requires that kernel's self-check for
    ``x.dtype`` on ``x.device`` to pass (running it the first time). Without it, the answer under ``"auto"`` is
    whether Triton is in play for that device at all (the dispatch functions may still pick the reference).
    """
    if _backend == "torch":
        return False
    if _backend == "triton":
        if not triton_available():
            raise RuntimeError(f"kernel backend 'triton' was forced but Triton cannot be used: {triton_import_error()} "
                               f"(pip install triton, or set_backend('auto'))")
        if not x.is_cuda and not interpreter_on():
            raise RuntimeError("kernel backend 'triton' on a CPU tensor needs Triton's interpreter: set "
                               "TRITON_INTERPRET=1 before triton is imported (or use set_backend('auto'))")
        return True
    if x.device.type not in AUTO_TRITON_DEVICES or not triton_available():
        return False
    if kernel is None:
        return True
    if x.dtype not in SELF_CHECK_TOLERANCES:   # float64 and others: the kernels compute in fp32
        return False
    return self_check(kernel, x.dtype, x.device)


def triton_implementation(name: str) -> Callable:
    """The Triton implementation of kernel ``name``: :data:`triton_implementations` or :mod:`.triton_ops`."""
    impl = triton_implementations.get(name)
    if impl is None:
        from . import triton_ops

        impl = getattr(triton_ops, name)
    return impl


# ----------------------------------------------------------------------------- self-check

def _device_key(device: torch.device) -> tuple:
    if device.type == "cuda":
        return ("cuda", torch.cuda.get_device_capability(device))
    return (device.type,)


def _device_words(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (CUDA compute capability {major}.{minor})"
    if device.type == "cpu":
        return "cpu (Triton interpreter)" if interpreter_on() else "cpu (no Triton interpreter: TRITON_INTERPRET unset)"
    return str(device)


def reset_self_checks() -> None:
    """Forget every self-check result (they run again, and warn again, on next use)."""
    _self_checks.clear()


def self_check_results() -> dict[tuple, bool]:
    """A copy of the cached results: ``{(kernel, dtype, device key): passed}``."""
    return dict(_self_checks)


def _mismatch(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float) -> str | None:
    """``None`` if ``got`` matches the fp32 ``want`` within the self-check tolerance, else a sentence saying by how
    much."""
    if got is None or got.shape != want.shape:
        return f"{what}: got {None if got is None else tuple(got.shape)}, expected shape {tuple(want.shape)}"
    got, want = got.detach().float(), want.detach().float()
    atol = rtol * max(1.0, want.abs().max().item())
    ok = torch.isclose(got, want, rtol=rtol, atol=atol)
    if bool(ok.all()):
        return None
    err = (got - want).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
    return (f"{what} differs from the reference in {int((~ok).sum())} of {ok.numel()} values (largest error "
            f"{err.max().item():.3g}; allowed rtol={rtol:g}, atol={atol:.3g})")


def _check_sampler_update(impl: Callable, dtype: torch.dtype, device: torch.device, rtol: float) -> str | None:
    g = torch.Generator().manual_seed(0)
    shape = (3, 2, 5, 7)             # 70 values per example: a partial block
    x, m, z = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(3))
    coeffs = torch.rand(shape[0], len(COEFFS), generator=g, dtype=torch.float64) * 1.2 - 0.3
    coeffs[:, 4:6] = torch.rand(shape[0], 2, generator=g, dtype=torch.float64) * 0.8 + 0.2   # a, s > 0 (divided by s)
    for clip in (False, True):
        for noise in (None, z):
            z32 = None if noise is None else noise.float()
            want = reference.sampler_update(x.float(), m.float(), coeffs, z32, clip)
            got = impl(x, m, coeffs, noise, clip)
            bad = _mismatch(f"output (clip_x0={clip}, noise={'yes' if noise is not None else 'no'})", got, want, rtol)
            if bad:
                return bad
    return None


def _check_autograd(impl: Callable, ref: Callable, args: list, extra: tuple, n_grad: int, names: tuple,
                    dtype: torch.dtype, rtol: float, g: torch.Generator) -> str | None:
    """Forward and backward of ``impl(*args, *extra)`` in ``dtype`` against ``ref`` on the same inputs upcast to fp32;
    the first ``n_grad`` of ``args`` are differentiated."""
    low = [a.to(dtype).requires_grad_(i < n_grad) for i, a in enumerate(args)]
    high = [a.detach().float().requires_grad_(i < n_grad) for i, a in enumerate(low)]
    want = ref(*high, *extra)
    dy = torch.randn(want.shape, generator=g).to(want.device, dtype)   # the same rounded upstream gradient for both
    want_grads = torch.autograd.grad(want, high[:n_grad], dy.float())
    got = impl(*low, *extra)
    bad = _mismatch("forward output", got, want, rtol)
    if bad:
        return bad
    got_grads = torch.autograd.grad(got, low[:n_grad], dy)
    for name, a, b in zip(names, got_grads, want_grads):
        bad = _mismatch(f"gradient of {name} (backward)", a, b, rtol)
        if bad:
            return bad
    return None


def _check_layernorm_modulate(impl, dtype, device, rtol):
    g = torch.Generator().manual_seed(1)
    B, N, D = 2, 3, 40                 # D not a power of two: a masked row
    args = [(torch.randn(B, N, D, generator=g) * 2 + 0.5).to(device), torch.randn(B, D, generator=g).to(device),
            (0.5 * torch.randn(B, D, generator=g)).to(device)]
    return _check_autograd(lambda x, sh, sc, eps: impl(x, sh, sc, eps), reference.layernorm_modulate, args, (1e-6,),
                           3, ("x", "shift", "scale"), dtype, rtol, g)


def _check_groupnorm_silu(impl, dtype, device, rtol):
    g = torch.Generator().manual_seed(2)
    B, C, H, W, G = 2, 6, 3, 5, 3      # 2 channels and 15 pixels per group: masked on both axes
    x = (torch.randn(B, C, H, W, generator=g) * 2 - 0.5).to(device)
    w = (1 + 0.3 * torch.randn(C, generator=g)).to(device)
    b = (0.3 * torch.randn(C, generator=g)).to(device)
    return _check_autograd(lambda x, w, b, eps: impl(x, G, w, b, eps), lambda x, w, b, eps: reference.groupnorm_silu(
        x, G, w, b, eps), [x, w, b], (1e-5,), 3, ("x", "weight", "bias"), dtype, rtol, g)


_CHECKS = {"sampler_update": _check_sampler_update, "layernorm_modulate": _check_layernorm_modulate,
           "groupnorm_silu": _check_groupnorm_silu}


def self_check(name: str, dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether the Triton kernel ``name`` gives the reference's numbers in ``dtype`` on ``device`` (cached).

    The first call per (kernel, dtype, device capability) runs the Triton implementation
    (:func:`triton_implementation`) on a small input, forward and, for the autograd kernels, backward, and compares
    it with :mod:`minidiff.kernels.reference` computed in fp32 from the same inputs, within
    :data:`SELF_CHECK_TOLERANCES`. Any exception from Triton (import, compilation, launch) or a mismatch makes it
    ``False`` and emits one :class:`KernelFallbackWarning` naming the kernel, the dtype and the device; later calls
    return the cached answer without warning again (:func:`reset_self_checks` forgets them). On CPU the kernels
    can only run through Triton's interpreter.
    """
    if name not in _CHECKS:
        raise ValueError(f"unknown kernel {name!r}; expected one of {', '.join(KERNELS)}")
    if dtype not in SELF_CHECK_TOLERANCES:
        raise ValueError(f"the kernels are self-checked in float32, float16 and bfloat16 only, got {dtype}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (name, dtype, _device_key(device))
    if key in _self_checks:
        return _self_checks[key]
    rtol = SELF_CHECK_TOLERANCES[dtype]
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            problem = _CHECKS[name](triton_implementation(name), dtype, device, rtol)
    except Exception as exc:   # compile errors, launch errors, a missing or broken Triton: all mean "do not use it"
        problem = f"it raised {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    passed = problem is None
    _self_checks[key] = passed
    if not passed:
        warnings.warn(KernelFallbackWarning(
            f"minidiff.kernels: the Triton kernel {name} failed its self-check in {dtype} on {_device_words(device)}: "
            f"{problem}. Falling back to the torch reference (minidiff.kernels.reference.{name}) for {name} in {dtype} "
            f"on this device from now on."), stacklevel=2)
    return passed


# ----------------------------------------------------------------------------- dispatch

def sampler_update(x_t: torch.Tensor, model_out: torch.Tensor, coeffs: torch.Tensor,
                   noise: torch.Tensor | None = None, clip_x0: bool = False) -> torch.Tensor:
    """One fused reverse-diffusion step; ``coeffs`` from :func:`ddpm_coefficients` or :func:`ddim_coefficients`
    (the formula is in :mod:`minidiff.kernels.reference`)."""
    if model_out.shape != x_t.shape or (noise is not None and noise.shape != x_t.shape):
        raise ValueError(f"model_out and noise must be shaped like x_t {tuple(x_t.shape)}, got "
                         f"{tuple(model_out.shape)} and {None if noise is None else tuple(noise.shape)}")
    if coeffs.shape != (x_t.shape[0], len(COEFFS)):
        raise ValueError(f"coeffs must be ({x_t.shape[0]}, {len(COEFFS)}), got {tuple(coeffs.shape)}")
    if uses_triton(x_t, "sampler_update"):
        return triton_implementation("sampler_update")(x_t, model_out, coeffs, noise, clip_x0)
    return reference.sampler_update(x_t, model_out, coeffs, noise, clip_x0)


def layernorm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` for ``x`` (B, N, D), ``shift``/``scale`` (B, D)."""
    if x.ndim != 3 or shift.shape != (x.shape[0], x.shape[2]) or scale.shape != shift.shape:
        raise ValueError(f"x must be (B, N, D) and shift, scale (B, D); got {tuple(x.shape)}, {tuple(shift.shape)}, "
                         f"{tuple(scale.shape)}")
    if uses_triton(x, "layernorm_modulate"):
        return triton_implementation("layernorm_modulate")(x, shift, scale, eps)
    return reference.layernorm_modulate(x, shift, scale, eps)


def groupnorm_silu(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float = 1e-5) -> torch.Tensor:
    """``SiLU(GroupNorm(x))`` for ``x`` (B, C, H, W) with per-channel ``weight`` and ``bias``."""
    if x.ndim != 4 or x.shape[1] % num_groups:
        raise ValueError(f"x must be (B, C, H, W) with C divisible by num_groups={num_groups}, got {tuple(x.shape)}")
    if weight is not None and bias is not None and uses_triton(x, "groupnorm_silu"):
        return triton_implementation("groupnorm_silu")(x, num_groups, weight, bias, eps)
    return reference.groupnorm_silu(x, num_groups, weight, bias, eps)
