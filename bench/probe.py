"""
Short training probes of one config under several settings, run by train.py itself, their curves collected in one
results file:

    python bench/probe.py config/wt2_newllm.py --max_iters=400 --lr_decay_iters=400 \\
        --probe optimizer=adamw --probe optimizer=muon,learning_rate=1e-2 --jobs 2 --threads 1 \\
        --json results/cpu/newllm_probes.json

Every probe is `python train.py CONFIG <common --key=value> <its own key=value pairs> --out_dir=WORK/<name>`
(a fresh run each time); `--jobs` run at once, each with `--threads` threads. The JSON holds, per probe, its command,
its history (every evaluation: iterations, tokens, seconds, val losses), tokens per second and its stop reason,
with the machine and the date. A probe's name is its settings.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import hardware  # noqa: E402
from checkpoint import atomic_write_text  # noqa: E402
from cli import fail  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    p.add_argument('config')
    p.add_argument('--probe', action='append', required=True, help='key=value,key=value (repeat for each probe)')
    p.add_argument('--jobs', type=int, default=1)
    p.add_argument('--threads', type=int, default=0, help='threads per probe (0 = torch default)')
    p.add_argument('--work', default='out-probes')
    p.add_argument('--json', required=True)
    p.add_argument('--collect', action='store_true', help='run nothing: collect the probes already in --work')
    args, common = p.parse_known_args()
    if args.jobs < 1 or args.threads < 0:
        fail("--jobs must be >= 1 and --threads >= 0")
    if not os.path.isfile(args.config):
        fail(f"no config file {args.config}")
    probes = []
    for spec in args.probe:
        pairs = [kv for kv in spec.split(',') if kv]
        if not pairs or any('=' not in kv for kv in pairs):
            fail(f"--probe {spec!r} must be key=value pairs separated by commas")
        name = '_'.join(kv.replace('=', '-') for kv in pairs)
        out = os.path.join(args.work, name)
        cmd = [sys.executable, os.path.join(ROOT, 'train.py'), args.config, *common,
               *[f'--{kv}' for kv in pairs], f'--out_dir={out}', '--overwrite=True']
        probes.append({'name': name, 'settings': pairs, 'out_dir': out, 'cmd': cmd})
    env = dict(os.environ, **({'OMP_NUM_THREADS': str(args.threads)} if args.threads else {}))
    pending, running = ([] if args.collect else list(probes)), []
    while pending or running:
        while pending and len(running) < args.jobs:
            pr = pending.pop(0)
            os.makedirs(pr['out_dir'], exist_ok=True)
            pr['log'] = open(os.path.join(pr['out_dir'], 'train.log'), 'w')
            pr['proc'] = subprocess.Popen(pr['cmd'], cwd=ROOT, stdout=pr['log'], stderr=subprocess.STDOUT, env=env)
            running.append(pr)
            print(f"started {pr['name']}", flush=True)
        time.sleep(2)
        for pr in [r for r in running if r['proc'].poll() is not None]:
            running.remove(pr)
            pr['log'].close()
            print(f"finished {pr['name']} (exit {pr['proc'].returncode})", flush=True)
    report = {'command': 'python ' + ' '.join(sys.argv), 'date': time.strftime('%Y-%m-%d %H:%M'),
              'machine': dict(hardware.machine_info(), threads_per_probe=args.threads, jobs=args.jobs),
              'config': args.config, 'common': common, 'probes': []}
    for pr in probes:
        entry = {'name': pr['name'], 'settings': pr['settings'], 'command': ' '.join(pr['cmd'][1:]),
                 'exit_code': pr['proc'].returncode if 'proc' in pr else None}
        log_path = os.path.join(pr['out_dir'], 'train.log')
        if os.path.isfile(log_path):  # the logged training loss every log_interval iterations
            with open(log_path) as fh:
                entry['train_curve'] = [[int(line.split()[1]), float(line.split('| loss ')[1].split()[0])]
                                        for line in fh if line.startswith('iter ') and '| loss ' in line]
        for f in ('history.json', 'results.json'):
            path = os.path.join(pr['out_dir'], f)
            if os.path.isfile(path):
                with open(path) as fh:
                    entry[f.split('.')[0]] = json.load(fh)
        res = entry.pop('results', None)
        if res:
            entry.update({k: res.get(k) for k in ('training_time', 'total_tokens', 'stop_reason', 'dtype',
                                                   'final_eval_of_best', 'num_params')})
            entry['tokens_per_second'] = res['total_tokens'] / max(res['training_time'], 1e-9)
        report['probes'].append(entry)
        last = (entry.get('history') or [{}])[-1]
        print(f"{pr['name']:<50} " + ', '.join(f"{k} {last[k]:.4f}" for k in last if k.endswith('loss')))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    atomic_write_text(json.dumps({**hardware.run_record(), **report}, indent=1), args.json)
    if any(pr['proc'].returncode for pr in probes if 'proc' in pr):
        fail("some probes failed; see their train.log under " + args.work)


if __name__ == '__main__':
    main()
