"""eval.py: whole-split metrics against a naive loop, the unit formulas, carried state, context curves, INT8, errors."""
import contextlib
import dataclasses
import json
import re
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import checkpoint as ckpt_io
import eval as ev
from helpers import make_dataset, run

BLOCK = 16
CONFIGS = {
    'gpt': dict(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK),
    'newllm': dict(n_embd=16, n_hidden=32, n_context=16, n_layer=2, block_size=BLOCK, dropout=0.0),
    'resnetbk': dict(n_embd=32, n_layer=2, n_experts=2, block_size=BLOCK, dropout=0.0),
}


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny matmuls on a shared 2-core machine: one thread avoids OpenMP oversubscription (100x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data') / 'tiny', n_val=1200, lines=True)


def trained(model_type, data, steps=40, **overrides):
    """A tiny model trained a few Adam steps on the tiny corpus (so its predictions and context matter)."""
    torch.manual_seed(0)
    meta = json.loads((data / 'meta.json').read_text())
    model = ckpt_io.build_model(model_type, dict(CONFIGS[model_type], vocab_size=meta['vocab_size'], **overrides))
    train = torch.from_numpy(np.fromfile(data / 'train.bin', dtype=np.uint16).astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        ix = torch.randint(len(train) - BLOCK - 1, (8,))
        x = torch.stack([train[i:i + BLOCK] for i in ix])
        y = torch.stack([train[i + 1:i + BLOCK + 1] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), meta


@pytest.fixture(scope='module')
def ckpts(data, tmp_path_factory):
    """model_type -> (checkpoint path, model) in train.py's checkpoint format."""
    out, d = {}, tmp_path_factory.mktemp('ckpt')
    for mt in CONFIGS:
        model, meta = trained(mt, data)
        path = d / f'{mt}.pt'
        torch.save({'model': model.state_dict(), 'model_type': mt, 'model_args': dataclasses.asdict(model.config),
                    'meta': meta, 'config': {'dataset': str(data), 'block_size': BLOCK, 'batch_size': 5}}, path)
        out[mt] = (path, model)
    return out


def val_tokens(data):
    return torch.from_numpy(np.fromfile(data / 'val.bin', dtype=np.uint16).astype(np.int64))


def token_nll(logits, targets):
    """logits (T, V), targets (T,) -> per-token NLL (T,) in float64, computed from scratch."""
    logp = logits.double() - torch.logsumexp(logits.double(), -1, keepdim=True)
    return -logp[torch.arange(len(targets)), targets]


@pytest.mark.parametrize('model_type', list(CONFIGS))
def test_whole_split_equals_naive_window_loop(model_type, ckpts, data):
    path, model = ckpts[model_type]
    out = ev.main(['--ckpt', str(path), '--device', 'cpu', '--dtype', 'float32'])
    x = val_tokens(data)
    nll, correct = 0.0, 0
    with torch.no_grad():
        for w0 in range(0, len(x) - 1, BLOCK):  # one window at a time, no padding, no batching
            chunk = x[w0:w0 + BLOCK + 1]
            logits = model(chunk[None, :-1])[0][0]
            nll += token_nll(logits, chunk[1:]).sum().item()
            correct += int((logits.argmax(-1) == chunk[1:]).sum())
    split = json.loads((data / 'meta.json').read_text())['splits']['val']
    m = out['metrics']
    assert m['tokens'] == len(x) - 1
    assert m['loss'] == pytest.approx(nll / (len(x) - 1), rel=1e-5)
    assert m['bits_per_byte'] == pytest.approx(nll / (math.log(2) * split['bytes']), rel=1e-5)
    assert m['word_ppl'] == pytest.approx(math.exp(nll / split['words']), rel=1e-5)
    assert m['accuracy'] == correct / (len(x) - 1)
    assert 'word tokenizer token (vocab 48)' in out['unit']


def test_split_metrics_formulas():
    m = ev.split_metrics({'nll_sum': 100.0, 'targets': 50, 'correct': 10, 'seconds': 2.0},
                         {'tokens': 51, 'bytes': 200, 'words': 40})
    assert m['loss'] == 2.0 and m['ppl'] == pytest.approx(math.exp(2.0)) and m['accuracy'] == 0.2
    assert m['bits_per_byte'] == pytest.approx(100.0 / (200 * math.log(2)))   # 0.7213 bits per byte
    assert m['word_ppl'] == pytest.approx(math.exp(100.0 / 40))                 # per word, not per token
    assert m['tokens_per_second'] == 25.0
    # the same text cut into 2x more tokens: token ppl changes, bits/byte and word ppl do not
    m2 = ev.split_metrics({'nll_sum': 100.0, 'targets': 100, 'correct': 10, 'seconds': 2.0},
                          {'tokens': 101, 'bytes': 200, 'words': 40})
    assert m2['ppl'] != m['ppl'] and m2['bits_per_byte'] == m['bits_per_byte'] and m2['word_ppl'] == m['word_ppl']
    # a diverged run's loss (a New-LLM at Muon 2e-2 reached 4,688 nats): perplexity inf, not an OverflowError
    m3 = ev.split_metrics({'nll_sum': 4688.0 * 50, 'targets': 50, 'correct': 0, 'seconds': 1.0}, {'words': 40})
    assert m3['ppl'] == math.inf and m3['word_ppl'] == math.inf and ev.perplexity(708.0) == math.exp(708.0)
    assert math.isnan(ev.perplexity(float('nan')))


def test_divergence_rule():
    """train.py stops a run (and compare.py drops its setting) once the val loss passes twice a uniform guess's."""
    assert not ev.diverged(math.log(1000) + 0.5, 1000) and not ev.diverged(13.8, 1000)
    assert ev.diverged(13.9, 1000) and ev.diverged(float('nan'), 1000) and ev.diverged(math.inf, 1000)


@pytest.mark.parametrize('model_type', ['newllm', 'resnetbk'])
def test_carry_state_equals_one_long_forward_per_strand(model_type, ckpts, data):
    _, model = ckpts[model_type]
    x = val_tokens(data)[:403]                 # 402 targets: strands of 134 (3 strands) or 100/101 (4 strands)
    n = len(x) - 1
    ctx = torch.autocast('cpu', enabled=False)
    for strands in (1, 3, 4):
        res = ev.evaluate_tokens(model, x, BLOCK, strands, 'cpu', ctx, carry_state=True)
        nll = 0.0
        with torch.no_grad():
            for b in range(strands):           # each strand read in one call from an empty state
                s, e = b * n // strands, (b + 1) * n // strands
                logits, _ = model.forward_state(x[None, s:e])
                nll += token_nll(logits[0], x[s + 1:e + 1]).sum().item()
        assert res['targets'] == n
        assert res['nll_sum'] == pytest.approx(nll, rel=1e-5)
    fresh = ev.evaluate_tokens(model, x, BLOCK, 4, 'cpu', ctx)
    assert fresh['nll_sum'] != pytest.approx(res['nll_sum'], rel=1e-4)  # the carried context changes the numbers


def test_context_curve_gpt_sliding_window_matches_definition(ckpts, data):
    """Target t >= W is predicted from the window [e - W, e) with e = W + s * ceil((t + 1 - W) / s), capped at L."""
    path, model = ckpts['gpt']
    L, W, s = 40, BLOCK, 5
    out = ev.main(['--ckpt', str(path), '--device', 'cpu', '--dtype', 'float32', '--max_tokens', '250', '--context_lengths', f'8,16,{L}',
                   '--stride', str(s), '--png', str(path.parent / 'gpt.png')])
    curve = out['context_lengths']
    x = val_tokens(data)[:250]
    S = (len(x) - 1) // L
    assert curve['strands'] == S == 6 and (path.parent / 'gpt.png').stat().st_size > 0
    expected = torch.zeros(L, dtype=torch.float64)
    with torch.no_grad():
        for k in range(S):
            seq = x[k * L:(k + 1) * L + 1]
            for t in range(L):
                e = W if t < W else min(W + s * math.ceil((t + 1 - W) / s), L)
                logits = model(seq[None, e - W:e])[0][0]
                expected[t] += token_nll(logits[t - (e - W)][None], seq[t + 1][None]).item() / S
    assert torch.allclose(torch.tensor(curve['loss_by_position'], dtype=torch.float64), expected, rtol=1e-5)
    rows = curve['buckets']
    assert [(r['context_from'], r['context_to']) for r in rows] == [(1, 8), (9, 16), (17, L)]
    assert rows[2]['loss'] == pytest.approx(expected[16:].mean().item(), rel=1e-6)
    assert rows[2]['tokens'] == (L - 16) * S and 0 < rows[2]['se'] < rows[2]['loss']
    assert 'then 12..16' in curve['how']


def test_context_curve_newllm_is_one_long_read_per_strand(ckpts, data):
    path, model = ckpts['newllm']
    L = 48  # three windows of BLOCK per strand: the state must be carried
    out = ev.main(['--ckpt', str(path), '--device', 'cpu', '--dtype', 'float32', '--max_tokens', '300', '--context_lengths', f'4,{L}',
                   '--png', str(path.parent / 'newllm.png')])
    x = val_tokens(data)[:300]
    S = (len(x) - 1) // L
    expected = torch.zeros(L, dtype=torch.float64)
    with torch.no_grad():
        for k in range(S):
            seq = x[k * L:(k + 1) * L + 1]
            expected += token_nll(model(seq[None, :-1])[0][0], seq[1:]) / S
    assert torch.allclose(torch.tensor(out['context_lengths']['loss_by_position'], dtype=torch.float64), expected,
                          rtol=1e-5)
    assert out['context_lengths']['buckets'][0]['loss'] == pytest.approx(expected[:4].mean().item(), rel=1e-6)


@pytest.mark.parametrize('model_type', list(CONFIGS))
def test_int8_is_smaller_and_close_to_fp32(model_type, ckpts):
    path, model = ckpts[model_type]
    q = ev.main(['--ckpt', str(path), '--device', 'cpu', '--quantize', 'int8'])['int8']
    assert q['linear_int8'], 'no Linear layer was quantized'
    assert 'lm_head' in q['linear_int8']
    assert q['int8_bytes'] < q['fp32_bytes']
    assert math.isfinite(q['metrics']['loss'])
    assert abs(q['ppl_change']) < 0.02  # within 2% of the float32 perplexity
    assert q['fp32_bytes'] == ev.serialized_bytes(model)
    # what was kept float32 really fails when quantized (the probe keeps nothing it could have converted)
    for name in q['linear_fp32']:
        with pytest.raises(Exception):
            with torch.no_grad():
                ev._quantize(model, [name])(torch.zeros(1, 3, dtype=torch.long))


def test_int8_packed_weights_are_counted():
    """A Linear(256, 256) is 256 KiB of float32; int8 must cost >= 64 KiB (its packed weights), not ~0."""
    model = torch.nn.Sequential(torch.nn.Linear(256, 256))
    q = ev._quantize(model, ['0'])
    assert 256 * 256 <= ev.serialized_bytes(q) < 0.4 * ev.serialized_bytes(model)


def test_errors_are_one_line(ckpts, data, tmp_path, capsys):
    gpt, _ = ckpts['gpt']
    p = run('eval.py', '--ckpt', gpt, '--carry_state', '--device', 'cpu', check=False)
    assert p.returncode == 2 and 'error: --carry_state needs a recurrent model' in p.stderr
    assert 'Traceback' not in p.stderr

    def error_of(argv):
        with pytest.raises(SystemExit) as e:
            ev.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
        return err
    assert re.search(r"split 'test' of .* is missing .*available: train, val", error_of(['--ckpt', str(gpt), '--split', 'test']))
    assert re.search(r"dataset '.*nowhere' not found", error_of(['--ckpt', str(gpt), '--dataset', str(tmp_path / 'nowhere')]))
    assert 'leave --dtype at auto or float32' in error_of(['--ckpt', str(gpt), '--quantize', 'int8', '--dtype', 'bfloat16'])
    assert 'fewer than the longest context' in error_of(['--ckpt', str(gpt), '--context_lengths', '64,100000'])
    assert "device 'cuda:7' is not available" in error_of(['--ckpt', str(gpt), '--device', 'cuda:7'])
    assert 'checkpoint nothing.pt does not exist' in error_of(['--ckpt', 'nothing.pt'])
    other = make_dataset(tmp_path / 'other', vocab_size=40, n_train=100, n_val=100)
    assert 'vocabulary mismatch' in error_of(['--ckpt', str(gpt), '--dataset', str(other)])
    model, meta = trained('resnetbk', data, steps=0, bk_causal=False)
    seed_bk = tmp_path / 'seedbk.pt'
    torch.save({'model': model.state_dict(), 'model_type': 'resnetbk', 'model_args': dataclasses.asdict(model.config),
                'meta': meta, 'config': {'dataset': str(data), 'block_size': BLOCK}}, seed_bk)
    assert 'non-causal' in error_of(['--ckpt', str(seed_bk), '--carry_state'])


def test_train_py_checkpoint_matches_its_final_evaluation(data, tmp_path):
    """eval.py on train.py's best.pt gives the whole-split numbers train.py wrote to results.json."""
    run('train.py', '--model_type=gpt', '--n_layer=1', '--n_head=2', '--n_embd=16', f'--block_size={BLOCK}',
        '--batch_size=4', f'--dataset={data}', f'--out_dir={tmp_path}', '--max_iters=3', '--eval_interval=3',
        '--eval_iters=1', '--device=cpu')
    final = json.loads((tmp_path / 'results.json').read_text())['final_eval_of_best']['val']
    out = ev.main(['--ckpt', str(tmp_path / 'best.pt'), '--device', 'cpu', '--json', str(tmp_path / 'eval.json')])
    for k in ('loss', 'bits_per_byte', 'word_ppl', 'accuracy', 'tokens'):
        assert out['metrics'][k] == pytest.approx(final[k], rel=1e-6), k
    assert json.loads((tmp_path / 'eval.json').read_text())['metrics']['loss'] == out['metrics']['loss']


def test_seed_line_metric_equals_a_window_by_window_loop(ckpts, data, tmp_path, capsys):
    """evaluate_lines (--windows lines) against a naive reference: every <bos> line window alone, from a zero
    context, loss averaged per scored token."""
    lines = make_dataset(tmp_path / 'lines', lines=True)
    model, meta = trained('newllm', lines, steps=3)
    val = np.fromfile(lines / 'val.bin', dtype=np.uint16).astype(np.int64)
    L = BLOCK + 1
    nll, n, correct = 0.0, 0, 0
    starts = [i for i, t in enumerate(val) if t == 2] + [len(val)]
    for s, e in zip(starts[:-1], starts[1:]):
        seg = val[s:e]
        cuts = [seg] if len(seg) <= L else [seg[i:i + L] for i in range(0, len(seg) - L + 1, L // 2)]
        for w in cuts:
            with torch.no_grad():
                logits, _ = model(torch.tensor(w[None, :-1]))
            y = torch.tensor(w[None, 1:])
            nll += F.cross_entropy(logits[0], y[0], reduction='sum').item()
            n += len(w) - 1
            correct += int((logits[0].argmax(-1) == y[0]).sum())
    r = ev.evaluate_lines(model, val, 2, 0, BLOCK, 5, 'cpu', contextlib.nullcontext())
    assert r['targets'] == n and r['correct'] == correct
    assert r['nll_sum'] == pytest.approx(nll, rel=1e-5)
    ckpt = tmp_path / 'nl.pt'
    torch.save({'model': model.state_dict(), 'model_type': 'newllm', 'model_args': dataclasses.asdict(model.config),
                'meta': meta, 'config': {'dataset': str(lines), 'block_size': BLOCK}}, ckpt)
    out = ev.main(['--ckpt', str(ckpt), '--windows', 'lines', '--dtype', 'float32', '--batch_size', '7'])
    assert out['metrics']['loss'] == pytest.approx(nll / n, rel=1e-5) and out['windows'] > 0
    assert 'bits_per_byte' not in out['metrics']   # overlapping windows: no per-byte figure
    assert out['unk']['token_rate'] == float((val[1:] == 1).mean())
