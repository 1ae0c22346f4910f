"""
The token data of a run, for train.py, eval.py and flops.py: where a dataset lives, its meta.json, the splits, the
New-LLM seed's line windows, batches, and iterations per epoch.

A dataset is a folder written by prepare.py: {train,val,test}.bin (one uint16 token stream per split) and meta.json
(tokenizer, vocabulary, the options prepare.py ran with, split sizes). `dataset` names a folder under data/ beside
this file (whatever the current folder is), or is a path to one.
"""
import json
import os
import shlex

import numpy as np

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def dataset_dir(dataset):
    """A name -> data/<name> beside this file; a path (it exists, or holds a '/') is taken as it is."""
    if os.path.isdir(dataset) or os.sep in dataset or '/' in dataset:
        return dataset
    return os.path.join(DATA_ROOT, dataset)


def prepare_setup(prepare_args):
    """prepare.py's arguments (a string) -> (setup it writes into meta.json, the folder name it writes by default).
    Raises ValueError for arguments prepare.py would refuse."""
    import prepare
    try:
        return prepare.setup_of(prepare.parse_args(shlex.split(prepare_args)))
    except SystemExit:  # argparse has printed what it refuses
        raise ValueError(f"prepare_args {prepare_args!r} are not valid prepare.py arguments") from None
    except ValueError as e:
        raise ValueError(f"prepare_args {prepare_args!r}: {e}") from None


def prepare_hint(prepare_args):
    return (f"make it with `python prepare.py {prepare_args}` (offline: `python prepare.py {prepare_args} "
            f"--raw_dir DIR`, README: Data)")


def load_meta(dataset, prepare_args=''):
    """
    -> (data_dir, meta). prepare_args: the prepare.py arguments the run expects its data to come from ('' = no
    expectation, except for <wikitext2|wikitext103|dailydialog>-gpt2, whose name says it all): a missing dataset's
    error prints that command, and data made with other options is refused (FileNotFoundError / ValueError).
    """
    data_dir = dataset_dir(dataset)
    base = os.path.basename(dataset.rstrip('/'))
    if not prepare_args and base.endswith('-gpt2'):
        import prepare
        if base[:-5] in prepare.DATASETS:
            prepare_args = base[:-5]
    if prepare_args:
        setup, name = prepare_setup(prepare_args)
        if data_dir != dataset and name != dataset:
            raise ValueError(f"`python prepare.py {prepare_args}` writes data/{name}, not data/{dataset}: make "
                             f"dataset and prepare_args agree")
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        if prepare_args:
            hint = prepare_hint(prepare_args)
        else:
            hint = "prepare.py writes data/<wikitext2|wikitext103|dailydialog>-<gpt2|word<K>> (README: Data)"
        raise FileNotFoundError(f"dataset {dataset!r} not found ({path} is missing); {hint}")
    with open(path) as f:
        meta = json.load(f)
    if prepare_args:
        differs = [k for k in setup if meta.get(k) != setup[k]]
        if differs:
            raise ValueError(f"{data_dir} was prepared with " + ', '.join(f"{k}={meta.get(k)!r}" for k in differs) +
                             " but this run expects " + ', '.join(f"{k}={setup[k]!r}" for k in differs) +
                             f" (`python prepare.py {prepare_args}`; prepare into another --out_dir to keep both)")
    return data_dir, meta


def load_split(data_dir, split):
    """One split's token stream, memory-mapped (uint16)."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        have = [s for s in ('train', 'val', 'test') if os.path.isfile(os.path.join(data_dir, s + '.bin'))]
        raise FileNotFoundError(f"split {split!r} of {data_dir} is missing ({path}); available: "
                                f"{', '.join(have) or 'none'}")
    return np.memmap(path, dtype=np.uint16, mode='r')


def same_vocabulary(meta_a, meta_b):
    """Do two meta.json describe the same token ids (tokenizer, size, and for words the word list)?"""
    return all(meta_a.get(k) == meta_b.get(k) for k in ('tokenizer', 'vocab_size', 'words'))


def check_vocabulary(trained_meta, meta, trained_on, data_name):
    """Raise ValueError when a checkpoint's vocabulary (trained_meta) is not the dataset's (meta)."""
    if trained_meta and not same_vocabulary(trained_meta, meta):
        raise ValueError(f"vocabulary mismatch: {trained_on} was trained with {trained_meta.get('tokenizer')} "
                         f"(vocab {trained_meta.get('vocab_size')}) but {data_name} uses {meta.get('tokenizer')} "
                         f"(vocab {meta.get('vocab_size')}); prepare the data with the same tokenizer "
                         f"(word: prepare.py --vocab_from <the first data's meta.json>)")


def line_windows(data, length, bos):
    """
    The New-LLM seed's sequences: each segment from one <bos> to the next (a `<bos> ... <eos>` line of WikiText, a
    whole dialogue of DailyDialog) of at most `length` tokens is one window (padded); a longer one is cut into windows
    of `length` at stride length // 2, the tail dropped. -> (starts, lengths) int64 arrays.
    """
    arr = np.asarray(data)
    seg_starts = np.flatnonzero(arr == bos)
    seg_lengths = np.diff(np.append(seg_starts, len(arr)))
    starts, lengths = [], []
    for s, n in zip(seg_starts, seg_lengths):
        if n <= length:
            starts.append(s)
            lengths.append(n)
        else:
            for w in range(s, s + n - length + 1, length // 2):
                starts.append(w)
                lengths.append(length)
    return np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)


def windows_batch(data, windows, rows, block_size, pad):
    """Rows of the line windows -> x, y (B, block_size) int64 arrays; padding is input `pad` / target -1."""
    starts, lengths = windows
    offsets = np.arange(block_size + 1)
    idx = starts[rows, None] + offsets[None, :]
    valid = offsets[None, :] < lengths[rows, None]
    seq = np.where(valid, np.asarray(data)[np.minimum(idx, len(data) - 1)].astype(np.int64), -1)
    x = np.where(seq[:, :-1] == -1, pad, seq[:, :-1])
    return x, seq[:, 1:].copy()


def random_batch(data, rng, batch_size, block_size):
    """batch_size windows at random offsets of the stream -> x, y (B, block_size) int64 arrays, y = x shifted by
    one. Offsets run over 0 .. len - block_size - 1, so every token, the last included, can be a target."""
    ix = rng.integers(len(data) - block_size, size=batch_size)
    x = np.stack([data[i:i + block_size] for i in ix]).astype(np.int64)
    y = np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64)
    return x, y


def samples_per_epoch(batch_mode, n_train_tokens, n_train_windows, block_size):
    """'random': an epoch reads every train token about once; 'seed_lines': every line window once."""
    return n_train_windows if batch_mode == 'seed_lines' else (n_train_tokens - 1) // block_size


def iters_per_epoch(samples, batch_size, gradient_accumulation_steps):
    return max(1, -(-samples // (batch_size * gradient_accumulation_steps)))
