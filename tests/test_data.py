"""data.py: random windows reach the last token; line windows and iterations per epoch by a plain reference."""
import numpy as np
import pytest

import data


def test_random_windows_can_target_the_last_token():
    stream = np.arange(17, dtype=np.uint16)
    x, y = data.random_batch(stream, np.random.default_rng(0), 4, 16)   # one window fits: offset 0
    assert (x == np.arange(16)).all() and (y == np.arange(1, 17)).all()  # y ends on the last token
    offsets = data.random_batch(np.arange(40, dtype=np.uint16), np.random.default_rng(1), 4000, 16)[0][:, 0]
    assert offsets.min() == 0 and offsets.max() == 40 - 16 - 1              # every offset, the last included


def test_windows_batch_pads_inputs_and_masks_targets():
    stream = np.array([2, 5, 6, 3, 2, 7, 3], dtype=np.uint16)               # two <bos> lines
    windows = data.line_windows(stream, 5, 2)
    assert windows[0].tolist() == [0, 4] and windows[1].tolist() == [4, 3]
    x, y = data.windows_batch(stream, windows, np.array([0, 1]), 4, pad=0)
    assert x.tolist() == [[2, 5, 6, 3], [2, 7, 3, 0]] and y.tolist() == [[5, 6, 3, -1], [7, 3, -1, -1]]


def test_iterations_per_epoch_and_batches_are_a_function_of_the_step(tmp_path):
    meta = {'special_tokens': {'<bos>': 2}, 'pad_token': 0}
    stream = np.arange(1001) % 50 + 3
    b = data.Batches(stream, meta, 'random', 10, 8, accum_steps=2, seed=1)
    assert b.samples_per_epoch == 100 and b.iters_per_epoch == 7      # 100 windows / (8 x 2) per step, rounded up
    assert all(np.array_equal(u, v) for u, v in zip(b.get(3, 1), data.Batches(stream, meta, 'random', 10, 8, 2, 1).get(3, 1)))
    assert not np.array_equal(b.get(3, 1)[0], b.get(3, 0)[0])
    lines = np.array([2, 5, 6, 7, 2, 8, 9, 2, 10, 11, 12, 13, 14, 15] * 3)
    s = data.Batches(lines, meta, 'seed_lines', 4, 2, seed=0)
    assert s.samples_per_epoch == len(data.line_windows(lines, 5, 2)[0]) and s.iters_per_epoch == -(-s.samples_per_epoch // 2)
    # one epoch of training batches reads every window once
    rows = sorted(tuple(x) for step in range(s.iters_per_epoch) for x in s.get(step)[0])[:s.samples_per_epoch]
    assert len(rows) == s.samples_per_epoch
    with pytest.raises(ValueError, match="batch_mode='seed_lines' needs <bos> lines"):
        data.Batches(lines, {'special_tokens': {}}, 'seed_lines', 4, 2)
    with pytest.raises(ValueError, match=r"the train split has 5 tokens \(data_limit\), fewer than block_size \+ 1 = 11"):
        data.Batches(stream[:5], meta, 'random', 10, 8, note=' (data_limit)')


def test_dataset_dir_is_beside_the_code_whatever_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data.dataset_dir('wikitext2-gpt2') == data.os.path.join(data.DATA_ROOT, 'wikitext2-gpt2')
    assert data.DATA_ROOT.endswith('/data') and str(tmp_path) not in data.DATA_ROOT
    assert data.dataset_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="make it with `python prepare.py wikitext2-word30000`"):
        data.load_meta(str(tmp_path / 'wikitext2-word30000'))
