"""hardware.py: the device and precision of a run, chosen from measured rates (injected here) and checked."""
import ctypes
import resource
import sys

import pytest
import torch

import hardware

FAST_BF16 = {'float32': 100e9, 'bfloat16': 180e9}
SLOW_BF16 = {'float32': 126e9, 'bfloat16': 0.9e9}   # an AVX2-only CPU: bf16 emulated


def test_auto_takes_bf16_only_where_it_is_fast():
    assert hardware.choose_dtype('auto', 'cpu', rates=FAST_BF16).dtype == 'bfloat16'
    slow = hardware.choose_dtype('auto', 'cpu', rates=SLOW_BF16)
    assert slow.dtype == 'float32' and not slow.warning
    assert 'float32 126.0, bfloat16 0.9 GFLOP/s' in slow.reason and 'auto -> float32' in slow.reason
    equal = {'float32': 1e11, 'bfloat16': 1.1e11}   # a busy machine's noise: not worth bf16's lost bits
    tie = hardware.choose_dtype('auto', 'cpu', rates=equal)
    assert tie.dtype == 'float32' and "under 1.25x float32's rate" in tie.reason


def test_auto_on_cuda_follows_bf16_support():
    rates = {'float32': 1e12, 'bfloat16': 1e13, 'float16': 1e13}
    assert hardware.choose_dtype('auto', 'cuda', rates=rates, cuda_bf16=True).dtype == 'bfloat16'
    assert hardware.choose_dtype('auto', 'cuda:1', rates=rates, cuda_bf16=False).dtype == 'float16'


def test_explicit_slow_dtype_warns_and_still_runs():
    c = hardware.choose_dtype('bfloat16', 'cpu', rates=SLOW_BF16)
    assert c.dtype == 'bfloat16'
    assert c.warning == ("warning: bfloat16 runs 140x slower than float32 on this cpu (matmul float32 126.0, "
                         "bfloat16 0.9 GFLOP/s); --dtype=auto picks the faster one")
    assert not hardware.choose_dtype('bfloat16', 'cpu', rates={'float32': 3e9, 'bfloat16': 1.01e9}).warning
    assert not hardware.choose_dtype('float32', 'cpu', rates=SLOW_BF16).warning
    with pytest.raises(ValueError, match="dtype must be auto, float32, bfloat16 or float16, not 'half'"):
        hardware.choose_dtype('half', 'cpu', rates=SLOW_BF16)


def test_measured_rates_are_positive_and_leave_the_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    rates = hardware.matmul_rates('cpu', (torch.float32, torch.bfloat16), seconds=0.005, tries=2)
    assert all(rate > 1e6 and n in (256, 1024) for rate, n in rates.values())
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the errors of a machine without CUDA')
def test_device_errors_name_the_device_and_what_is_available():
    assert hardware.resolve_device('auto') in ('mps', 'cpu') and hardware.resolve_device('cpu') == 'cpu'
    with pytest.raises(ValueError, match=r"device 'cuda' is not available on this machine \(available: .*cpu\)"):
        hardware.resolve_device('cuda')
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        hardware.resolve_device('gpu')
    with pytest.raises(ValueError, match="unknown device 'cpu:1'"):
        hardware.resolve_device('cpu:1')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="glibc's malloc")
def test_keep_freed_memory_reuses_the_pages_of_a_freed_block():
    """keep: a freed 64 MB block comes back from the heap without a page fault; keep=False hands freed memory back
    (glibc's default: each block this size is a fresh mmap). glibc's malloc directly: what torch's CPU allocator
    calls, without the alignment that makes its reuse depend on what else the heap holds."""
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    n = 64 * 2 ** 20

    def faults_of_a_block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    try:
        assert hardware.keep_freed_memory(True)
        faults_of_a_block()  # the heap grows to hold it, once
        assert faults_of_a_block() < 100
    finally:
        assert hardware.keep_freed_memory(False)
    assert faults_of_a_block() >= n // (2 * 2 ** 20)  # its pages fault in again (2 MB ones at most)
