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


def test_iterations_per_epoch():
    assert data.samples_per_epoch('random', 1001, 0, 10) == 100
    assert data.samples_per_epoch('seed_lines', 1001, 37, 10) == 37
    assert data.iters_per_epoch(100, 8, 2) == 7 and data.iters_per_epoch(1, 8, 2) == 1


def test_dataset_dir_is_beside_the_code_whatever_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data.dataset_dir('wikitext2-gpt2') == data.os.path.join(data.DATA_ROOT, 'wikitext2-gpt2')
    assert data.DATA_ROOT.endswith('/data') and str(tmp_path) not in data.DATA_ROOT
    assert data.dataset_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="writes data/wikitext2-gpt2, not data/other"):
        data.load_meta('other', 'wikitext2')
