"""
The BK-Core of ResNet-BK (model_resnetbk.py): the diagonal of the resolvent of a tridiagonal "Hamiltonian",
g = diag((H - zI)^-1), H = Laplacian (diagonal -2, off-diagonals 1) + diag(v), v the real potential, z = 1j.

With s_i = a_i - z (a = -2 + v) on the diagonal:
- causal: g_i = [(H_{0..i} - zI)^-1]_{ii}, the resolvent of the leading (i+1)x(i+1) block. The Schur complement gives
  the continued fraction g_i = 1 / (s_i - g_{i-1}), g_{-1} = 0, so g_i depends on v_0..v_i only. For Hermitian H
  and z = 1j, Im g > 0 and |g_i| <= 1/Im z = 1: it cannot overflow at any length.
- non-causal (the seed's, for reproduction only): G_ii = [(H - zI)^-1]_{ii}, the full diagonal, stably as
  G_ii = 1 / (s_i - gL_{i-1} - gR_{i+1}) from the causal recurrence run from both ends.

Here: the causal recurrence three ways (sequential loop, log-depth scan, two-level chunks; the loop also in C,
bk_kernel.py), its exact O(N) backward, the non-causal full diagonal, the dispatcher bk_core(), and the causal
path as one torch.library custom op (linlm::bk_causal) that torch.compile holds as an opaque node: real float32
(or float64) tensors cross its boundary, complex arithmetic stays inside. The seed's (wrong) backward for
bk_grad='seed' is in seeds/resnetbk_grad.py. bench/bkcore.py times the forms; results/ holds the numbers.
"""
import math
from collections import namedtuple
from typing import Optional

import torch

import bk_kernel
from seeds.resnetbk_grad import BKSeedBackward

BK_Z = 1j  # the spectral shift z of the seed; |g| <= 1/Im z keeps every value bounded


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
        grad_s, grad_g0 = bk_causal_adjoint(g, keep, grad_g, ctx.scan)
        if ctx.real_input:
            grad_s = grad_s.real
        return grad_s, grad_g0 if ctx.has_g0 and ctx.needs_input_grad[1] else None, None, None, None


def bk_causal_adjoint(g, keep, grad_g, scan):
    """The backward of the causal recurrence (BKCausalAnalytic's docstring has the derivation): g, grad_g (B, N)
    complex, keep (B, N) bool or None -> grad_s (B, N) complex, grad_g0 (B,) complex. conj_physical, not the lazy
    conj view: the first call of a compiled graph that holds this (in the custom op) lost the lazy bit."""
    g2 = g * g
    dg_dprev = g2 if keep is None else torch.where(keep, g2, torch.ones_like(g))    # c_i = dg_i/dg_{i-1}
    # reverse-time recurrence lam_i = grad_i + conj(c_{i+1}) lam_{i+1}, run forward on flipped sequences
    coef = torch.cat([dg_dprev[:, 1:].conj_physical(), torch.zeros_like(g[:, :1])], 1).flip(1)
    lam = SCANS[scan].adjoint(coef, grad_g.flip(1)).flip(1)
    grad_s = -g2.conj_physical() * lam
    if keep is not None:
        grad_s = torch.where(keep, grad_s, torch.zeros_like(grad_s))
    return grad_s, dg_dprev[:, 0].conj_physical() * lam[:, 0]


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


def resolve_scan(scan, device_type, n, grad):
    """bk_scan 'auto' -> the form that runs (bk_features' docstring); any other scan as it is. Asks whether the C
    kernel builds (its first build): inside the custom ops below, so a compiled graph never holds that question."""
    if scan != 'auto':
        return scan
    if device_type != 'cpu':
        return 'parallel' if n >= 1024 else 'chunked'
    return 'c' if grad != 'autograd' and bk_kernel.available() else 'chunked'


# ----------------------------------------------------------------------------------------------------------------
# The causal path as custom ops: torch.compile sees one opaque node for the forward and one for the backward (no
# complex code inside a compiled graph: inductor generates none; no graph break on the C kernel's ctypes call or the
# chunked form's .item()). Real tensors cross the boundary: v (B, N) float32/64 in, g as (B, N, 2) [Re, Im] out.

@torch.library.custom_op('linlm::bk_causal', mutates_args=())
def bk_causal_op(v: torch.Tensor, g0: Optional[torch.Tensor], keep: Optional[torch.Tensor], scan: str,
                 z_real: float, z_imag: float) -> torch.Tensor:
    """g_i = 1/(s_i - g_{i-1}), s = (v - 2) - z. v (B, N) float32 or float64; g0 (B, 2) [Re, Im] or None;
    keep (B, N) bool or None; scan as SCANS or 'auto'. -> g (B, N, 2) [Re g, Im g] in v's dtype (complex64/128 inside)."""
    s = (v - 2.0) - complex(z_real, z_imag)
    scan = resolve_scan(scan, v.device.type, v.shape[1], 'analytic')
    g = SCANS[scan].bk(s, None if g0 is None else torch.view_as_complex(g0.contiguous()), keep)
    return torch.view_as_real(g).clone()


@bk_causal_op.register_fake
def _(v, g0, keep, scan, z_real, z_imag):
    return v.new_empty(*v.shape, 2)


@torch.library.custom_op('linlm::bk_causal_backward', mutates_args=())
def bk_causal_backward_op(g: torch.Tensor, keep: Optional[torch.Tensor], grad_g: torch.Tensor,
                          scan: str) -> tuple[torch.Tensor, torch.Tensor]:
    """bk_causal_adjoint on real views: g, grad_g (B, N, 2) -> grad_v (B, N) (v is real: Re grad_s), grad_g0 (B, 2)."""
    scan = resolve_scan(scan, g.device.type, g.shape[1], 'analytic')
    grad_s, grad_g0 = bk_causal_adjoint(torch.view_as_complex(g.contiguous()), keep,
                                        torch.view_as_complex(grad_g.contiguous()), scan)
    return grad_s.real.contiguous(), torch.view_as_real(grad_g0).clone()


@bk_causal_backward_op.register_fake
def _(g, keep, grad_g, scan):
    return g.new_empty(g.shape[:2]), g.new_empty(g.shape[0], 2)


def _bk_causal_setup(ctx, inputs, output):
    v, g0, keep, scan, z_real, z_imag = inputs
    ctx.save_for_backward(output, keep)
    ctx.scan, ctx.has_g0 = scan, g0 is not None


def _bk_causal_backward(ctx, grad_g):
    g, keep = ctx.saved_tensors
    grad_v, grad_g0 = bk_causal_backward_op(g, keep, grad_g, ctx.scan)
    return grad_v, grad_g0 if ctx.has_g0 else None, None, None, None, None


bk_causal_op.register_autograd(_bk_causal_backward, setup_context=_bk_causal_setup)


def bk_core(v, causal=True, grad='analytic', scan='auto', g0=None, keep=None, z=BK_Z):
    """bk_features as complex: returns g (B, N) complex64 (complex128 for float64 v). Arguments as bk_features."""
    return torch.view_as_complex(bk_features(v, causal, grad, scan, None if g0 is None else torch.view_as_real(g0),
                                             keep, z))


def bk_features(v, causal=True, grad='analytic', scan='auto', g0=None, keep=None, z=BK_Z):
    """
    The BK-Core of one layer: g = diag of the resolvent, causal or full, from the real potential v, as real
    features [Re g, Im g] (what the model reads; bk_core gives the complex g).

    v (B, N) real: the clamped potential, diagonal of H is a = -2 + v; computed in float32/complex64 (float64 /
      complex128 if v is float64) with autocast off, whatever the surrounding precision.
    causal: True -> g_i = [(H_{0..i} - zI)^-1]_{ii}; False -> the seed's full diagonal (sees the future).
    grad: 'autograd' (through the loop/scan), 'analytic' (exact O(N); the causal path is the custom op
      linlm::bk_causal, opaque to torch.compile), 'seed' (the seed's wrong diagonal blend, BKSeedBackward).
    scan: 'sequential' (N steps), 'parallel' (log2 N steps of the Hillis-Steele scan, O(N log N) work),
      'chunked' (~3 sqrt(N) steps, O(N) work), 'c' (the sequential loops as a C kernel, bk_kernel.py; CPU only,
      no autograd graph). 'auto' on a CPU = 'c' when the kernel builds (a C compiler is present) and grad is not
      'autograd', else 'chunked'; on a GPU 'chunked' below N = 1024 and 'parallel' from there (the fastest forms in
      bench/bkcore.py; its numbers are in results/).
    g0 (B, 2) [Re, Im] of the carried g, keep (B, N) bool: carried state and skip mask of the causal chain
      (see bk_causal_sequential).
    returns (B, N, 2) [Re g, Im g] in v's precision (float32 or float64).
    """
    check_bk_options(grad, scan)
    if not causal and (g0 is not None or keep is not None):
        raise ValueError("the non-causal BK-Core has no carried state or skip mask")
    if not (causal and grad == 'analytic'):  # the op resolves 'auto' itself, out of torch.compile's sight
        scan = resolve_scan(scan, v.device.type, v.shape[1], grad)
    with torch.autocast(v.device.type, enabled=False):
        v = v if v.dtype == torch.float64 else v.float()
        if causal and grad == 'analytic':
            g0 = None if g0 is None else g0.to(v.dtype)
            return bk_causal_op(v, g0, keep, scan, float(complex(z).real), float(complex(z).imag))
        g0 = None if g0 is None else torch.view_as_complex(g0.contiguous())

        def causal_fn(s_, g0_=None, keep_=None):
            if grad == 'analytic':
                return BKCausalAnalytic.apply(s_, g0_, keep_, scan)
            return SCANS[scan].bk(s_, g0_, keep_)

        def compute(v_):
            s_ = (v_ - 2.0) - z                  # real - complex -> complex64 (complex128 for float64)
            return causal_fn(s_, g0, keep) if causal else bk_full_diagonal(s_, causal_fn)

        return torch.view_as_real(BKSeedBackward.apply(v, compute) if grad == 'seed' else compute(v))
