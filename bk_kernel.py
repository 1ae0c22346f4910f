"""
The BK-Core's two recurrences as a small C kernel, for CPUs (bk_scan='c'): the plain sequential loops of
bk_core.bk_causal_sequential and linear_recurrence_sequential, one C loop per sequence instead of one PyTorch
call per position. At the seed's N = 128 the BK-Core's time in PyTorch is per-call overhead (~23 dependent small
ops even in the chunked form); in C the whole batch is one call (bench/bkcore.py times both, results/ holds the
numbers).

The C source below is compiled once with the system's C compiler (`cc`, or $CC) into a shared library cached under
~/.cache/linlm (or $XDG_CACHE_HOME/linlm), named by a hash of the source, compiler and machine, and called through
ctypes on the tensors' memory: no Python build dependency, nothing compiled unless the kernel is used (bk_scan='c',
or 'auto' on a CPU with bk_grad other than 'autograd'; 'auto' falls back to the chunked PyTorch form where it cannot
be built). complex64 and complex128 both. The reciprocal is the textbook conj(d) / |d|^2, exact to rounding away
from the float range's ends (for the BK chain |d| = |s_i - g_{i-1}| >= Im(-z) = 1).
"""
import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile

import torch

C_SOURCE = r"""
#include <complex.h>

/* g_i = 1 / (s_i - g_{i-1}), g_{-1} = g0[b] (0 if g0 is NULL); where keep[b, i] == 0: g_i = g_{i-1}.
   s, g: (B, N) row-major complex; keep: (B, N) bytes or NULL. 1/d is conj(d) / |d|^2 (no library call). */
#define BK_CAUSAL(NAME, CT, RE, IM)                                                            \
void NAME(const CT *s, const CT *g0, const unsigned char *keep, CT *g, long B, long N) {        \
    for (long b = 0; b < B; b++) {                                                             \
        CT x = g0 ? g0[b] : 0;                                                                 \
        const CT *sb = s + b * N;                                                              \
        const unsigned char *kb = keep ? keep + b * N : 0;                                     \
        CT *gb = g + b * N;                                                                    \
        for (long i = 0; i < N; i++) {                                                         \
            if (!kb || kb[i]) {                                                                \
                CT d = sb[i] - x;                                                              \
                x = (RE(d) - I * IM(d)) / (RE(d) * RE(d) + IM(d) * IM(d));                     \
            }                                                                                  \
            gb[i] = x;                                                                         \
        }                                                                                      \
    }                                                                                          \
}

/* y_i = coef_i y_{i-1} + x_i, y_{-1} = 0, along each row of (B, N). */
#define LINEAR_RECURRENCE(NAME, CT)                                                            \
void NAME(const CT *coef, const CT *x, CT *y, long B, long N) {                                \
    for (long b = 0; b < B; b++) {                                                             \
        CT acc = 0;                                                                            \
        for (long i = b * N; i < (b + 1) * N; i++) {                                           \
            acc = coef[i] * acc + x[i];                                                        \
            y[i] = acc;                                                                        \
        }                                                                                      \
    }                                                                                          \
}

BK_CAUSAL(bk_causal_c64, float complex, crealf, cimagf)
BK_CAUSAL(bk_causal_c128, double complex, creal, cimag)
LINEAR_RECURRENCE(linear_recurrence_c64, float complex)
LINEAR_RECURRENCE(linear_recurrence_c128, double complex)
"""

_lib = None
_available = None


def load():
    """Compile (first use only) and load the kernel; returns the ctypes library. Raises RuntimeError with one line
    if it cannot be built or loaded (no C compiler, unwritable cache)."""
    global _lib
    if _lib is not None:
        return _lib
    cache = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'linlm')
    cc = os.environ.get('CC', 'cc')
    # named by source, compiler and machine: a cache shared by several kinds of machines keeps one library each
    digest = hashlib.sha256('\0'.join([C_SOURCE, cc, platform.machine()]).encode()).hexdigest()[:16]
    path = os.path.join(cache, f'bk_kernel_{digest}.so')
    try:
        for attempt in (0, 1):
            if attempt or not os.path.exists(path):
                os.makedirs(cache, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    src, lib = os.path.join(tmp, 'bk_kernel.c'), os.path.join(tmp, 'bk_kernel.so')
                    with open(src, 'w') as f:
                        f.write(C_SOURCE)
                    subprocess.run(shlex.split(cc) + ['-O2', '-shared', '-fPIC', '-o', lib, src], check=True,
                                   capture_output=True, text=True)
                    os.replace(lib, path)             # atomic: a concurrent process sees all of it or nothing
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError:                           # a damaged cached library: build it once more
                if attempt:
                    raise
    except (OSError, subprocess.CalledProcessError) as e:
        detail = (getattr(e, 'stderr', None) or str(e)).strip()
        raise RuntimeError(f"bk_scan='c' could not build its C kernel with {cc!r} in {cache}: "
                           f"{detail.splitlines()[-1] if detail else type(e).__name__}") from None
    ptr, long = ctypes.c_void_p, ctypes.c_long
    for name in ('bk_causal_c64', 'bk_causal_c128'):
        getattr(lib, name).argtypes = [ptr, ptr, ptr, ptr, long, long]
    for name in ('linear_recurrence_c64', 'linear_recurrence_c128'):
        getattr(lib, name).argtypes = [ptr, ptr, ptr, long, long]
    _lib = lib
    return lib


def available():
    """True if the kernel builds and loads here (bk_scan='auto' then uses it on the CPU); never raises."""
    global _available
    if _available is None:
        try:
            load()
            _available = True
        except (RuntimeError, OSError):
            _available = False
    return _available


def _suffix(t):
    if t.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"bk_scan='c' needs complex64 or complex128, got {t.dtype}")
    return 'c64' if t.dtype == torch.complex64 else 'c128'


def _plain(t, dtype=None):
    """A detached, contiguous CPU tensor whose memory holds its values (PyTorch's lazy conj/neg views resolved)."""
    if t.device.type != 'cpu':
        raise ValueError(f"bk_scan='c' runs on the CPU only, got a tensor on {t.device}")
    t = t.detach() if dtype is None else t.detach().to(dtype)
    return t.resolve_conj().resolve_neg().contiguous()


def bk_causal(s, g0=None, keep=None):
    """As bk_core.bk_causal_sequential (same arguments and result, no broadcasting: s (B, N), g0 (B,),
    keep (B, N) bool), in C. No autograd graph: used with BKCausalAnalytic, whose backward calls
    linear_recurrence below."""
    suffix = _suffix(s)
    B, N = s.shape
    if g0 is not None and tuple(g0.shape) != (B,):
        raise ValueError(f"bk_scan='c': g0 must have shape ({B},), got {tuple(g0.shape)}")
    if keep is not None and (tuple(keep.shape) != (B, N) or keep.dtype != torch.bool):
        raise ValueError(f"bk_scan='c': keep must be a bool tensor of shape ({B}, {N}), got {keep.dtype} "
                         f"{tuple(keep.shape)}")
    lib = load()
    s = _plain(s)
    g = torch.empty_like(s)
    g0 = None if g0 is None else _plain(g0, s.dtype)
    keep = None if keep is None else _plain(keep).view(torch.uint8)
    getattr(lib, f'bk_causal_{suffix}')(s.data_ptr(), None if g0 is None else g0.data_ptr(),
                                        None if keep is None else keep.data_ptr(), g.data_ptr(), B, N)
    return g


def linear_recurrence(coef, x):
    """As bk_core.linear_recurrence_sequential for complex coef and x of one shape (B, N), in C."""
    suffix = _suffix(x)
    B, N = x.shape
    if tuple(coef.shape) != (B, N):
        raise ValueError(f"bk_scan='c': coef must have the shape of x ({B}, {N}), got {tuple(coef.shape)}")
    lib = load()
    coef, x = _plain(coef, x.dtype), _plain(x)
    y = torch.empty_like(x)
    getattr(lib, f'linear_recurrence_{suffix}')(coef.data_ptr(), x.data_ptr(), y.data_ptr(), B, N)
    return y
