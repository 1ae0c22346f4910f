"""
Speed of the BK-Core alone and of a full ResNet-BK training step: the seed's implementation (seeds/resnetbk.py)
against ours (model_resnetbk.py), in one run.

    python bench/bkcore.py                        # core at B=16, N=128/512/2048 + training step at the seed setting
    python bench/bkcore.py --what core --lengths 128,512 --reps 5 --json out.json
    python bench/bkcore.py --quick                # tiny sizes, one round (tests)

Core: forward + backward of v (B, N) -> features [Re G, Im G] (B, N, 2) with a random linear loss.
  seed        vmapped theta/phi in complex128 + the seed's blended backward (what the seed trained with;
              note it returns zeros for N >= ~1000, where theta/phi overflow)
  seq/autograd     our causal recurrence, sequential loop (N steps), autograd through it
  scan/autograd    the log-depth Hillis-Steele scan (log2 N steps), autograd through it
  chunk/autograd   the two-level chunked recurrence (~3 sqrt(N) steps; 'auto' on a CPU for bk_grad='autograd')
  */analytic       the same forwards with the exact O(N) backward (BKCausalAnalytic) in the same form
  c/analytic       the sequential loops as a C kernel (bk_kernel.py; bk_scan='auto' on a CPU), CPU only
Step: a training step at vocab 30000, batch 16, 128 positions, n_embd 64, 4 layers, 4 experts top-1 (4,146,120
  parameters), as the seed's WikiText-103 run:
  seed        seeds.resnetbk.SeedResNetBK (non-causal theta/phi BK, its MoE loop) as the seed trained it: logits,
              cross-entropy, backward, clip_grad_norm(0.5), plain AdamW (lr 1e-3, weight decay 0.01)
  ours        ResNetBK at its defaults as train.py runs config/wt103_resnetbk.py: causal, bk_grad='analytic',
              bk_scan='auto' (the C kernel on a CPU), the fused training loss model(x, y), backward, clip 0.5,
              optim.build's fused AdamW; also with bk_grad='autograd' (the chunked form) and under bf16 autocast
              (mixed_precision: the seed's use_mixed_precision, train.py's dtype='bfloat16')
Timing: bench/timing.py, in rounds, round-robin by default (--block 1) or in blocks of calls (--block K, the steady
state); the median wall time and the median CPU time of the process are reported.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # noqa: E402
import bk_core  # noqa: E402
import model_resnetbk as bk  # noqa: E402
import seeds.resnetbk as seed  # noqa: E402
from bench import timing  # noqa: E402
from cli import fail  # noqa: E402

SEED_STEP = dict(B=16, N=128, vocab_size=30000, n_embd=64, n_layer=4)       # the seed's WikiText-103 setting
QUICK_STEP = dict(B=2, N=16, vocab_size=97, n_embd=16, n_layer=1)


def core_variants(B, N, device):
    """name -> function running one forward + backward of the BK-Core on fresh inputs of shape (B, N)."""
    gen = torch.Generator().manual_seed(N)
    v = (torch.rand(B, N, generator=gen) * 6 - 3).to(device).requires_grad_()
    w = torch.randn(B, N, 2, generator=gen).to(device)

    def seed_run():
        (seed.seed_bk_features(v) * w).sum().backward()

    def ours(scan, grad):
        def run():
            g = bk_core.bk_core(v, causal=True, grad=grad, scan=scan)
            (torch.view_as_real(g) * w).sum().backward()
        return run

    out = {'seed': seed_run}
    for scan, short in (('sequential', 'seq'), ('parallel', 'scan'), ('chunked', 'chunk')):
        for grad in ('autograd', 'analytic'):
            out[f'{short}/{grad}'] = ours(scan, grad)
    if device == 'cpu':
        out['c/analytic'] = ours('c', 'analytic')
    return out


def step_variants(device, B, N, vocab_size, n_embd, n_layer):
    """name -> function running one training step (see the module docstring); B sequences of N tokens."""
    V = vocab_size
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (B, N), generator=gen).to(device)
    tgt = torch.randint(0, V, (B, N), generator=gen).to(device)
    size = dict(vocab_size=V, block_size=N, n_embd=n_embd, n_layer=n_layer)

    def seed_step(model):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

        def run():
            loss = torch.nn.functional.cross_entropy(model(idx).view(-1, V), tgt.view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    def train_step(model, dtype='float32'):         # train.py's step (bench/timing.py)
        return timing.train_step(model, idx, tgt, dtype=dtype, device=device)

    def ours(**kw):
        torch.manual_seed(0)
        return bk.ResNetBK(bk.ResNetBKConfig(**size, **kw)).to(device)

    torch.manual_seed(0)
    return {'seed': seed_step(seed.SeedResNetBK(**size).to(device)),
            'ours': train_step(ours()),
            'ours/autograd': train_step(ours(bk_grad='autograd')),
            'ours/mixed_precision': train_step(ours(), 'bfloat16')}


def report(t, unit_ms_fmt):
    """One line per variant: median wall and CPU milliseconds, and the seed's time over this one (speed-up)."""
    sw, sc = t['seed'].median
    return "\n".join(f"    {k:22s} wall {unit_ms_fmt % (w * 1000)} ({sw / w:5.1f}x)   cpu {unit_ms_fmt % (c * 1000)} "
                     f"({sc / c:5.1f}x)" for k, (w, c) in ((k, x.median) for k, x in t.items()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--what', default='core,step', help="comma list of: core, step")
    p.add_argument('--lengths', default='128,512,2048', help="core sequence lengths")
    p.add_argument('--batch', type=int, default=16, help="core batch")
    p.add_argument('--reps', type=int, default=5, help="rounds")
    p.add_argument('--block', type=int, default=1, help="calls of a variant in a row per round (bench/timing.py)")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu', help="cpu or cuda (on a GPU the CPU time is not meaningful)")
    p.add_argument('--json', default='', help="also write the results to this file")
    p.add_argument('--quick', action='store_true', help="core at B=2, N=16,32; a tiny model's step; one round (tests)")
    args = p.parse_args()
    step_size = SEED_STEP
    if args.quick:
        args.lengths, args.batch, args.reps, args.block, step_size = '16,32', 2, 1, 1, QUICK_STEP
    if args.reps < 1 or args.block < 1:
        fail("--reps and --block must be >= 1")
    what = args.what.split(',')
    if set(what) - {'core', 'step'}:
        fail(f"--what takes a comma list of core, step; got {args.what!r}")
    try:
        lengths = [int(n) for n in args.lengths.split(',')]
    except ValueError:
        fail(f"--lengths takes a comma list of integers; got {args.lengths!r}")
    if min(lengths) < 2:
        fail("--lengths must be >= 2")
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)
    result = {'machine': hardware.machine_info(args.device), 'threads': args.threads, 'batch': args.batch,
              'device': args.device, 'reps': args.reps, 'block': args.block, 'step_size': step_size,
              'core': {}, 'step': {}}
    rounds = f"{args.reps} rounds x block {args.block}, median ms (speed-up vs seed)"
    if 'core' in what:
        print(f"BK-Core forward+backward, B={args.batch}, {rounds}")
        for N in lengths:
            t = timing.run_rounds(core_variants(args.batch, N, args.device), args.reps, args.block, device=args.device)
            result['core'][N] = {k: x.summary() for k, x in t.items()}
            print(f"  N={N}\n" + report(t, '%8.2f'), flush=True)
    if 'step' in what:
        print(f"training step, vocab {step_size['vocab_size']}, B={step_size['B']}, N={step_size['N']}, {rounds}")
        t = timing.run_rounds(step_variants(args.device, **step_size), args.reps, args.block, device=args.device)
        result['step'] = {k: x.summary() for k, x in t.items()}
        print(report(t, '%8.1f'), flush=True)
    if args.json:
        from checkpoint import atomic_write_text
        atomic_write_text(json.dumps({**hardware.run_record(args.device), **result}, indent=1), args.json)


if __name__ == '__main__':
    main()
