"""bench/: lengths.py's tiny sweep writes its JSON and PNG; the growth exponent; the memory probe sees torch's
allocations; bkcore.py and newllm.py run end to end at tiny sizes; the timing helper's rounds."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT, run


def test_quick_sweep_writes_json_and_png(tmp_path):
    p = run('bench/lengths.py', '--quick', '--out', tmp_path / 'b')
    report = json.loads((tmp_path / 'b.json').read_text())
    assert (tmp_path / 'b.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert set(report['models']) == {'gpt', 'newllm', 'resnetbk'}
    assert [(r['model'], r['T']) for r in report['results']] == [(m, T) for m in ('gpt', 'newllm', 'resnetbk')
                                                                 for T in (16, 32, 64)]
    for r in report['results']:
        assert not [k for k in r if k.endswith('_error')], r
        assert r['train_seconds'] > 0 and r['gen_seconds_per_token'] > 0
        assert r['train_peak_mb'] >= 0 and r['gen_peak_mb'] >= 0
    for name, e in report['exponents'].items():
        assert set(e) == {'train_seconds', 'train_peak_mb', 'gen_seconds_per_token', 'gen_peak_mb'}
        assert e['train_seconds'] is not None
    assert report['models']['gpt']['params_per_position'] == 16
    assert report['models']['newllm']['params_per_position'] == 0
    assert 'growth exponents' in p.stdout and 'VmHWM' in p.stdout


def test_growth_exponent_is_the_log_log_slope_of_the_upper_half():
    from bench import lengths as bench
    T = [64, 128, 256, 512, 1024, 2048]
    assert bench.growth_exponent(T, [t ** 2 for t in T]) == pytest.approx(2.0)
    # fixed costs at small T do not bend the fit: only the upper half (512 .. 2048) counts
    assert bench.growth_exponent(T, [1000.0, 1000.0, 1000.0, 512, 1024, 2048]) == pytest.approx(1.0)
    assert bench.growth_exponent(T, [0.0, 0.2, 0.0, 0.5, 0.0, 0.3], floor=1.0) == pytest.approx(0.0)
    assert bench.growth_exponent(T, [None] * 5 + [3.0]) is None


def test_peak_memory_probe_sees_torch_allocations():
    """The peak above the start counts a 64 MiB torch tensor that is already freed (tracemalloc sees none of it)."""
    code = ("from bench import lengths as bench; import torch; b = bench.start_peak(); x = torch.ones(16 * 2**20); "
            "del x; print((bench.peak_bytes() - b) / 2**20)")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert 63 <= float(out.stdout.split()[-1]) <= 70


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    from bench import lengths as bench
    spec = {'model': 'gpt', 'config': {'n_layer': 1, 'n_head': 3, 'n_embd': 16}, 'T': 8, 'what': 'train',
            'device': 'cpu', 'threads': 1, 'batch_size': 1, 'repeats': 1, 'gen_tokens': 2}
    r = bench.measure(spec, timeout=120)   # n_embd 16 is not divisible by 3 heads: the worker raises
    assert 'error' in r and 'divisible' in r['error']


def test_bad_arguments_are_one_line_errors():
    p = run('bench/lengths.py', '--models', 'gpt,rnn', check=False)
    assert p.returncode != 0 and 'error: unknown model(s) rnn' in p.stderr and 'Traceback' not in p.stderr


def test_bkcore_and_newllm_quick_runs_write_their_json(tmp_path):
    run('bench/bkcore.py', '--quick', '--threads', '1', '--json', tmp_path / 'bk.json')
    r = json.loads((tmp_path / 'bk.json').read_text())
    assert set(r['core']) == {'16', '32'} and {'seed', 'c/analytic', 'chunk/autograd'} <= set(r['core']['16'])
    assert set(r['step']) == {'seed', 'ours', 'ours/autograd', 'ours/mixed_precision'}
    assert all(v['wall_ms'] > 0 and v['calls'] == 1 for v in r['step'].values())
    run('bench/newllm.py', '--quick', '--threads', '1', '--json', tmp_path / 'nl.json')
    r = json.loads((tmp_path / 'nl.json').read_text())
    assert [(x['model'], x['batch_size'], x['dtype']) for x in r['rows']][:2] == [('seed loop', 32, 'float32'),
                                                                                   ('fast', 32, 'float32')]
    assert r['rows'][0]['ratio'] == 1.0 and all(x['tokens_per_s'] > 0 for x in r['rows'])
    p = run('bench/newllm.py', '--optimizer', 'sgd', check=False)
    assert p.returncode == 2 and p.stderr.startswith('error: --optimizer') and 'Traceback' not in p.stderr


def test_timing_rounds_are_round_robin_and_block_times_the_steady_state():
    from bench import timing
    calls = []
    variants = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
    t = timing.run_rounds(variants, rounds=2, warmup=1)
    assert calls == ['a', 'b'] + ['a', 'b'] * 2 and all(len(x.wall) == len(x.cpu) == 2 for x in t.values())
    calls.clear()
    t = timing.run_rounds(variants, rounds=2, block=3, warmup=0)
    assert calls == (['a'] * 3 + ['b'] * 3) * 2
    assert all(len(x.wall) == 4 for x in t.values())   # the first call of each block is not timed
    x = timing.Timing([3.0, 1.0, 2.0], [0.5, 0.25, 1.0])
    assert x.median == (2.0, 0.5) and x.best == (1.0, 0.25) and x.summary()['wall_ms'] == 2000.0
    with pytest.raises(ValueError, match='rounds'):
        timing.run_rounds(variants, rounds=0)
