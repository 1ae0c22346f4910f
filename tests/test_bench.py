"""bench.py: a tiny sweep writes its JSON and PNG; the growth exponent; the memory probe sees torch's allocations."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT, run


def test_quick_sweep_writes_json_and_png(tmp_path):
    p = run('bench.py', '--quick', '--out', tmp_path / 'b')
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
    import bench
    T = [64, 128, 256, 512, 1024, 2048]
    assert bench.growth_exponent(T, [t ** 2 for t in T]) == pytest.approx(2.0)
    # fixed costs at small T do not bend the fit: only the upper half (512 .. 2048) counts
    assert bench.growth_exponent(T, [1000.0, 1000.0, 1000.0, 512, 1024, 2048]) == pytest.approx(1.0)
    assert bench.growth_exponent(T, [0.0, 0.2, 0.0, 0.5, 0.0, 0.3], floor=1.0) == pytest.approx(0.0)
    assert bench.growth_exponent(T, [None] * 5 + [3.0]) is None


def test_peak_memory_probe_sees_torch_allocations():
    """The peak above the start counts a 64 MiB torch tensor that is already freed (tracemalloc sees none of it)."""
    code = ("import bench, torch; b = bench.start_peak(); x = torch.ones(16 * 2**20); del x; "
            "print((bench.peak_bytes() - b) / 2**20)")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert 63 <= float(out.stdout.split()[-1]) <= 70


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    import bench
    spec = {'model': 'gpt', 'config': {'n_layer': 1, 'n_head': 3, 'n_embd': 16}, 'T': 8, 'what': 'train',
            'device': 'cpu', 'threads': 1, 'batch_size': 1, 'repeats': 1, 'gen_tokens': 2}
    r = bench.measure(spec, timeout=120)   # n_embd 16 is not divisible by 3 heads: the worker raises
    assert 'error' in r and 'divisible' in r['error']


def test_bad_arguments_are_one_line_errors():
    p = run('bench.py', '--models', 'gpt,rnn', check=False)
    assert p.returncode != 0 and 'error: unknown model(s) rnn' in p.stderr and 'Traceback' not in p.stderr
