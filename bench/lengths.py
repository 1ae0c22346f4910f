"""
Speed and memory of the three models as the sequence length T grows: a training step, and generation per token.

    python bench/lengths.py                      # CPU, 1 thread, T = 64 .. 8192
    python bench/lengths.py --device cuda        # on a GPU
    python bench/lengths.py --threads 2 --lengths 64,256,1024 --out results/bench_small
    python bench/lengths.py --quick              # a tiny sweep (tests)

Models, at comparable parameter counts (vocab 1000 like the New-LLM seed; printed at the start):
    gpt       n_layer 4, n_head 4, n_embd 128, block_size = T       921,344 params + 128 T position table
    newllm    n_embd 128, n_context 128, n_hidden 320, n_layer 4   962,920 params (no positions)
    resnetbk  n_embd 112, n_layer 4, 4 experts top-1, causal       1,037,920 params + 112 T position table
              (top-1 routing: each token runs one expert of four, so about half the weights act per token)
    lstm      n_embd = n_hidden 224, n_layer 2, tied head          1,031,400 params (no positions; not in the
              default --models)
GPT's and ResNet-BK's block_size is set to T (their learned position tables grow with it; their other weights do
not). Dropout 0. A registered model without an entry in CONFIGS runs at its config's defaults.

What is measured, for each (model, T), in a new process (so one measurement cannot hide another's memory), timed
by bench/timing.py (medians of wall and CPU time):
    train     one training step as train.py runs it on a batch (--batch_size, T) of random tokens: the model's fused
              training loss model(x, y) in train mode, backward, gradient clipping at 1, fused AdamW (optim.build).
              time = median of --repeats steps after one warm-up step at T.
    generate  the model's state for T - n tokens is built first (forward_state in chunks of 256, no grad, not
              timed), then n = --gen_tokens tokens are generated one at a time with forward_state (greedy, batch 1),
              so the last one is token T. time = the median of the n per-token times.
              GPT attends to a key/value cache of up to T positions (and copies it to append each token: O(T) per
              token); New-LLM and causal ResNet-BK carry a fixed-size state.
Peak memory, in MB (2^20 bytes), is the growth above what the process held before the measurement:
    CPU   the kernel's peak resident set size of the process (Linux: VmHWM, reset to the current RSS at the start
          through /proc/self/clear_refs; elsewhere ru_maxrss) minus the RSS at the start. Before the start the
          process has run the same thing once at a tiny length, so the model, its gradients and optimizer state,
          and the kernels are already resident: what is left is what length T costs (activations, the KV cache,
          workspaces). It sees every allocation (torch's allocator included; tracemalloc does not); its resolution
          is a page, and freed-but-kept allocator memory counts as used.
    CUDA  torch.cuda.max_memory_allocated() minus memory_allocated() at the start (peak stats reset there).
Growth exponent: the slope of log(y) against log(T) by least squares over the upper half of the lengths (where
fixed per-call costs no longer dominate); 1 = linear, 2 = quadratic, 0 = constant. Memory deltas below 1 MB are
noise at the CPU's page resolution and are fitted as 1 MB.

Writes OUT.json (every measurement, configs, parameter counts, exponents) and OUT.png (log-log, four panels).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checkpoint as ckpt_io  # noqa: E402
import hardware  # noqa: E402
import optim  # noqa: E402
from bench import timing  # noqa: E402
from cli import fail  # noqa: E402

VOCAB = 1000
CONFIGS = {
    'gpt': dict(n_layer=4, n_head=4, n_embd=128, dropout=0.0),
    'newllm': dict(n_embd=128, n_context=128, n_hidden=320, n_layer=4, dropout=0.0),
    'resnetbk': dict(n_embd=112, n_layer=4, n_experts=4, top_k=1, dropout=0.0, bk_causal=True),
    'lstm': dict(n_embd=224, n_hidden=224, n_layer=2, dropout=0.0),
}
QUICK_CONFIGS = {m: dict(ckpt_io.model_classes(m)[0].TINY, dropout=0.0) for m in CONFIGS}  # each model's TINY
PREFILL_CHUNK = 256


def bench_config(model_type, quick=False):
    """The benchmark's size of a model: its CONFIGS (QUICK_CONFIGS) entry, else its config's defaults, dropout 0."""
    config = (QUICK_CONFIGS if quick else CONFIGS).get(model_type)
    if config is None:
        config = {'dropout': 0.0} if 'dropout' in ckpt_io.config_fields(model_type) else {}
    return config


def build(model_type, config, T):
    return ckpt_io.build_model(model_type, dict(config, vocab_size=VOCAB, block_size=T))


def param_counts(model_type, config):
    """-> (all parameters at block_size 1, parameters per extra position of the position table)."""
    at1 = build(model_type, config, 1).get_num_params()
    return at1, build(model_type, config, 2).get_num_params() - at1


# -----------------------------------------------------------------------------
# the worker: one measurement in its own process

def _proc_status_bytes(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024   # kB
    raise OSError(f'no {field} in /proc/self/status')


def start_peak():
    """
    Start a CPU peak-memory measurement -> the baseline in bytes. Linux: reset the kernel's high-water mark of the
    resident set to the current RSS (write '5' to /proc/self/clear_refs) and return that RSS. Elsewhere: the peak so
    far (ru_maxrss), which overstates the baseline by any earlier transient peak.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _proc_status_bytes('VmRSS')
    except OSError:
        return peak_bytes()


def peak_bytes():
    """The process's peak resident set size (since start_peak on Linux), in bytes."""
    try:
        return _proc_status_bytes('VmHWM')
    except OSError:  # ru_maxrss: KiB on Linux, bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


def worker(spec):
    """spec: {model, config, T, what ('train'|'generate'), device, threads, batch_size, repeats, gen_tokens}
    -> {'seconds', 'cpu_seconds' (medians per step or per generated token), 'peak_mb' (above the baseline),
    'process_peak_mb'}."""
    torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    device, T = spec['device'], spec['T']
    ctx = hardware.autocast(device, spec.get('dtype', 'float32'))
    cuda = device.startswith('cuda')
    model = build(spec['model'], spec['config'], T).to(device)

    if spec['what'] == 'train':
        model.train()
        # train.py's defaults: AdamW (fused where it can be), lr 6e-4, weight decay 0.1, betas (0.9, 0.95), clip 1
        opts = optim.build(model, 'adamw', 6e-4, 0.1, (0.9, 0.95), device_type=hardware.device_type(device))

        def step(length):
            x = torch.randint(VOCAB, (spec['batch_size'], length + 1), device=device)
            with ctx:
                _, loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=False)   # gradients stay allocated: they belong to the baseline

        step(min(T, 16))                        # gradients, optimizer state and kernels become resident
        variant, rounds, warmup = (lambda: step(T)), spec['repeats'], 1   # the warm-up at T counts in the peak
    else:
        model.eval()
        n = min(spec['gen_tokens'], T - 1)
        state, tok = None, None

        @torch.no_grad()
        def prefill(length):                    # the state after length - n random tokens
            nonlocal state, tok
            x = torch.randint(VOCAB, (1, length - n), device=device)
            state = None
            for c0 in range(0, x.size(1), PREFILL_CHUNK):
                with ctx:
                    logits, state = model.forward_state(x[:, c0:c0 + PREFILL_CHUNK], state)
            tok = logits[:, -1:].argmax(-1)

        @torch.no_grad()
        def variant():                          # one greedy token
            nonlocal state, tok
            with ctx:
                logits, state = model.forward_state(tok, state)
            tok = logits[:, -1:].argmax(-1)

        prefill(min(T, n + 16))                 # kernels and allocator pools become resident, at a tiny length
        for _ in range(n):
            variant()
        rounds, warmup = n, 0                   # each of the n tokens up to position T timed once
    hardware.synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = start_peak()
    if spec['what'] == 'generate':
        prefill(T)                              # not timed, but in the peak
    t = timing.run_rounds({spec['what']: variant}, rounds, warmup=warmup, device=device)[spec['what']]
    peak = torch.cuda.max_memory_allocated(device) if cuda else peak_bytes()
    wall, cpu = t.median
    return {'seconds': wall, 'cpu_seconds': cpu, 'peak_mb': (peak - base) / 2**20, 'process_peak_mb': peak / 2**20}


def _child(spec, conn):
    try:
        conn.send(worker(spec))
    except Exception as e:  # noqa: BLE001 -- any failure at this length is reported, the sweep goes on
        conn.send({'error': f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'})


def measure(spec, timeout):
    """
    Run worker(spec) in a new process; -> its result dict, or {'error': reason} (exception, killed, timeout).
    The process is forked from a server that has only imported torch and this file (multiprocessing 'forkserver'),
    so it starts in milliseconds, with no memory of earlier measurements, and without inheriting OpenMP threads.
    """
    import multiprocessing as mp
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload(['bench.lengths', 'torch._dynamo'])  # torch.optim imports _dynamo lazily
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, send))
    proc.start()
    send.close()
    try:
        result = recv.recv() if recv.poll(timeout) else None
    except EOFError:  # the process died before sending anything
        result = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        return {'error': f'process died (exit code {proc.exitcode}; out of memory?)' if proc.exitcode not in (None, -9)
                else f'timeout after {timeout:.0f} s'}
    return result


# -----------------------------------------------------------------------------
# the sweep

def growth_exponent(lengths, values, floor=0.0):
    """Least-squares slope of log(max(y, floor)) vs log(T) over the upper half of the (T, y) points."""
    pts = [(T, max(v, floor)) for T, v in zip(lengths, values) if v is not None and max(v, floor) > 0]
    pts = pts[len(pts) // 2:] if len(pts) >= 4 else pts
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


PANELS = [('train_seconds', 'train step time (s)', 0.0),        # (result key, axis label, floor for log/fit)
          ('train_peak_mb', 'train peak memory above baseline (MB)', 1.0),
          ('gen_seconds_per_token', 'generation time per token (s)', 0.0),
          ('gen_peak_mb', 'generation peak memory above baseline (MB)', 1.0)]


def plot(report, path):
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    from checkpoint import atomic_write
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, label, floor) in zip(axes.flat, PANELS):
        for i, (name, info) in enumerate(report['models'].items()):
            rows = [r for r in report['results'] if r['model'] == name and r.get(key) is not None]
            if not rows:
                continue
            e = report['exponents'][name].get(key)
            ax.plot([r['T'] for r in rows], [max(r[key], floor) if floor else r[key] for r in rows], marker='o',
                    color=f'C{i}', label=f"{name} ({info['params']:,} params)" + (f", slope {e:.2f}" if e is not None
                                                                                  else ''))
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('sequence length T')
        ax.set_ylabel(label + (' (floor 1)' if floor else ''))
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=8)
    threads = f", {report['threads']} thread(s)" if report['device'] == 'cpu' else ''
    fig.suptitle(f"{report['device_name']}{threads}, train batch {report['batch_size']}, "
                 f"generation batch 1; torch {report['torch']}", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='auto', help='auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps')
    p.add_argument('--dtype', default='auto', help="autocast dtype of every measurement; auto: hardware.py's rule")
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads in each measurement (CPU)')
    p.add_argument('--lengths', default='64,128,256,512,1024,2048,4096,8192', help='sequence lengths T')
    p.add_argument('--models', default='gpt,newllm,resnetbk')
    p.add_argument('--batch_size', type=int, default=1, help='training batch (sequences of length T)')
    p.add_argument('--repeats', type=int, default=3, help='timed training steps per point (median)')
    p.add_argument('--gen_tokens', type=int, default=16, help='generated tokens timed per point')
    p.add_argument('--timeout', type=float, default=300, help='seconds per measurement before it counts as not fitting')
    p.add_argument('--out', default=None, help='writes OUT.json and OUT.png (default results/bench_<device>)')
    p.add_argument('--quick', action='store_true', help='tiny models, T = 16,32,64, one repeat (for tests)')
    args = p.parse_args(argv)

    try:  # one device and one precision for every model, decided once
        args.device = hardware.resolve_device(args.device)
        choice = hardware.choose_dtype(args.dtype, args.device)
    except ValueError as e:
        fail(e)
    args.dtype = choice.dtype
    print(choice.reason + (f"\n{choice.warning}" if choice.warning else ''))
    try:
        lengths = sorted({int(t) for t in args.lengths.split(',')})
    except ValueError:
        fail(f"--lengths must be comma-separated integers, not {args.lengths!r}")
    configs = {name: bench_config(name, args.quick) for name in ckpt_io.MODELS}
    if args.quick:
        lengths, args.repeats, args.gen_tokens = [16, 32, 64], 1, 4
    names = [m.strip() for m in args.models.split(',') if m.strip()]
    unknown = [m for m in names if m not in configs]
    if unknown or not names:
        fail(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(configs)}")
    if min(lengths) < 2 or min(args.batch_size, args.repeats, args.gen_tokens, args.threads) < 1:
        fail("lengths must be >= 2 and batch_size, repeats, gen_tokens, threads >= 1")
    out = args.out or os.path.join('results', f"bench_{args.device.split(':')[0]}" + ('_quick' if args.quick else ''))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    machine = hardware.machine_info(args.device)
    device_name = machine.get('gpu') or f"{machine['cpu']} ({machine['cpu_count']} cores)"
    report = {'device': args.device, 'dtype': args.dtype, 'dtype_choice': choice.reason,
              'device_name': device_name, 'machine': machine, 'threads': args.threads,
              'torch': torch.__version__,
              'batch_size': args.batch_size, 'repeats': args.repeats, 'gen_tokens': args.gen_tokens,
              'vocab_size': VOCAB, 'lengths': lengths,
              'memory_method': ('torch.cuda.max_memory_allocated - memory_allocated before' if args.device != 'cpu'
                                else 'peak RSS (VmHWM) above the RSS at the start, new process, after a tiny warm-up'),
              'models': {}, 'results': [], 'exponents': {}}
    threads = f", {args.threads} thread(s)" if args.device == 'cpu' else ''
    print(f"{device_name}{threads}; train batch {args.batch_size}, generation batch 1, "
          f"{args.gen_tokens} tokens timed; peak memory: {report['memory_method']}")
    for name in names:
        params, per_pos = param_counts(name, configs[name])
        report['models'][name] = {'config': configs[name], 'params': params - per_pos, 'params_per_position': per_pos}
        print(f"  {name:9s} {params - per_pos:>10,} params" + (f" + {per_pos} x T position table" if per_pos else ''))
    print(f"{'model':9s} {'T':>6s} {'train s/step':>12s} {'tok/s':>9s} {'train MB':>9s} {'gen ms/tok':>10s} "
          f"{'gen MB':>8s}")
    t_start = time.time()
    for name in names:
        for T in lengths:
            row = {'model': name, 'T': T}
            for what in ('train', 'generate'):
                spec = {'model': name, 'config': configs[name], 'T': T, 'what': what, 'device': args.device,
                        'threads': args.threads, 'batch_size': args.batch_size, 'repeats': args.repeats,
                        'gen_tokens': args.gen_tokens, 'dtype': args.dtype}
                r = measure(spec, args.timeout)
                key = 'train' if what == 'train' else 'gen'
                if 'error' in r:
                    row[f'{key}_error'] = r['error']
                    continue
                row[f'{key}_seconds' if key == 'train' else 'gen_seconds_per_token'] = r['seconds']
                row[f'{key}_peak_mb'] = r['peak_mb']
                row[f'{key}_process_peak_mb'] = r['process_peak_mb']
            report['results'].append(row)

            def f(key, scale=1.0, fmtx='{:.3f}'):
                return fmtx.format(row[key] * scale) if key in row else 'n/a'
            tps = f"{args.batch_size * T / row['train_seconds']:,.0f}" if 'train_seconds' in row else 'n/a'
            print(f"{name:9s} {T:>6d} {f('train_seconds'):>12s} {tps:>9s} {f('train_peak_mb', fmtx='{:.1f}'):>9s} "
                  f"{f('gen_seconds_per_token', 1000):>10s} {f('gen_peak_mb', fmtx='{:.1f}'):>8s}"
                  + ''.join(f"  [{k}: {row[k]}]" for k in ('train_error', 'gen_error') if k in row), flush=True)
    fit_from = lengths[len(lengths) // 2] if len(lengths) >= 4 else lengths[0]
    print(f"growth exponents (slope of log y vs log T over T >= {fit_from}):")
    for name in names:
        rows = [r for r in report['results'] if r['model'] == name]
        report['exponents'][name] = {key: growth_exponent([r['T'] for r in rows], [r.get(key) for r in rows], floor)
                                     for key, _, floor in PANELS}
        e = report['exponents'][name]
        print(f"  {name:9s} " + ' | '.join(f"{key} {e[key]:.2f}" if e[key] is not None else f"{key} n/a"
                                            for key, _, _ in PANELS))
    report['seconds'] = time.time() - t_start
    from checkpoint import atomic_write_text
    atomic_write_text(json.dumps({**hardware.run_record(report['device']), **report}, indent=2), out + '.json')
    plot(report, out + '.png')
    print(f"wrote {out}.json and {out}.png in {report['seconds']:.0f} s")
    return report


if __name__ == '__main__':
    main()
