"""MQAR (mqar.py): the generator's layout, its scoring, determinism, and a few training steps end to end."""
import json

import numpy as np
import pytest
import torch

import mqar

SETTINGS = [dict(n_pairs=4, n_queries=4, seq_len=64, vocab_size=256), dict(n_pairs=16, n_queries=16, seq_len=64,
            vocab_size=256), dict(n_pairs=3, n_queries=7, seq_len=21, vocab_size=12)]


@pytest.mark.parametrize('s', SETTINGS)
def test_layout(s):
    n, q, T, V = s['n_pairs'], s['n_queries'], s['seq_len'], s['vocab_size']
    x, y = mqar.make_batch(50, rng=1, **s)
    assert x.shape == y.shape == (50, T) and x.dtype == y.dtype == torch.int64
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0:2 * n:2], row_x[1:2 * n:2]
        bound = dict(zip(keys, values))
        assert len(set(keys)) == n and all(1 <= k < V // 2 for k in keys)            # unique keys, key range
        assert len(set(values)) == n and all(V // 2 <= v < V for v in values)        # unique values, value range
        assert all(t == -1 for t in row_y[:2 * n])                                  # no target among the pairs
        asked = [t for t in range(2 * n, T) if row_y[t] != -1]
        assert len(asked) == q
        for t in asked:
            assert row_x[t] in bound and row_y[t] == bound[row_x[t]]                 # an earlier key, its value
            assert (t - 2 * n) % 2 == 0 and (t + 1 == T or row_x[t + 1] == mqar.FILLER)  # the answer is not shown
        assert all(row_x[t] == mqar.FILLER for t in range(2 * n, T) if t not in asked)  # the rest is filler
    assert len({tuple(r) for r in x.tolist()}) == 50


def test_every_pair_asked_once_when_queries_equal_pairs():
    x, y = mqar.make_batch(20, 8, 8, 40, 64, rng=0)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        assert sorted(row_x[t] for t in range(16, 40) if row_y[t] != -1) == sorted(row_x[0:16:2])


def test_example_of_the_docstring_is_what_it_says():
    x = [3, 12, 5, 9, 0, 0, 5, 0, 3, 0]
    y = [-1, -1, -1, -1, -1, -1, 9, -1, 12, -1]
    assert '[3 12  5  9 | 0  0  5  0  3  0]' in mqar.__doc__ and '[-1 -1 -1 -1 | -1 -1  9 -1 12 -1]' in mqar.__doc__
    logits = torch.nn.functional.one_hot(torch.tensor([y]).clamp(min=0), 16).float()
    assert mqar.accuracy(logits, torch.tensor([y])) == 1.0 and len(x) == len(y)


def test_deterministic_for_a_seed():
    a = mqar.make_batch(8, 4, 4, 32, 64, rng=123)
    b = mqar.make_batch(8, 4, 4, 32, 64, rng=np.random.default_rng(123))
    c = mqar.make_batch(8, 4, 4, 32, 64, rng=124)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_accuracy_on_a_hand_made_case():
    """Three queries, two answered right; a wrong argmax on a non-query position does not count."""
    y = torch.tensor([[-1, -1, 5, -1, 6, -1], [-1, 7, -1, -1, -1, -1]])
    pred = torch.tensor([[0, 1, 5, 2, 4, 3], [0, 7, 0, 0, 0, 0]])   # right, wrong, right
    logits = torch.nn.functional.one_hot(pred, 8).float() * 3.0
    assert mqar.accuracy(logits, y) == pytest.approx(2 / 3)
    assert mqar.count_correct(logits, y) == (2, 3)
    with pytest.raises(ValueError, match='no query positions'):
        mqar.accuracy(logits, torch.full_like(y, -1))


@pytest.mark.parametrize('args, message', [
    ((4, 4, 15, 64), 'too short'),
    ((40, 4, 200, 64), 'too few keys'),
    ((0, 1, 16, 64), 'n_pairs >= 1'),
    ((4, 0, 16, 64), 'n_queries >= 1'),
])
def test_bad_settings_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        mqar.make_batch(2, *args)


def test_train_recall_command_line(tmp_path):
    """A few steps through the command line: the JSON has the accuracy, the curve and the state size; training asks
    a query in every free slot."""
    out = tmp_path / 'r.json'
    mqar.main(['--model_type', 'lstm', '--model_args', '{"n_embd": 8, "n_hidden": 8, "n_layer": 1}',
               '--n_pairs', '2', '--seq_len', '12', '--vocab_size', '16', '--steps', '3', '--batch_size', '4',
               '--eval_sequences', '10', '--out', str(out)])
    r = json.loads(out.read_text())
    assert 0 <= r['accuracy'] <= 1 and r['curve'][-1]['step'] == 3 and r['train_queries'] == 4
    assert r['state_floats'] == 2 * 1 * 8 and r['num_params'] > 0 and r['tokens'] == 3 * 4 * 12
