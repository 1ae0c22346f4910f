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

def newllm_headline(root):
    """The New-LLM run that reaches the seed's figure on the seed's metric."""
    r = load(root, 'results/cpu/wt2_newllm_muon7e-3.json')
    h = load(root, 'results/cpu/wt2_newllm_muon7e-3_history.json')
    reach = next(e for e in h if math.exp(e['val_lines_loss']) <= SEED_NEWLLM_PPL)
    end = h[-1]
    return (f"`python train.py config/wt2_newllm.py` at float32 (seed {r['config']['seed']}, one run) reaches "
            f"{math.exp(reach['val_lines_loss']):.2f} on the seed's own metric (line windows, word-1000 token PPL) "
            f"after {reach['tokens'] / 1e6:.1f}M tokens and {reach['seconds'] / 60:.1f} minutes of training, matching "
            f"the seed's {SEED_NEWLLM_PPL} (after its 27 CPU-hours); {math.exp(end['val_lines_loss']):.2f} after "
            f"{end['tokens'] / 1e6:.1f}M tokens, {end['seconds'] / 60:.1f} training minutes (the run's 12 whole-val "
            f"evaluations come on top in wall time; its file does not record it). A val figure selected on val: the "
            f"data here has no test split. 2 threads; {machine_text(r.get('machine'))} in its file "
            f"(`results/cpu/wt2_newllm_muon7e-3.json`; results/README.md says where the machine is recorded).")


def compare_answers(root):
    """The seeds' two questions answered by the equal-size comparison (results/compare/lm.json)."""
    r = load(root, 'results/compare/lm.json')
    S = r['summary']
    ratio = lambda a, b: S[a]['val_ppl']['mean'] / S[b]['val_ppl']['mean']
    lo = min(a / b for a in S['resnetbk']['val_ppl']['values'] for b in S['gpt']['val_ppl']['values'])
    hi = max(a / b for a in S['resnetbk']['val_ppl']['values'] for b in S['gpt']['val_ppl']['values'])
    n = S['gpt']['val_ppl']['n']
    return (f"At equal size (2.74M parameters, 4M tokens, {n} seeds, whole-val word-1000 token PPL, float32) New-LLM "
            f"has {ratio('newllm', 'gpt'):.2f}x the perplexity of a Transformer and {ratio('newllm', 'lstm'):.2f}x an "
            f"LSTM's; a causal ResNet-BK {ratio('resnetbk', 'gpt'):.3f}x the Transformer's ({lo:.3f} - {hi:.3f} over "
            f"the seed pairs), not within the seed's 30%.")


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


def probe_table(root):
    """Every model's probe sweep at the same budget (1M tokens, seed 0): the comparison's, and Gated DeltaNet's, run
    with --probes_only before its seeds (results/compare/gdn/lm_probes.json)."""
    main, gdn = load(root, 'results/compare/lm_probes.json'), load(root, 'results/compare/gdn/lm_probes.json')
    probes = {**main['probes'], **gdn['probes']}
    cells = sorted({(p['optimizer'], p['lr']) for ps in probes.values() for p in ps})
    lines = ['| model | ' + ' | '.join(f'{o} {lr:g}' for o, lr in cells) + ' |', '|---' * (len(cells) + 1) + '|']
    for m, ps in probes.items():
        got = {(p['optimizer'], p['lr']): p['val_ppl'] for p in ps}
        best = min((v, k) for k, v in got.items() if v)[1]
        lines.append(f"| {NAMES.get(m, m)} | " + ' | '.join(
            '' if c not in got else 'diverged' if got[c] is None else
            (f"**{got[c]:.2f}**" if c == best else f"{got[c]:.2f}") for c in cells) + ' |')
    g = gdn['settings']
    return '\n'.join(lines) + (
        f"\n\nWhole-val token PPL (word-1000) after {g['probe_tokens'] / 1e6:g}M training tokens, seed 0, float32, each "
        f"model's best in bold. Gated DeltaNet: `{gdn['command']}`, {machine_text(gdn['machine'])}, {gdn['date'][:10]};"
        f" the others: the comparison's sweep (`results/compare/lm_probes.json`).")


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
            out.append(f"\n{b['device_name']}, {b['threads']} thread, torch {b['torch']} (`results/bench_cpu.json`).")
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
    'probes': probe_table,
    'dailydialog': dailydialog_sentence,
    'compile': compile_sentence,
    'newllm-muon-runs': newllm_muon_runs,
    'lengths-full': lengths_full,
    'dtype-table': dtype_table,
    'compare-lm-full': compare_lm_md,
    'compare-recall-full': compare_recall_md,
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
