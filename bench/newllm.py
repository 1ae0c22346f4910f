"""
Training speed of New-LLM: the seed's per-token loop (seeds/newllm.py) against model_newllm.NewLLM, in one run.

    python bench/newllm.py                                   # 2 threads, the seed's config and 63 positions
    python bench/newllm.py --rounds=10 --json=results/cpu/bench_newllm.json
    python bench/newllm.py --quick                           # a tiny config, one round (tests)

A training step on random tokens (speed does not depend on the data), dropout 0.1 as in the seed:
  seed loop   SeedNewLLM as the seed trained it: logits, F.cross_entropy, backward, global-norm clipping, plain Adam
  fast        NewLLM as train.py runs config/wt2_newllm_seed.py: the fused training loss model(x, y) in train mode
              (under bf16 autocast for the bf16 rows, train.py's dtype='bfloat16'), backward, clipping, and
              optim.build's fused Adam (--optimizer)
malloc: 'keep' as train.py runs on a CPU (hardware.keep_freed_memory: freed memory stays in the heap), 'glibc' with
glibc's default limits and the heap's free memory handed back before the step, so that its large buffers page-fault
in anew as they do without the setting; each step sets its own before it runs (the setting is process-wide), so the
two are timed in the same rounds.
Timing: bench/timing.py, round-robin over the settings; tokens/s = batch x positions / the median step time, and the
ratio against the seed loop at batch 32 fp32.

torch.compile is not among the settings: bench/compile.py measures it for every model (New-LLM's loop is one
custom operator the compiler calls as it is, so there is little left for it to fuse).
"""
import argparse
import json
import os
import sys

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hardware  # noqa: E402
import optim  # noqa: E402
from bench import timing  # noqa: E402
from cli import fail  # noqa: E402
from model_newllm import NewLLM, NewLLMConfig  # noqa: E402
from seeds.newllm import SeedNewLLM  # noqa: E402

SETTINGS = [  # (name, batch, dtype, malloc); the first is the baseline of the ratios
    ('seed loop', 32, 'float32', 'keep'),
    ('fast', 32, 'float32', 'keep'),
    ('fast', 32, 'bfloat16', 'keep'),
    ('fast', 64, 'bfloat16', 'keep'),
    ('fast', 128, 'float32', 'keep'),
    ('fast', 128, 'bfloat16', 'keep'),
    ('fast', 128, 'bfloat16', 'glibc'),
    ('fast', 256, 'bfloat16', 'keep'),
]
QUICK = dict(vocab_size=97, n_embd=16, n_hidden=32, n_context=16, n_layer=2)


def make_step(name, batch_size, dtype, malloc, cfg, seq_len, optimizer, device):
    """One training step closure of a setting (see the module docstring); lr 1e-4, betas (0.9, 0.999), clip 0.5:
    the seed's."""
    step = make_model_step(name, cfg, batch_size, seq_len, dtype, optimizer, device)

    def run():
        hardware.keep_freed_memory(malloc == 'keep')
        step()
    return run


def make_model_step(name, cfg, batch_size, seq_len, dtype, optimizer, device):
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), device=device)
    if name == 'seed loop':
        model = SeedNewLLM(cfg).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            logits, _ = model(x)
            loss = F.cross_entropy(logits.view(-1, cfg.vocab_size), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
        return step

    return timing.train_step(NewLLM(cfg).to(device), x, y, optimizer, 1e-4, 0.0, dtype=dtype, device=device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=10, help='round-robin rounds; the median step is reported')
    parser.add_argument('--seq_len', type=int, default=63)
    parser.add_argument('--optimizer', default='adam', help=f"the fast model's: {', '.join(optim.OPTIMIZERS)}")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--json', default=None, help='write the results to this file')
    parser.add_argument('--quick', action='store_true', help='a tiny config, 8 positions, one round (tests)')
    args = parser.parse_args()
    cfg = NewLLMConfig()  # the seed's: V=1000, E=256, H=512, C=256, L=6, dropout 0.1
    if args.quick:
        cfg, args.seq_len, args.rounds = NewLLMConfig(**QUICK), 8, 1
    if args.rounds < 1 or args.seq_len < 1 or args.threads < 1:
        fail("--rounds, --seq_len and --threads must be >= 1")
    if args.optimizer not in optim.OPTIMIZERS:
        fail(f"--optimizer must be one of {', '.join(optim.OPTIMIZERS)}, not {args.optimizer!r}")
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        fail("--device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)

    steps = {' '.join(map(str, s)): make_step(*s, cfg=cfg, seq_len=args.seq_len, optimizer=args.optimizer,
                                               device=args.device) for s in SETTINGS}
    times = timing.run_rounds(steps, args.rounds, device=args.device)
    tokens = {key: B * args.seq_len for key, (_, B, _, _) in zip(steps, SETTINGS)}
    rate = {key: tokens[key] / times[key].median[0] for key in steps}
    base = rate[next(iter(steps))]
    print(f"New-LLM training tokens/s, {args.threads} threads, T={args.seq_len}, median step of {args.rounds} "
          f"round-robin rounds; ratio vs the seed loop at batch 32 float32")
    print(f"{'model':<10} {'batch':>5} {'dtype':>8} {'malloc':>6} {'tokens/s':>9} {'ratio':>6} {'cpu tokens/s':>12}")
    rows = []
    for key, (name, B, dtype, malloc) in zip(steps, SETTINGS):
        cpu_rate = tokens[key] / times[key].median[1]
        rows.append(dict(model=name, batch_size=B, dtype=dtype, malloc=malloc, tokens_per_s=round(rate[key], 1),
                         ratio=round(rate[key] / base, 3), cpu_tokens_per_s=round(cpu_rate, 1),
                         **times[key].summary()))
        print(f"{name:<10} {B:>5} {dtype:>8} {malloc:>6} {rate[key]:>9.0f} {rate[key] / base:>5.2f}x {cpu_rate:>12.0f}")
    if args.json:
        from checkpoint import atomic_write_text
        atomic_write_text(json.dumps(dict(**hardware.run_record(args.device), threads=args.threads,
                                          seq_len=args.seq_len, rounds=args.rounds, optimizer=args.optimizer,
                                          config=vars(cfg), rows=rows), indent=1), args.json)


if __name__ == '__main__':
    main()
