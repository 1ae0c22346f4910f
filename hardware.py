"""
The device and the precision of a run, chosen by what this machine has and measured, not assumed.

    device = resolve_device('auto')           # 'cuda' if available, else 'mps' (Apple), else 'cpu'
    choice = choose_dtype('auto', device)     # bfloat16 where it runs fast here, else float32 (CUDA: float16)
    ctx = autocast(device, choice.dtype)      # nullcontext() for float32
    on, why = choose_compile('auto', 'newllm', device)   # torch.compile where bench/compile.py found it faster

Why measure: a bfloat16 matmul runs at full speed on CUDA GPUs from Ampere on and on CPUs with native bf16
(AVX-512 BF16 / AMX), but on a CPU with only AVX2 PyTorch emulates it, about two orders of magnitude slower than
float32. So on anything but CUDA, 'auto' times a short square matmul in float32 and bfloat16 (a few hundred ms, once
per process, on a private generator so the run's RNG streams do not move) and takes bfloat16 only when it is at least
as fast. On CUDA the answer is known: bfloat16 where the GPU supports it, else float16 (with train.py's GradScaler),
as nanoGPT does. The same timings, best of a few tries, are the peak FLOP/s against which train.py reports MFU.
"""
import ctypes
import functools
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
SLOW_FACTOR = 3.0   # an explicit dtype this many times slower than float32 here gets a warning
BF16_MARGIN = 1.25  # 'auto' takes bfloat16 off CUDA only at this many times float32's rate: where it is native (AMX)
                    # it is several times faster, and a tie is the noise of a busy machine, not a reason to lose bits
COMPILE_MARGIN = 1.05  # compile 'auto' turns torch.compile on only where bench/compile.py measured this speedup
COMPILE_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', '{}', 'compile.json')


def available_devices():
    """The device types this PyTorch can use here, e.g. ['cuda', 'cpu']."""
    out = []
    if torch.cuda.is_available():
        out.append('cuda')
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
        out.append('mps')
    return out + ['cpu']


def resolve_device(name):
    """'auto' -> the first of cuda, mps, cpu that is available; 'cpu', 'cuda', 'cuda:N', 'mps' are checked.
    Raises ValueError naming the device and what is available."""
    have = available_devices()
    if name == 'auto':
        return have[0]
    kind, _, index = name.partition(':')
    if kind not in ('cpu', 'cuda', 'mps') or (index and not (kind == 'cuda' and index.isdigit())):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps (available here: "
                         f"{', '.join(have)})")
    if kind not in have:
        raise ValueError(f"device {name!r} is not available on this machine (available: {', '.join(have)})")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s)")
    return name


def device_type(device):
    """'cuda:1' -> 'cuda' (what torch.autocast and the fused optimizers take)."""
    return str(device).split(':')[0]


def autocast(device, dtype):
    """The autocast context of a run in dtype ('float32' -> no autocast)."""
    if dtype == 'float32':
        return nullcontext()
    return torch.amp.autocast(device_type=device_type(device), dtype=DTYPES[dtype])


def synchronize(device):
    """Wait for the device's queued work (timing on an accelerator)."""
    if device_type(device) == 'cuda':
        torch.cuda.synchronize(device)
    elif device_type(device) == 'mps':
        torch.mps.synchronize()


def matmul_rates(device, dtypes, seconds=0.05, tries=3):
    """
    FLOP/s of an n x n @ n x n matmul in each of dtypes (torch dtypes) on device: the best of `tries` timings of
    about `seconds` each (the best, because a shared machine can only make a try slower, never faster), the dtypes
    taking turns try by try so that a change in the machine's load hits them alike. n is 4096 on CUDA and 1024
    elsewhere, or 256 for all when a dtype's 1024 matmul would take longer than `seconds` (an emulated dtype: the
    rate is what matters, and it is low either way). -> {dtype: (flop_per_second, n)}
    """
    def timed(a, b, budget):
        a @ b  # warm-up (first-call kernels, caches)
        synchronize(device)
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            synchronize(device)
            dt = time.perf_counter() - t0
            if dt >= budget:
                return 2 * a.shape[0] ** 3 * reps / dt

    gen = torch.Generator().manual_seed(0)  # private: the run's RNG streams must not move

    def operands(n, dtype):
        return [torch.randn(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2)]

    n = 4096 if device_type(device) == 'cuda' else 1024
    if n == 1024 and any(2 * 1024 ** 3 / timed(*operands(256, dtype), 0.02) > seconds for dtype in dtypes):
        n = 256  # one size for every dtype: rates at different sizes would not compare
    pairs = {dtype: operands(n, dtype) for dtype in dtypes}
    best = {dtype: 0.0 for dtype in dtypes}
    for _ in range(tries):
        for dtype, (a, b) in pairs.items():
            best[dtype] = max(best[dtype], timed(a, b, seconds))
    return {dtype: (best[dtype], pairs[dtype][0].shape[0]) for dtype in dtypes}


@functools.lru_cache(maxsize=None)
def measured_rates(device, dtypes=('float32', 'bfloat16')):
    """{dtype name: (flop_per_second, n)}, measured once per process and device."""
    rates = matmul_rates(device, [DTYPES[d] for d in dtypes])
    return {d: rates[DTYPES[d]] for d in dtypes}


@dataclass
class DtypeChoice:
    dtype: str          # 'float32' | 'bfloat16' | 'float16'
    reason: str         # one line for the start-up log
    rates: dict         # {dtype: FLOP/s} that the choice was made from (empty when none was measured)
    warning: str = ''   # set when an explicit dtype runs > SLOW_FACTOR x slower than float32 here


def choose_dtype(requested, device, rates=None, cuda_bf16=None):
    """
    requested: 'auto' or one of DTYPES. rates: {dtype: FLOP/s} to decide from (default: measured here, once);
    cuda_bf16: does the CUDA device support bfloat16 (default: ask torch). -> DtypeChoice.
    'auto': CUDA -> bfloat16 if supported, else float16; any other device -> bfloat16 if its measured matmul rate
    is >= BF16_MARGIN x float32's, else float32. An explicit dtype is kept, with a warning when it is > SLOW_FACTOR x
    slower.
    """
    if requested != 'auto' and requested not in DTYPES:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {requested!r}")
    cuda = device_type(device) == 'cuda'
    if requested == 'auto' and cuda:
        if cuda_bf16 is None:
            cuda_bf16 = torch.cuda.is_bf16_supported()
        dtype = 'bfloat16' if cuda_bf16 else 'float16'
        why = 'this CUDA device ' + ('supports bfloat16' if cuda_bf16 else 'has no bfloat16')
    else:
        dtype = 'bfloat16' if requested == 'auto' else requested
    wanted = tuple(dict.fromkeys(('float32', dtype)))
    if rates is None:
        rates = {d: r for d, (r, _) in measured_rates(str(device), wanted).items()}
    rates_text = ', '.join(f"{d} {rates[d] / 1e9:,.1f}" for d in wanted) + ' GFLOP/s'
    if requested == 'auto':
        if not cuda:
            fast = rates['bfloat16'] >= BF16_MARGIN * rates['float32']
            dtype = 'bfloat16' if fast else 'float32'
            why = f"bfloat16 matmul {'at least' if fast else 'under'} {BF16_MARGIN:g}x float32's rate here"
        return DtypeChoice(dtype, f"dtype auto -> {dtype} ({why}; matmul {rates_text})", rates)
    choice = DtypeChoice(requested, f"dtype {requested} (matmul {rates_text})", rates)
    if requested != 'float32' and rates[requested] * SLOW_FACTOR < rates['float32']:
        choice.warning = (f"warning: {requested} runs {rates['float32'] / rates[requested]:.0f}x slower than "
                          f"float32 on this {device_type(device)} (matmul {rates_text}); --dtype=auto picks "
                          f"the faster one")
    return choice


def choose_compile(requested, model_type, device, results=None):
    """
    requested: True, False or 'auto'. -> (compile on: bool, one line for the log saying which and why).
    'auto': on where bench/compile.py's file for this device type (results/<cpu|cuda|mps>/compile.json, or the
    dict `results` in its format) measured model_type's compiled training step at least COMPILE_MARGIN x faster than
    eager (on a CPU in CPU time, elsewhere in wall time); off where it measured less, or where it has no
    measurement for this model on this device type.
    """
    if isinstance(requested, bool):
        return requested, f"compile {requested} (asked)"
    if requested != 'auto':
        raise ValueError(f"compile must be True, False or 'auto', not {requested!r}")
    kind = device_type(device)
    path = COMPILE_RESULTS.format(kind)
    if results is None and os.path.isfile(path):
        with open(path) as f:
            results = json.load(f)
    row = next((r for r in (results or {}).get('rows', []) if r['model'] == model_type), None)
    if row is None:
        return False, f"compile auto -> off (no bench/compile.py measurement of {model_type} on {kind})"
    # on a CPU the CPU-time ratio: a shared machine's wall time swings with the other processes (bench/timing.py)
    speedup = row['cpu_speedup'] if kind == 'cpu' else row['speedup']
    on = speedup >= COMPILE_MARGIN
    return on, (f"compile auto -> {'on' if on else 'off'} ({model_type}'s compiled training step ran "
                f"{speedup:.2f}x eager's {'CPU ' if kind == 'cpu' else ''}time on {kind}, "
                f"{'at least' if on else 'under'} {COMPILE_MARGIN:g}x; first step {row['compile_s']:.0f} s; "
                f"bench/compile.py)")


def compile_model(model, device, inductor_rng=False):
    """
    torch.compile(model) as train.py runs it (inductor, default mode). On a CPU random numbers (dropout's masks) come
    from eager's ops, not from inductor's generated code (its fallback_random): the generated generator made every
    compiled model with dropout slower there (bench/compile.py --inductor_rng measures it), and this way a compiled
    step draws the same masks as eager from the same seed. inductor_rng=True keeps inductor's own.
    """
    import torch._inductor.config
    torch._inductor.config.fallback_random = device_type(device) == 'cpu' and not inductor_rng
    return torch.compile(model)


def machine_info(device='cpu'):
    """What a results file records about the machine: the CPU model, its bf16/AMX flags and core count, PyTorch's
    threads and version, and the GPU's name when device is CUDA."""
    import os
    import platform
    model, flags = platform.processor() or 'unknown', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and model in ('unknown', '', platform.machine()):
                    model = line.split(':', 1)[1].strip()
                elif line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    info = {'cpu': model, 'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'avx512_bf16': 'avx512_bf16' in flags, 'amx_bf16': 'amx_bf16' in flags, 'avx2': 'avx2' in flags,
            'torch': torch.__version__}
    if device_type(device) == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def keep_freed_memory(keep=True):
    """
    Linux (glibc) CPU runs: keep freed memory in the process's heap for the next step instead of returning it to the
    system. glibc serves each allocation over a threshold (128 KB, rising to at most 32 MB) with a fresh mmap and
    unmaps it when freed, so a training step's large buffers (New-LLM's (L, T, B, H) activations, 50 MB each at the
    headline size) page-fault in anew at every step (bench/newllm.py measures the step with and without).
    The cost: resident memory stays at its peak. keep=False restores glibc's default limits (with a fixed, not
    rising, threshold) and hands the heap's free memory back, so that its pages fault in again when reused.
    -> True where set (not glibc: False, nothing changed).
    """
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4    # malloc.h
    settings = ({M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2 ** 31 - 1} if keep else     # never mmap a block, never trim
                {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024})
    done = all([bool(libc.mallopt(option, value)) for option, value in settings.items()])
    if not keep:
        libc.malloc_trim(0)  # and hand back what the heap holds now, so that it too page-faults in anew
    return done


def peak_memory_mb(device):
    """-> (MiB, what was measured): CUDA, the most allocated by tensors; elsewhere the process's peak resident set."""
    if device_type(device) == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20, 'cuda_max_allocated'
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'cpu_peak_rss'


def run_record(device='cpu'):
    """What every results file starts with: the command that wrote it, the machine (machine_info) and the date."""
    import shlex
    import sys
    import time
    return {'command': 'python ' + shlex.join(sys.argv), 'machine': machine_info(device),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
