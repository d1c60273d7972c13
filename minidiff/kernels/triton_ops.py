"""Triton kernels for the three fused operations of :mod:`minidiff.kernels.reference`, with autograd wrappers.

Each kernel makes one pass over memory: it reads its inputs once and writes its outputs once, which is what a
memory-bound operation can at best do (chapter 12). Imported only when a kernel is dispatched to Triton; on CPU
that works through Triton's interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first imported), which is
how the tests check these kernels against the references without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


# ----------------------------------------------------------------------------- sampler step

@triton.jit
def _sampler_kernel(x_ptr, m_ptr, z_ptr, c_ptr, out_ptr, n_per_example,
                    CLIP: tl.constexpr, HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_per_example
    base = b.to(tl.int64) * n_per_example
    x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    m = tl.load(m_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    c = c_ptr + b * 10
    k1 = tl.load(c + 0)
    k2 = tl.load(c + 1)
    k3 = tl.load(c + 2)
    k4 = tl.load(c + 3)
    a = tl.load(c + 4)
    s = tl.load(c + 5)
    A = tl.load(c + 6)
    B = tl.load(c + 7)
    C = tl.load(c + 8)
    x0 = k1 * x + k2 * m
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -1.0), 1.0)
        eps = (x - a * x0) / s
    else:
        eps = k3 * x + k4 * m
    out = A * x0 + B * eps + C * x
    if HAS_NOISE:
        D = tl.load(c + 9)
        z = tl.load(z_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        out += D * z
    tl.store(out_ptr + base + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def sampler_update(x_t, model_out, coeffs, noise=None, clip_x0=False):
    x_t, model_out = x_t.contiguous(), model_out.contiguous()
    B = x_t.shape[0]
    n = x_t[0].numel()
    out = torch.empty_like(x_t)
    c = coeffs.to(device=x_t.device, dtype=torch.float32).contiguous()
    z = noise.contiguous() if noise is not None else x_t
    BLOCK = min(4096, _pow2(n))
    _sampler_kernel[(B, triton.cdiv(n, BLOCK))](x_t, model_out, z, c, out, n, CLIP=bool(clip_x0),
                                                HAS_NOISE=noise is not None, BLOCK=BLOCK)
    return out


# ----------------------------------------------------------------------------- LayerNorm + adaLN modulate

@triton.jit
def _ln_mod_fwd(x_ptr, shift_ptr, scale_ptr, y_ptr, mean_ptr, rstd_ptr, n_tokens, D, eps, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    b = row // n_tokens
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row.to(tl.int64) * D + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    scale = tl.load(scale_ptr + b * D + cols, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(shift_ptr + b * D + cols, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * (1.0 + scale) + shift
    tl.store(y_ptr + row.to(tl.int64) * D + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _ln_mod_bwd(x_ptr, scale_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dscale_part_ptr, n_tokens, D,
                BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    b = row // n_tokens
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    off = row.to(tl.int64) * D + cols
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + off, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + b * D + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    g = dy * (1.0 + scale)
    mg = tl.sum(g, axis=0) / D
    mgx = tl.sum(g * xhat, axis=0) / D
    dx = rstd * (g - mg - xhat * mgx)
    tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dscale_part_ptr + off, dy * xhat, mask=mask)


class LayerNormModulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        B, N, D = x.shape
        x, shift, scale = x.contiguous(), shift.contiguous(), scale.contiguous()
        y = torch.empty_like(x)
        mean = torch.empty(B * N, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        _ln_mod_fwd[(B * N,)](x, shift, scale, y, mean, rstd, N, D, eps, BLOCK_D=_pow2(D))
        ctx.save_for_backward(x, scale, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, mean, rstd = ctx.saved_tensors
        B, N, D = x.shape
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        part = torch.empty(B, N, D, device=x.device, dtype=torch.float32)
        _ln_mod_bwd[(B * N,)](x, scale, dy, mean, rstd, dx, part, N, D, BLOCK_D=_pow2(D))
        dscale = part.sum(1).to(scale.dtype)
        dshift = dy.float().sum(1).to(scale.dtype)
        return dx, dshift, dscale, None


def layernorm_modulate(x, shift, scale, eps=1e-6):
    return LayerNormModulate.apply(x, shift, scale, float(eps))


# ----------------------------------------------------------------------------- GroupNorm + SiLU

@triton.jit
def _gn_silu_fwd(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, C, HW, G, eps,
                 BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    pid = tl.program_id(0)          # one (example, group)
    n, g = pid // G, pid % G
    cg = C // G
    ci = tl.arange(0, BLOCK_C)
    hw = tl.arange(0, BLOCK_HW)
    cmask = ci < cg
    mask = cmask[:, None] & (hw[None, :] < HW)
    base = (n.to(tl.int64) * C + g * cg) * HW
    off = base + ci[:, None] * HW + hw[None, :]
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    cnt = cg * HW
    mean = tl.sum(tl.sum(x, axis=1), axis=0) / cnt
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(tl.sum(xc * xc, axis=1), axis=0) / cnt
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + g * cg + ci, mask=cmask, other=1.0).to(tl.float32)
    bb = tl.load(b_ptr + g * cg + ci, mask=cmask, other=0.0).to(tl.float32)
    a = xc * rstd * w[:, None] + bb[:, None]
    y = a / (1.0 + tl.exp(-a))
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + pid, mean)
    tl.store(rstd_ptr + pid, rstd)


@triton.jit
def _gn_silu_bwd(x_ptr, w_ptr, b_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_part_ptr, db_part_ptr, C, HW, G,
                 BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    pid = tl.program_id(0)
    n, g = pid // G, pid % G
    cg = C // G
    ci = tl.arange(0, BLOCK_C)
    hw = tl.arange(0, BLOCK_HW)
    cmask = ci < cg
    mask = cmask[:, None] & (hw[None, :] < HW)
    base = (n.to(tl.int64) * C + g * cg) * HW
    off = base + ci[:, None] * HW + hw[None, :]
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + off, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + pid)
    rstd = tl.load(rstd_ptr + pid)
    w = tl.load(w_ptr + g * cg + ci, mask=cmask, other=0.0).to(tl.float32)
    bb = tl.load(b_ptr + g * cg + ci, mask=cmask, other=0.0).to(tl.float32)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    a = xhat * w[:, None] + bb[:, None]
    sig = 1.0 / (1.0 + tl.exp(-a))
    ga = tl.where(mask, dy * sig * (1.0 + a * (1.0 - sig)), 0.0)    # d silu(a) / da = s (1 + a (1 - s))
    tl.store(dw_part_ptr + n * C + g * cg + ci, tl.sum(ga * xhat, axis=1), mask=cmask)
    tl.store(db_part_ptr + n * C + g * cg + ci, tl.sum(ga, axis=1), mask=cmask)
    dxhat = ga * w[:, None]
    cnt = cg * HW
    m1 = tl.sum(tl.sum(dxhat, axis=1), axis=0) / cnt
    m2 = tl.sum(tl.sum(dxhat * xhat, axis=1), axis=0) / cnt
    dx = rstd * (dxhat - m1 - xhat * m2)
    tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=mask)


class GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        N, C, H, W = x.shape
        x = x.contiguous()
        y = torch.empty_like(x)
        mean = torch.empty(N * num_groups, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        bc, bhw = _pow2(C // num_groups), _pow2(H * W)
        _gn_silu_fwd[(N * num_groups,)](x, weight, bias, y, mean, rstd, C, H * W, num_groups, eps,
                                        BLOCK_C=bc, BLOCK_HW=bhw)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups = num_groups
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        N, C, H, W = x.shape
        G = ctx.num_groups
        dx = torch.empty_like(x)
        dw = torch.empty(N, C, device=x.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        _gn_silu_bwd[(N * G,)](x, weight, bias, dy.contiguous(), mean, rstd, dx, dw, db, C, H * W, G,
                               BLOCK_C=_pow2(C // G), BLOCK_HW=_pow2(H * W))
        return dx, dw.sum(0).to(weight.dtype), db.sum(0).to(bias.dtype), None, None


def groupnorm_silu(x, num_groups, weight, bias, eps=1e-5):
    return GroupNormSiLU.apply(x, weight, bias, int(num_groups), float(eps))
