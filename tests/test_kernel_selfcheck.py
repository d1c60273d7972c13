"""The self-check of the ``auto`` backend (minidiff.kernels.self_check) and the decision whether a missing Triton is
an error.

The self-check is called directly; without CUDA it runs the kernels through Triton's interpreter (tests/conftest.py
sets TRITON_INTERPRET=1). Deliberately broken Triton implementations are put into
``kernels.triton_implementations``: one whose @triton.jit kernel writes wrong values, one whose kernel cannot be
compiled (Triton raises at launch), and, for the two autograd kernels, a correct forward with a wrong backward. The
interpreter runs float32, float16 and bfloat16 (triton 3.8), so the real kernels are checked in all three.
To test the dispatch on CPU, ``kernels.AUTO_TRITON_DEVICES`` is extended with "cpu" (by default ``auto`` sends CPU
tensors to the torch reference without any self-check, which is tested too).
"""

import subprocess
import sys
import warnings

import pytest
import torch

from minidiff import kernels
from minidiff.diffusion.schedules import make_schedule
from minidiff.kernels import reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [pytest.param(dt, id=str(dt).removeprefix("torch.")) for dt in (torch.float32, torch.float16, torch.bfloat16)]

try:   # after conftest.py has set TRITON_INTERPRET; the tests that need it fail or skip through `triton_present`
    import triton
    import triton.language as tl
except Exception:
    triton = None

if triton is not None:
    @triton.jit
    def _wrong_values_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        """Writes 2 x + 1: compiles and runs, but is no kernel of minidiff."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, x * 2.0 + 1.0, mask=mask)

    @triton.jit
    def _uncompilable_kernel(out_ptr):
        """tl.arange needs a power-of-two range: Triton rejects this kernel when it compiles (or interprets) it."""
        offs = tl.arange(0, 3)
        tl.store(out_ptr + offs, offs)


def _wrong_values(x):
    x = x.contiguous()
    out = torch.empty_like(x)
    _wrong_values_kernel[(triton.cdiv(x.numel(), 64),)](x, out, x.numel(), BLOCK=64)
    return out


class _WrongForward(torch.autograd.Function):
    """Forward: the wrong-values Triton kernel on x; backward: passes the gradient to x unchanged."""

    @staticmethod
    def forward(ctx, x, *rest):
        ctx.n_rest = len(rest)
        return _wrong_values(x)

    @staticmethod
    def backward(ctx, dy):
        return (dy,) + (None,) * ctx.n_rest


class _ScaledGradient(torch.autograd.Function):
    """Identity forward, gradient times 1.5 backward: turns a correct kernel into one with a wrong backward."""

    @staticmethod
    def forward(ctx, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, dy):
        return 1.5 * dy


def wrong_values_impl(name):
    if name == "sampler_update":
        return lambda x_t, model_out, coeffs, noise=None, clip_x0=False: _wrong_values(x_t)
    if name == "layernorm_modulate":
        return lambda x, shift, scale, eps=1e-6: _WrongForward.apply(x, shift, scale)
    return lambda x, num_groups, weight, bias, eps=1e-5: _WrongForward.apply(x, weight, bias)


def raising_impl(name):
    def impl(x, *args, **kwargs):
        _uncompilable_kernel[(1,)](torch.empty(4, device=x.device, dtype=torch.int32))
        return x
    return impl


def wrong_backward_impl(name):
    from minidiff.kernels import triton_ops

    real = getattr(triton_ops, name)
    return lambda *args: _ScaledGradient.apply(real(*args))


BROKEN = {"wrong_values": (wrong_values_impl, "differs from the reference"),
          "raises_at_launch": (raising_impl, "raised"),
          "wrong_backward": (wrong_backward_impl, "(backward) differs from the reference")}


@pytest.fixture
def auto(triton_present, monkeypatch):
    """The ``auto`` backend with fresh self-checks; on a CPU-only machine ``auto`` also considers CPU tensors."""
    kernels.reset_self_checks()
    kernels.set_backend("auto")
    if DEV == "cpu":
        assert kernels.interpreter_on(), "tests/conftest.py should have set TRITON_INTERPRET=1 (no CUDA device)"
        monkeypatch.setattr(kernels, "AUTO_TRITON_DEVICES", ("cuda", "cpu"))
    yield
    kernels.reset_self_checks()
    kernels.set_backend("auto")


def _inputs(name, dtype):
    """Arguments of the dispatch function ``name`` in ``dtype`` on DEV, and the indices of those to differentiate."""
    g = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=g).to(DEV, dtype)
    if name == "sampler_update":
        coeffs = kernels.ddim_coefficients(make_schedule("linear", 50), torch.tensor([10, 40]), torch.tensor([5, 30]),
                                           eta=0.5)
        return [r(2, 1, 3, 5), r(2, 1, 3, 5), coeffs, r(2, 1, 3, 5), False], []
    if name == "layernorm_modulate":
        return [r(2, 4, 12), r(2, 12), r(2, 12), 1e-6], [0, 1, 2]
    return [r(2, 4, 3, 3), 2, (1 + 0.3 * torch.randn(4, generator=g)).to(DEV, dtype), r(4), 1e-5], [0, 2, 3]


def _run(fn, args, diff, dtype=None):
    """Output of ``fn(*args)`` and, for the autograd kernels, the gradients of its sum of squares; with ``dtype``,
    the floating-point arguments are converted to it first."""
    args = [a.detach().to(dtype).clone().requires_grad_(i in diff) if isinstance(a, torch.Tensor) and
            a.is_floating_point() else a for i, a in enumerate(args)]
    out = fn(*args)
    if not diff:
        return [out]
    return [out, *torch.autograd.grad((out.float() ** 2).sum(), [args[i] for i in diff])]


@pytest.mark.parametrize("name, broken", [(n, b) for n in kernels.KERNELS for b in BROKEN
                                           if not (n == "sampler_update" and b == "wrong_backward")])  # no backward
def test_a_broken_kernel_fails_its_self_check_warns_once_and_the_reference_takes_over(name, broken, auto,
                                                                                       monkeypatch):
    make, reason = BROKEN[broken]
    monkeypatch.setitem(kernels.triton_implementations, name, make(name))
    args, diff = _inputs(name, torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")          # so that only the self-check's own cache can keep it to one
        assert kernels.self_check(name, torch.float32, DEV) is False
        assert kernels.self_check(name, torch.float32, DEV) is False
        got = [_run(getattr(kernels, name), args, diff) for _ in range(2)]   # the dispatch, twice
    ours = [w for w in caught if issubclass(w.category, kernels.KernelFallbackWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    device_words = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (Triton interpreter)"
    for part in (f"Triton kernel {name} ", "torch.float32", device_words, reason,
                 "Falling back to the torch reference"):
        assert part in message, f"{part!r} missing from the warning: {message}"
    want = _run(getattr(reference, name), args, diff)
    for g in got:
        for a, b in zip(g, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert kernels.uses_triton(args[0], name) is False


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", kernels.KERNELS)
def test_the_real_kernels_pass_their_self_check_and_are_then_used(name, dtype, auto, monkeypatch):
    from minidiff.kernels import triton_ops

    calls = []
    real = getattr(triton_ops, name)
    monkeypatch.setitem(kernels.triton_implementations, name, lambda *a: calls.append(1) or real(*a))
    # the first dispatch often comes from a sampler, under no_grad or inference_mode: the backward is checked anyway
    with warnings.catch_warnings(), (torch.inference_mode() if dtype == torch.float16 else torch.no_grad()):
        warnings.simplefilter("error", kernels.KernelFallbackWarning)
        assert kernels.self_check(name, dtype, DEV) is True
    n_check = len(calls)
    assert n_check >= 1
    args, diff = _inputs(name, dtype)
    got = _run(getattr(kernels, name), args, diff)
    assert len(calls) == n_check + 1, "the dispatch did not run the Triton kernel after a passed self-check"
    want = _run(getattr(reference, name), args, diff, torch.float32)   # fp32 from the same rounded inputs
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)


def test_the_self_check_runs_once_per_kernel_dtype_and_device(auto, monkeypatch):
    from minidiff.kernels import triton_ops

    calls = []
    monkeypatch.setitem(kernels.triton_implementations, "sampler_update",
                        lambda *a: calls.append(1) or triton_ops.sampler_update(*a))
    assert kernels.self_check("sampler_update", torch.float32, DEV)
    n = len(calls)
    assert kernels.self_check("sampler_update", torch.float32, DEV)
    assert len(calls) == n, "a cached self-check ran the kernel again"
    assert kernels.self_check("sampler_update", torch.float16, DEV)
    assert len(calls) == 2 * n, "float16 is a different key and must be checked on its own"
    assert sorted(str(k[1]) for k in kernels.self_check_results()) == ["torch.float16", "torch.float32"]
    kernels.reset_self_checks()
    assert kernels.self_check_results() == {}
    assert kernels.self_check("sampler_update", torch.float32, DEV)
    assert len(calls) == 3 * n


def test_auto_keeps_cpu_tensors_on_the_reference_without_a_self_check(triton_present, monkeypatch):
    """The default ``auto``: CPU tensors never reach Triton, not even for the self-check."""
    kernels.reset_self_checks()
    kernels.set_backend("auto")
    monkeypatch.setitem(kernels.triton_implementations, "layernorm_modulate", raising_impl("layernorm_modulate"))
    x, shift, scale = torch.randn(2, 3, 8), torch.randn(2, 8), torch.randn(2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = kernels.layernorm_modulate(x, shift, scale)
    assert torch.equal(y, reference.layernorm_modulate(x, shift, scale))
    assert kernels.self_check_results() == {}
    assert not kernels.uses_triton(x, "layernorm_modulate")
    # float64 is not self-checked (the kernels compute in fp32): the reference, on any device
    assert not kernels.uses_triton(torch.zeros(2, 3, 8, dtype=torch.float64, device=DEV), "layernorm_modulate")


def test_forced_triton_never_falls_back(triton_present, monkeypatch):
    """``set_backend("triton")`` (what test_kernels.py uses) runs the Triton implementation as it is: its errors and its
    wrong numbers come through, with no self-check and no warning."""
    kernels.reset_self_checks()
    kernels.set_backend("triton")
    try:
        if DEV == "cpu":
            assert kernels.interpreter_on()
        args, _ = _inputs("sampler_update", torch.float32)
        monkeypatch.setitem(kernels.triton_implementations, "sampler_update", raising_impl("sampler_update"))
        with pytest.raises(Exception, match="power of 2"):
            kernels.sampler_update(*args)
        monkeypatch.setitem(kernels.triton_implementations, "sampler_update", wrong_values_impl("sampler_update"))
        with warnings.catch_warnings():
            warnings.simplefilter("error", kernels.KernelFallbackWarning)
            got = kernels.sampler_update(*args)
        torch.testing.assert_close(got, 2 * args[0] + 1)
        assert kernels.self_check_results() == {}
    finally:
        kernels.set_backend("auto")


def test_self_check_rejects_unknown_kernels_and_dtypes():
    with pytest.raises(ValueError, match="unknown kernel 'layernorm'; expected one of sampler_update"):
        kernels.self_check("layernorm", torch.float32, "cpu")
    with pytest.raises(ValueError, match="float32, float16 and bfloat16 only, got torch.float64"):
        kernels.self_check("groupnorm_silu", torch.float64, "cpu")


# ----------------------------------------------------------------------------- is a missing Triton an error?

TORCH_214_REQUIRES = [
    "filelock", "typing-extensions>=4.10.0",
    'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"',
    'triton~=3.8.0; platform_system == "Linux" and python_version < "3.15"',
    'optree>=0.13.0; extra == "optree"',
]
LINUX_312 = {"platform_system": "Linux", "platform_machine": "x86_64", "python_version": "3.12",
             "sys_platform": "linux"}


@pytest.mark.parametrize("requires, environment, expected", [
    (TORCH_214_REQUIRES, LINUX_312, "triton~=3.8.0"),                                     # torch's Linux wheel
    (TORCH_214_REQUIRES, {**LINUX_312, "python_version": "3.15"}, None),                  # marker excludes it
    (TORCH_214_REQUIRES, {"platform_system": "Darwin", "python_version": "3.12", "sys_platform": "darwin"}, None),
    (TORCH_214_REQUIRES, {"platform_system": "Windows", "python_version": "3.12", "sys_platform": "win32"}, None),
    (["filelock", "pytorch-triton-rocm==3.1.0; platform_system == 'Linux'"], LINUX_312, None),   # another name
    (["filelock", 'triton>=2; extra == "compile"'], LINUX_312, None),                   # only for an extra
    (["Triton==3.1.0 ; platform_machine == 'x86_64' and platform_system == 'Linux'"], LINUX_312, "Triton==3.1.0"),
    (["Triton==3.1.0 ; platform_machine == 'x86_64'"], {**LINUX_312, "platform_machine": "aarch64"}, None),
    (["triton"], LINUX_312, "triton"),                                                   # no marker: everywhere
    ([], LINUX_312, None),
])
def test_torch_triton_requirement_reads_the_markers(requires, environment, expected):
    assert kernels.torch_triton_requirement(requires, environment) == expected


def test_torch_triton_requirement_of_the_installed_torch():
    import importlib.metadata
    import platform

    declared = any(r.replace(" ", "").lower().startswith("triton") for r in importlib.metadata.requires("torch") or [])
    got = kernels.torch_triton_requirement()
    if declared and platform.system() == "Linux" and platform.machine() == "x86_64" and sys.version_info < (3, 15):
        assert got is not None and got.startswith("triton"), got
    if not declared:
        assert got is None


def test_a_missing_triton_fails_where_torch_requires_it_and_skips_elsewhere():
    assert kernels.diagnose_triton(None, "triton~=3.8.0", "2.14.1+cu130") is None
    kind, message = kernels.diagnose_triton("no module named 'triton' is installed", "triton~=3.8.0", "2.14.1+cu130")
    assert kind == "broken"
    for part in ("torch 2.14.1+cu130", "triton~=3.8.0", "no module named 'triton'", "pip install 'triton~=3.8.0'",
                 "torch==2.14.1"):
        assert part in message, f"{part!r} missing from: {message}"
    kind, message = kernels.diagnose_triton("no module named 'triton' is installed", None, "2.14.1")
    assert kind == "absent" and "does not require it" in message


def test_importing_torch_and_asking_for_cuda_does_not_import_triton():
    """tests/conftest.py relies on this to set TRITON_INTERPRET only where there is no CUDA device."""
    code = "import sys, torch; torch.cuda.is_available(); print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", \
        "importing torch imported triton: conftest.py cannot set TRITON_INTERPRET in time"
