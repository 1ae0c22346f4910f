"""
The figures of README.md and results/README.md, rendered from the results files that runs wrote, so that no number is
typed by hand and none can drift from its file.

    python results/render.py            # rewrite every block (and compare.py's lm.md / recall.md)
    python results/render.py --check    # exit 1, naming the block and its first stale line, if a document is stale

A block is the text between `<!-- render: NAME -->` and `<!-- /render -->`; BLOCKS maps each NAME to the function that
writes it from its files. Each figure says its unit, and each speed its machine (CPU model and flags, or the GPU).
"""
import argparse
import json
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DOCS = ('README.md', 'results/README.md')
SEED_NEWLLM_PPL = 23.34   # the New-LLM report's val PPL on its own metric (a seed's figure: seeds/README.md)


def load(root, path):
    with open(os.path.join(root, path)) as f:
        return json.load(f)


def machine_text(m):
    """A results file's machine dict -> 'Intel(R) Xeon(R) Processor, 2 cores, avx512_bf16, no AMX'."""
    if not m:
        return 'machine not recorded'
    if m.get('gpu') or m.get('device_name', '').startswith('NVIDIA'):
        return m.get('gpu') or m['device_name']
    flags = [f for f in ('avx512_bf16', 'amx_bf16') if m.get(f)]
    no = [f"no {f.split('_')[0].upper()}" for f in ('amx_bf16',) if f in m and not m[f]]
    return ', '.join([m.get('cpu', '?'), f"{m.get('cpu_count', '?')} cores"] + flags + no)


def mean_sd(s, digits=2):
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


NAMES = {'gpt': 'GPT', 'newllm': 'New-LLM', 'resnetbk': 'ResNet-BK', 'lstm': 'LSTM', 'gdn': 'Gated DeltaNet'}


# -----------------------------------------------------------------------------------------------------------------
# the blocks

def first_at_seed(history):
    """The first evaluation of a New-LLM history at or below the seed's val PPL on the seed's metric, or None."""
    return next((e for e in history if math.exp(e['val_lines_loss']) <= SEED_NEWLLM_PPL), None)


def newllm_headline(root):
    """The New-LLM run that reaches the seed's figure on the seed's metric."""
    r = load(root, 'results/cpu/wt2_newllm_muon7e-3.json')
    h = load(root, 'results/cpu/wt2_newllm_muon7e-3_history.json')
    reach = first_at_seed(h)
    end = h[-1]
    return (f"`python train.py config/wt2_newllm.py` at float32 (seed {r['config']['seed']}, one run) reaches "
            f"{math.exp(reach['val_lines_loss']):.2f} on the seed's own metric (line windows, word-1000 token PPL) "
            f"after {reach['tokens'] / 1e6:.1f}M tokens and {reach['seconds'] / 60:.1f} minutes of training, matching "
            f"the seed's {SEED_NEWLLM_PPL} (after its 27 CPU-hours); {math.exp(end['val_lines_loss']):.2f} after "
            f"{end['tokens'] / 1e6:.1f}M tokens, {end['seconds'] / 60:.1f} training minutes (the run's 12 whole-val "
            f"evaluations come on top in wall time; its file does not record it). A val figure selected on val: the "
            f"data here has no test split. 2 threads; {machine_text(r.get('machine'))} in its file "
            f"(`results/cpu/wt2_newllm_muon7e-3.json`; results/README.md says where the machine is recorded). "
            f"{newllm_headline_bf16(root)}")


def newllm_headline_bf16(root):
    """The same command at dtype auto on a CPU with native bf16, with its wall time."""
    r = load(root, 'results/cpu/wt2_newllm_step_after.json')
    h = load(root, 'results/cpu/wt2_newllm_step_after_history.json')
    reach = first_at_seed(h)
    if reach is None:
        return ''
    return (f"Left at dtype auto on a CPU with AMX ({r['dtype']}; {machine_text(r['machine'])}, {r['date'][:10]}) it "
            f"reaches {math.exp(reach['val_lines_loss']):.2f} after {reach['tokens'] / 1e6:.1f}M tokens and "
            f"{reach['wall_seconds'] / 60:.1f} minutes of wall time, evaluations included "
            f"(`results/cpu/wt2_newllm_step_after.json`).")


def compare_answers(root):
    """The seeds' two questions answered by the equal-size comparison (results/compare/lm.json)."""
    r = load(root, 'results/compare/lm.json')
    S = r['summary']
    ratio = lambda a, b: S[a]['val_ppl']['mean'] / S[b]['val_ppl']['mean']
    pairs = lambda m: [a / b for a in S[m]['val_ppl']['values'] for b in S['gpt']['val_ppl']['values']]
    n = S['gpt']['val_ppl']['n']
    text = (f"At equal size (2.74M parameters, 4M tokens, {n} seeds, whole-val word-1000 token PPL, float32) New-LLM "
            f"has {ratio('newllm', 'gpt'):.2f}x the perplexity of a Transformer and {ratio('newllm', 'lstm'):.2f}x an "
            f"LSTM's; a causal ResNet-BK {ratio('resnetbk', 'gpt'):.3f}x the Transformer's ({min(pairs('resnetbk')):.3f}"
            f" - {max(pairs('resnetbk')):.3f} over the seed pairs), not within the seed's 30%.")
    if 'gdn' in S:  # the modern linear-time layer: is the gap linear-time models' or the seeds' designs'?
        gap = {m: ratio(m, 'gpt') - 1 for m in ('gdn', 'newllm', 'resnetbk')}
        whose = ("most of the seeds' gap belongs to their designs, not to linear time" if
                 gap['gdn'] < min(gap['newllm'], gap['resnetbk']) / 2 else "linear time itself costs much of it")
        text += (f" A modern linear-time layer at the same size, Gated DeltaNet, has {ratio('gdn', 'gpt'):.3f}x the "
                 f"Transformer's ({min(pairs('gdn')):.3f} - {max(pairs('gdn')):.3f} over the seed pairs): {whose}.")
    return text


def compare_lm_tables(root):
    r = load(root, 'results/compare/lm.json')
    S, models = r['summary'], r['models']
    ppl = lambda m: mean_sd(S[m]['val_ppl'])
    beyond = lambda a, b: 'yes' if max(S[b]['val_ppl']['values']) < min(S[a]['val_ppl']['values']) else 'no'
    lines = ["| model | optimizer, lr (probe sweep) | val PPL | / GPT's | seed's metric (line windows) | "
             "train tokens/s |", "|---|---|---|---|---|---|"]
    for m in models:
        lines.append(f"| {NAMES.get(m, m)} | {models[m]['optimizer']} {models[m]['lr']:g} | {ppl(m)} | "
                     f"{S[m]['val_ppl']['mean'] / S['gpt']['val_ppl']['mean']:.3f} | "
                     f"{S[m]['seed_lines_ppl']['mean']:.2f} | {S[m]['train_tokens_per_second']['mean']:,.0f} |")
    ran = []
    for m, ds in r.get('diverged', {}).items():
        for d in ds:
            ran.append(f"{NAMES.get(m, m)}'s probe pick, {d['optimizer']} {d['lr']:g}, diverged over the full run; "
                       f"it ran at {models[m]['optimizer']} {models[m]['lr']:g}, the best probe that steps no larger")
    machines = [f"{machine_text(r['machine'])}, {r['date'][:10]} (`{r['command']}`)"]
    for a in r.get('added', []):
        machines.append(f"{', '.join(NAMES.get(m, m) for m in a['models'])}: {machine_text(a['machine'])}, "
                        f"{a['date'][:10]} (`{a['command']}`)")
    order = [f"{NAMES.get(a, a)} vs {NAMES.get(b, b)}: {beyond(a, b)}" for a, b in
             (('newllm', 'gpt'), ('newllm', 'lstm'), ('resnetbk', 'gpt')) + tuple(('gdn', m) for m in ('gpt',)
                                                                                if 'gdn' in S)]
    return '\n'.join(lines) + (
        f"\n\nMean ± standard deviation over {S['gpt']['val_ppl']['n']} seeds; whole-val token PPL (word-1000 "
        f"tokenizer). Beyond the spread (every seed of the better model beats every seed of the other): "
        f"{'; '.join(order)}. " + ('. '.join(ran) + '. ' if ran else '') +
        f"Speeds (train tokens/s, one thread per run, two runs at once) on: {'; '.join(machines)}.")


def recall_table(root):
    r = load(root, 'results/compare/recall.json')
    T = max(r['settings']['recall_lengths'])
    pairs = r['settings']['recall_pairs']
    lines = ["| model | " + ' | '.join(f'{n} pairs' for n in pairs) + " | state floats |",
             '|---' * (len(pairs) + 2) + '|']
    for m in r['models']:
        runs = {x['n_pairs']: x for x in r['runs'] if x['model'] == m and x['seq_len'] == T}
        state = runs[pairs[0]]['state_floats']
        lines.append(f"| {NAMES.get(m, m)} | " + ' | '.join(f"{runs[n]['accuracy']:.3f}" for n in pairs) +
                     f" | {state:,} |")
    s = r['settings']
    return '\n'.join(lines) + (
        f"\n\nMQAR at T = {T}, vocabulary {s['recall_vocab']}, ~105k parameters per model, {s['recall_steps']:,} "
        f"steps of {s['recall_batch']} at lr {s['recall_lr']:g} (one untuned setting), {s['recall_seeds']} seed; "
        f"accuracy on the queried values (chance 1/9 = 0.11). `results/compare/recall.json`.")


def dailydialog_sentence(root):
    ft, sc = (load(root, f'results/cpu/dd_newllm_{k}.json') for k in ('finetuned', 'scratch'))
    v = lambda r: r['final_eval_of_best']['val']['ppl']
    return (f"New-LLM, {ft['config']['max_time']:.0f} s of training each: val token PPL (DailyDialog, word-1000) "
            f"{v(ft):.2f} fine-tuned from WikiText-2 against {v(sc):.2f} from scratch "
            f"(`results/cpu/dd_newllm_finetuned.json`, `dd_newllm_scratch.json`; a 2-core AMD EPYC with native bf16).")


def newllm_muon_runs(root):
    """The 12M-token Muon runs of config/wt2_newllm.py at every evaluation, from their history files."""
    runs = [('7e-3', 'results/cpu/wt2_newllm_muon7e-3'), ('1e-2', 'results/cpu/wt2_newllm_muon')]
    hist = {lr: load(root, f'{stem}_history.json') for lr, stem in runs}
    a = hist['7e-3']
    cell = lambda v, best: f"**{v}**" if best else v
    reach = [math.exp(e['val_lines_loss']) <= SEED_NEWLLM_PPL for e in a]
    first = reach.index(True) if True in reach else None
    rows = [('tokens (M)', [f"{e['tokens'] / 1e6:.1f}" for e in a]),
            ('training minutes, 7e-3 (2 threads)', [f"{e['seconds'] / 60:.1f}" for e in a]),
            ("seed's metric (line windows), 7e-3", [f"{math.exp(e['val_lines_loss']):.2f}" for e in a]),
            ("seed's metric, 1e-2", [f"{math.exp(e['val_lines_loss']):.2f}" for e in hist['1e-2']]),
            ('training minutes, 1e-2 (1 thread)', [f"{e['seconds'] / 60:.1f}" for e in hist['1e-2']]),
            ('stream metric, 7e-3', [f"{math.exp(e['val_stream_loss']):.2f}" for e in a]),
            ('stream metric, 1e-2', [f"{math.exp(e['val_stream_loss']):.2f}" for e in hist['1e-2']])]
    lines = ['| ' + ' | '.join([rows[0][0]] + rows[0][1]) + ' |', '|---' * (len(a) + 1) + '|']
    for name, cells in rows[1:]:
        lines.append('| ' + ' | '.join([name] + [cell(c, i == first and '7e-3' in name and 'seed' in name)
                                                   for i, c in enumerate(cells)]) + ' |')
    seeds = ', '.join(f"{lr}: seed {load(root, stem + '.json')['config']['seed']}" for lr, stem in runs)
    return '\n'.join(lines) + (f"\n\nWord-1000 token PPL of the whole val split at each evaluation (the bold cell: the "
                               f"first at or below the seed's {SEED_NEWLLM_PPL}); one run each ({seeds}); float32. "
                               f"Files: `results/cpu/wt2_newllm_muon7e-3_history.json`, "
                               f"`results/cpu/wt2_newllm_muon_history.json`.")


def dtype_table(root):
    d = load(root, 'results/cpu/train_dtype.json')
    lines = ['| dtype | ms/iter, best of the rounds | every round |', '|---|---|---|']
    for k, v in d['ms_per_iter_best'].items():
        lines.append(f"| {k} | {v:,.1f} | {', '.join(f'{x:,.1f}' for x in d['ms_per_iter_rounds'][k])} |")
    return '\n'.join(lines) + (f"\n\ntrain.py logged: `{d['auto_choice']}`. {machine_text(d['machine'])}, {d['date']} "
                               f"(`{d['command']}`).")


def lengths_full(root):
    """bench/lengths.py's sweeps: the CPU table, and on the GPU which model trains fastest at each length."""
    out = []
    for dev in ('cpu', 'cuda'):
        b = load(root, f'results/bench_{dev}.json')
        res = {(x['model'], x['T']): x for x in b['results']}
        if dev == 'cpu':
            out += ["| model | train s/step T=1024 / 8192 | exponent | train MB T=8192 | gen ms/token T=1024 / 8192 | "
                    "exponent | gen MB T=8192 |", '|---|---|---|---|---|---|---|']
            for m in b['models']:
                g = lambda T, k: res[(m, T)][k]
                e = b['exponents'][m]
                out.append(f"| {NAMES.get(m, m)} | {g(1024, 'train_seconds'):.3f} / {g(8192, 'train_seconds'):.2f} | "
                           f"{e['train_seconds']:.2f} | {g(8192, 'train_peak_mb'):.0f} | "
                           f"{1000 * g(1024, 'gen_seconds_per_token'):.2f} / {1000 * g(8192, 'gen_seconds_per_token'):.2f}"
                           f" | {e['gen_seconds_per_token']:.2f} | {g(8192, 'gen_peak_mb'):.1f} |")
            sizes = '; '.join(f"{NAMES.get(m, m)} {v['params']:,}" + (f" + {v['params_per_position']} per position"
                                                                      if v['params_per_position'] else '')
                              for m, v in b['models'].items())
            out.append(f"\nParameters: {sizes}. {b['device_name']}, {b['threads']} thread, torch {b['torch']}, "
                       f"{b['seconds']:.0f} s in all (`results/bench_cpu.json`).")
        else:
            fastest = []
            for T in b['lengths']:
                have = {m: res[(m, T)]['train_seconds'] for m in b['models'] if res.get((m, T), {}).get('train_seconds')}
                if have:
                    fastest.append(f"{T}: {NAMES.get(min(have, key=have.get), '?')}")
            out.append(f"\nOn the GPU ({b['device_name']}, `results/bench_cuda.json`) the fastest training step at each "
                       f"length T: {', '.join(fastest)}; exponents of training time " +
                       ', '.join(f"{NAMES.get(m, m)} {b['exponents'][m]['train_seconds']:.2f}" for m in b['models']) + '.')
    return '\n'.join(out)


def compile_sentence(root):
    """bench/compile.py's measurement, which train.py's compile='auto' follows (hardware.choose_compile)."""
    import hardware
    d = load(root, 'results/cpu/compile.json')
    rows = ', '.join(f"{NAMES.get(r['model'], r['model'])} {r['cpu_speedup']:.2f}x (first step {r['compile_s']:.0f} s)"
                     for r in d['rows'])
    on = [NAMES.get(r['model'], r['model']) for r in d['rows'] if r['cpu_speedup'] >= hardware.COMPILE_MARGIN]
    return (f"`--compile` on CPU: 'auto' (the default) turns it on where `results/cpu/compile.json` measured the "
            f"compiled training step at least {hardware.COMPILE_MARGIN}x eager: {', '.join(on) or 'no model'}. Measured "
            f"(CPU time, {d['threads']} thread, {d['dtype']}, {machine_text(d['machine'])}, {d['date'][:10]}, "
            f"`{d['command']}`): {rows}. On CUDA: not measured yet ('auto' stays off).")


def newllm_run_rows(root, runs, head):
    """config/wt2_newllm.py runs [(label, file stem under results/cpu/)] -> the table of newllm_dtype_pair and
    newllm_step_pair: the seed's metric, when (tokens, training and wall minutes) it reached the seed's 23.34."""
    lines = [f"| {head} | seed's metric at the end | reaches 23.34 after | training min then | wall min then | "
             "training min, whole run | wall min, whole run | stream PPL (best.pt) | peak resident memory (MB) |",
             '|---|---|---|---|---|---|---|---|---|']
    for label, stem in runs:
        r = load(root, f'results/cpu/{stem}.json')
        h = load(root, f'results/cpu/{stem}_history.json')
        reach = first_at_seed(h)
        then = ('not reached', '', '') if reach is None else (
            f"{reach['tokens'] / 1e6:.1f}M tokens", f"{reach['seconds'] / 60:.1f}", f"{reach['wall_seconds'] / 60:.1f}")
        lines.append(f"| {label or r['dtype']} | {math.exp(h[-1]['val_lines_loss']):.2f} | {' | '.join(then)} | "
                     f"{r['training_time'] / 60:.1f} | {r['wall_seconds'] / 60:.1f} | "
                     f"{r['final_eval_of_best']['val']['ppl']:.2f} | {r['peak_memory_mb']:,.0f} |")
    return lines, r


def newllm_dtype_pair(root):
    """config/wt2_newllm.py at bfloat16 and at float32 on one machine: what bf16 costs on the seed's metric, and the
    wall time (evaluations included) to the seed's figure."""
    lines, r = newllm_run_rows(root, [(None, 'wt2_newllm_bf16'), (None, 'wt2_newllm_f32')], 'dtype')
    return '\n'.join(lines) + (
        f"\n\nOne run each (seed {r['config']['seed']}), one after the other on {machine_text(r['machine'])}, "
        f"{r['date'][:10]}: `python train.py config/wt2_newllm.py` (dtype auto, which picked bfloat16 there) and the "
        f"same with `--dtype=float32` (`results/cpu/wt2_newllm_{{bf16,f32}}{{.json,_history.json}}`). The seed's metric: line windows, word-1000 "
        f"token PPL at the 12 evaluations; wall time includes the evaluations and checkpoints.")


# The code of the two runs of newllm_step_pair (train.py's results.json records no code version).
STEP_PAIR_CODE = {'before': '51c2077', 'after': '5bb6a12'}


def newllm_step_pair(root):
    """config/wt2_newllm.py before and after the faster CPU step (issue 27's "Also"), one machine, one precision."""
    lines, r = newllm_run_rows(root, [(f"{tag}: {code}", f'wt2_newllm_step_{tag}') for tag, code in STEP_PAIR_CODE.items()],
                               'code')
    return '\n'.join(lines) + (
        f"\n\n`python train.py config/wt2_newllm.py` (dtype auto: {r['dtype']}) at the two commits, one after the other on "
        f"{machine_text(r['machine'])}, {r['date'][:10]} (`results/cpu/wt2_newllm_step_{{before,after}}{{.json,_history.json}}`). "
        f"The seed's metric: line windows, word-1000 token PPL; wall time includes the evaluations and checkpoints. "
        f"{newllm_step_answer(root)}")


def newllm_step_answer(root):
    """The wall time to the seed's 23.34 before and after, against the 15-minute goal and the spread between machines."""
    def wall_to_seed(stem):
        h = load(root, f'results/cpu/{stem}_history.json')
        reach = first_at_seed(h)
        return reach and reach['wall_seconds'] / 60
    before, after, other = (wall_to_seed(s) for s in ('wt2_newllm_step_before', 'wt2_newllm_step_after', 'wt2_newllm_bf16'))
    if before is None or after is None:
        return "One of the runs did not reach the seed's 23.34."
    other_machine = load(root, 'results/cpu/wt2_newllm_bf16.json')
    return (f"Wall time to the seed's 23.34: {before:.1f} -> {after:.1f} minutes ({before / after:.2f}x faster), so "
            f"the 15-minute goal is {'met' if after <= 15 else 'not met'} after"
            f"{' (and was already before, on this machine)' if before <= 15 else ''}. The before code took "
            f"{other:.1f} minutes on another machine of the same model ({machine_text(other_machine['machine'])}, "
            f"{other_machine['date'][:10]}, `results/cpu/wt2_newllm_bf16.json`): machines differ by more than the "
            f"goal's margin, so the pair above, not a single run, measures the change.")


def newllm_step_table(root):
    """bench/newllm.py's file: the seed's loop against ours, and ours with glibc's default malloc."""
    d = load(root, 'results/cpu/bench_newllm.json')
    lines = ['| model | batch | dtype | malloc | tokens/s | against the seed loop | CPU tokens/s |', '|---|---|---|---|---|---|---|']
    for r in d['rows']:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['dtype']} | {r['malloc']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['ratio']:.2f}x | {r['cpu_tokens_per_s']:,.0f} |")
    return '\n'.join(lines) + (
        f"\n\nMedian step of {d['rounds']} round-robin rounds, {d['threads']} threads, {d['seq_len']} positions, the seed's "
        f"config, {d['optimizer']}; {machine_text(d['machine'])}, {d['date'][:10]}, `{d['command']}`. malloc `keep`: "
        f"train.py's setting on a CPU (freed memory stays in the heap); `glibc`: the default, each step's large "
        f"buffers page-faulted in anew.")


def compile_table(root):
    """Every row of bench/compile.py's file, with the two ceilings that say why a speed-up is or is not possible."""
    d = load(root, 'results/cpu/compile.json')
    lines = ["| model | first compiled step (s) | eager ms | compiled ms | speed-up (CPU time) | ceiling: matmuls | "
             "ceiling: opaque kernels + matmuls |", "|---|---|---|---|---|---|---|"]
    for r in d['rows']:
        opaque = (f"{r['opaque_bound']:.2f}x ({100 * r['opaque_share']:.0f}% of the step)"
                  if r.get('opaque_bound') else 'not measured')
        lines.append(f"| {NAMES.get(r['model'], r['model'])} | {r['compile_s']:.1f} | {r['eager']['cpu_ms']:.0f} | "
                     f"{r['compiled']['cpu_ms']:.0f} | {r['cpu_speedup']:.2f}x | {r['speedup_bound']:.2f}x | {opaque} |")
    return '\n'.join(lines) + (
        f"\n\nMedian of {d['rounds']} round-robin rounds, batch 32 x 63, {d['threads']} thread, {d['dtype']}; "
        f"{machine_text(d['machine'])}, {d['date'][:10]}, `{d['command']}`. Ceilings: the most any compiler could give "
        f"if it removed everything but the matmuls (`speedup_bound`), or everything but the kernels it calls as "
        f"they are (the custom operators, nn.LSTM's) and the matmuls outside them (`opaque_bound`, torch.profiler). "
        f"{compile_rng_sentence(root, d)}")


def compile_rng_sentence(root, d):
    """The same benchmark with inductor's own random-number code (before hardware.compile_model fell back to eager's)."""
    g = load(root, 'results/cpu/compile_inductor_rng.json')
    rows = ', '.join(f"{NAMES.get(r['model'], r['model'])} {r['cpu_speedup']:.2f}x" for r in g['rows'])
    return (f"The compiled models draw dropout's random numbers with eager's ops (`hardware.compile_model`); with "
            f"inductor's generated code instead (`{g['command']}`, {g['date'][:10]}, the same machine) the speed-ups "
            f"were: {rows}.")


# -----------------------------------------------------------------------------------------------------------------
# New-LLM on WikiText-2: the runs and probes of results/README.md

NOT_RECORDED = 'machine not recorded in the file'
# The New-LLM seed's val PPL after epochs 1 and 5, quoted from its report's table (no results file holds them).
SEED_NEWLLM_REPORT_EPOCHS = {1: 48.6, 5: 36.7}


def where(r, path):
    """'Intel Xeon, 2 cores, ..., 2026-11-30 (`path`)': the machine and date a results file records, or says it has none."""
    return f"{machine_text(r['machine']) if r.get('machine') else NOT_RECORDED}" + \
        (f", {r['date'][:10]}" if r.get('date') else '') + f" (`{path}`)"


def loss_text(v):
    """A training loss, to about four figures: 3.63, 436.6, 1,510."""
    return f"{v:.2f}" if v < 100 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def newllm_adamw_run(root):
    """The 30-minute AdamW run of config/wt2_newllm.py (b5f966a): its evaluations, from its history file."""
    r = load(root, 'results/cpu/wt2_newllm.json')
    h = load(root, 'results/cpu/wt2_newllm_history.json')
    v = r['final_eval_of_best']['val']
    lines = ['| training time (min) | ' + ' | '.join(f"{e['seconds'] / 60:.1f}" for e in h) + ' |',
             '|---' * (len(h) + 1) + '|',
             '| tokens seen (M) | ' + ' | '.join(f"{e['tokens'] / 1e6:.1f}" for e in h) + ' |',
             '| val PPL, stream windows (word-1000 token) | ' +
             ' | '.join(f"**{e['val_ppl']:.2f}**" if e is h[-1] else f"{e['val_ppl']:.2f}" for e in h) + ' |']
    return (f"{r['total_tokens'] / 1e6:.2f}M tokens in {r['training_time']:,.0f} s of training "
            f"({r['total_tokens'] / r['training_time'] / 1e3:.1f}k tok/s on average; {NOT_RECORDED}). Val PPL on "
            f"**our stream metric** (whole val split, {v['tokens']:,} tokens, {r['model_args']['block_size']}-token "
            f"windows each from a zero context):\n\n" + '\n'.join(lines) +
            f"\n\nFiles: `results/cpu/wt2_newllm{{.json,_history.json,_curves.png}}`. The run ends at loss "
            f"{v['loss']:.4f}, stream PPL **{v['ppl']:.2f}**, accuracy {100 * v['accuracy']:.1f}%, and "
            f"{v['bits_per_byte']:.3f} bits/byte and word PPL {v['word_ppl']:.2f}, both **lower bounds** (word-1000 "
            f"`<unk>`, above).")


def newllm_lr2e_3(root):
    """The previous AdamW recipe (2e-3, 200 warm-up steps, weight decay 0.1): where it stood early and at the end."""
    r = load(root, 'results/cpu/wt2_newllm_lr2e-3.json')
    first = load(root, 'results/cpu/wt2_newllm_lr2e-3_history.json')[0]
    return (f"The previous config (AdamW 2e-3, 200 warm-up steps, weight decay 0.1) was still at stream PPL "
            f"{first['val_ppl']:.2f} after {first['seconds'] / 60:.1f} minutes and ended at {r['final_perplexity']:.2f} "
            f"(`results/cpu/wt2_newllm_lr2e-3{{.json,_history.json,_curves.png}}`).")


def newllm_lr_probes(root):
    """The 600-step AdamW probes (a file written by hand from the runs' logs: it says so in the notebook)."""
    d = load(root, 'results/cpu/wt2_newllm_lr_probes.json')
    best = min(p['val_ppl_600'] for p in d['probes'])
    lines = ['| lr | warm-up steps | weight decay | val PPL @300 | val PPL @600 |', '|---|---|---|---|---|']
    for p in d['probes']:
        s = dict(kv.split('=') for kv in p['overrides'].split(' (')[0].split())
        at600 = f"**{p['val_ppl_600']:.2f}**" if p['val_ppl_600'] == best else f"{p['val_ppl_600']:.2f}"
        lines.append(f"| {s['learning_rate']} | {s['warmup_iters']} | {s['weight_decay']} | {p['val_ppl_300']:.2f} | "
                     f"{at600} |")
    return '\n'.join(lines) + f"\n\nWhole-split stream PPL (word-1000 token); `results/cpu/wt2_newllm_lr_probes.json`."


PROBE_LABELS = {
    'optimizer-adamw': 'AdamW 5e-3 (the 2026-11-22 recipe)',
    'optimizer-muon': 'Muon 5e-3',
    'optimizer-muon_learning_rate-1e-2': 'Muon 1e-2',
    'batch_mode-seed_lines': "AdamW 5e-3, trained on the seed's line windows",
    'optimizer-muon_learning_rate-1e-2_batch_mode-seed_lines': "Muon 1e-2, trained on the seed's line windows",
    'adamw_lr_ratio-3': 'the AdamW share at 3e-2 (`adamw_lr_ratio=3`)',
    'batch_size-256_max_iters-150_lr_decay_iters-150_eval_interval-50': 'batch 256 (150 iterations)',
    'learning_rate-2e-2_warmup_iters-150': '150 warm-up steps (not 30)',
    'learning_rate-2e-2_adamw_lr_ratio-0.25': 'the AdamW share at 5e-3 (`adamw_lr_ratio=0.25`)',
}


def lines_ppl(e):
    return math.exp(e['val_lines_loss'])


def newllm_muon_probes(root):
    """Muon against AdamW: the 300-iteration probes of bench/probe.py (two files: the fifth probe ran apart)."""
    paths = ['results/cpu/newllm_probes_300.json', 'results/cpu/newllm_probes_300_muon_lines.json']
    files = [load(root, p) for p in paths]
    probes = [p for d in files for p in d['probes']]
    best = min(lines_ppl(p['history'][-1]) for p in probes)
    lines = ["| probe | seed's metric (line windows) @" + ' / @'.join(str(e['iter']) for e in probes[0]['history']) +
             f" | stream PPL @{probes[0]['history'][-1]['iter']} | first logged step with train loss < 4.0 |",
             '|---|---|---|---|']
    for p in probes:
        h = p['history']
        cells = [f"**{lines_ppl(e):.2f}**" if lines_ppl(e) == best else f"{lines_ppl(e):.2f}" for e in h]
        below = next((str(step) for step, loss in p['train_curve'] if loss < 4.0), f"never (> {h[-1]['iter']})")
        name = PROBE_LABELS.get(p['name'], p['name'])
        lines.append(f"| {f'**{name}**' if lines_ppl(h[-1]) == best else name} | {' / '.join(cells)} | "
                     f"{math.exp(h[-1]['val_stream_loss']):.2f} | {below} |")
    return '\n'.join(lines) + '\n\nWord-1000 token PPL of the whole val split. ' + \
        '; '.join(where(d, p) for d, p in zip(files, paths)) + '.'


def newllm_lr2e_2_probes(root):
    """Muon 2e-2 on the 12M-token schedule: two stability probes, beside the 1e-2 run's first evaluation."""
    paths = ['results/cpu/newllm_probes_lr2e-2_warmup.json', 'results/cpu/newllm_probes_lr2e-2_adamw0.25.json']
    files = [load(root, p) for p in paths]
    at = (200, 220, 240)
    lines = [f"| probe (Muon 2e-2, 12M schedule) | seed's metric @{files[0]['probes'][0]['history'][0]['iter']} | "
             f"training loss @{' / @'.join(map(str, at))} | end |", '|---|---|---|---|']
    for d in files:
        for p in d['probes']:
            h, curve = p['history'], dict(p['train_curve'])
            end = (f"diverged: val loss {h[-1]['val_lines_loss']:,.0f} at iteration {h[-1]['iter']}"
                   if 'diverged' in p['stop_reason'] else p['stop_reason'])
            lines.append(f"| {PROBE_LABELS.get(p['name'], p['name'])} | {lines_ppl(h[0]):.2f} | "
                         f"{' / '.join(loss_text(curve[s]) for s in at)} | {end} |")
    base = load(root, 'results/cpu/wt2_newllm_muon_history.json')
    lines.append(f"| (Muon 1e-2, the 12M run above) | {lines_ppl(base[0]):.2f} | | stable, "
                 f"{lines_ppl(base[-1]):.2f} at {base[-1]['iter']:,} |")
    return '\n'.join(lines) + ("\n\nSeed's metric: word-1000 token PPL on the line windows. " +
                               '; '.join(where(d, p) for d, p in zip(files, paths)) +
                               "; the baseline: `results/cpu/wt2_newllm_muon_history.json`.")


def newllm_other_levers(root):
    """The AdamW share's lr and a larger batch, at the 300-iteration probes' 2.4M tokens, beside the config."""
    base_path, path = 'results/cpu/newllm_probes_300.json', 'results/cpu/newllm_probes_300_adamw_ratio_batch.json'
    base = next(p for p in load(root, base_path)['probes'] if p['name'] == 'optimizer-muon_learning_rate-1e-2')
    d = load(root, path)
    probes = [base] + d['probes']
    best = min(lines_ppl(p['history'][-1]) for p in probes)
    M = lambda n: f"{n / 1e6:.1f}M"
    lines = [f"| probe ({M(base['total_tokens'])} tokens) | seed's metric at "
             f"{' / '.join(M(e['tokens']) for e in base['history'])} tokens | stream PPL at "
             f"{M(base['total_tokens'])} |", '|---|---|---|']
    for p in probes:
        name = 'Muon 1e-2 (the config; `newllm_probes_300.json`)' if p is base else PROBE_LABELS.get(p['name'],
                                                                                                     p['name'])
        cells = [f"**{lines_ppl(e):.2f}**" if lines_ppl(e) == best else f"{lines_ppl(e):.2f}" for e in p['history']]
        lines.append(f"| {name} | {' / '.join(cells)} | {math.exp(p['history'][-1]['val_stream_loss']):.2f} |")
    return '\n'.join(lines) + f"\n\nWord-1000 token PPL of the whole val split. {where(d, path)}."


def newllm_seed_run(root):
    """config/wt2_newllm_seed.py for 5 epochs, per epoch on the seed's metric, beside the seed's reported figures."""
    r = load(root, 'results/cpu/wt2_newllm_seed.json')
    h = load(root, 'results/cpu/wt2_newllm_seed_history.json')
    epochs = [round(e['epoch']) for e in h]
    seed = SEED_NEWLLM_REPORT_EPOCHS
    lines = ['| epoch | ' + ' | '.join(map(str, epochs)) + ' |', '|---' * (len(h) + 1) + '|',
             '| this repo (line windows) | ' + ' | '.join(f"{e['val_ppl']:.2f}" for e in h) + ' |',
             "| the seed (quoted from its report; no file) | " + ' | '.join(str(seed.get(n, '')) for n in epochs) + ' |']
    above = lambda n: 100 * (h[epochs.index(n)]['val_ppl'] / seed[n] - 1)
    v = r['final_eval_of_best']['val']
    per_epoch = r['training_time'] / len(h)
    return (f"{r['total_tokens'] / 1e6:.2f}M tokens in {r['training_time']:,.0f} s "
            f"({r['total_tokens'] / r['training_time'] / 1e3:.2f}k tok/s, {per_epoch / 60:.0f} min per epoch; "
            f"{NOT_RECORDED}). Val PPL on the seed's metric, per token, against the seed's table:\n\n" +
            '\n'.join(lines) +
            f"\n\nThe seed averaged batch means, and its init and data order differ, so only a few percent are "
            f"comparable: here epoch 1 is {above(1):.0f}% above the seed's and epoch 5 {above(5):.1f}% above. The "
            f"seed's 27 epochs at this rate would take about {27 * per_epoch / 3600:.1f} h. On our stream metric the "
            f"epoch-5 checkpoint scores {v['ppl']:.2f} (accuracy {100 * v['accuracy']:.1f}%). Files: "
            f"`results/cpu/wt2_newllm_seed{{.json,_history.json}}`.")


# -----------------------------------------------------------------------------------------------------------------
# ResNet-BK against a Transformer

def seed_setting_h100(root):
    """The seed's WikiText-103 setting on WikiText-2 (word-30000), ResNet-BK and a GPT of its size, on the H100."""
    rows = [('ResNet-BK', 'resnetbk'), ('GPT (n_embd 112, 5 layers)', 'gpt')]
    runs = {m: load(root, f'results/h100/wt2_seed_setting_{m}.json') for _, m in rows}
    lines = ['| model | params | val loss | val PPL (word-30000 token = word) | bits/byte (lower bound) | accuracy | '
             'training time |', '|---|---|---|---|---|---|---|']
    for name, m in rows:
        r, v = runs[m], runs[m]['final_eval_of_best']['val']
        lines.append(f"| {name} | {r['num_params']:,} | {v['loss']:.3f} | **{v['ppl']:.1f}** | "
                     f"{v['bits_per_byte']:.3f} | {100 * v['accuracy']:.1f}% | {r['training_time']:.0f} s |")
    bk, gpt = runs['resnetbk'], runs['gpt']
    ppl = lambda r: r['final_eval_of_best']['val']['ppl']
    return '\n'.join(lines) + (
        f"\n\nWhole validation split ({gpt['final_eval_of_best']['val']['tokens']:,} tokens); training times on a "
        f"CUDA device ({NOT_RECORDED}; the notebook's H100). ResNet-BK's perplexity is "
        f"{ppl(bk) / ppl(gpt):.2f}x the Transformer's: "
        f"{'**within 30%**' if ppl(bk) / ppl(gpt) <= 1.3 else '**not within 30%**'}, at the same data, steps "
        f"({gpt['iterations']:,}) and size. Measured before the precision fix: ResNet-BK's dense parts ran float32, "
        f"GPT's bf16, so the training times ({bk['training_time']:.0f} s vs {gpt['training_time']:.0f} s, "
        f"{bk['training_time'] / gpt['training_time']:.1f}x) are at unequal precision and not a speed comparison.")


def cmp720s_table(root):
    """The equal-budget (720 s) comparison on gpt2 tokens of commit b5f966a, CPU, 1 thread each."""
    rows = [('GPT', 'gpt'), ('New-LLM', 'newllm'), ('New-LLM, lr 5e-3, 30 warm-up', 'newllm_lr5e-3'),
            ('ResNet-BK', 'resnetbk')]
    runs = {k: load(root, f'results/cpu/cmp720s_{k}.json') for _, k in rows}
    lines = ['| model | params | iterations | tokens | tok/s | MFU | val loss | token PPL | bits/byte | word PPL | '
             'accuracy |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for name, k in rows:
        r, v = runs[k], runs[k]['final_eval_of_best']['val']
        mfu = r['total_training_flops'] / r['training_time'] / r['peak_flops']
        lines.append(f"| {name} | {r['num_params']:,} | {r['iterations']} | {r['total_tokens']:,} | "
                     f"{r['total_tokens'] / r['training_time']:,.0f} | {100 * mfu:.1f}% | {v['loss']:.3f} | "
                     f"{v['ppl']:.1f} | {v['bits_per_byte']:.3f} | {v['word_ppl']:.0f} | {100 * v['accuracy']:.1f}% |")
    bk, gpt = runs['resnetbk'], runs['gpt']
    ppl = lambda r: r['final_eval_of_best']['val']['ppl']
    return '\n'.join(lines) + (
        f"\n\nSpeeds: {NOT_RECORDED} (the notebook's CPU-EPYC). ResNet-BK's token PPL was "
        f"{ppl(bk) / ppl(gpt):.2f}x GPT's at the same wall-clock budget and size. It ran "
        f"{100 * (bk['iterations'] / gpt['iterations'] - 1):.0f}% more steps, but with its dense parts in float32 "
        f"against GPT's bf16 (the precision bug), so the step counts and tok/s are at unequal precision.")


def cmp75s_h100(root):
    """The 14M-parameter variants of the equal-budget comparison, 75 s each on a GPU."""
    g, b = (load(root, f'results/h100/cmp75s_{m}.json') for m in ('gpt', 'resnetbk'))
    v = lambda r: r['final_eval_of_best']['val']
    return (f"On a GPU ({NOT_RECORDED}; the notebook's H100) with {g['num_params'] / 1e6:.0f}M-parameter variants, "
            f"{g['config']['max_time']:.0f} s each (`results/h100/cmp75s_*.json`, whose `config` fields hold the "
            f"exact settings; older code with ResNet-BK alone on the fused loss; **[unequal precision]**), GPT reached "
            f"token PPL {v(g)['ppl']:.1f} ({v(g)['bits_per_byte']:.3f} bits/byte) in {g['iterations']:,} iterations "
            f"and ResNet-BK {v(b)['ppl']:.1f} ({v(b)['bits_per_byte']:.3f}) in {b['iterations']:,}; New-LLM's "
            f"`torch.compile` did not finish in the time given (no file).")


# -----------------------------------------------------------------------------------------------------------------
# DailyDialog, INT8 and long context, BK-Core speed

def dailydialog_tables(root):
    """Fine-tuned against scratch, New-LLM (word-1000) and GPT (gpt2 tokens): one table each."""
    out = []
    for m, lower in (('newllm', True), ('gpt', False)):
        runs = [load(root, f'results/cpu/dd_{m}_{k}.json') for k in ('finetuned', 'scratch')]
        lb = ' (lower bound)' if lower else ''
        out += [f"| start | val loss | token PPL | bits/byte{lb} | word PPL{lb} | accuracy |", '|---|---|---|---|---|---|']
        for r in runs:
            v, start = r['final_eval_of_best']['val'], r['config']['init_from']
            if start != 'scratch':
                start = f"`{start}`"
                if m == 'newllm':
                    start += (f" of the earlier lr-2e-3 run (stream PPL "
                              f"{load(root, 'results/cpu/wt2_newllm_lr2e-3.json')['final_perplexity']:.2f})")
            ppl = f"**{v['ppl']:.2f}**" if lower and r is runs[0] else f"{v['ppl']:.2f}" if lower else f"{v['ppl']:.1f}"
            word = f"{v['word_ppl']:.2f}" if lower else f"{v['word_ppl']:.0f}"
            out.append(f"| {start} | {v['loss']:.3f} | {ppl} | {v['bits_per_byte']:.3f} | {word} | "
                       f"{100 * v['accuracy']:.1f}% |")
        out.append(f"\n{NAMES[m]} {runs[0]['num_params'] / 1e6:.2f}M, {runs[0]['dataset_name']}, "
                   f"{runs[0]['config']['max_time']:.0f} s of training each (`results/cpu/dd_{m}_{{finetuned,scratch}}"
                   f".json`).\n")
    return '\n'.join(out)


def int8_short(root):
    """Dynamic INT8 of three short-trained checkpoints: serialized size and PPL change (eval.py --quantize int8)."""
    rows = [('GPT', 'gpt', 'the tied lm_head gets an INT8 copy while the fp32 embedding stays'),
            ('ResNet-BK', 'resnetbk', 'the BK-Core stays float32/complex'),
            ('New-LLM', 'newllm', 'only lm_head is quantized: the fused loop reads raw weight tensors')]
    MB = lambda n: n / 2 ** 20
    lines = ['| model | size | PPL change | note |', '|---|---|---|---|']
    for name, m, note in rows:
        r = load(root, f'results/eval_{m}_short.json')
        q = r['int8']
        lines.append(f"| {name} {r['num_params'] / 1e6:.1f}M | {MB(q['fp32_bytes']):.1f} -> {MB(q['int8_bytes']):.1f} "
                     f"MB (x{q['size_ratio']:.2f}) | {100 * q['ppl_change']:+.2f}% | {note} |")
    return '\n'.join(lines) + "\n\nMB = MiB of the serialized state dict; files `results/eval_{gpt,resnetbk,newllm}_short.json`."


def newllm_long_context(root):
    """The 30-minute run's checkpoint read four ways: zero context, state carried, INT8, and loss by context read."""
    base = load(root, 'results/cpu/eval_wt2_newllm.json')
    carry = load(root, 'results/cpu/eval_wt2_newllm_carry.json')
    q = load(root, 'results/cpu/eval_wt2_newllm_int8.json')['int8']
    buckets = load(root, 'results/cpu/context_wt2_newllm.json')['context_lengths']['buckets']
    strands = carry['mode'].split(': ')[1].split(' strands')[0]
    MB = lambda n: n / 2 ** 20
    m, c, i = base['metrics'], carry['metrics'], q['metrics']
    rng = ' / '.join(f"{b['context_from']}-{b['context_to']}" for b in buckets)
    ppls = ' / '.join(f"{b['ppl']:.2f}" for b in buckets)
    ses = ' / '.join(f"{b['se']:.3f}" for b in buckets)
    lines = ['| val split, word-1000 tokens | token PPL | bits/byte (lower bound) | note |', '|---|---|---|---|',
             f"| stream windows, zero context each (the run's table) | {m['ppl']:.2f} | {m['bits_per_byte']:.3f} | |",
             f"| state carried across windows ({strands} strands) | **{c['ppl']:.2f}** | {c['bits_per_byte']:.3f} | "
             f"streaming, O(1) memory |",
             f"| INT8 (dynamic, {', '.join(q['linear_int8'])} only) | {i['ppl']:.2f} ({100 * q['ppl_change']:+.2f}%) | "
             f"{i['bits_per_byte']:.3f} | {MB(q['fp32_bytes']):.2f} -> {MB(q['int8_bytes']):.2f} MB "
             f"(x{q['size_ratio']:.2f}); {100 * q['speed_change']:+.0f}% tok/s ({NOT_RECORDED}) |",
             f"| loss by context read (state carried): {rng} tokens | {ppls} | | +-{ses} nats (s.e.) |"]
    drop1 = 100 * (1 - buckets[1]['ppl'] / buckets[0]['ppl'])
    drop2 = 100 * (1 - buckets[-1]['ppl'] / buckets[1]['ppl'])
    return '\n'.join(lines) + (
        f"\n\nThe single context vector does use what it read, but little beyond the first few dozen tokens: PPL falls "
        f"by {drop1:.1f}% from the first {buckets[0]['context_to']} tokens to tokens {buckets[1]['context_from']}-"
        f"{buckets[1]['context_to']} and by only {drop2:.1f}% more out to {buckets[-1]['context_to']:,}. The seed "
        f"projected \"31 MB -> 8 MB, +1-3% PPL\" for New-LLM; its real checkpoint is {MB(q['fp32_bytes']):.1f} MB in "
        f"fp32 (the 31 MB held the optimizer state).")


def bkcore_table(root):
    """BK-Core forward + backward, the seed's against ours in C and in pure PyTorch (bench/bkcore.py --what core)."""
    path = 'results/cpu/bench_bkcore.json'
    d = load(root, path)
    ms = lambda x: f"{x:.3g} ms" if x < 100 else f"{x:.0f} ms"
    lines = ['| N | seed | ours, C | speed-up | ours, chunked | speed-up |', '|---|---|---|---|---|---|']
    goal = {'c/analytic': [], 'chunk/analytic': []}
    for n, t in d['core'].items():
        seed = t['seed']['wall_ms']
        cells = []
        for k in goal:
            x = seed / t[k]['wall_ms']
            goal[k].append((int(n), x))
            cells += [ms(t[k]['wall_ms']), f"{x:.1f}x"]
        lines.append(f"| {n} | {ms(seed)} | " + ' | '.join(cells) + ' |')
    holds = lambda k: [n for n, x in goal[k] if x >= 10]
    c, chunk = holds('c/analytic'), holds('chunk/analytic')
    return '\n'.join(lines) + (
        f"\n\nMedian wall time per call, B = {d['batch']}, {d['threads']} thread, torch {d['torch']}; "
        f"{where(d, path)}. The >= 10x goal holds with the C kernel at N = {', '.join(map(str, c)) or 'none'}, and in "
        f"pure PyTorch at N = {', '.join(map(str, chunk)) or 'none'}.")


def bkcore_step(root):
    """A full ResNet-BK training step at the seed's setting, the seed's code against ours, from both files."""
    out = []
    for path in ('results/cpu/bench_bkcore_step.json', 'results/cpu/bench_bkcore.json'):
        d = load(root, path)
        s = d['step']
        out.append(f"{s['seed']['wall_ms']:,.0f} ms against {s['ours']['wall_ms']:,.0f} ms, "
                   f"{s['seed']['wall_ms'] / s['ours']['wall_ms']:.2f}x, {d['threads']} thread, {where(d, path)}")
    size = load(root, 'results/cpu/bench_bkcore_step.json')['step_size']
    return (f"Median wall time of a training step (vocab {size['vocab_size']:,}, batch {size['B']}, "
            f"N {size['N']}), the seed's against ours: " + '; '.join(out) + '.')


def muon_lr_sweep(root):
    """What the comparison's probe sweep says about Muon and about New-LLM at 2e-2, and the two 4M-token runs at 2e-2
    that diverged (their history files)."""
    probes = load(root, 'results/compare/lm_probes.json')['probes']
    best = lambda m, opt: min(p['val_ppl'] for p in probes[m] if p['optimizer'] == opt and p['val_ppl'])
    at = lambda lr: next(p['val_ppl'] for p in probes['newllm'] if p['optimizer'] == 'muon' and p['lr'] == lr)
    pairs = ', '.join(f"{NAMES[m]} {best(m, 'muon'):.2f} vs {best(m, 'adamw'):.2f}" for m in probes)
    runs = []
    for seed in (0, 1):
        h = load(root, f'results/compare/diverged/newllm_muon2e-2_seed{seed}_history.json')
        runs.append(f"{' / '.join(loss_text(e['val_loss']) for e in h)} at iterations "
                    f"{' / '.join(str(e['iter']) for e in h)} in seed {seed}")
    return (f"Muon beats AdamW at equal tokens for every model ({pairs}, each model's best of each). For New-LLM the "
            f"best Muon lr at 1M tokens is 2e-2 ({at(2e-2):.2f} against {at(1e-2):.2f} at the config's 1e-2; 4e-2: "
            f"{at(4e-2):.2f}), **but 2e-2 is not stable over a longer run**: both 4M-token runs at Muon 2e-2 (cosine "
            f"over 496 iterations, so the lr stays near 2e-2 for longer than in the probe) blew "
            f"up: val loss {'; '.join(runs)} (`results/compare/diverged/newllm_muon2e-2_seed{{0,1}}_history.json`).")


def demoted(markdown):
    """compare.py's report inside a section of the notebook: its headings three levels down."""
    return re.sub(r'^(#+) ', lambda m: '###' + m.group(1) + ' ', markdown.strip(), flags=re.M)


def compare_lm_md(root):
    import compare
    return demoted(compare.lm_markdown(load(root, 'results/compare/lm.json')))


def compare_recall_md(root):
    import compare
    return demoted(compare.recall_markdown(load(root, 'results/compare/recall.json')))


BLOCKS = {
    'newllm-headline': newllm_headline,
    'compare-answers': compare_answers,
    'compare-lm': compare_lm_tables,
    'recall': recall_table,
    'dailydialog': dailydialog_sentence,
    'compile': compile_sentence,
    'compile-table': compile_table,
    'newllm-dtype-pair': newllm_dtype_pair,
    'newllm-step-pair': newllm_step_pair,
    'newllm-step': newllm_step_table,
    'newllm-muon-runs': newllm_muon_runs,
    'lengths-full': lengths_full,
    'dtype-table': dtype_table,
    'compare-lm-full': compare_lm_md,
    'compare-recall-full': compare_recall_md,
    'newllm-adamw-run': newllm_adamw_run,
    'newllm-lr2e-3': newllm_lr2e_3,
    'newllm-lr-probes': newllm_lr_probes,
    'newllm-muon-probes': newllm_muon_probes,
    'newllm-lr2e-2-probes': newllm_lr2e_2_probes,
    'newllm-other-levers': newllm_other_levers,
    'newllm-seed-run': newllm_seed_run,
    'seed-setting-h100': seed_setting_h100,
    'cmp720s': cmp720s_table,
    'cmp75s-h100': cmp75s_h100,
    'dailydialog-tables': dailydialog_tables,
    'int8-short': int8_short,
    'newllm-long-context': newllm_long_context,
    'bkcore-core': bkcore_table,
    'bkcore-step': bkcore_step,
    'muon-lr-sweep': muon_lr_sweep,
}
BLOCK_RE = re.compile(r'(<!-- render: ([\w-]+) -->\n)(.*?)(<!-- /render -->)', re.S)


def render_text(text, root):
    """-> (the document with every block rewritten, [(block, old, new)])."""
    changes = []

    def fill(m):
        name = m.group(2)
        if name not in BLOCKS:
            raise ValueError(f"unknown render block {name!r} (results/render.py BLOCKS: {', '.join(BLOCKS)})")
        new = BLOCKS[name](root).rstrip('\n') + '\n'
        if new != m.group(3):
            changes.append((name, m.group(3), new))
        return m.group(1) + new + m.group(4)
    return BLOCK_RE.sub(fill, text), changes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 if a block differs from its files')
    p.add_argument('--root', default=ROOT, help='the repository (default: this one)')
    args = p.parse_args(argv)
    stale = []
    for doc in DOCS:
        path = os.path.join(args.root, doc)
        with open(path) as f:
            text = f.read()
        try:
            new, changes = render_text(text, args.root)
        except (OSError, KeyError, ValueError, StopIteration) as e:
            print(f"error: {doc}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        for name, old, fresh in changes:
            first = next((f"'{a}' should be '{b}'" for a, b in zip(old.splitlines(), fresh.splitlines()) if a != b),
                         'its length differs')
            stale.append(f"{doc}: block {name}: {first}")
        if changes and not args.check:
            from checkpoint import atomic_write_text
            atomic_write_text(new, path)
    for name, fn in (('lm', 'lm_markdown'), ('recall', 'recall_markdown')):  # compare.py's own reports
        import compare
        path = os.path.join(args.root, 'results', 'compare', f'{name}.md')
        report = load(args.root, f'results/compare/{name}.json')
        with open(path) as f:
            if f.read() != getattr(compare, fn)(report):
                stale.append(f"results/compare/{name}.md: differs from {name}.json (python compare.py --task {name} "
                             f"--render)")
                if not args.check:
                    (compare.write_lm_report if name == 'lm' else compare.write_recall_report)(
                        report, os.path.dirname(path))
    if args.check:
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        return 1 if stale else 0
    print(f"rendered {len(stale)} changed block(s)" + ''.join(f"\n  {s.split(': should')[0]}" for s in stale))
    return 0


if __name__ == '__main__':
    sys.exit(main())
