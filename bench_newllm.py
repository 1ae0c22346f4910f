"""
Training speed of New-LLM: the seed's per-token loop against model_newllm.NewLLM, in one run on this machine.

A training step is forward + cross-entropy + backward + global-norm clipping + Adam, on random tokens (speed does not
depend on the data), dropout 0.1 as in the seed. Settings are timed in interleaved rounds (every setting for --seconds
per round); the table reports each setting's best round (on a shared machine the least disturbed one) and ratios
against the seed loop at batch 32 fp32.

    python bench_newllm.py                                   # 2 threads, the seed's config and 63 positions
    python bench_newllm.py --rounds=5 --json=results/bench_newllm.json

torch.compile is not among the settings: the loop is unrolled into the graph, so at 63 positions compilation took over
10 minutes on this 2-core CPU, and at 4 positions (70 s to compile) the compiled step was slower than eager.
"""
import argparse
import json
import platform
import time

import torch
from torch.nn import functional as F

from model_newllm import NewLLM, NewLLMConfig
from seeds.newllm import SeedNewLLM


def make_step(model, batch_size, seq_len, vocab_size, dtype):
    """One training step closure: forward, loss, backward, clip, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else torch.autocast('cpu', enabled=False)
    x = torch.randint(0, vocab_size, (batch_size, seq_len))
    y = torch.randint(0, vocab_size, (batch_size, seq_len))

    def step():
        with ctx:
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits.float().view(-1, vocab_size), y.view(-1), ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'unknown'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds; the best is reported')
    parser.add_argument('--seconds', type=float, default=4.0, help='time per setting per round')
    parser.add_argument('--seq_len', type=int, default=63)
    parser.add_argument('--json', default=None, help='write the results to this file')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = NewLLMConfig()  # the seed's: V=1000, E=256, H=512, C=256, L=6, dropout 0.1

    settings = [  # (name, model class, batch, dtype)
        ('seed loop', SeedNewLLM, 32, 'fp32'),
        ('fast', NewLLM, 32, 'fp32'),
        ('fast', NewLLM, 32, 'bf16'),
        ('fast', NewLLM, 64, 'bf16'),
        ('fast', NewLLM, 128, 'fp32'),
        ('fast', NewLLM, 128, 'bf16'),
        ('fast', NewLLM, 256, 'bf16'),
    ]
    steps = []
    for name, cls, B, dtype in settings:
        model = cls(cfg).train()
        assert sum(p.numel() for p in model.parameters()) == 2_739_432
        step = make_step(model, B, args.seq_len, cfg.vocab_size, dtype)
        step()  # warm-up
        steps.append(step)

    rates = [[] for _ in settings]
    for r in range(args.rounds):
        for k, step in enumerate(steps):
            n, t0 = 0, time.perf_counter()
            while True:
                step()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= args.seconds:
                    break
            rates[k].append(n * settings[k][2] * args.seq_len / dt)

    base = max(rates[0])
    rows = []
    print(f"New-LLM training tokens/s (forward+backward+clip+Adam), {args.threads} threads, T={args.seq_len}, "
          f"best of {args.rounds} interleaved rounds of {args.seconds:.0f} s; ratio vs the seed loop at batch 32 fp32")
    print(f"{'model':<10} {'batch':>5} {'dtype':>5} {'tokens/s':>9} {'ratio':>6}   all rounds")
    for (name, cls, B, dtype), rs in zip(settings, rates):
        rows.append(dict(model=name, batch_size=B, dtype=dtype, tokens_per_s=round(max(rs), 1),
                         ratio=round(max(rs) / base, 3), rounds=[round(x, 1) for x in rs]))
        print(f"{name:<10} {B:>5} {dtype:>5} {max(rs):>9.0f} {max(rs) / base:>5.2f}x   "
              + ' '.join(f'{x:.0f}' for x in rs))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(threads=args.threads, seq_len=args.seq_len, rounds=args.rounds, seconds=args.seconds,
                           config=vars(cfg), torch=torch.__version__, cpu=cpu_name(), rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
