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


def prepare_hint(name):
    """How to make a dataset of prepare.NAMED."""
    import prepare
    return (f"make it with `python prepare.py {name}` (that is, `python prepare.py {prepare.NAMED[name]}`; offline: "
            f"add --raw_dir DIR, README: Data)")


def load_meta(dataset):
    """
    -> (data_dir, meta). A dataset named in prepare.NAMED (e.g. wikitext2-word1000) must come from that table's
    prepare.py command: a missing one's error prints the command, and data made with other options is refused
    (FileNotFoundError / ValueError). Other folders are taken as they are.
    """
    import prepare
    data_dir = dataset_dir(dataset)
    name = os.path.basename(dataset.rstrip('/'))
    prepare_args = prepare.NAMED.get(name, '')
    if prepare_args:
        setup, _ = prepare_setup(prepare_args)
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(path):
        if prepare_args:
            hint = prepare_hint(name)
        else:
            hint = f"prepare.py writes data/<name> for the names {', '.join(prepare.NAMED)} (README: Data)"
        raise FileNotFoundError(f"dataset {dataset!r} not found ({path} is missing); {hint}")
    with open(path) as f:
        meta = json.load(f)
    if prepare_args:
        differs = [k for k in setup if meta.get(k) != setup[k]]
        if differs:
            raise ValueError(f"{data_dir} was prepared with " + ', '.join(f"{k}={meta.get(k)!r}" for k in differs) +
                             " but this run expects " + ', '.join(f"{k}={setup[k]!r}" for k in differs) +
                             f" (`python prepare.py {name}`; prepare into another --out_dir to keep both)")
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


def bos_token(meta, what):
    """The <bos> id of a dataset that `what` (line windows) needs; ValueError when its data has no <bos> lines."""
    bos = meta.get('special_tokens', {}).get('<bos>')
    if bos is None:
        raise ValueError(f"{what} needs <bos> lines (prepare.py --line_format bos_eos)")
    return bos


def val_kinds(meta, val_windows, batch_mode):
    """The whole-val metrics of a run's evaluations, the one that selects best.pt first: val_windows, or by default
    the training batches' kind ('lines' for seed_lines, else 'stream'); the other beside it where the data has <bos>."""
    first = val_windows or ('lines' if batch_mode == 'seed_lines' else 'stream')
    if first == 'lines':
        bos_token(meta, "val_windows='lines'")
    other = 'stream' if first == 'lines' else 'lines'
    return [first, other] if '<bos>' in meta['special_tokens'] else [first]


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


class Batches:
    """
    The batches of one split, each a pure function of (seed, split, step, micro_step): resuming needs no data state,
    and under DDP rank r takes micro-steps r, r + world, ... of a global step exactly as one process would.
      mode 'random':     batch_size windows at random offsets of the stream (random_batch)
      mode 'seed_lines': the New-LLM seed's line windows (line_windows); training reads a fresh permutation of them
                         every epoch, the loss estimates draw windows at random
    An epoch reads every train token about once ('random': (tokens - 1) // block_size windows) or every line window
    once ('seed_lines'); iters_per_epoch counts optimizer steps of batch_size x accum_steps windows.
    """

    def __init__(self, tokens, meta, mode, block_size, batch_size, accum_steps=1, seed=0, split='train', note=''):
        self.tokens, self.mode, self.block_size, self.batch_size = tokens, mode, block_size, batch_size
        self.accum_steps, self.seed, self.is_train = accum_steps, seed, split == 'train'
        self.pad = meta.get('pad_token') or 0
        if mode == 'seed_lines':
            self.windows = line_windows(tokens, block_size + 1, bos_token(meta, "batch_mode='seed_lines'"))
            if len(self.windows[0]) == 0:
                raise ValueError(f"no <bos> line windows in the {split} split")
            self.samples_per_epoch = len(self.windows[0])
        else:
            if len(tokens) < block_size + 1:
                raise ValueError(f"the {split} split has {len(tokens):,} tokens{note}, fewer than block_size + 1 = "
                                 f"{block_size + 1}")
            self.samples_per_epoch = (len(tokens) - 1) // block_size
        self.iters_per_epoch = max(1, -(-self.samples_per_epoch // (batch_size * accum_steps)))

    def get(self, step, micro_step=0, estimate=False):
        """-> x, y (batch_size, block_size) int64 arrays; estimate=True: the fixed batches of the loss estimates."""
        rng = np.random.default_rng([self.seed, int(estimate), self.is_train, step, micro_step])
        if self.mode == 'random':
            return random_batch(self.tokens, rng, self.batch_size, self.block_size)
        if self.is_train and not estimate:  # the epoch's permutation of the windows
            epoch, i = divmod(step, self.iters_per_epoch)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.samples_per_epoch)
            first = (i * self.accum_steps + micro_step) * self.batch_size
            rows = perm[first:first + self.batch_size]
            if len(rows) == 0:  # more accumulation slots than windows left in the epoch's last step
                rows = perm[:self.batch_size]
        else:
            rows = rng.integers(len(self.windows[0]), size=self.batch_size)
        return windows_batch(self.tokens, self.windows, rows, self.block_size, self.pad)
