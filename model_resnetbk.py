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

This is the ResNet-BK seed's model (4,146,120 parameters at its config) with its bugs fixed (seeds/README.md):
causal by default, exact gradients, a router that learns, any length <= block_size, and its optimisation flags made
real.

Reproduction only. Three options bring back one seed bug each; they exist to rerun the seed, not to train with:
    bk_causal=False   the full resolvent diagonal: position i depends on every token after it, its own target
                      included, so the training loss reads the answer (seeds/README.md, bug 1)
    bk_grad='seed'    the seed's BK-Core backward: diagonal terms only, the wrong conjugate and an ad-hoc blended
                      inverse term, far from the true gradient (bug 3); the seed's code in seeds/resnetbk.py
                      borrows this backward (BKSeedBackward), so its formula is written once, here
    router='seed'     the gate is a softmax over the chosen logits only, exactly 1 at top_k=1, so the router gets
                      no gradient and never learns; no balance loss either, the seed had none (bug 4)
"""
import math
from collections import namedtuple
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import bk_kernel
from linear_ce import head_loss
from model_base import LM

BK_Z = 1j  # the spectral shift z of the seed; |g| <= 1/Im z keeps every value bounded


# ----------------------------------------------------------------------------------------------------------------
# BK-Core: the causal recurrence three ways (sequential loop, log-depth scan, two-level chunks; the loop also in C),
# its exact O(N) backward, the seed's non-causal full diagonal, and the seed's (wrong) backward for reproduction.
# bk_core picks the form (bk_scan='auto'); bench/bkcore.py times them, results/ holds the numbers.

def bk_causal_sequential(s, g0=None, keep=None):
    """
    The causal BK recurrence, one position at a time:  g_i = 1 / (s_i - g_{i-1}),  g_{-1} = g0 (0 by default).

    s:    (B, N) complex, s_i = a_i - z (diagonal of H - zI)
    g0:   (B,) complex or None, the g carried in from before position 0 (streaming)
    keep: (B, N) bool or None. Where keep is False, position i is skipped in the chain: g_i = g_{i-1}
          (as if row/column i were removed from H; used by the sparse BK flag)
    returns g: (B, N) complex, g_i = [(H_{0..i} - zI)^-1]_{ii}
    N steps of O(B) work: the reference the other forms are tested against.
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


def _chunk_len(N, limit_growth=None):
    """Chunk length K of the chunked recurrences: ~sqrt(1.5 N) balances the K steps inside the chunks against the
    N/K steps across them (which cost ~1.5x more ops each); capped at limit_growth when given."""
    K = max(1, min(int(math.sqrt(1.5 * N)) + 1, N))
    return K if limit_growth is None else max(1, min(K, limit_growth))


def bk_causal_chunked(s, g0=None, keep=None):
    """
    The causal BK recurrence in two levels, for CPUs: ~3 sqrt(N) sequential steps instead of N.

    Cut the sequence into C chunks of K positions. Inside a chunk, g_i is a Moebius function of the g entering the
    chunk: g_i = (A_i . (g_in, 1)) / (Cd_i . (g_in, 1)), where [[A_i], [Cd_i]] (rows) is the product of the chunk's
    M_j = [[0, 1], [-1, s_j]] up to i (see bk_causal_scan). The rows follow Cd_i = s_i Cd_{i-1} - A_{i-1},
    A_i = Cd_{i-1} (the theta recurrence of the seed, restarted in every chunk, for two starting vectors), from
    A = (1, 0), Cd = (0, 1). So: (1) K steps over all chunks at once (lanes B x C) give every A_i, Cd_i;
    (2) C steps carry g across the chunk ends; (3) one vectorised Moebius evaluation gives every g_i.
    The products are not normalised, so K is capped such that (max|s| + 1)^K stays below 1e30 (complex64) or 1e290
    (complex128); within that, the theta recurrence of the dominant solution is stable (tests: error ~2e-7 in
    float32 at N = 4096). keep False = identity factor (position skipped).
    s, g0, keep, returns: as bk_causal_sequential.
    """
    B, N = s.shape
    max_s = 2 ** 0.5 * torch.view_as_real(s).abs().amax().item() if N else 0.0      # >= max|s|, cheaper
    limit = 1e30 if s.dtype == torch.complex64 else 1e290
    # a NaN/inf in s leaves K uncapped: the output is then non-finite, as from the other forms, not an exception
    K = _chunk_len(N, int(math.log(limit) / math.log(max_s + 1.0)) if math.isfinite(max_s) else None)
    C = -(-N // K)
    pad = C * K - N
    if pad:                                   # padding at the end changes nothing before it
        s = torch.cat([s, s.new_ones(B, pad)], 1)
        keep = None if keep is None else torch.cat([keep, keep.new_ones(B, pad)], 1)
    ab = s.new_zeros(B, C, 2)
    cd = s.new_zeros(B, C, 2)
    ab[..., 0] = 1
    cd[..., 1] = 1
    rows_ab, rows_cd = [], []
    s_k = s.view(B, C, K, 1).expand(B, C, K, 2).contiguous().unbind(2)     # the lanes' shape: no broadcasting
    if keep is None:
        for sk in s_k:
            ab, cd = cd, sk * cd - ab
            rows_ab.append(ab)
            rows_cd.append(cd)
    else:
        for sk, kk in zip(s_k, keep.view(B, C, K, 1).unbind(2)):
            ab, cd = torch.where(kk, cd, ab), torch.where(kk, sk * cd - ab, cd)
            rows_ab.append(ab)
            rows_cd.append(cd)
    AB, CD = torch.stack(rows_ab, 2), torch.stack(rows_cd, 2)          # (B, C, K, 2)
    g = torch.zeros_like(s[:, 0]) if g0 is None else g0.to(s.dtype)
    g_in = [g]
    a_end, b_end = AB[:, :, -1].unbind(-1)
    c_end, d_end = CD[:, :, -1].unbind(-1)
    for a, b, c, d in zip(a_end.unbind(1)[:-1], b_end.unbind(1)[:-1], c_end.unbind(1)[:-1], d_end.unbind(1)[:-1]):
        g = torch.addcmul(b, a, g) / torch.addcmul(d, c, g)
        g_in.append(g)
    g_in = torch.stack(g_in, 1).unsqueeze(2)                            # (B, C, 1)
    out = torch.addcmul(AB[..., 1], AB[..., 0], g_in) / torch.addcmul(CD[..., 1], CD[..., 0], g_in)
    return out.reshape(B, C * K)[:, :N]


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


def linear_recurrence_chunked(coef, x):
    """The same as linear_recurrence_sequential in ~2 sqrt(N) steps: inside chunks of K, y_i = Y_i + P_i y_in with
    Y the chunk-local recurrence from 0 and P_i = cumprod of coef since the chunk start; then C steps carry y_in."""
    B, N = x.shape
    K = _chunk_len(N)
    C = -(-N // K)
    pad = C * K - N
    if pad:
        coef, x = torch.cat([coef, coef.new_zeros(B, pad)], 1), torch.cat([x, x.new_zeros(B, pad)], 1)
    cc, xc = coef.view(B, C, K), x.view(B, C, K)
    P = torch.cumprod(cc, 2)
    y = torch.zeros_like(xc[:, :, 0])
    Y = []
    for c_k, x_k in zip(cc.unbind(2), xc.unbind(2)):
        y = torch.addcmul(x_k, c_k, y)
        Y.append(y)
    Y = torch.stack(Y, 2)                                               # (B, C, K)
    y_in = [torch.zeros_like(x[:, 0])]
    for y_end, p_end in zip(Y[:, :-1, -1].unbind(1), P[:, :-1, -1].unbind(1)):
        y_in.append(torch.addcmul(y_end, p_end, y_in[-1]))
    y_in = torch.stack(y_in, 1).unsqueeze(2)
    return torch.addcmul(Y, P, y_in).reshape(B, C * K)[:, :N]


# scan name -> the form of the causal BK recurrence and of the linear recurrence of its adjoint (the backward)
Scan = namedtuple('Scan', 'bk adjoint')
SCANS = {'sequential': Scan(bk_causal_sequential, linear_recurrence_sequential),
         'parallel': Scan(bk_causal_scan, linear_recurrence_scan),
         'chunked': Scan(bk_causal_chunked, linear_recurrence_chunked),
         'c': Scan(bk_kernel.bk_causal, bk_kernel.linear_recurrence)}      # the sequential loops in C, CPU only
GRADS = ('autograd', 'analytic', 'seed')


def check_bk_options(grad, scan):
    """Raise ValueError unless (bk_grad, bk_scan) is a valid pair; the one check for bk_core and ResNetBK."""
    if scan not in ('auto',) + tuple(SCANS):
        raise ValueError(f"bk_scan must be 'auto', {', '.join(map(repr, SCANS))}, not {scan!r}")
    if grad not in GRADS:
        raise ValueError(f"bk_grad must be {', '.join(map(repr, GRADS))}, not {grad!r}")
    if scan == 'c' and grad == 'autograd':
        raise ValueError("bk_scan='c' has no autograd graph: use bk_grad='analytic' (or 'seed')")


class BKCausalAnalytic(torch.autograd.Function):
    """
    The causal BK recurrence with its exact O(N) backward (instead of autograd through the loop or scans).

    Forward g_i = 1/(s_i - g_{i-1}) is holomorphic in (s_i, g_{i-1}):  dg_i/ds_i = -g_i^2,  dg_i/dg_{i-1} = g_i^2.
    PyTorch's complex autograd passes the conjugate Wirtinger gradient grad_w = dL/dRe(w) + 1j dL/dIm(w) of a real
    loss L, and for a holomorphic map w -> f(w) it propagates grad_w = conj(f'(w)) * grad_f. So the total adjoint
    lam_i = grad of L through g_i obeys the backward linear recurrence
        lam_{N-1} = grad_g_{N-1},   lam_i = grad_g_i + conj(g_{i+1}^2) lam_{i+1},
    and grad_s_i = conj(-g_i^2) lam_i, grad_g0 = conj(g_0^2) lam_0. A skipped position (keep False) has
    dg_i/dg_{i-1} = 1 and no dependence on s_i. Memory: g alone (B, N). Checked by torch.autograd.gradcheck.

    apply(s, g0, keep, scan, z=None): s (B, N) complex; g0 (B,) complex or None; keep (B, N) bool or None;
    scan: 'sequential' | 'parallel' | 'chunked' | 'c', the form of both recurrences (see SCANS). Returns g (B, N)
    complex.
    With z given, the first argument is the real potential v instead and s = (v - 2) - z is formed inside, so
    grad_v = Re(grad_s) (v is real): the same values, two autograd nodes fewer (bk_core's causal path).
    """

    @staticmethod
    def forward(ctx, s, g0, keep, scan, z=None):
        if z is not None:
            s = (s - 2.0) - z
        g = SCANS[scan].bk(s, g0, keep)
        ctx.save_for_backward(g, keep)
        ctx.scan, ctx.has_g0, ctx.real_input = scan, g0 is not None, z is not None
        return g

    @staticmethod
    def backward(ctx, grad_g):
        g, keep = ctx.saved_tensors
        g2 = g * g
        dg_dprev = g2 if keep is None else torch.where(keep, g2, torch.ones_like(g))    # c_i = dg_i/dg_{i-1}
        # reverse-time recurrence lam_i = grad_i + conj(c_{i+1}) lam_{i+1}, run forward on flipped sequences
        coef = torch.cat([dg_dprev[:, 1:].conj(), torch.zeros_like(g[:, :1])], 1).flip(1)
        lam = SCANS[ctx.scan].adjoint(coef, grad_g.flip(1)).flip(1)
        grad_s = -g2.conj() * lam
        if keep is not None:
            grad_s = torch.where(keep, grad_s, torch.zeros_like(grad_s))
        if ctx.real_input:
            grad_s = grad_s.real
        grad_g0 = dg_dprev[:, 0].conj() * lam[:, 0] if ctx.has_g0 and ctx.needs_input_grad[1] else None
        return grad_s, grad_g0, None, None, None


def bk_full_diagonal(s, causal_fn):
    """
    The full (non-causal) resolvent diagonal G_ii = [(H - zI)^-1]_{ii} of the seed, computed stably:
        G_ii = 1 / (s_i - gL_{i-1} - gR_{i+1}),   gL = causal recurrence left-to-right, gR = right-to-left,
    gL_{-1} = gR_N = 0 (Schur complement of the two sides of position i). The seed's theta/phi determinant
    products (seeds/resnetbk.py) give the same values but overflow complex128 for N >= ~1000.
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
    term; its cosine similarity to the true gradient is 0.29-0.45 (seeds/README.md, bug 3).
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


def bk_core(v, causal=True, grad='analytic', scan='auto', g0=None, keep=None, z=BK_Z):
    """
    The BK-Core of one layer: g = diag of the resolvent, causal or full, from the real potential v.

    v (B, N) real: the clamped potential, diagonal of H is a = -2 + v; computed in float32/complex64 (float64 /
      complex128 if v is float64) with autocast off, whatever the surrounding precision.
    causal: True -> g_i = [(H_{0..i} - zI)^-1]_{ii}; False -> the seed's full diagonal (sees the future).
    grad: 'autograd' (through the loop/scan), 'analytic' (BKCausalAnalytic, exact O(N)), 'seed' (the seed's wrong
      diagonal blend, BKSeedBackward).
    scan: 'sequential' (N steps), 'parallel' (log2 N steps of the Hillis-Steele scan, O(N log N) work),
      'chunked' (~3 sqrt(N) steps, O(N) work), 'c' (the sequential loops as a C kernel, bk_kernel.py; CPU only,
      no autograd graph). 'auto' on a CPU = 'c' when the kernel builds (a C compiler is present) and grad is not
      'autograd', else 'chunked'; on a GPU 'chunked' below N = 1024 and 'parallel' from there (the fastest forms in
      bench/bkcore.py; its numbers are in results/).
    g0 (B,) complex, keep (B, N) bool: carried state and skip mask of the causal chain (see bk_causal_sequential).
    returns g (B, N) complex.
    """
    check_bk_options(grad, scan)
    if not causal and (g0 is not None or keep is not None):
        raise ValueError("the non-causal BK-Core has no carried state or skip mask")
    if scan == 'auto' and v.device.type != 'cpu':
        scan = 'parallel' if v.shape[1] >= 1024 else 'chunked'
    elif scan == 'auto':
        scan = 'c' if grad != 'autograd' and bk_kernel.available() else 'chunked'
    with torch.autocast(v.device.type, enabled=False):
        v = v if v.dtype == torch.float64 else v.float()

        def causal_fn(s_, g0_=None, keep_=None):
            if grad == 'analytic':
                return BKCausalAnalytic.apply(s_, g0_, keep_, scan)
            return SCANS[scan].bk(s_, g0_, keep_)

        def compute(v_):
            if causal and grad == 'analytic':
                return BKCausalAnalytic.apply(v_, g0, keep, scan, z)
            s_ = (v_ - 2.0) - z                  # real - complex -> complex64 (complex128 for float64)
            return causal_fn(s_, g0, keep) if causal else bk_full_diagonal(s_, causal_fn)

        if grad == 'seed':
            return BKSeedBackward.apply(v, compute)
        return compute(v)


# ----------------------------------------------------------------------------------------------------------------
# The model

@dataclass
class ResNetBKConfig:
    vocab_size: int = 30000
    block_size: int = 128         # training window; forward() takes T <= block_size, forward_state() any T
    n_embd: int = 64
    n_layer: int = 4
    n_experts: int = 4
    top_k: int = 1
    dropout: float = 0.1          # inside the experts, as the seed
    bk_causal: bool = True        # False: the seed's full resolvent diagonal, which sees future tokens (reproduction)
    bk_grad: str = 'analytic'     # 'analytic' (exact O(N) adjoint, fastest) | 'autograd' | 'seed' (the seed's wrong one)
    bk_scan: str = 'auto'         # 'auto' | 'sequential' | 'parallel' (log-depth scan) | 'chunked' (two-level) | 'c'
    router: str = 'softmax'       # 'softmax': gate = router probability of the chosen expert (learns);
                                  # 'seed': softmax over the chosen logits only (a constant 1 at top_k=1)
    balance_loss: float = 0.01    # Switch load-balancing loss coefficient (training loss only); 0 = off; none with
                                  # router='seed' (the seed had none, and it would teach the router)
    use_act: bool = False         # adaptive computation time over the blocks, ponder cost in the training loss
    act_threshold: float = 0.99   # a token halts once its cumulative halting probability reaches this
    act_ponder_cost: float = 0.01
    use_multi_scale: bool = False  # each block adds a half-resolution BK layer over causally pooled pairs
    use_sparse_bk: bool = False   # learned mask of the positions where the BK chain runs; causal interpolation elsewhere
    sparse_bk_target: float = 0.5  # target fraction of positions where the BK-Core is computed
    sparse_bk_loss: float = 0.1   # coefficient of (mean mask probability - target)^2 in the training loss
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_embd=16, n_layer=2, n_experts=2)


def add_aux(aux, name, value):
    """aux[name] += value: the auxiliary training losses of all layers, by name."""
    aux[name] = aux[name] + value if name in aux else value


class MoE(nn.Module):
    """
    Mixture of experts, top-k routing. x (B, T, D) -> y (B, T, D), y_t = sum_{e in topk(r_t)} gate_{t,e} Expert_e(x_t)
    with r_t = Router(x_t) (E logits) and Expert_e = Linear(D, 2D) -> ReLU -> Dropout -> Linear(2D, D).
    router='softmax': gate_{t,e} = softmax(r_t)_e over all E experts, so the router gets gradient from the loss.
    router='seed':    gate = softmax over the k chosen logits only; at top_k=1 it is exactly 1 and the router never
                      learns (reproduction only, see the module docstring).
    Each expert runs only on its tokens (gather, Linear, scatter-add). Also returns the Switch Transformer
    load-balancing loss E * sum_e f_e P_e (f_e: fraction of routed slots to e, P_e: mean router probability),
    which is 1 for a uniform router and grows as routing collapses.
    """

    def __init__(self, config):
        super().__init__()
        D, E = config.n_embd, config.n_experts
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(D, 2 * D), nn.ReLU(), nn.Dropout(config.dropout),
                                                   nn.Linear(2 * D, D)) for _ in range(E))
        self.router = nn.Linear(D, E)
        self.top_k, self.router_mode = config.top_k, config.router

    def forward(self, x):
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        logits = self.router(xf).float()                                  # (M, E)
        probs = F.softmax(logits, dim=-1)
        top_logits, top_idx = torch.topk(logits, self.top_k, dim=-1)      # (M, k)
        gates = F.softmax(top_logits, dim=-1) if self.router_mode == 'seed' else probs.gather(1, top_idx)
        out = torch.zeros_like(xf)
        for e, expert in enumerate(self.experts):
            tok, slot = (top_idx == e).nonzero(as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, (expert(xf[tok]) * gates[tok, slot].unsqueeze(1)).to(out.dtype))
        E = len(self.experts)
        frac = torch.bincount(top_idx.flatten(), minlength=E).float() / top_idx.numel()
        balance = E * (frac * probs.mean(0)).sum()
        return out.view(B, T, D), balance


class BKLayer(nn.Module):
    """
    The seed's MoE-ResNet-BK layer: u (B, T, D) -> f + bk_scale * Linear_{2->D}(clamp([Re g, Im g], -10, 10)),
    f = MoE(u), g = BK-Core(v), v = clamp(Linear_{D->1}(f), -3, 3). bk_scale: a learnable scalar, init 1.

    use_sparse_bk: a mask m_t in {0, 1} from u_t (Linear_{D->1}, Gumbel-sigmoid noise while training, threshold 0.5,
    straight-through gradient of the soft value) chooses the positions where the BK chain runs: where m_t = 0 the
    position is removed from the chain (g_t = g_{t-1}, as if its row/column were not in H) and its features come
    from a causal interpolator instead, Conv1d(3 -> 2, kernel 3, left-padded) over [m Re g, m Im g, m] of positions
    t-2..t. A sparsity loss sparse_bk_loss * (mean sigmoid(logit) - sparse_bk_target)^2 pulls the kept fraction
    to the target. What this saves: nothing here. The skipped positions still cost a step of the chain (a masked
    step in the loop or an identity matrix in the scan), and the mask and interpolator add work. A compacted chain
    (gather kept positions, run, scatter) would cut the BK-Core's own cost by the skipped fraction, but the BK-Core
    is a small part of a training step at the seed config (lm_head holds ~97% of the FLOPs), so it is not implemented.
    The flag changes what the model computes (a learned, input-dependent sparse chain), not its speed.
    """

    def __init__(self, config):
        super().__init__()
        D = config.n_embd
        self.config = config
        self.moe = MoE(config)
        self.v_proj = nn.Linear(D, 1)
        self.out_proj = nn.Linear(2, D)
        self.bk_scale = nn.Parameter(torch.ones(()))
        if config.use_sparse_bk:
            self.mask_proj = nn.Linear(D, 1)
            self.interp = nn.Conv1d(3, 2, kernel_size=3)

    @staticmethod
    def flop_rows(group, cfg, B, N):
        """FLOPs of one BKLayer over B sequences of N as flops.Row: MoE (router softmax, top-k, balance 7 per
        logit), v_proj, the BK-Core (the causal recurrence 2 + 7 per position, the seed's full diagonal 25), the
        sparse BK parts if on, the output projection."""
        from flops import Row, elementwise, linear
        M, D, E, K = B * N, cfg.n_embd, cfg.n_experts, cfg.top_k
        drop = 2 * D if cfg.dropout > 0 else 0
        chain, core = (9, 'causal recurrence') if cfg.bk_causal else (25, 'full diagonal, seed')
        seed_gate = cfg.router == 'seed'
        rows = [linear(group, 'router Linear(D,E)', M, D, E),
                elementwise(group, 'router softmax, top-k, balance' + (', gate softmax' if seed_gate else ''),
                            M * (7 * E + (5 * K if seed_gate else 0))),
                Row(group, f'experts Linear(D,2D)-ReLU-Linear(2D,D), top_{K} of {E}', 8 * M * K * D * D,
                    M * K * (7 * D + drop), 16 * M * K * D * D, 2 * M * K * (7 * D + drop)),
                linear(group, 'v_proj Linear(D,1), clamp', M, D, 1, extra=M),
                elementwise(group, f'BK-Core ({core})', M * (chain + (1 if cfg.use_sparse_bk else 0)))]
        if cfg.use_sparse_bk:
            rows += [linear(group, 'sparse mask Linear(D,1), Gumbel-sigmoid, sparsity loss', M, D, 1, extra=11 * M),
                     Row(group, 'sparse interpolator Conv1d(3,2,3), mix', 36 * M, 11 * M, 72 * M, 22 * M)]
        rows.append(linear(group, 'output projection Linear(2,D), clamp, bk_scale, add', M, 2, D,
                           extra=2 * M + 2 * M * D))
        return rows

    def forward(self, u, state, aux):
        """u (B, T, D); state None (start) or {'g': (B,) complex, 'interp': (B, 3, 2)}; aux: dict name -> auxiliary
        training loss, summed over the layers (this one adds its terms). -> out (B, T, D), new state."""
        cfg = self.config
        f, balance = self.moe(u)
        if self.training and cfg.balance_loss > 0 and cfg.router != 'seed':
            add_aux(aux, 'balance', cfg.balance_loss * balance)
        v = torch.clamp(self.v_proj(f).squeeze(-1), -3.0, 3.0)
        keep = m = None
        if cfg.use_sparse_bk:
            logit = self.mask_proj(u).squeeze(-1).float()                      # (B, T)
            noisy = logit
            if self.training:                                                  # Gumbel-sigmoid: logistic noise
                uni = torch.rand_like(logit).clamp(1e-6, 1 - 1e-6)
                noisy = logit + torch.log(uni) - torch.log1p(-uni)
            soft = torch.sigmoid(noisy)
            keep = soft > 0.5
            m = (keep.float() + soft - soft.detach()).unsqueeze(-1)            # straight-through (B, T, 1)
            if self.training and cfg.sparse_bk_loss > 0:
                add_aux(aux, 'sparsity', cfg.sparse_bk_loss * (torch.sigmoid(logit).mean() - cfg.sparse_bk_target) ** 2)
        g0 = None if state is None else state['g']
        g = bk_core(v, causal=cfg.bk_causal, grad=cfg.bk_grad, scan=cfg.bk_scan, g0=g0, keep=keep)
        new_state = {'g': g[:, -1]}
        feats = torch.view_as_real(g)                                          # (B, T, 2) [Re g, Im g]
        if m is not None:
            x = torch.cat([feats * m, m], -1).transpose(1, 2)                  # (B, 3, T)
            past = x.new_zeros(x.shape[0], 3, 2) if state is None else state['interp'].to(x.dtype)
            x = torch.cat([past, x], 2)                                        # causal: left context only
            new_state['interp'] = x[:, :, -2:]
            interp = self.interp(x).transpose(1, 2).float()                    # (B, T, 2)
            feats = m * feats + (1 - m) * interp
        feats = torch.clamp(feats, -10.0, 10.0)
        return f + self.bk_scale * self.out_proj(feats), new_state


class Block(nn.Module):
    """
    Pre-norm residual block: h + Layer(LayerNorm(h)).

    use_multi_scale: before the full-resolution layer, u = LayerNorm(h) gets a half-resolution view of the past:
        c_j = w_0 * u_{2j} + w_1 * u_{2j+1}         (w = softmax of learned (2, D) weights; pair j is complete at 2j+1)
        y = BKLayer_coarse(c)                        (its own MoE and BK chain over the pairs, causal)
        u_t += Up(y_{j(t)})[parity of t],  j(t) = (t+1)//2 - 1   (the last pair complete at t; zeros before the first)
    Up = Linear(D, 2D), one D-vector per parity. Position t only uses pairs that end at or before t: causal.
    Cost: one more BK layer at half the positions, ~+50% of the layer work (not of the step: lm_head dominates);
    it buys a second chain whose steps span two tokens, not speed (the seed's "~2x speedup" cannot hold for a
    design that still runs the full-resolution layer).
    """

    def __init__(self, config):
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd)
        self.layer = BKLayer(config)
        if config.use_multi_scale:
            self.pool = nn.Parameter(torch.zeros(2, config.n_embd))
            self.coarse = BKLayer(config)
            self.up = nn.Linear(config.n_embd, 2 * config.n_embd)

    def multi_scale(self, u, state, aux):
        """u (B, T, D) -> coarse contribution (B, T, D), new state {'coarse', 'pending' (B, 0|1, D), 'last' (B, D)}."""
        B, T, D = u.shape
        if state is None:
            state = {'coarse': None, 'pending': u[:, :0], 'last': u.new_zeros(B, D)}
        p = state['pending'].shape[1]                              # 1 if the previous chunk ended mid-pair
        xs = torch.cat([state['pending'].to(u.dtype), u], 1)
        P = xs.shape[1] // 2
        w = F.softmax(self.pool, dim=0)                            # (2, D)
        c = (xs[:, :2 * P].reshape(B, P, 2, D) * w.to(u.dtype)).sum(2)
        y, coarse_state = c, state['coarse']
        if P > 0:
            y, coarse_state = self.coarse(c, coarse_state, aux)
        Y = torch.cat([state['last'].to(y.dtype).unsqueeze(1), y], 1)        # Y[k] = pair (first new pair - 1 + k)
        r = torch.arange(T, device=u.device)
        up = self.up(Y[:, (p + r + 1) // 2]).view(B, T, 2, D)               # pair complete at or before t
        parity = ((p + r) % 2).view(1, T, 1, 1).expand(B, T, 1, D)          # t odd: completes its pair
        out = up.gather(2, parity).squeeze(2)
        return out, {'coarse': coarse_state, 'pending': xs[:, 2 * P:], 'last': Y[:, -1]}

    def forward(self, h, state, aux):
        """h (B, T, D), state None or this block's dict -> h (B, T, D), new state."""
        u = self.ln(h)
        new_state = {}
        if hasattr(self, 'coarse'):
            extra, new_state['ms'] = self.multi_scale(u, None if state is None else state['ms'], aux)
            u = u + extra
        out, new_state['layer'] = self.layer(u, None if state is None else state['layer'], aux)
        return h + out, new_state


class ResNetBK(LM):
    """
    ResNet-BK language model (see the module docstring). PyTorch default initialisation, as the seed.

    use_act (adaptive computation time over the blocks, Graves 2016): after block l a halting unit gives
    p_l = sigmoid(Linear_{D->1}(h_l)) per token (bias init -2, so tokens start deep). A token halts at the first
    block where its cumulative p reaches act_threshold (or at the last block), using the remainder R = 1 - sum of
    its earlier p as the last weight; after halting its state stops updating. The output is the halting-weighted sum
    of its block states, and act_ponder_cost * mean(N + R) (N = blocks used) is added to the training loss.
    What it does not save: every block still runs on every position, because the next block's BK chain needs the
    states of all positions (halted ones frozen); on dense hardware skipping single tokens saves nothing. It gives a
    learned per-token depth, not speed.

    Precision, as GPT and New-LLM: the surrounding autocast (train.py's dtype) governs the dense parts (experts,
    projections, head), the BK-Core always runs in float32/complex64 with autocast off (bk_core), and logits are
    returned as float32. The seed's use_mixed_precision flag is train.py's dtype='bfloat16'.

    Streaming (forward_state), causal mode: the state holds, per block, the last g of its BK chain (plus the
    interpolator's last inputs with use_sparse_bk, the coarse chain, a half-finished pair and the last coarse output
    with use_multi_scale) and the absolute position. Every other part of the model is per position, so chunked
    calls give the same logits as one call. Past block_size the learned positions restart (position t uses
    wpe[t % block_size]) while the chains carry on: the model keeps its whole past, not a window.
    Non-causal (seed) mode has no recurrent state: the state is the last block_size tokens, recomputed each call.
    """

    # parameter name -> component of flops.py's parameter breakdown, first match
    PARAM_GROUPS = [(r'(wte|wpe)\.', 'embedding'), (r'(?:blocks|halt)\.(\d+)\.', 'layer {}'),
                    (r'ln_f\.', 'final norm'), (r'lm_head\.', 'lm_head')]

    @staticmethod
    def is_recurrent(config):
        """Causal: the chains' last g (and the multi-scale/sparse parts' state) carry the whole past, O(1) in its
        length. The non-causal seed mode has no state: each position sees its whole window."""
        return config.bk_causal

    def __init__(self, config):
        super().__init__()
        check_bk_options(config.bk_grad, config.bk_scan)
        if config.router not in ('softmax', 'seed'):
            raise ValueError(f"router must be 'softmax' or 'seed', not {config.router!r}")
        if not 1 <= config.top_k <= config.n_experts:
            raise ValueError(f"top_k must be between 1 and n_experts={config.n_experts}, not {config.top_k}")
        if config.bk_scan == 'c':
            try:
                bk_kernel.load()
            except RuntimeError as e:
                raise ValueError(str(e)) from None
        if config.use_sparse_bk and not config.bk_causal:
            raise ValueError("use_sparse_bk needs bk_causal=True (the seed's full diagonal has no chain to skip)")
        self.config = config
        D = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, D)
        self.wpe = nn.Embedding(config.block_size, D)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        if config.use_act:
            self.halt = nn.ModuleList(nn.Linear(D, 1) for _ in range(config.n_layer))
            for lin in self.halt:
                nn.init.constant_(lin.bias, -2.0)
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, config.vocab_size)
        self.last_aux = {}        # the last forward's auxiliary losses, detached (see forward)

    def _run(self, idx, states=None, pos0=0):
        """idx (B, T) at absolute positions pos0.. -> final hidden states (B, T, D) after ln_f, new block states,
        aux losses {name: scalar}."""
        B, T = idx.shape
        aux = {}
        states = states if states is not None else [None] * len(self.blocks)
        pos = (pos0 + torch.arange(T, device=idx.device)) % self.config.block_size
        h = self.wte(idx) + self.wpe(pos)
        new_states = []
        if not self.config.use_act:
            for block, st in zip(self.blocks, states):
                h, st = block(h, st, aux)
                new_states.append(st)
        else:
            h, new_states = self._run_act(h, states, aux)
        return self.ln_f(h), new_states, aux

    def _logits(self, h):
        return self.lm_head(h).float()

    def _run_act(self, h, states, aux):
        """Adaptive computation time over the blocks (see the class docstring). h (B, T, D) -> output (B, T, D)."""
        B, T, _ = h.shape
        cum = h.new_zeros(B, T, dtype=torch.float32)           # halting mass used so far
        running = torch.ones(B, T, dtype=torch.bool, device=h.device)
        out = torch.zeros_like(h, dtype=torch.float32)
        ponder = h.new_zeros(B, T, dtype=torch.float32)        # N + R per token
        new_states = []
        L = len(self.blocks)
        for l, (block, st) in enumerate(zip(self.blocks, states)):
            h_new, st = block(h, st, aux)
            new_states.append(st)
            h = torch.where(running.unsqueeze(-1), h_new, h)   # halted tokens stop updating
            p = torch.sigmoid(self.halt[l](h).squeeze(-1).float())
            halts = running & ((cum + p >= self.config.act_threshold) | (l == L - 1))
            remainder = 1.0 - cum
            w = torch.where(halts, remainder, torch.where(running, p, torch.zeros_like(p)))
            out = out + w.unsqueeze(-1) * h.float()
            ponder = ponder + running.float() + torch.where(halts, remainder, torch.zeros_like(p))
            cum = cum + w
            running = running & ~halts
        if self.training and self.config.act_ponder_cost > 0:
            add_aux(aux, 'ponder', self.config.act_ponder_cost * ponder.mean())
        return out.to(h.dtype), new_states

    def hidden(self, idx, aux=None):
        """idx (B, T) int64, T <= block_size -> the final hidden states ln_f(h) (B, T, D), what lm_head reads.
        aux: a dict that receives the auxiliary training losses (training mode, see forward). forward() builds on
        it; eval.py scores it with linear_ce.linear_score, without the (B, T, V) logits."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"cannot forward {T} positions, block_size is only {self.config.block_size} "
                             f"(use forward_state for longer sequences)")
        h, _, layer_aux = self._run(idx)
        if aux is not None:
            aux.update(layer_aux)
        return h

    def forward(self, idx, targets=None):
        """
        idx (B, T) int64 with T <= block_size, targets (B, T) or None -> logits (B, T, V) float32, loss.
        Training mode: loss = mean CE (ignore_index=-1) + sum of the auxiliary losses, the total to optimise, and,
        when gradients are on, the CE comes from linear_ce.py (its matmuls in autocast's dtype, as GPT's) and
        logits is None: the (B, T, V) logits are never formed (train.py only uses the loss; call model(idx) for
        logits). Eval mode: logits and the pure mean CE.
        Every call also sets self.last_aux = {name: float32 scalar, detached} for the auxiliary losses in the loss,
        summed over the layers and already scaled by their coefficients: 'balance' (balance_loss > 0 and
        router='softmax'), 'ponder' (use_act), 'sparsity' (use_sparse_bk); {} in eval mode or with none on. So
        CE = loss - sum(last_aux.values()), for logging CE beside the auxiliary terms.
        """
        aux = {}
        h = self.hidden(idx, aux)
        self.last_aux = {k: v.detach().float() for k, v in aux.items()}
        logits, loss = head_loss(h, self.lm_head, targets, self.training)
        if loss is not None and self.training and aux:
            loss = loss + sum(aux.values())
        return (None if logits is None else logits.float()), loss

    def forward_state(self, idx, state=None):
        """
        Streaming forward (eval mode). idx (B, T) continues the sequence summarised by state (None = the start).
        Causal: state = {'pos': tokens seen, 'blocks': per-block chain states}; any T, no window (see the class
        docstring). Non-causal (seed) mode: state = {'tokens': (B, <= block_size)}; the last block_size tokens are
        recomputed and the logits of the last min(T, block_size) positions returned.
        -> logits (B, T', V), new state
        """
        if not self.config.bk_causal:
            tokens = idx if state is None else torch.cat([state['tokens'], idx], 1)
            tokens = tokens[:, -self.config.block_size:]
            h, _, _ = self._run(tokens)
            return self._logits(h[:, -min(idx.shape[1], tokens.shape[1]):]), {'tokens': tokens}
        pos0 = 0 if state is None else state['pos']
        h, blocks, _ = self._run(idx, None if state is None else state['blocks'], pos0)
        return self._logits(h), {'pos': pos0 + idx.shape[1], 'blocks': blocks}

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules.
        The parallel forms of the BK recurrence (bk_scan) compute the same g with more work for fewer sequential
        steps; the O(N) recurrence is what is counted. Multi-scale: a coarse BKLayer over the T // 2 pairs."""
        from flops import Row, elementwise, linear
        M, D, V = B * T, cfg.n_embd, cfg.vocab_size
        rows = [Row('embedding', 'wte + wpe lookups, add', 0, M * D, 0, 2 * M * D)]
        for i in range(cfg.n_layer):
            g = f'layer {i}'
            rows.append(elementwise(g, 'LayerNorm', 7 * M * D))
            P = T // 2
            if cfg.use_multi_scale and P > 0:
                rows.append(elementwise(g, 'multi-scale pooling of position pairs', 3 * B * P * D))
                rows += [r._replace(name='coarse ' + r.name) for r in BKLayer.flop_rows(g, cfg, B, P)]
                rows.append(linear(g, 'multi-scale Linear(D,2D) up, add', M, D, 2 * D, extra=M * D))
            rows += BKLayer.flop_rows(g, cfg, B, T)
            rows.append(elementwise(g, 'residual', M * D))
            if cfg.use_act:
                rows.append(linear(g, 'ACT halting Linear(D,1), sigmoid, weighted sum', M, D, 1,
                                   extra=M * (3 * D + 8)))
        rows += [elementwise('final norm', 'LayerNorm', 7 * M * D),
                 linear('lm_head', 'lm_head Linear(D,V) (fused with the loss)', M, D, V),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows

    @staticmethod
    def seed_flop_rows(cfg, B, N):
        """
        flops.py's convention 'seed': the seed's own FLOP formula, for the seed's architecture (flags off), with
        T = B*N tokens. Forward: embedding T D; per layer LayerNorm 5 T D, gating 2 T D E, softmax 3 T E, experts
        T K (8 D^2 + 2 D), BK-Core 34 T, output projection 4 T D; final LayerNorm 5 T D; lm_head 2 T D V. Not
        counted: v_proj, residual adds, the loss. Backward: the Linear/MoE terms 2x, LayerNorm and embedding 1x,
        BK-Core 26 T.
        """
        from flops import Row
        flags = [f for f in ('use_act', 'use_multi_scale', 'use_sparse_bk') if getattr(cfg, f)]
        if flags:
            raise ValueError(f"the seed convention covers the seed's architecture only; turn off {', '.join(flags)}")
        T, D, E, K, V = B * N, cfg.n_embd, cfg.n_experts, cfg.top_k, cfg.vocab_size
        rows = [Row('embedding', 'embedding T*D', 0, T * D, 0, T * D)]
        for i in range(cfg.n_layer):
            g = f'layer {i}'
            rows += [Row(g, 'LayerNorm 5TD', 0, 5 * T * D, 0, 5 * T * D),
                     Row(g, 'router/gating 2TDE', 2 * T * D * E, 0, 4 * T * D * E, 0),
                     Row(g, 'softmax 3TE', 0, 3 * T * E, 0, 6 * T * E),
                     Row(g, f'experts (top_{K} of {E}) TK(8D^2+2D)', T * K * 8 * D * D, T * K * 2 * D,
                         2 * T * K * 8 * D * D, 2 * T * K * 2 * D),
                     Row(g, 'BK-Core 34N*B (backward 26N*B)', 0, 34 * T, 0, 26 * T),
                     Row(g, 'output projection Linear(2,D) 4TD', 4 * T * D, 0, 8 * T * D, 0)]
        rows += [Row('final norm', 'LayerNorm 5TD', 0, 5 * T * D, 0, 5 * T * D),
                 Row('lm_head', 'lm_head 2TDV', 2 * T * D * V, 0, 4 * T * D * V, 0)]
        return rows
