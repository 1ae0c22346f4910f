"""compare.py end to end on a tiny budget: every file of results/compare written and well-formed."""
import json

import pytest

import compare
from helpers import make_dataset, run

PNG = b'\x89PNG\r\n\x1a\n'


def test_lm_task_quick(tmp_path):
    """The LM pipeline (probe sweep with its extension past the edge, seeds, extra metrics, generation) with one
    window and one recurrent model."""
    data = make_dataset(tmp_path / 'tiny', lines=True)   # <bos> lines: the seed's line-window metric is computed
    out = tmp_path / 'results'
    grid = [('adamw', 1e-3), ('muon', 5e-3), ('muon', 1e-2)]
    run('compare.py', '--task', 'lm', '--quick', '--models', 'gpt,lstm', f'--dataset={data}',
        f'--work={tmp_path}/work', f'--out={out}', '--jobs', '2', '--grid', 'adamw:1e-3,muon:5e-3,muon:1e-2',
        '--extend', '1', timeout=600)
    for name in ('lm_curves.png', 'lm_context.png'):
        assert (out / name).read_bytes().startswith(PNG) and (out / name).stat().st_size > 10_000, name
    r = json.loads((out / 'lm.json').read_text())
    assert r['command'].startswith('python ') and r['date'] and r['machine']['cpu'] and r['machine']['cpu_count'] >= 1
    assert isinstance(r['machine']['avx512_bf16'], bool)
    assert set(r['models']) == {'gpt', 'lstm'}
    assert len(r['runs']) == 4 and {(x['model'], x['seed']) for x in r['runs']} == {(m, s) for m in ('gpt', 'lstm')
                                                                                   for s in (0, 1)}
    for x in r['runs']:
        assert x['val']['ppl'] > 1 and x['tokens'] == 512 and x['train_tokens_per_second'] > 0 and x['curve']
        assert x['seed_lines']['ppl'] > 1 and x['context']['buckets'][-1]['context_to'] == 32
        assert ('carry_state' in x) == (x['model'] == 'lstm')
    for m in ('gpt', 'lstm'):
        best = min(r['probes'][m], key=lambda p: p['val_loss'])
        assert (r['models'][m]['optimizer'], r['models'][m]['lr']) == (best['optimizer'], best['lr'])
        # one probe past the grid's edge exactly when the grid's best sits on it (muon 5e-3 or 1e-2)
        probed = {(p['optimizer'], p['lr']): p['val_loss'] for p in r['probes'][m]}
        grid_best = min(grid, key=probed.get)
        edge = compare.grid_edge(grid, *grid_best)
        assert set(probed) - set(grid) == ({(grid_best[0], grid_best[1] * compare.EDGE_STEP[edge])} if edge
                                           else set())
        assert all(f"--optimizer={x['optimizer']} --learning_rate={x['lr']:g}" in x['command'] for x in r['runs'])
        assert set(r['generation'][m]) == {'16', '32'} and r['generation'][m]['32']['ms_per_token'] > 0
        assert r['summary'][m]['val_ppl']['n'] == 2
    probes = json.loads((out / 'lm_probes.json').read_text())
    assert set(probes['chosen']) == {'gpt', 'lstm'}
    md = (out / 'lm.md').read_text()
    for text in ('| gpt |', '| lstm |', 'gen ms/token @32', 'Long text', 'exceed the spread', 'Probe sweep',
                 '| model | adamw 0.001 | muon '):
        assert text in md, text
    assert 'nan' not in md.lower()
    (out / 'lm.md').unlink()
    run('compare.py', '--task', 'lm', '--render', f'--out={out}')   # the report again from lm.json alone
    assert (out / 'lm.md').read_text() == md
    # --probes_only: the sweep alone (its finished probes reused), the same picks
    p = run('compare.py', '--task', 'lm', '--quick', '--models', 'gpt,lstm', f'--dataset={data}', f'--work={tmp_path}/work',
            f'--out={tmp_path}/probes', '--jobs', '2', '--grid', 'adamw:1e-3,muon:5e-3,muon:1e-2', '--extend', '1',
            '--probes_only', timeout=600)
    only = json.loads((tmp_path / 'probes' / 'lm_probes.json').read_text())
    assert only['chosen'] == probes['chosen'] and 'runs already done in their folders: reused' in p.stdout
    assert not (tmp_path / 'probes' / 'lm.json').exists()


def test_recall_task_quick_and_reuse(tmp_path):
    out = tmp_path / 'results'
    args = ['--task', 'recall', '--quick', '--models', 'gpt,lstm', f'--work={tmp_path}/work', f'--out={out}',
            '--jobs', '2']
    run('compare.py', *args, timeout=300)
    r = json.loads((out / 'recall.json').read_text())
    assert {(x['model'], x['seq_len'], x['n_pairs']) for x in r['runs']} == {(m, 12, n) for m in ('gpt', 'lstm')
                                                                             for n in (1, 2)}
    assert all(0 <= x['accuracy'] <= 1 and x['state_floats'] > 0 for x in r['runs'])
    assert r['machine']['cpu'] and r['command'].startswith('python ')
    md = (out / 'recall.md').read_text()
    assert '| gpt |' in md and 'T 12, 2 pairs' in md and 'state @T 12' in md
    assert (out / 'recall.png').read_bytes().startswith(PNG)
    p = run('compare.py', *args, timeout=300)   # a second time: every run is found done and reused
    assert '4 of 4 runs already done in their folders: reused' in p.stdout
    p = run('compare.py', '--task', 'recall', '--render', f'--out={tmp_path}/none', check=False)
    assert p.returncode == 2 and p.stderr.startswith('error: --render needs') and len(p.stderr.splitlines()) == 1
    # --add: a model joins the recorded comparison on its settings; the recorded runs stay as they are
    add = [a if a != 'gpt,lstm' else 'gdn' for a in args] + ['--add']
    p = run('compare.py', *add, '--recall_steps', '7', check=False)
    assert p.returncode == 2 and 'was run with recall_steps=' in p.stderr and len(p.stderr.splitlines()) == 1
    run('compare.py', *add, timeout=300)
    merged = json.loads((out / 'recall.json').read_text())
    assert set(merged['models']) == {'gpt', 'lstm', 'gdn'} and merged['runs'][:4] == r['runs']
    assert [x['model'] for x in merged['runs'][4:]] == ['gdn', 'gdn'] and merged['command'] == r['command']
    assert merged['added'][0]['models'] == ['gdn'] and '--add' in merged['added'][0]['command']
    assert '| gdn |' in (out / 'recall.md').read_text()
    p = run('compare.py', *add, check=False)
    assert p.returncode == 2 and 'gdn already in' in p.stderr


def test_grid_edge():
    grid = compare.optimizer_lr_list('adamw:1e-3,adamw:2e-3,adamw:4e-3,muon:1e-2')
    assert grid == [('adamw', 1e-3), ('adamw', 2e-3), ('adamw', 4e-3), ('muon', 1e-2)]
    assert compare.grid_edge(grid, 'adamw', 4e-3) == 'largest' and compare.grid_edge(grid, 'adamw', 1e-3) == 'smallest'
    assert compare.grid_edge(grid, 'adamw', 2e-3) is None and compare.grid_edge(grid, 'muon', 1e-2) is None


def test_diverged_at(tmp_path):
    """A run diverged at its first evaluation above twice a uniform guess (val loss > 2 ln V) or not finite, or
    where train.py stopped it for non-finite losses."""
    def run_dir(name, losses, stop='max_iters'):
        d = tmp_path / name
        d.mkdir()
        (d / 'results.json').write_text(json.dumps({'stop_reason': stop, 'iterations': 40}))
        history = [{'iter': 10 * (i + 1), 'val_loss': v} for i, v in enumerate(losses)]
        (d / 'history.json').write_text(json.dumps(history))
        return str(d)
    meta = {'vocab_size': 1000}                                             # 2 ln 1000 = 13.82
    assert compare.diverged_at(run_dir('ok', [7.5, 4.0, 3.5]), meta) is None
    assert compare.diverged_at(run_dir('spike', [4.0, 3.5, 219.1, 3.9]), meta) == 30
    assert compare.diverged_at(run_dir('nan', [4.0, float('nan')]), meta) == 20
    assert compare.diverged_at(run_dir('stopped', [4.0], '5 non-finite losses in a row; the run diverged'), meta) == 40


def test_spread_rule():
    a, b, c = compare.stats([20.0, 20.5, 21.0]), compare.stats([22.0, 23.0, 22.5]), compare.stats([20.8, 22.2, 21.5])
    assert compare.separated(a, b) is True and compare.separated(a, c) is False
    assert compare.separated(compare.stats([20.0]), b) is None
    assert a['mean'] == pytest.approx(20.5) and a['std'] == pytest.approx(0.5) and compare.pm(a) == '20.50 ± 0.50'
    assert compare.stats([float('nan'), None]) is None


def test_bad_input_is_one_line_error(tmp_path):
    p = run('compare.py', '--task', 'lm', '--quick', '--models', 'gpt,rnn', check=False)
    assert p.returncode != 0 and 'error: unknown model(s) rnn' in p.stderr
    p = run('compare.py', '--task', 'lm', '--quick', '--grid', 'adamw:1e-3,sgd:1e-2', check=False)
    assert p.returncode == 2 and "unknown optimizer 'sgd' in 'sgd:1e-2'" in p.stderr
    p = run('compare.py', '--task', 'lm', '--quick', f'--dataset={tmp_path}/none', check=False)
    assert p.returncode != 0 and 'not found' in p.stderr
