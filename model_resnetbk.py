"""
ResNet-BK: a language model with no attention. Each block mixes positions only through the "BK-Core", the diagonal
of the resolvent of a tridiagonal "Hamiltonian" whose potential is computed from the tokens.

    h = TokEmb(x) + PosEmb(0..T-1)                          # learned positions
    for each of L blocks:  h = h + Layer(LayerNorm(h))      # pre-norm
    logits = Linear(LayerNorm(h))                           # untied head, with bias

    Layer(u):                                               # u (B,T,D)
        f = MoE(u)                                          # E experts D->2D->D, top-k router
        v = clamp(Linear_{D->1}(f), -3, 3)                  # (B,T) one real "potential" per position
        s = (-2 + v) - z,  z = 1j                           # H = Laplacian (diag -2, off-diagonals 1) + diag(v)
        g = BK-Core(s)                                      # (B,T) complex, see below
        return f + bk_scale * Linear_{2->D}(clamp([Re g, Im g], -10, 10))

BK-Core. With s_i = a_i - z on the diagonal and 1 on both off-diagonals:
- causal (default): g_i = [(H_{0..i} - zI)^-1]_{ii}, the resolvent of the leading (i+1)x(i+1) block. The Schur
  complement gives the continued fraction g_i = 1 / (s_i - g_{i-1}), g_{-1} = 0, so g_i depends on v_0..v_i only.
  For Hermitian H and z = 1j, Im g > 0 and |g_i| <= 1/Im z = 1: it cannot overflow at any length.
- non-causal (the seed's, for reproduction only): G_ii = [(H - zI)^-1]_{ii}, the full diagonal, which depends on
  every v_j, so position i sees the tokens after it (its own target included). Computed stably as
  G_ii = 1 / (s_i - gL_{i-1} - gR_{i+1}), gL the causal recurrence from the left, gR the same from the right.

This is the seed model of ../shared/SEEDS.md §2 (4,146,120 parameters at its config) with its bugs fixed: causal by
default, exact gradients, a router that learns, any length <= block_size, and its optimisation flags made real.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

BK_Z = 1j  # the spectral shift z of the seed; |g| <= 1/Im z keeps every value bounded


# ----------------------------------------------------------------------------------------------------------------
# BK-Core: the causal recurrence three ways (sequential loop, log-depth scan, exact O(N) backward), the seed's
# non-causal full diagonal, and the seed's (wrong) backward for faithful reproduction.

def bk_causal_sequential(s, g0=None, keep=None):
    """
    The causal BK recurrence, one position at a time:  g_i = 1 / (s_i - g_{i-1}),  g_{-1} = g0 (0 by default).

    s:    (B, N) complex, s_i = a_i - z (diagonal of H - zI)
    g0:   (B,) complex or None, the g carried in from before position 0 (streaming)
    keep: (B, N) bool or None. Where keep is False, position i is skipped in the chain: g_i = g_{i-1}
          (as if row/column i were removed from H; used by the sparse BK flag)
    returns g: (B, N) complex, g_i = [(H_{0..i} - zI)^-1]_{ii}
    N steps of O(B) work; fastest for short sequences on a CPU.
    """
    g = torch.zeros_like(s[:, 0]) if g0 is None else g0.to(s.dtype)
    out = []
    if keep is None:
        for s_i in s.unbind(1):
            g = torch.reciprocal(s_i - g)
            out.append(g)
    else:
        for s_i, k_i in zip(s.unbind(1), keep.unbind(1)):
            g = torch.where(k_i, torch.reciprocal(s_i - g), g)
            out.append(g)
    return torch.stack(out, 1)


def _max_abs(*xs):
    """max over |Re|, |Im| of the complex tensors xs, elementwise over (B, N): a positive normaliser (B, N)."""
    return torch.cat([torch.view_as_real(x) for x in xs], -1).abs().amax(-1)


def bk_causal_scan(s, g0=None, keep=None):
    """
    The causal BK recurrence as a log-depth (Hillis-Steele) scan of 2x2 complex matrix products.

    Write g_i = p_i / q_i. Then (p_i, q_i)^T = M_i (p_{i-1}, q_{i-1})^T with M_i = [[0, 1], [-1, s_i]]
    (p_i = q_{i-1}, q_i = s_i q_{i-1} - p_{i-1} gives p_i/q_i = 1/(s_i - g_{i-1})), starting from (g0, 1).
    Matrix products are associative, so all prefix products P_i = M_i M_{i-1} ... M_0 come from log2(N) rounds of
    P_i <- P_i P_{i-d} (d = 1, 2, 4, ...), each a batched elementwise op over (B, N). Only the ratio p/q matters, so
    every partial product is divided by its largest entry, which keeps it finite at any N.
    keep False makes M_i the identity (position skipped, g_i = g_{i-1}).

    s, g0, keep, returns: as bk_causal_sequential. O(N log N) work, log2(N) sequential steps: the GPU path.
    """
    B, N = s.shape
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    a, b, c, d = zero, one, -one, s          # M_i = [[a, b], [c, d]]
    if keep is not None:
        a, b, c, d = (torch.where(keep, m, i) for m, i in ((a, one), (b, zero), (c, zero), (d, one)))
    step = 1
    while step < N:
        a1, b1, c1, d1 = (m[:, step:] for m in (a, b, c, d))      # later factors M_i ...
        a0, b0, c0, d0 = (m[:, :-step] for m in (a, b, c, d))     # ... times earlier ones M_{i-step}
        na, nb = a1 * a0 + b1 * c0, a1 * b0 + b1 * d0
        nc, nd = c1 * a0 + d1 * c0, c1 * b0 + d1 * d0
        scale = _max_abs(na, nb, nc, nd)
        a, b, c, d = (torch.cat([m[:, :step], n / scale], 1) for m, n in ((a, na), (b, nb), (c, nc), (d, nd)))
        step *= 2
    if g0 is None:                            # (p, q) = P_i (0, 1)^T
        return b / d
    g0 = g0.to(s.dtype).unsqueeze(1)          # (p, q) = P_i (g0, 1)^T
    return (a * g0 + b) / (c * g0 + d)


def linear_recurrence_sequential(coef, x):
    """y_i = coef_i * y_{i-1} + x_i, y_{-1} = 0, along dim 1. coef, x: (B, N) (complex or real) -> y (B, N)."""
    y = torch.zeros_like(x[:, 0])
    out = []
    for c_i, x_i in zip(coef.unbind(1), x.unbind(1)):
        y = c_i * y + x_i
        out.append(y)
    return torch.stack(out, 1)


def linear_recurrence_scan(coef, x):
    """The same as linear_recurrence_sequential in log2(N) Hillis-Steele rounds of composing affine maps
    (c, x) o (c', x') = (c c', c x' + x). Products of |coef| <= 1 may underflow to 0, which is their true limit."""
    N = x.shape[1]
    step = 1
    while step < N:
        x = torch.cat([x[:, :step], x[:, step:] + coef[:, step:] * x[:, :-step]], 1)
        coef = torch.cat([coef[:, :step], coef[:, step:] * coef[:, :-step]], 1)
        step *= 2
    return x


class BKCausalAnalytic(torch.autograd.Function):
    """
    The causal BK recurrence with its exact O(N) backward (instead of autograd through the loop or scan).

    Forward g_i = 1/(s_i - g_{i-1}) is holomorphic in (s_i, g_{i-1}):  dg_i/ds_i = -g_i^2,  dg_i/dg_{i-1} = g_i^2.
    PyTorch's complex autograd passes the conjugate Wirtinger gradient grad_w = dL/dRe(w) + 1j dL/dIm(w) of a real
    loss L, and for a holomorphic map w -> f(w) it propagates grad_w = conj(f'(w)) * grad_f. So the total adjoint
    lam_i = grad of L through g_i obeys the backward linear recurrence
        lam_{N-1} = grad_g_{N-1},   lam_i = grad_g_i + conj(g_{i+1}^2) lam_{i+1},
    and grad_s_i = conj(-g_i^2) lam_i, grad_g0 = conj(g_0^2) lam_0. A skipped position (keep False) has
    dg_i/dg_{i-1} = 1 and no dependence on s_i. Memory: g alone (B, N). Checked by torch.autograd.gradcheck.

    apply(s, g0, keep, scan): s (B, N) complex; g0 (B,) complex or None; keep (B, N) bool or None;
    scan: True -> log-depth scans forward and backward, False -> sequential loops. Returns g (B, N) complex.
    """

    @staticmethod
    def forward(ctx, s, g0, keep, scan):
        g = (bk_causal_scan if scan else bk_causal_sequential)(s, g0, keep)
        ctx.save_for_backward(g, keep)
        ctx.scan, ctx.has_g0 = scan, g0 is not None
        return g

    @staticmethod
    def backward(ctx, grad_g):
        g, keep = ctx.saved_tensors
        dg_dprev = g * g if keep is None else torch.where(keep, g * g, torch.ones_like(g))    # c_i = dg_i/dg_{i-1}
        # reverse-time recurrence lam_i = grad_i + conj(c_{i+1}) lam_{i+1}, run forward on flipped sequences
        coef = torch.cat([dg_dprev[:, 1:].conj(), torch.zeros_like(g[:, :1])], 1).flip(1)
        recurrence = linear_recurrence_scan if ctx.scan else linear_recurrence_sequential
        lam = recurrence(coef, grad_g.flip(1)).flip(1)
        grad_s = -(g * g).conj() * lam
        if keep is not None:
            grad_s = torch.where(keep, grad_s, torch.zeros_like(grad_s))
        grad_g0 = dg_dprev[:, 0].conj() * lam[:, 0] if ctx.has_g0 and ctx.needs_input_grad[1] else None
        return grad_s, grad_g0, None, None


def bk_full_diagonal(s, causal_fn):
    """
    The full (non-causal) resolvent diagonal G_ii = [(H - zI)^-1]_{ii} of the seed, computed stably:
        G_ii = 1 / (s_i - gL_{i-1} - gR_{i+1}),   gL = causal recurrence left-to-right, gR = right-to-left,
    gL_{-1} = gR_N = 0 (Schur complement of the two sides of position i). The seed's theta/phi determinant
    products (seed_reference.py) give the same values but overflow complex128 for N >= ~1000.
    s (B, N) complex; causal_fn(s) -> g (B, N), one of the causal recurrences (sets the gradient path).
    """
    gL = causal_fn(s)
    gR = causal_fn(s.flip(1)).flip(1)
    zero = torch.zeros_like(s[:, :1])
    return torch.reciprocal(s - torch.cat([zero, gL[:, :-1]], 1) - torch.cat([gR[:, 1:], zero], 1))


class BKSeedBackward(torch.autograd.Function):
    """
    The seed's BK-Core backward, kept only to reproduce the seed's training (bk_grad='seed'); it is wrong.
    Forward: g from a correct forward (`compute(v)`), v the real potential diagonal (B, N).
    Backward, as the seed's BKCoreFunction: with gG = dL/dRe g + 1j dL/dIm g (the seed stacks [Re g, Im g]),
        theoretical = -Re(gG * g^2)                      # diagonal term only, and g^2 where conj(g^2) is right
        hypothesis7 = -Re(gG / g2s),  g2s = g^2 rescaled to magnitude 1e-3 where |g^2| < 1e-3, then + 1e-6
        grad_v = 0.5 * theoretical + 0.5 * hypothesis7, non-finite -> 0, clamped to [-1000, 1000]
    It drops every off-diagonal term dG_ii/dv_j (j != i), conjugates wrongly and blends in an ad-hoc inverse
    term; its cosine similarity to the true gradient is 0.29-0.45 (SEEDS.md bug 3).
    apply(v, compute): returns g (B, N) complex.
    """

    @staticmethod
    def forward(ctx, v, compute):
        with torch.no_grad():
            g = compute(v)
        ctx.save_for_backward(g)
        return g

    @staticmethod
    def backward(ctx, grad_g):
        (g,) = ctx.saved_tensors
        g2 = g * g
        mag = g2.abs()
        g2s = torch.where(mag < 1e-3, g2 / (mag + 1e-9) * 1e-3, g2)
        theoretical = -(grad_g * g2).real
        hypothesis7 = -(grad_g / (g2s + 1e-6)).real
        grad_v = 0.5 * theoretical + 0.5 * hypothesis7
        grad_v = torch.where(torch.isfinite(grad_v), grad_v, torch.zeros_like(grad_v)).clamp(-1000.0, 1000.0)
        return grad_v, None


def bk_core(v, causal=True, grad='autograd', scan='auto', g0=None, keep=None, z=BK_Z):
    """
    The BK-Core of one layer: g = diag of the resolvent, causal or full, from the real potential v.

    v (B, N) real: the clamped potential, diagonal of H is a = -2 + v; computed in float32/complex64 (float64 /
      complex128 if v is float64) with autocast off, whatever the surrounding precision.
    causal: True -> g_i = [(H_{0..i} - zI)^-1]_{ii}; False -> the seed's full diagonal (sees the future).
    grad: 'autograd' (through the loop/scan), 'analytic' (BKCausalAnalytic, exact O(N)), 'seed' (the seed's wrong
      diagonal blend, BKSeedBackward).
    scan: 'sequential', 'parallel' (log-depth scan), 'auto' (parallel on accelerators, and on a CPU for N > 512,
      where it measured faster than the loop; see bench_bkcore.py).
    g0 (B,) complex, keep (B, N) bool: carried state and skip mask of the causal chain (see bk_causal_sequential).
    returns g (B, N) complex.
    """
    if scan not in ('auto', 'sequential', 'parallel'):
        raise ValueError(f"bk_scan must be 'auto', 'sequential' or 'parallel', got {scan!r}")
    if grad not in ('autograd', 'analytic', 'seed'):
        raise ValueError(f"bk_grad must be 'autograd', 'analytic' or 'seed', got {grad!r}")
    if not causal and (g0 is not None or keep is not None):
        raise ValueError("the non-causal BK-Core has no carried state or skip mask")
    N = v.shape[1]
    use_scan = scan == 'parallel' or (scan == 'auto' and (v.device.type != 'cpu' or N > 512))
    with torch.autocast(v.device.type, enabled=False):
        v = v if v.dtype == torch.float64 else v.float()

        def causal_fn(s_, g0_=None, keep_=None):
            if grad == 'analytic':
                return BKCausalAnalytic.apply(s_, g0_, keep_, use_scan)
            return (bk_causal_scan if use_scan else bk_causal_sequential)(s_, g0_, keep_)

        def compute(v_):
            s_ = (v_ - 2.0) - z                  # real - complex -> complex64 (complex128 for float64)
            return causal_fn(s_, g0, keep) if causal else bk_full_diagonal(s_, causal_fn)

        if grad == 'seed':
            return BKSeedBackward.apply(v, compute)
        return compute(v)
