"""
Speed of the BK-Core alone and of a full ResNet-BK training step: the seed's implementation (seeds/resnetbk.py)
against ours (model_resnetbk.py), on this machine, in one run.

    python bench_bkcore.py                        # core at B=16, N=128/512/2048 + training step at the seed setting
    python bench_bkcore.py --what core --lengths 128,512 --reps 5 --json out.json

Core: forward + backward of v (B, N) -> features [Re G, Im G] (B, N, 2) with a random linear loss.
  seed        vmapped theta/phi in complex128 + the seed's blended backward (what the seed trained with;
              note it returns zeros for N >= ~1000, where theta/phi overflow)
  seq/autograd     our causal recurrence, sequential loop (N steps), autograd through it
  scan/autograd    the log-depth Hillis-Steele scan (log2 N steps), autograd through it
  chunk/autograd   the two-level chunked recurrence (~3 sqrt(N) steps; 'auto' on a CPU for bk_grad='autograd')
  */analytic       the same forwards with the exact O(N) backward (BKCausalAnalytic) in the same form
  c/analytic       the sequential loops as a C kernel (bk_kernel.py; bk_scan='auto' on a CPU), CPU only
Step: forward, cross-entropy, backward, clip_grad_norm(0.5), AdamW at vocab 30000, batch 16, 128 positions,
  n_embd 64, 4 layers, 4 experts top-1 (4,146,120 parameters), as the seed's WikiText-103 run:
  seed        seeds.resnetbk.SeedResNetBK (non-causal theta/phi BK, its MoE loop)
  ours        ResNetBK at its defaults (causal, bk_grad='analytic', bk_scan='auto' = the C kernel, the loss
              by LinearCrossEntropy, AdamW fused as in train.py), and with bk_grad='autograd' (the chunked form) or
              under bf16 autocast (mixed_precision: the seed's use_mixed_precision, train.py's dtype='bfloat16').
Variants run in rounds, round-robin by default (--block 1) or in blocks of calls (--block K, the steady state;
see bench()); the median wall time and the median CPU time of the process are reported.
On a shared machine the CPU time is the steadier measure (at --threads 1 it excludes time spent descheduled).
"""
import argparse
import json
import statistics
import time

import torch

import model_resnetbk as bk
import seeds.resnetbk as seed


def core_variants(B, N, device):
    """name -> function running one forward + backward of the BK-Core on fresh inputs of shape (B, N)."""
    gen = torch.Generator().manual_seed(N)
    v = (torch.rand(B, N, generator=gen) * 6 - 3).to(device).requires_grad_()
    w = torch.randn(B, N, 2, generator=gen).to(device)

    def seed_run():
        (seed.seed_bk_features(v) * w).sum().backward()

    def ours(scan, grad):
        def run():
            g = bk.bk_core(v, causal=True, grad=grad, scan=scan)
            (torch.view_as_real(g) * w).sum().backward()
        return run

    out = {'seed': seed_run}
    for scan, short in (('sequential', 'seq'), ('parallel', 'scan'), ('chunked', 'chunk')):
        for grad in ('autograd', 'analytic'):
            out[f'{short}/{grad}'] = ours(scan, grad)
    if device == 'cpu':
        out['c/analytic'] = ours('c', 'analytic')
    return out


def step_variants(device, B=16, N=128, V=30000):
    """name -> function running one training step at the seed setting."""
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (B, N), generator=gen).to(device)
    tgt = torch.randint(0, V, (B, N), generator=gen).to(device)

    def make(model, is_seed):
        model.train()
        # the seed's plain AdamW; ours fused, as train.py runs it
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=not is_seed)

        def run():
            if is_seed:
                logits = model(idx)
                loss = torch.nn.functional.cross_entropy(logits.view(-1, V), tgt.view(-1))
            else:
                _, loss = model(idx, tgt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    torch.manual_seed(0)
    out = {'seed': make(seed.SeedResNetBK(vocab_size=V, block_size=N).to(device), True)}
    for name, kw in (('ours', {}), ('ours/autograd', dict(bk_grad='autograd')),
                     ('ours/mixed_precision', {})):
        torch.manual_seed(0)
        out[name] = make(bk.ResNetBK(bk.ResNetBKConfig(vocab_size=V, block_size=N, **kw)).to(device), False)
    fp32_step = out['ours/mixed_precision']

    def mixed_precision_step():         # the seed's use_mixed_precision: the step under bf16 autocast
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            fp32_step()
    out['ours/mixed_precision'] = mixed_precision_step
    return out


def bench(variants, reps, device, block=1, warmup=1):
    """
    Timing in rounds: each round runs every variant `block` times in a row (round-robin for block=1), which spreads
    machine drift over all variants alike. With block > 1 only the calls after the first of each block are timed,
    so each timed call follows a call of the same variant, as in training (the steady state); with block=1 each
    call follows a different variant's (the seed's big buffers and cache contents are still around).
    Returns name -> (median wall seconds, median CPU seconds of this process).
    """
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    wall, cpu = {k: [] for k in variants}, {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            for i in range(block):
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync()
                if block == 1 or i > 0:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}


def report(t, unit_ms_fmt):
    """One line per variant: wall and CPU milliseconds, and the seed's time over this one (speed-up)."""
    sw, sc = t['seed']
    return "\n".join(f"    {k:22s} wall {unit_ms_fmt % (w * 1000)} ({sw / w:5.1f}x)   cpu {unit_ms_fmt % (c * 1000)} "
                     f"({sc / c:5.1f}x)" for k, (w, c) in t.items())


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--what', default='core,step', help="comma list of: core, step")
    p.add_argument('--lengths', default='128,512,2048', help="core sequence lengths")
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--reps', type=int, default=5, help="rounds")
    p.add_argument('--block', type=int, default=1, help="calls of a variant in a row per round (see bench())")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu', help="cpu or cuda (on a GPU the CPU time is not meaningful)")
    p.add_argument('--json', default='', help="also write the results to this file")
    args = p.parse_args()
    if args.reps < 1 or args.block < 1:
        p.error("--reps and --block must be >= 1")
    what = args.what.split(',')
    if set(what) - {'core', 'step'}:
        p.error(f"--what takes a comma list of core, step; got {args.what!r}")
    try:
        lengths = [int(n) for n in args.lengths.split(',')]
    except ValueError:
        p.error(f"--lengths takes a comma list of integers; got {args.lengths!r}")
    if min(lengths) < 1:
        p.error("--lengths must be >= 1")
    torch.set_num_threads(args.threads)
    result = {'threads': args.threads, 'batch': args.batch, 'device': args.device, 'torch': torch.__version__,
              'reps': args.reps, 'block': args.block,
              'core': {}, 'step': {}}
    if 'core' in what:
        print(f"BK-Core forward+backward, B={args.batch}, {args.reps} rounds x block {args.block}, median ms "
              f"(speed-up vs seed)")
        for N in lengths:
            t = bench(core_variants(args.batch, N, args.device), args.reps, args.device, args.block)
            result['core'][N] = {k: {'wall_ms': w * 1000, 'cpu_ms': c * 1000} for k, (w, c) in t.items()}
            print(f"  N={N}\n" + report(t, '%8.2f'), flush=True)
    if 'step' in what:
        print(f"training step, vocab 30000, B=16, N=128, {args.reps} rounds x block {args.block}, median ms "
              f"(speed-up vs seed)")
        t = bench(step_variants(args.device), args.reps, args.device, args.block)
        result['step'] = {k: {'wall_ms': w * 1000, 'cpu_ms': c * 1000} for k, (w, c) in t.items()}
        print(report(t, '%8.1f'), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
