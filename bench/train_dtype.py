"""
How fast train.py runs a config in each precision on this machine, and which one dtype='auto' picks:

    python bench/train_dtype.py config/wt2_newllm.py --iters 20 --rounds 2 --json results/cpu/train_dtype.json

Each round runs `python train.py CONFIG --max_iters=N --dtype=D --log_interval=1` for D in auto, float32, bfloat16
(round-robin, so a change in the machine's load hits every dtype alike), reads the ms/iter train.py prints, and
stops the run once training ends (the evaluations are not timed). Reported: the median ms/iter over iterations
after the first 5 (warm-up), best round per dtype, and the choice auto made with the rates it measured.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import hardware  # noqa: E402
from cli import fail  # noqa: E402
from checkpoint import atomic_write_text  # noqa: E402


def run_once(config, dtype, iters, extra):
    """-> (median ms/iter after warm-up, the dtype line of the log)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, os.path.join(ROOT, 'train.py'), config, f'--max_iters={iters}', f'--dtype={dtype}',
               '--log_interval=1', f'--out_dir={out}', '--eval_interval=0', '--wandb_log=False', *extra]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ms, choice = [], ''
        for line in p.stdout:
            if 'dtype ' in line and line.startswith('device '):
                choice = line.split('| ', 1)[1].strip()
            if line.startswith('iter ') and 'ms/iter' in line:
                ms.append(float(line.split(' ms/iter')[0].rsplit('| ', 1)[1]))
            if line.startswith('stopping:'):
                p.kill()   # training is over; the evaluations that follow are not what is timed
                break
        p.wait()
        if len(ms) <= 5:
            fail(f"train.py {config} --dtype={dtype} printed {len(ms)} iterations: {p.stderr.read()[-500:]}")
        return statistics.median(ms[5:]), choice


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    p.add_argument('config')
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--dtypes', default='auto,float32,bfloat16')
    p.add_argument('--json', default=None)
    args, extra = p.parse_known_args()
    if args.iters <= 5 or args.rounds < 1:
        fail("--iters must be > 5 and --rounds >= 1")
    if not os.path.isfile(args.config):
        fail(f"no config file {args.config}")
    dtypes = args.dtypes.split(',')
    runs = {d: [] for d in dtypes}
    choices = {}
    for r in range(args.rounds):
        for d in dtypes:
            ms, choices[d] = run_once(args.config, d, args.iters, extra)
            runs[d].append(ms)
            print(f"round {r + 1}: {d:<9} {ms:8.1f} ms/iter   ({choices[d]})", flush=True)
    best = {d: min(v) for d, v in runs.items()}
    fastest = min((d for d in dtypes if d != 'auto'), key=best.get)
    print(f"best of {args.rounds}: " + ', '.join(f"{d} {best[d]:.1f} ms/iter" for d in dtypes) +
          f" | auto / {fastest} = {best['auto'] / best[fastest]:.3f}" if 'auto' in best else '')
    if args.json:
        result = {**hardware.run_record(), 'config': args.config, 'iters': args.iters,
                  'ms_per_iter_rounds': runs, 'ms_per_iter_best': best, 'auto_choice': choices.get('auto'),
                  'fastest_explicit': fastest}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_text(json.dumps(result, indent=2), args.json)


if __name__ == '__main__':
    main()
