"""
The seeds' question in one command: GPT, New-LLM, ResNet-BK, an LSTM and Gated DeltaNet at equal size, each at the
optimizer and learning rate one common probe sweep picks, several seeds; and a recall probe. Everything lands in
results/compare/.

    python compare.py --task lm                          # WikiText-2 word-1000, 4M tokens x 3 seeds per model
    python compare.py --task lm --tokens 4e6 --seeds 3 --jobs 2 \\
        --grid adamw:2e-3,adamw:5e-3,muon:5e-3,muon:1e-2,muon:2e-2,muon:4e-2
    python compare.py --task recall                      # MQAR (mqar.py)
    python compare.py --task lm --quick --dataset DIR    # tiny models and budget, the whole pipeline (tests)

Runs go to --work (default out-compare/). A run whose folder holds a finished run of the same command is reused, so
an interrupted comparison continues where it stopped; anything else in its folder is replaced. --jobs runs go at
once, each a process with OMP_NUM_THREADS=--threads (default: one 1-thread run per core), so a run's wall-clock is
measured with the other cores busy with other runs.

LM task, per model m of --models with its settings in config/cmp_<m>.py (2.74M parameters +-3%, the same data,
windows and schedule), every run at one device and dtype: train.py's 'auto' rule (hardware.py), decided
once here (pin it with --dtype, so that a rerun's runs are reused even if the measurement would now pick the other):
  1. probe sweep: `python train.py config/cmp_<m>.py --optimizer=o --learning_rate=lr --min_lr=lr/10 --max_iters=P
     ...` for every o:lr of --grid, P iterations of --probe_tokens (the cosine over the probe), the whole val split at
     the end. The lowest val loss picks m's optimizer and learning rate (a diverged probe loses). Same grid and budget
     for every model; a pick at the edge of its optimizer's lrs gets a probe past it (twice, or half, its lr), up
     to --extend times, so that no model is held at the grid's edge (the LSTM picked the largest lr of the first
     grid). The grid holds Muon beside AdamW because AdamW leaves New-LLM near the unigram loss for its
     first ~2M tokens (results/README.md, the plateau): with AdamW only, the comparison would mostly measure which
     model suffers that plateau. (Muon's lr is on AdamW's scale: optim.py matches their update sizes.)
  2. runs: every model x seed (0 .. --seeds - 1) trained for --tokens at its optimizer and learning rate, the whole
     val split evaluated --evals times: val PPL against tokens and against training seconds (train.py's history.json).
     A pick that diverges in a run (train.py stops a run whose val loss passes 2 ln V, twice a uniform guess's; the
     probe's shorter cosine can hide an lr too large for the full run) is dropped for the model's next-best probe
     setting that does not step larger (the same optimizer at a larger lr is skipped), all its seeds run again
     (folders <m>_seed<k>_<optimizer><lr>), and lm.md says so.
  3. per run, from its best.pt, with eval.py's functions at the run's dtype: val PPL and accuracy in the
     training windows (train.py's final evaluation), with the state carried through the split (recurrent models,
     as eval.py --carry_state), on the New-LLM seed's line windows (train.py's batch_mode='seed_lines' metric; data
     with <bos> lines only), and the loss by position out to the last of --context with the state carried (GPT:
     its block_size window sliding by half of it), as eval.py --context_lengths.
  4. per model: generation ms/token and memory at --gen_lengths tokens of context (bench/lengths.py's measurement:
     a fresh process per point, batch 1, greedy, 1 thread, vocab 1000; GPT's position table grown to the context as in
     bench/lengths.py, so it attends to all of it).
  -> lm.json (every run's numbers, the probes, the command, machine, date), lm.md (mean +- std over seeds, which
     differences exceed the spread, the two seed questions), lm_curves.png, lm_context.png.
A difference "exceeds the spread" when the seeds' ranges do not overlap: every seed of one model beats every seed of
the other (with 3 seeds each, a chance of 1 in 10 if the models were alike).

Recall task (mqar.py): per model of RECALL_MODELS (~0.1M parameters), sequence length T of --recall_lengths and
number of pairs n of --recall_pairs that fits (4 n <= T), one `python mqar.py ...` run of --recall_steps, the same
optimizer, learning rate and budget for all; held-out accuracy with every key asked once. The small vocabulary is
deliberate: on a CPU budget a 2-layer GPT stays on the plateau of guessing among the values present (accuracy
1 / n) for thousands of steps once there are more than a few dozen keys or T grows, so the defaults are the settings
where it finds the lookup; more pairs and longer T are flags away (and a GPU's budget).
  -> recall.json, recall.md (accuracy table, with each model's state size), recall.png.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

import checkpoint as ckpt_io
import config
import data
from cli import fail

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join('results', 'compare')
MODELS = ['gpt', 'newllm', 'resnetbk', 'lstm']
TARGET_PARAMS = 2_739_432   # the New-LLM seed's model

# --quick: each model at its config class's TINY size (model_base.py), tiny windows: the whole pipeline in seconds
QUICK_TRAIN = dict(batch_size=8, block_size=16, eval_iters=1, warmup_iters=2, log_interval=1)

# the recall probe's models, 103-108k parameters each at vocabulary 18 (GPT: + 64 per position), and the floats of
# state each carries per sequence: GPT 256 T (its key/value cache), New-LLM 64, LSTM 320, ResNet-BK 6
RECALL_MODELS = {
    'gpt': dict(n_layer=2, n_head=2, n_embd=64, dropout=0.0),                          # 105,344 at T 64
    'newllm': dict(n_embd=64, n_context=64, n_hidden=192, n_layer=2, dropout=0.0),     # 103,634
    'resnetbk': dict(n_embd=64, n_layer=3, n_experts=2, top_k=1, dropout=0.0),         # 107,550 at T 64
    'lstm': dict(n_embd=80, n_hidden=80, n_layer=2, dropout=0.0),                      # 105,138
    'gdn': dict(n_embd=64, n_layer=2, n_head=2, head_dim=32, mlp_hidden=160, dropout=0.0),   # 105,996
}
QUICK_RECALL_MODELS = {
    'gpt': dict(n_layer=1, n_head=1, n_embd=8, dropout=0.0),
    'newllm': dict(n_embd=8, n_context=8, n_hidden=8, n_layer=1, dropout=0.0),
    'resnetbk': dict(n_embd=8, n_layer=1, n_experts=1, top_k=1, dropout=0.0),
    'lstm': dict(n_embd=8, n_hidden=8, n_layer=1, dropout=0.0),
    'gdn': dict(n_embd=8, n_layer=1, n_head=1, head_dim=8, mlp_hidden=8, chunk_size=4, dropout=0.0),
}


def log(*args):
    print(*args, flush=True)


# -----------------------------------------------------------------------------------------------------------------
# the machine, statistics

def machine(device='cpu'):
    """hardware.py's record of the machine (CPU model, its bf16/AMX flags, cores, torch; the GPU on CUDA)."""
    import hardware
    return dict(hardware.machine_info(device), python=platform.python_version(), platform=platform.platform())


def stats(values):
    """-> {'mean', 'std' (sample, 0 for one value), 'min', 'max', 'n', 'values'} of the finite values, or None."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None
    return {'mean': float(np.mean(v)), 'std': float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            'min': min(v), 'max': max(v), 'n': len(v), 'values': v}


def pm(s, digits=2):
    if s is None:
        return 'n/a'
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s['n'] > 1 else f"{s['mean']:.{digits}f}"


def separated(a, b):
    """Do the seeds' ranges of a and b not overlap (at least two seeds each)? -> True / False / None."""
    if a is None or b is None or a['n'] < 2 or b['n'] < 2:
        return None
    return a['max'] < b['min'] or b['max'] < a['min']


# -----------------------------------------------------------------------------------------------------------------
# jobs: scripts run as a user would, --jobs at a time

class Job:
    def __init__(self, name, argv, out_dir, result_file):
        self.name, self.argv, self.out_dir, self.result_file = name, argv, out_dir, result_file

    def done(self):
        """A finished run of exactly this command is in out_dir."""
        try:
            with open(os.path.join(self.out_dir, 'compare_job.json')) as f:
                same = json.load(f)['argv'] == self.argv
        except (OSError, ValueError, KeyError):
            return False
        return same and os.path.isfile(os.path.join(self.out_dir, self.result_file))


def run_jobs(jobs, n_parallel, threads):
    """Run the jobs that are not done yet, n_parallel at a time; each logs to out_dir/log.txt. Exits with the log's
    tail if one fails (after the running ones end)."""
    todo = [j for j in jobs if not j.done()]
    if len(todo) < len(jobs):
        log(f"  {len(jobs) - len(todo)} of {len(jobs)} runs already done in their folders: reused")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    running, failed, n_done = [], [], 0
    while todo or running:
        while todo and len(running) < n_parallel and not failed:
            job = todo.pop(0)
            if os.path.exists(job.out_dir):
                shutil.rmtree(job.out_dir)   # an unfinished or different run of ours: start over
            os.makedirs(job.out_dir)
            with open(os.path.join(job.out_dir, 'compare_job.json'), 'w') as f:
                json.dump({'argv': job.argv}, f)
            logf = open(os.path.join(job.out_dir, 'log.txt'), 'w')
            proc = subprocess.Popen([sys.executable] + job.argv, env=env, stdout=logf,
                                    stderr=subprocess.STDOUT)
            running.append((job, proc, logf, time.time()))
        if failed and not running:
            break
        time.sleep(0.1)
        for item in list(running):
            job, proc, logf, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            n_done += 1
            if proc.returncode != 0:
                failed.append(job)
                todo.clear()
            log(f"  [{n_done}/{n_done + len(todo) + len(running)}] {job.name}: "
                f"{'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in {time.time() - t0:.0f} s")
    if failed:
        job = failed[0]
        with open(os.path.join(job.out_dir, 'log.txt')) as f:
            tail = f.read()[-2000:]
        fail(f"{job.name} failed; its log ({job.out_dir}/log.txt) ends:\n{tail}")


# -----------------------------------------------------------------------------------------------------------------
# LM task

def lm_setup(args):
    """-> per model: config path, model type, model fields (at the dataset's vocabulary), train.py overrides,
    tokens per iteration and parameter count."""
    setups = {}
    for m in args.models:
        path = os.path.join(args.config_dir, f'cmp_{m}.py')
        if not os.path.isfile(path):
            fail(f"{path} is missing (compare.py reads config/cmp_<model>.py for each model)")
        model_type = config.load([path], check_values=False).model_type
        overrides = dict(ckpt_io.model_classes(model_type)[0].TINY, **QUICK_TRAIN) if args.quick else {}
        if args.dataset:
            overrides['dataset'] = args.dataset
        try:
            cfg = config.load([path] + [f'--{k}={v}' for k, v in overrides.items()])
            data_dir, meta = data.load_meta(cfg.dataset)
        except (FileNotFoundError, ValueError) as e:
            fail(e)
        overrides.pop('dataset', None)
        model_args = {k: v for k, v in cfg.model_args.items() if k in cfg.model_set or k == 'block_size'}
        model_args['vocab_size'] = meta['vocab_size']  # the fields the config sets (the rest: the model's defaults)
        with torch.device('meta'):
            n_params = ckpt_io.build_model(model_type, model_args).get_num_params()
        setups[m] = {'config_file': path, 'model_type': model_type, 'model_args': model_args, 'overrides': overrides,
                     'tokens_per_iter': cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps,
                     'params': n_params, 'dataset': cfg.dataset, 'data_dir': data_dir, 'meta': meta,
                     'block_size': cfg.block_size, 'batch_size': cfg.batch_size}
    return setups


def train_argv(args, s, out_dir, optimizer, lr, iters, seed, evals):
    argv = ['train.py', s['config_file'], f'--out_dir={out_dir}', f'--seed={seed}', f'--optimizer={optimizer}',
            f'--learning_rate={lr:g}',
            f'--min_lr={lr / 10:g}', f'--max_iters={iters}', f'--lr_decay_iters={iters}',
            f'--eval_interval={max(1, iters // evals)}', '--eval_full=True', '--max_time=0', '--max_epochs=0',
            '--patience=0', '--init_from=scratch']
    if args.dataset:
        argv.append(f'--dataset={args.dataset}')
    for k, v in s['overrides'].items():
        argv.append(f'--{k}={v}')
    return argv + [f'--dtype={args.dtype}', f'--device={args.device}']


def read_run(out_dir):
    with open(os.path.join(out_dir, 'results.json')) as f:
        results = json.load(f)
    with open(os.path.join(out_dir, 'history.json')) as f:
        history = json.load(f)
    return results, history


def run_loss(results, history):
    """The whole-val loss a probe is judged by: its best evaluation; inf if it diverged."""
    if 'diverged' in str(results.get('stop_reason', '')):
        return float('inf')
    losses = [h['val_loss'] for h in history if h['val_loss'] is not None and math.isfinite(h['val_loss'])]
    return min(losses) if losses else float('inf')


def autocast_ctx(device, dtype):
    import hardware
    return hardware.autocast(device, dtype if dtype in hardware.DTYPES else 'float32')


@torch.no_grad()
def evaluate_run(out_dir, context_lengths, device):
    """The extra metrics of one finished run from its best.pt (see the module docstring, LM step 3)."""
    from eval import context_curve, context_table, evaluate_lines, evaluate_tokens, is_recurrent, split_metrics
    results, _ = read_run(out_dir)
    model, ckpt = ckpt_io.load_model(os.path.join(out_dir, 'best.pt'), device)
    cfg, meta, model_type = ckpt['config'], ckpt['meta'], ckpt['model_type']
    val = data.load_split(data.dataset_dir(cfg['dataset']), 'val')
    block, batch = cfg['block_size'], cfg['batch_size']
    dtype = results.get('dtype') or cfg.get('dtype')
    ctx = autocast_ctx(device, dtype)
    recurrent = is_recurrent(model_type, ckpt['model_args'])
    out = {'dtype': dtype, 'recurrent': recurrent}
    if recurrent:
        out['carry_state'] = split_metrics(evaluate_tokens(model, val, block, batch, device, ctx, carry_state=True),
                                           meta['splits'].get('val'))
    bos = meta.get('special_tokens', {}).get('<bos>')
    if bos is not None and np.any(np.asarray(val) == bos):
        r = evaluate_lines(model, val, bos, meta.get('pad_token') or 0, block, batch, device, ctx)
        out['seed_lines'] = dict(split_metrics(r, None), windows=r['windows'])
    edges = [c for c in context_lengths if c <= len(val) - 1]
    if edges:
        L = edges[-1]
        stride = max(1, block // 2)
        curve = context_curve(model, val, L, batch, device, ctx, recurrent, block, stride)
        loss_t = curve['nll'].double().mean(0).numpy()
        bins = np.unique(np.geomspace(1, L + 1, 40).astype(int))   # log-spaced bins of the context read, t + 1
        binned = [(float(math.sqrt(a * (b - 1))) if b - 1 > a else float(a), float(loss_t[a - 1:b - 1].mean()))
                  for a, b in zip(bins[:-1], bins[1:])]
        out['context'] = {'strands': curve['strands'], 'length': L, 'stride': None if recurrent else stride,
                          'how': 'state carried from the strand start' if recurrent else
                                 f'sliding window of {block}, stride {stride}',
                          'buckets': context_table(curve, edges), 'binned': binned}
    return out


def measure_generation(args, setups):
    """bench/lengths.py's generation measurement for each model at each --gen_lengths context (module docstring)."""
    from bench import lengths as bench
    out = {}
    device = args.device
    for m, s in setups.items():
        cfg = {k: v for k, v in s['model_args'].items() if k not in ('vocab_size', 'block_size')}
        out[m] = {}
        for T in args.gen_lengths:
            spec = {'model': s['model_type'], 'config': cfg, 'T': T, 'what': 'generate', 'device': device,
                    'threads': 1, 'batch_size': 1, 'repeats': 1, 'gen_tokens': args.gen_tokens, 'dtype': args.dtype}
            r = bench.measure(spec, args.gen_timeout)
            out[m][str(T)] = {'ms_per_token': 1000 * r['seconds'], 'peak_mb': r['peak_mb']} if 'error' not in r \
                else {'error': r['error']}
            log(f"  {m} generation at {T} tokens of context: " +
                (f"{1000 * r['seconds']:.2f} ms/token, {r['peak_mb']:.1f} MB" if 'error' not in r else r['error']))
    return out


def lm_task(args):
    import hardware
    setups = lm_setup(args)
    work = os.path.join(args.work, 'lm')
    try:  # one device and one dtype for every run: train.py's 'auto' rule, decided once here
        args.device = hardware.resolve_device(args.device or 'auto')
        choice = hardware.choose_dtype(args.dtype or 'auto', args.device)
    except ValueError as e:
        fail(f"{e}")
    args.dtype, args.dtype_choice = choice.dtype, choice.reason
    if args.add:
        check_addition(args)
    log(f"LM comparison: {', '.join(args.models)}; {args.tokens:,.0f} tokens x {args.seeds} seeds; probe sweep "
        f"{', '.join(f'{o}:{lr:g}' for o, lr in args.grid)} at {args.probe_tokens:,.0f} tokens each; {args.device}, "
        f"{choice.reason}")
    for m, s in setups.items():
        off = s['params'] / TARGET_PARAMS - 1
        log(f"  {m:9s} {s['params']:>10,} parameters ({100 * off:+.1f}% of New-LLM's {TARGET_PARAMS:,}) "
            f"{s['config_file']}")
        if not args.quick and abs(off) > 0.03:
            log(f"  warning: {m} is not within 3% of {TARGET_PARAMS:,} parameters")

    # 1. probe sweep, extended past the grid's edge while a model's pick sits on it
    log("probe sweep:")
    grids = {m: list(args.grid) for m in setups}
    probe_jobs = {m: {} for m in setups}   # (optimizer, lr) -> Job
    for extension in range(args.extend + 1):
        new = []
        for m, s in setups.items():
            iters = max(1, round(args.probe_tokens / s['tokens_per_iter']))
            for o, lr in grids[m]:
                if (o, lr) not in probe_jobs[m]:
                    d = os.path.join(work, 'probe', f'{m}_{o}_lr{lr:g}')
                    probe_jobs[m][o, lr] = Job(f"probe {m} {o} lr {lr:g}", train_argv(args, s, d, o, lr, iters, 0, 1),
                                               d, 'results.json')
                    new.append(probe_jobs[m][o, lr])
        run_jobs(new, args.jobs, args.threads)
        probe_out = {m: [probe_result(o, lr, job) for (o, lr), job in probe_jobs[m].items()] for m in setups}
        ranked = {m: best_first(probe_out[m]) for m in setups}  # a pick that diverges in the runs falls to the next
        beyond = {}
        for m in setups:
            if not ranked[m]:
                fail(f"every probe of {m} diverged; try lower learning rates in --grid")
            best = ranked[m][0]
            edge = grid_edge(grids[m], best['optimizer'], best['lr'])
            if edge and extension < args.extend:
                beyond[m] = (best['optimizer'], best['lr'] * EDGE_STEP[edge])
        if not beyond:
            break
        for m, (o, lr) in beyond.items():
            log(f"  {m}'s pick is at the grid's edge: probing {o} {lr:g} too")
            grids[m].append((o, lr))
    if args.probes_only:  # the sweep's answer alone: which optimizer and lr each model trains best at
        report = {'task': 'lm-probes', 'command': 'python ' + shlex.join(sys.argv), 'date': now(),
                  'machine': machine(args.device), 'settings': vars(args), 'probes': probe_out,
                  'chosen': {m: {k: ranked[m][0][k] for k in ('optimizer', 'lr')} for m in setups},
                  'models': {m: {'config_file': s['config_file'], 'params': s['params']} for m, s in setups.items()}}
        os.makedirs(args.out, exist_ok=True)
        ckpt_io.atomic_write_text(json.dumps(report, indent=1), os.path.join(args.out, 'lm_probes.json'))
        log(f"wrote {args.out}/lm_probes.json (--probes_only: no seed runs)")
        return report
    chosen = {}
    for m in setups:
        best = ranked[m][0]
        chosen[m] = {'optimizer': best['optimizer'], 'lr': best['lr']}
        edge = grid_edge(grids[m], best['optimizer'], best['lr'])
        if edge:
            chosen[m]['grid_edge'] = edge
            log(f"  note: {m}'s pick is the {edge} {best['optimizer']} lr probed; a {EDGE_WORD[edge]} one may do "
                f"better")
        log(f"  {m}: " + ', '.join(f"{p['optimizer']} {p['lr']:g} -> " +
                                   (f"val PPL {p['val_ppl']:.2f}" if p['val_ppl'] else "diverged")
                                   for p in probe_out[m]) + f"; picked {best['optimizer']} {best['lr']:g}")

    # 2. the runs; a model whose pick diverges in a run (the probe is shorter) is run again at its next-best probe
    log("runs:")
    runs, diverged = [], {m: [] for m in setups}

    def seed_jobs(m):
        s, c = setups[m], chosen[m]
        iters = max(1, round(args.tokens / s['tokens_per_iter']))
        jobs = []
        for seed in range(args.seeds):
            name = f'{m}_seed{seed}' if not diverged[m] else f"{m}_seed{seed}_{c['optimizer']}{c['lr']:g}"
            d = os.path.join(work, 'run', name)
            argv = train_argv(args, s, d, c['optimizer'], c['lr'], iters, seed, args.evals)
            jobs.append((seed, Job(f"{m} seed {seed} ({c['optimizer']} {c['lr']:g})", argv, d, 'results.json')))
        return jobs

    def fall_back_if_diverged(m, jobs):
        """If a finished run of m's jobs diverged: record it, move m to its next-best probe setting, return True."""
        bad = [(seed, job, diverged_at(job.out_dir, setups[m]['meta'])) for seed, job in jobs if job.done()]
        bad = [(seed, job, at) for seed, job, at in bad if at is not None]
        if not bad:
            return False
        diverged[m].append({'optimizer': chosen[m]['optimizer'], 'lr': chosen[m]['lr'],
                            'seeds': [{'seed': seed, 'iter': at, 'out_dir': job.out_dir} for seed, job, at in bad]})
        # the next-best probe, but no step as large as one that diverged: same optimizer, larger lr is not tried
        left = [p for p in ranked[m] if not any(p['optimizer'] == d['optimizer'] and p['lr'] >= d['lr']
                                                for d in diverged[m])]
        if not left:
            fail(f"{m} diverged at every setting of the probe grid it could fall back to")
        nxt = left[0]
        log(f"  {m}: {chosen[m]['optimizer']} {chosen[m]['lr']:g} diverged in seed(s) "
            f"{', '.join(str(seed) for seed, _, _ in bad)}; its runs go again at the next-best probe setting, "
            f"{nxt['optimizer']} {nxt['lr']:g}")
        chosen[m] = {'optimizer': nxt['optimizer'], 'lr': nxt['lr']}
        return True

    todo = list(setups)
    while todo:
        jobs = {}
        for m in todo:
            jobs[m] = seed_jobs(m)
            while fall_back_if_diverged(m, jobs[m]):   # a setting seen to diverge gets no more seeds
                jobs[m] = seed_jobs(m)
        run_jobs([job for m in todo for _, job in jobs[m]], args.jobs, args.threads)
        todo = [m for m in todo if fall_back_if_diverged(m, jobs[m])]
        runs += [(m, seed, job) for m in jobs if m not in todo for seed, job in jobs[m]]
    runs.sort(key=lambda r: list(setups).index(r[0]))

    # 3. metrics of every run, with all the cores now free
    log("evaluation of the best checkpoints:")
    torch.set_num_threads(max(1, args.jobs * args.threads))
    device = args.device
    per_run = []
    for m, seed, job in runs:
        results, history = read_run(job.out_dir)
        t0 = time.time()
        extra = evaluate_run(job.out_dir, args.context, device)
        final = results.get('final_eval_of_best', {}).get('val', {})
        per_run.append({'model': m, 'seed': seed, **chosen[m], 'out_dir': job.out_dir,
                        'command': 'python ' + shlex.join(job.argv), 'params': results['num_params'],
                        'tokens': results['total_tokens'], 'iterations': results['iterations'],
                        'train_seconds': results['training_time'],
                        'train_tokens_per_second': results['total_tokens'] / max(results['training_time'], 1e-9),
                        'dtype': results.get('dtype') or results['config'].get('dtype'),
                        'val': final, 'stop_reason': results.get('stop_reason'),
                        'curve': [{'tokens': h['tokens'], 'seconds': h['seconds'], 'val_loss': h['val_loss'],
                                   'val_ppl': h['val_ppl']} for h in history], **extra})
        log(f"  {m} seed {seed}: val PPL {final.get('ppl', float('nan')):.2f}" +
            (f", state carried {extra['carry_state']['ppl']:.2f}" if 'carry_state' in extra else '') +
            (f", seed's line windows {extra['seed_lines']['ppl']:.2f}" if 'seed_lines' in extra else '') +
            f" ({time.time() - t0:.0f} s)")

    # 4. generation speed and memory
    log("generation (bench/lengths.py):")
    generation = measure_generation(args, setups)

    report = {'task': 'lm', 'command': 'python ' + shlex.join(sys.argv), 'date': now(), 'machine': machine(device),
              'settings': vars(args),
              'models': {m: {'config_file': s['config_file'], 'model_type': s['model_type'],
                             'model_args': s['model_args'], 'params': s['params'],
                             'params_vs_target': s['params'] / TARGET_PARAMS - 1, **chosen[m],
                             'tokens_per_iter': s['tokens_per_iter']} for m, s in setups.items()},
              'dataset': {'name': next(iter(setups.values()))['dataset'],
                          'splits': next(iter(setups.values()))['meta'].get('splits')},
              'probes': probe_out, 'diverged': diverged, 'runs': per_run, 'generation': generation}
    report['summary'] = lm_summary(report)
    if args.add:
        report = merge_into_recorded(report, args)
    os.makedirs(args.out, exist_ok=True)
    ckpt_io.atomic_write_text(json.dumps(report, indent=1), os.path.join(args.out, 'lm.json'))
    ckpt_io.atomic_write_text(json.dumps({'command': report['command'], 'date': report['date'],
                                          'probes': report['probes'],
                                          'chosen': {m: {k: v[k] for k in ('optimizer', 'lr')}
                                                     for m, v in report['models'].items()},
                                          'added': report.get('added', [])}, indent=1),
                              os.path.join(args.out, 'lm_probes.json'))
    write_lm_report(report, args.out)
    log(f"wrote {args.out}/lm.json, lm.md, lm_probes.json, lm_curves.png, lm_context.png")
    return report


# the settings that decide a task's results: a model added to a finished comparison (--add) must share them
SHARED_SETTINGS = {'lm': ('tokens', 'seeds', 'grid', 'extend', 'probe_tokens', 'evals', 'context', 'gen_lengths',
                          'gen_tokens', 'dtype', 'device', 'dataset'),
                   'recall': ('recall_lengths', 'recall_pairs', 'recall_vocab', 'recall_steps', 'recall_batch',
                              'recall_lr', 'recall_seeds', 'recall_eval')}


def recorded_report(args, option):
    """-> (path, the task's report already in --out); a one-line error naming option when there is none."""
    path = os.path.join(args.out, f'{args.task}.json')
    try:
        with open(path) as f:
            return path, json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{option} needs {path} from an earlier run of --task {args.task}: {e}")


def check_addition(args):
    """--add, before anything runs: the recorded settings must be these and the models new to them."""
    path, old = recorded_report(args, '--add')
    same = lambda v: json.loads(json.dumps(v))   # tuples and lists alike
    differ = [k for k in SHARED_SETTINGS[args.task] if same(old['settings'].get(k)) != same(vars(args)[k])]
    if differ:
        fail(f"--add: {path} was run with " + ', '.join(f"{k}={old['settings'].get(k)!r}" for k in differ) +
             " (pass the same to add a model on equal terms)")
    twice = [m for m in args.models if m in old['models']]
    if twice:
        fail(f"--add: {', '.join(twice)} already in {path} (run without --add to redo the comparison)")
    return old


def merge_into_recorded(report, args):
    """--add: the report already in --out with this report's models added (models, probes, runs, generation); each
    addition is listed under 'added' with its command, date and machine."""
    old = check_addition(args)
    old['models'].update(report['models'])
    old['runs'] += report['runs']
    for key in ('probes', 'diverged', 'generation'):
        if key in old:
            old[key].update(report[key])
    old['added'] = old.get('added', []) + [{'models': list(report['models']), 'command': report['command'],
                                            'date': report['date'], 'machine': report['machine']}]
    if report['task'] == 'lm':
        old['summary'] = lm_summary(old)
    return old


def probe_result(optimizer, lr, job):
    """One finished probe's record: its final val loss (inf if it diverged) and curve."""
    results, history = read_run(job.out_dir)
    loss = run_loss(results, history)
    return {'optimizer': optimizer, 'lr': lr, 'val_loss': loss,
            'val_ppl': math.exp(loss) if math.isfinite(loss) else None,
            'tokens': results['total_tokens'], 'seconds': results['training_time'],
            'stop_reason': results.get('stop_reason'), 'out_dir': job.out_dir,
            'command': 'python ' + shlex.join(job.argv),
            'curve': [{'tokens': h['tokens'], 'seconds': h['seconds'], 'val_loss': h['val_loss']} for h in history]}


def best_first(probes):
    """The probes that did not diverge, lowest val loss first."""
    return sorted((p for p in probes if math.isfinite(p['val_loss'])), key=lambda p: p['val_loss'])


def diverged_at(out_dir, meta):
    """The iteration of a run's first evaluation that eval.diverged calls diverged (val loss above 2 ln V, or not
    finite; train.py stops there), or of train.py's stop for non-finite losses; None if the run did not diverge."""
    from eval import diverged
    results, history = read_run(out_dir)
    for h in history:
        if h['val_loss'] is not None and diverged(h['val_loss'], meta['vocab_size']):
            return h['iter']
    return results.get('iterations') if 'diverged' in str(results.get('stop_reason', '')) else None


def write_lm_report(report, out):
    ckpt_io.atomic_write_text(lm_markdown(report), os.path.join(out, 'lm.md'))
    plot_lm_curves(report, os.path.join(out, 'lm_curves.png'))
    plot_lm_context(report, os.path.join(out, 'lm_context.png'))


EDGE_WORD = {'largest': 'larger', 'smallest': 'smaller'}
EDGE_STEP = {'largest': 2.0, 'smallest': 0.5}   # the probe past an edge: twice (half) the edge's lr


def grid_edge(grid, optimizer, lr):
    """'largest' or 'smallest' if lr is at that end of the grid's (more than one) lrs of optimizer, else None."""
    lrs = sorted(x for o, x in grid if o == optimizer)
    if len(lrs) < 2:
        return None
    return 'largest' if lr == lrs[-1] else 'smallest' if lr == lrs[0] else None


def lm_summary(report):
    """Per model: mean +- std over seeds of every reported number."""
    out = {}
    for m in report['models']:
        runs = [r for r in report['runs'] if r['model'] == m]
        get = lambda f: stats([f(r) for r in runs])   # noqa: E731
        s = {'val_ppl': get(lambda r: r['val'].get('ppl')), 'val_accuracy': get(lambda r: r['val'].get('accuracy')),
             'carry_ppl': get(lambda r: r.get('carry_state', {}).get('ppl')),
             'seed_lines_ppl': get(lambda r: r.get('seed_lines', {}).get('ppl')),
             'train_tokens_per_second': get(lambda r: r['train_tokens_per_second']),
             'train_seconds': get(lambda r: r['train_seconds']), 'buckets': []}
        buckets = [r['context']['buckets'] for r in runs if 'context' in r]
        if buckets:
            for k, b in enumerate(buckets[0]):
                s['buckets'].append({'context_from': b['context_from'], 'context_to': b['context_to'],
                                     'loss': stats([bs[k]['loss'] for bs in buckets])})
        out[m] = s
    return out


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def lm_markdown(report):
    S, models, gen = report['summary'], list(report['models']), report['generation']
    def dev(mach):
        return mach.get('gpu') or (f"{mach['cpu']}, {mach['cpu_count']} cores, avx512_bf16 "
                                   f"{'yes' if mach['avx512_bf16'] else 'no'}, AMX {'yes' if mach['amx_bf16'] else 'no'}")
    seeds = report['settings']['seeds']
    lines = [f"# {' vs '.join(models)} at equal size ({report['dataset']['name']})", '',
             f"`{report['command']}` — {report['date']} — {dev(report['machine'])}, torch {report['machine']['torch']}",
             *[line for a in report.get('added', []) for line in (
                 '', f"`{a['command']}` ({', '.join(a['models'])}, added with its runs, probes and speeds) — "
                     f"{a['date']} — {dev(a['machine'])}, torch {a['machine']['torch']}")], '',
             f"Each model: {report['settings']['tokens']:,.0f} training tokens, {seeds} seed(s), mean ± standard "
             f"deviation over seeds; optimizer and learning rate from the probe sweep (lm_probes.json). Val PPL: "
             f"token perplexity "
             f"of the whole val split in the training windows, each from a fresh start; 'state carried': the "
             f"recurrent models reading the split as long streams; 'line windows': the New-LLM seed's metric.", '',
             '| model | params | optimizer, lr | dtype | val PPL | val PPL, state carried | val PPL, line windows '
             '| accuracy |',
             '|---|---|---|---|---|---|---|---|']
    for m in models:
        info, s = report['models'][m], S[m]
        dts = sorted({str(r['dtype']) for r in report['runs'] if r['model'] == m})
        lines.append(f"| {m} | {info['params']:,} ({100 * info['params_vs_target']:+.1f}%) | "
                     f"{info['optimizer']} {info['lr']:g} | "
                     f"{', '.join(dts)} | {pm(s['val_ppl'])} | {pm(s['carry_ppl'])} | {pm(s['seed_lines_ppl'])} | "
                     f"{pm(s['val_accuracy'], 4)} |")
    lengths = [str(T) for T in report['settings']['gen_lengths']]
    cells = sorted({(p['optimizer'], p['lr']) for m in models for p in report['probes'][m]})
    lines += ['', f"Probe sweep: val PPL (whole split, training windows) after "
                  f"{report['settings']['probe_tokens']:,.0f} training tokens, seed 0, the cosine over the probe; "
                  f"**bold**: the pick; n/a: not probed (the grid is extended only past the edge a model picked).",
              '',
              '| model | ' + ' | '.join(f'{o} {lr:g}' for o, lr in cells) + ' |', '|---|' + '---|' * len(cells)]
    for m in models:
        got = {(p['optimizer'], p['lr']): p['val_ppl'] for p in report['probes'][m]}
        info = report['models'][m]
        row = [('diverged' if got.get(c, 0) is None else f"{got[c]:.2f}" if c in got else 'n/a') for c in cells]
        row = [f'**{v}**' if c == (info['optimizer'], info['lr']) else v for c, v in zip(cells, row)]
        lines.append(f"| {m} | " + ' | '.join(row) + ' |')
    for m in models:
        for d in report.get('diverged', {}).get(m, []):
            lines += ['', f"{m} at {d['optimizer']} {d['lr']:g} diverged over the full run (val loss above 2 ln V) in "
                          f"seed(s) " +
                          ', '.join(f"{x['seed']} (evaluation at iteration {x['iter']})" for x in d['seeds']) +
                          f"; its runs are at the next-best probe setting ({report['models'][m]['optimizer']} "
                          f"{report['models'][m]['lr']:g})."]
        if report['models'][m].get('grid_edge'):
            info = report['models'][m]
            lines += ['', f"{m}'s pick is the {info['grid_edge']} {info['optimizer']} learning rate of the probe grid: "
                          f"a {EDGE_WORD[info['grid_edge']]} one might do better."]
    lines += ['', f"Speed on this machine ({report['settings']['jobs']} run(s) at a time, "
                  f"{report['settings']['threads']} thread(s) each); generation: batch 1, greedy, 1 thread, "
                  f"ms per token and peak memory above the baseline at each context length (bench/lengths.py).", '',
              '| model | train tokens/s | training s | ' + ' | '.join(f'gen ms/token @{T}' for T in lengths) + ' | ' +
              ' | '.join(f'gen MB @{T}' for T in lengths) + ' |',
              '|---|---|---|' + '---|' * (2 * len(lengths))]
    for m in models:
        g = gen.get(m, {})
        ms = [f"{g[T]['ms_per_token']:.2f}" if 'ms_per_token' in g.get(T, {}) else 'n/a' for T in lengths]
        mb = [f"{g[T]['peak_mb']:.1f}" if 'peak_mb' in g.get(T, {}) else 'n/a' for T in lengths]
        lines.append(f"| {m} | {pm(S[m]['train_tokens_per_second'], 0)} | {pm(S[m]['train_seconds'], 1)} | " +
                     ' | '.join(ms) + ' | ' + ' | '.join(mb) + ' |')
    buckets = next((S[m]['buckets'] for m in models if S[m]['buckets']), [])
    if buckets:
        run = next(r for r in report['runs'] if 'context' in r)
        lines += ['', f"Long text: loss (nats/token) by the number of tokens already read, over "
                      f"{run['context']['strands']} strands of {run['context']['length']:,} val tokens; recurrent "
                      f"models carry their state, GPT slides its window (lm_context.png).", '',
                  '| model | ' + ' | '.join(f"{b['context_from']:,}-{b['context_to']:,}" for b in buckets) + ' |',
                  '|---|' + '---|' * len(buckets)]
        for m in models:
            lines.append(f"| {m} | " + ' | '.join(pm(b['loss'], 3) for b in S[m]['buckets']) + ' |')
    lines += ['', "Differences in val PPL that exceed the spread (every seed of one model better than every seed of "
                  "the other):", '']
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            sa, sb = S[a]['val_ppl'], S[b]['val_ppl']
            sep = separated(sa, sb)
            if sa is None or sb is None:
                continue
            better, worse = (a, b) if sa['mean'] < sb['mean'] else (b, a)
            verdict = {True: f"**{better} better, beyond the spread**", False: 'within the spread',
                       None: 'one seed: no spread to compare with'}[sep]
            lines.append(f"- {a} {pm(sa)} vs {b} {pm(sb)}: {verdict}")
    lines += ['', '## The seeds\' questions', '']
    if 'newllm' in S:
        lines += ['Does New-LLM match a TinyGPT2 (GPT) / an LSTM of equal size?', '',
                  '| New-LLM vs | its val PPL | New-LLM | ratio New-LLM / it | beyond the spread |',
                  '|---|---|---|---|---|']
        for other in ('gpt', 'lstm'):
            if other in S and S[other]['val_ppl'] and S['newllm']['val_ppl']:
                so, sn = S[other]['val_ppl'], S['newllm']['val_ppl']
                sep = separated(so, sn)
                lines.append(f"| {other} | {pm(so)} | {pm(sn)} | {sn['mean'] / so['mean']:.3f} | "
                             f"{'n/a' if sep is None else ('yes' if sep else 'no')} |")
        lines.append('')
    if 'resnetbk' in S and 'gpt' in S and S['resnetbk']['val_ppl'] and S['gpt']['val_ppl']:
        sr, sg = S['resnetbk']['val_ppl'], S['gpt']['val_ppl']
        ratios = [r / g for r in sr['values'] for g in sg['values']]
        lo, hi = min(ratios), max(ratios)
        answer = 'yes' if hi <= 1.3 else ('no' if lo > 1.3 else 'undecided (the seeds straddle 1.3)')
        lines += ['Is ResNet-BK within 30% of the Transformer (val PPL ratio <= 1.3)?', '',
                  '| ResNet-BK | GPT | ratio (mean) | ratio over seed pairs | within 30% |', '|---|---|---|---|---|',
                  f"| {pm(sr)} | {pm(sg)} | {sr['mean'] / sg['mean']:.3f} | {lo:.3f} - {hi:.3f} | {answer} |", '']
    lines += ['Files: lm.json (every run, probe and measurement), lm_probes.json, lm_curves.png, lm_context.png.', '']
    return '\n'.join(lines)


def _plt():
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    ckpt_io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))


def plot_lm_curves(report, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, m in enumerate(report['models']):
        runs = [r for r in report['runs'] if r['model'] == m]
        for k, r in enumerate(runs):
            label = f"{m} ({report['models'][m]['params']:,} params, {r['optimizer']} {r['lr']:g})" if k == 0 else None
            for ax, key, scale in ((axes[0], 'tokens', 1e6), (axes[1], 'seconds', 1.0)):
                ax.plot([c[key] / scale for c in r['curve']], [c['val_ppl'] for c in r['curve']], color=f'C{i}',
                        marker='.', alpha=0.8, label=label)
    axes[0].set_xlabel('training tokens (M)')
    axes[1].set_xlabel('training seconds (this machine)')
    from matplotlib.ticker import FuncFormatter
    for ax in axes:
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
        ax.set_ylabel('val perplexity (whole split)')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['dataset']['name']}: one line per seed — {report['date']}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_lm_context(report, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, m in enumerate(report['models']):
        runs = [r for r in report['runs'] if r['model'] == m and 'context' in r]
        if not runs:
            continue
        xs = [x for x, _ in runs[0]['context']['binned']]
        ys = np.array([[y for _, y in r['context']['binned']] for r in runs])
        ax.plot(xs, ys.mean(0), color=f'C{i}', marker='.', label=f"{m} ({runs[0]['context']['how']})")
        if len(runs) > 1:
            ax.fill_between(xs, ys.min(0), ys.max(0), color=f'C{i}', alpha=0.2)
    ax.set_xscale('log')
    ax.set_xlabel('tokens of context read (t + 1)')
    ax.set_ylabel('val loss (nats/token), mean over seeds (band: min-max)')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    ax.set_title(f"Loss by position, {report['dataset']['name']} val split", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# -----------------------------------------------------------------------------------------------------------------
# recall task

def recall_task(args):
    import mqar
    configs = QUICK_RECALL_MODELS if args.quick else RECALL_MODELS
    work = os.path.join(args.work, 'recall')
    V = args.recall_vocab
    settings = [(T, n) for T in args.recall_lengths for n in args.recall_pairs if 4 * n <= T]
    if not settings:
        fail("no --recall_pairs fits any --recall_lengths (n_pairs pairs and as many queries need "
                         "4 n_pairs <= T)")
    try:
        for T, n in settings:
            mqar.check_setting(n, n, T, V)
    except ValueError as e:
        fail(f"{e}")
    jobs, meta = [], []
    for m in args.models:
        if m not in configs:
            fail(f"no recall configuration for {m!r} (RECALL_MODELS: {', '.join(configs)})")
        for T, n in settings:
            for seed in range(args.recall_seeds):
                d = os.path.join(work, f'{m}_T{T}_n{n}_seed{seed}')
                argv = ['mqar.py', '--model_type', m, '--model_args', json.dumps(configs[m]), '--n_pairs', str(n),
                        '--seq_len', str(T), '--vocab_size', str(V), '--steps', str(args.recall_steps),
                        '--batch_size', str(args.recall_batch), '--lr', f'{args.recall_lr:g}', '--seed', str(seed),
                        '--eval_sequences', str(args.recall_eval), '--out', os.path.join(d, 'result.json')]
                jobs.append(Job(f"recall {m} T {T} {n} pairs seed {seed}", argv, d, 'result.json'))
                meta.append((m, T, n, seed))
    if args.add:
        check_addition(args)
    log(f"recall (MQAR): {', '.join(args.models)} at (T, n_pairs) {settings}, vocab {V}, {args.recall_steps} steps "
        f"of {args.recall_batch}, lr {args.recall_lr:g}")
    run_jobs(jobs, args.jobs, args.threads)
    runs = []
    for (m, T, n, seed), job in zip(meta, jobs):
        with open(os.path.join(job.out_dir, 'result.json')) as f:
            r = json.load(f)
        r.update(model=m, out_dir=job.out_dir, command='python ' + shlex.join(job.argv))
        runs.append(r)
        log(f"  {m} T {T} {n} pairs seed {seed}: accuracy {r['accuracy']:.3f}")
    report = {'task': 'recall', 'command': 'python ' + shlex.join(sys.argv), 'date': now(), 'machine': machine(),
              'settings': vars(args), 'models': {m: configs[m] for m in args.models}, 'runs': runs}
    if args.add:
        report = merge_into_recorded(report, args)
    os.makedirs(args.out, exist_ok=True)
    ckpt_io.atomic_write_text(json.dumps(report, indent=1), os.path.join(args.out, 'recall.json'))
    write_recall_report(report, args.out)
    log(f"wrote {args.out}/recall.json, recall.md, recall.png")
    return report


def write_recall_report(report, out):
    ckpt_io.atomic_write_text(recall_markdown(report), os.path.join(out, 'recall.md'))
    plot_recall(report, os.path.join(out, 'recall.png'))


def recall_cells(report):
    """-> {(model, T, n_pairs): stats of the accuracy over seeds}, the (T, n_pairs) columns in order."""
    cells = {}
    for r in report['runs']:
        cells.setdefault((r['model'], r['seq_len'], r['n_pairs']), []).append(r['accuracy'])
    return {k: stats(v) for k, v in cells.items()}, sorted({(T, n) for _, T, n in cells})


def recall_markdown(report):
    s = report['settings']
    cells, cols = recall_cells(report)
    mach = report['machine']
    lines = ['# Recall probe: multi-query associative recall (MQAR)', '',
             f"`{report['command']}` — {report['date']} — {mach.get('gpu') or mach['cpu']}", '',
             f"Held-out accuracy on the values of queried keys, every key asked once, after {s['recall_steps']} "
             f"steps of {s['recall_batch']} sequences (a query in every free slot) per setting; vocabulary "
             f"{s['recall_vocab']}, AdamW lr {s['recall_lr']:g} for every model; {s['recall_seeds']} seed(s). A "
             f"model that only learned which values the sequence holds scores 1 / n_pairs. Low accuracy after a "
             f"short budget can mean 'not found yet' as well as 'cannot hold': the learning curves are in "
             f"recall.json. State: floats a model carries per sequence at its end (GPT: its key/value cache).",
             '', '| model | params | ' + ' | '.join(f"T {T}, {n} pairs" for T, n in cols) + ' | ' +
             ' | '.join(f"state @T {T}" for T in sorted({T for T, _ in cols})) + ' |',
             '|---|---|' + '---|' * (len(cols) + len({T for T, _ in cols}))]
    for m in report['models']:
        runs = [r for r in report['runs'] if r['model'] == m]
        if not runs:
            continue
        params = sorted({r['num_params'] for r in runs})
        state = {r['seq_len']: r['state_floats'] for r in runs}
        lines.append(f"| {m} | {', '.join(f'{p:,}' for p in params)} | " +
                     ' | '.join(pm(cells.get((m, T, n)), 3) for T, n in cols) + ' | ' +
                     ' | '.join(f"{state.get(T, 'n/a'):,}" for T in sorted({T for T, _ in cols})) + ' |')
    lines += ['', 'Files: recall.json (every run with its learning curve), recall.png.', '']
    return '\n'.join(lines)


def plot_recall(report, path):
    plt = _plt()
    cells, cols = recall_cells(report)
    lengths = sorted({T for T, _ in cols})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.5 * len(lengths), 4.2), squeeze=False)
    for ax, T in zip(axes[0], lengths):
        ns = [n for t, n in cols if t == T]
        for i, m in enumerate(report['models']):
            ys = [cells.get((m, T, n)) for n in ns]
            if all(y is None for y in ys):
                continue
            ax.errorbar(ns, [y['mean'] if y else np.nan for y in ys], yerr=[y['std'] if y else 0 for y in ys],
                        color=f'C{i}', marker='o', capsize=3, label=m)
        ax.plot(ns, [1 / n for n in ns], 'k:', label='1 / n_pairs (the values present, unbound)')
        ax.set_xscale('log', base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel('key-value pairs')
        ax.set_ylabel('held-out accuracy')
        ax.set_title(f'sequence length {T}', fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"MQAR, vocabulary {report['settings']['recall_vocab']} — {report['date']}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# -----------------------------------------------------------------------------------------------------------------
# command line

def in_root(path):
    """A path from the current folder as the scripts (run from this file's folder) must be given it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def number_list(text, kind=float):
    try:
        return [kind(float(x)) if kind is int else kind(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}")


def optimizer_lr_list(text):
    """'adamw:2e-3,muon:1e-2' -> [('adamw', 0.002), ('muon', 0.01)]"""
    import optim
    pairs = []
    for item in (x.strip() for x in text.split(',') if x.strip()):
        name, _, lr = item.partition(':')
        if name not in optim.OPTIMIZERS:
            raise argparse.ArgumentTypeError(f"unknown optimizer {name!r} in {item!r}; "
                                             f"choose from {', '.join(optim.OPTIMIZERS)}")
        try:
            pairs.append((name, float(lr)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected optimizer:lr, not {item!r}")
    return pairs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--task', choices=['lm', 'recall'], required=True)
    p.add_argument('--models', default=','.join(MODELS), help='comma-separated (default: all four)')
    p.add_argument('--work', default=None, help='folder of the runs, reused when run again (default out-compare)')
    p.add_argument('--out', default=None, help='where the results go (default results/compare)')
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1, help='runs at once (default: one per core)')
    p.add_argument('--threads', type=int, default=1, help='threads per run (OMP_NUM_THREADS)')
    p.add_argument('--quick', action='store_true', help='tiny models and budget: the whole pipeline in seconds')
    p.add_argument('--add', action='store_true',
                   help="add --models to the results already in --out, whose runs stay as recorded (the settings "
                        "must be theirs): a new model joins a finished comparison without rerunning the others")
    p.add_argument('--probes_only', action='store_true',
                   help='--task lm: run the probe sweep alone and write lm_probes.json (no seed runs)')
    p.add_argument('--render', action='store_true',
                   help="run nothing: write the task's markdown table and plots again from its JSON in --out")
    g = p.add_argument_group('LM task')
    g.add_argument('--dataset', default=None, help="default: each config's (wikitext2-word1000)")
    g.add_argument('--config_dir', default=None, help='where cmp_<model>.py are (default config)')
    g.add_argument('--tokens', type=float, default=None, help='training tokens per run (default 4e6: with the probe sweep and '
                   '3 seeds, 30 to 60 minutes per model on a 2-core CPU; lm.json records each run\'s seconds)')
    g.add_argument('--seeds', type=int, default=None, help='runs per model (default 3)')
    g.add_argument('--grid', type=optimizer_lr_list, default=None,
                   help='probe sweep, optimizer:lr pairs (default adamw:2e-3,adamw:5e-3,muon:5e-3,muon:1e-2,'
                        'muon:2e-2,muon:4e-2)')
    g.add_argument('--extend', type=int, default=None,
                   help="while a model's pick is the largest (smallest) lr of its optimizer in the grid, probe twice "
                        "(half) that lr too, at most this many times per model (default 2; 0 = the grid only)")
    g.add_argument('--probe_tokens', type=float, default=None, help='training tokens per probe (default 1e6)')
    g.add_argument('--evals', type=int, default=None, help='whole-val evaluations per run (default 6)')
    g.add_argument('--context', type=lambda t: number_list(t, int), default=None,
                   help='loss-by-position buckets (default 64,256,1024,4096)')
    g.add_argument('--gen_lengths', type=lambda t: number_list(t, int), default=None,
                   help='generation context lengths (default 64,1024,8192)')
    g.add_argument('--gen_tokens', type=int, default=None, help='generated tokens timed per point (default 16)')
    g.add_argument('--gen_timeout', type=float, default=600, help='seconds per generation point')
    g.add_argument('--dtype', default=None, help="every run's dtype (default: train.py's 'auto' rule, decided once "
                                                 "here for all runs)")
    g.add_argument('--device', default=None, help="every run's device (default: train.py's 'auto')")
    g = p.add_argument_group('recall task')
    g.add_argument('--recall_lengths', type=lambda t: number_list(t, int), default=None,
                   help='sequence lengths (default 32,64)')
    g.add_argument('--recall_pairs', type=lambda t: number_list(t, int), default=None,
                   help='numbers of key-value pairs, each that fits a length (4 n <= T) is run (default 2,4,8)')
    g.add_argument('--recall_vocab', type=int, default=None, help='vocabulary (default 18: 8 keys, 9 values)')
    g.add_argument('--recall_steps', type=int, default=None, help='training steps per run (default 3000)')
    g.add_argument('--recall_batch', type=int, default=None, help='sequences per step (default 32)')
    g.add_argument('--recall_lr', type=float, default=None, help='learning rate of every model (default 1e-3)')
    g.add_argument('--recall_seeds', type=int, default=None, help='runs per model and setting (default 1)')
    g.add_argument('--recall_eval', type=int, default=None, help='held-out sequences per setting (default 500)')
    args = p.parse_args(argv)
    full = dict(tokens=4e6, seeds=3, grid=[('adamw', 2e-3), ('adamw', 5e-3), ('muon', 5e-3), ('muon', 1e-2),
                                             ('muon', 2e-2), ('muon', 4e-2)],
                extend=2, probe_tokens=1e6, evals=6,
                context=[64, 256, 1024, 4096], gen_lengths=[64, 1024, 8192], gen_tokens=16,
                recall_lengths=[32, 64], recall_pairs=[2, 4, 8], recall_vocab=18, recall_steps=3000,
                recall_batch=32, recall_lr=1e-3, recall_seeds=1, recall_eval=500)
    quick = dict(tokens=4 * 128, seeds=2, grid=[('adamw', 1e-3), ('muon', 1e-2)], extend=2, probe_tokens=2 * 128,
                 evals=2,
                 context=[8, 32],
                 gen_lengths=[16, 32], gen_tokens=2, recall_lengths=[12], recall_pairs=[1, 2], recall_vocab=16,
                 recall_steps=4, recall_batch=4, recall_lr=1e-3, recall_seeds=1, recall_eval=20)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    # paths given are from the current folder, the defaults beside this file; the scripts run from here
    for key, default in (('work', 'out-compare'), ('out', OUT), ('config_dir', 'config')):
        setattr(args, key, in_root(getattr(args, key)) if getattr(args, key) else default)
    if args.dataset and os.path.exists(args.dataset):
        args.dataset = in_root(args.dataset)
    os.chdir(ROOT)
    if args.render:
        path, report = recorded_report(args, '--render')
        (write_lm_report if args.task == 'lm' else write_recall_report)(report, args.out)
        log(f"wrote {args.out}/{args.task}.md and its plots from {path}")
        return report
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    if not args.models or len(set(args.models)) < len(args.models):
        fail("--models must name each model once")
    if min(args.jobs, args.threads, args.seeds, args.evals, args.recall_steps, args.recall_seeds) < 1 or \
            min(args.tokens, args.probe_tokens) <= 0 or not args.grid or min(lr for _, lr in args.grid) <= 0 or \
            args.extend < 0:
        fail("--jobs, --threads, --seeds, --evals, --tokens, --probe_tokens, --grid's lrs and the recall "
             "budget must be positive, --extend >= 0")
    if args.task == 'lm':
        unknown = [m for m in args.models if m not in ckpt_io.MODELS]
        if unknown:
            fail(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ckpt_io.MODELS)}")
        return lm_task(args)
    return recall_task(args)


if __name__ == '__main__':
    main()
