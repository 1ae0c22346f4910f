"""Small things the tests share: a tiny token dataset on disk and running the scripts as a user would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_dataset(path, vocab_size=48, n_train=20000, n_val=3000, lines=False, seed=0):
    """
    A tiny word-tokenized dataset folder like prepare.py's: a noisy repeating pattern, so models can learn it.
    lines=True makes the New-LLM seed format (<bos> words <eos> per line) for batch_mode='seed_lines'.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specials = ['<pad>', '<unk>', '<bos>', '<eos>']
    words = specials + [f'w{i}' for i in range(vocab_size - len(specials))]

    def stream(n):
        toks = []
        while len(toks) < n:
            k = int(rng.integers(3, 90)) if lines else 50
            body = [4 + (j * 3 + int(rng.integers(0, 2))) % (vocab_size - 4) for j in range(k)]
            toks += [2] + body + [3] if lines else body
        return np.array(toks[:n] if not lines else toks, dtype=np.uint16)

    splits = {}
    for split, n in (('train', n_train), ('val', n_val)):
        arr = stream(n)
        arr.tofile(path / f'{split}.bin')
        splits[split] = {'tokens': int(len(arr)), 'bytes': int(len(arr) * 3), 'words': int(len(arr))}
    meta = {'dataset': 'tiny', 'tokenizer': 'word', 'vocab_size': vocab_size, 'lowercase': False,
            'special_tokens': {w: i for i, w in enumerate(specials)}, 'eot_token': 3, 'pad_token': 0,
            'words': words, 'splits': splits, 'turn_separator': '\n'}
    (path / 'meta.json').write_text(json.dumps(meta))
    return path


def run(script, *args, env=None, check=True, timeout=300):
    """Run a project script in a subprocess; returns the CompletedProcess (stdout+stderr as text). train.py runs
    eager unless the test passes --compile (its default 'auto' follows results/, which would make speed vary)."""
    if script == 'train.py' and not any(str(a).startswith('--compile') for a in args):
        args = (*args, '--compile=False')
    full_env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    p = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def train_losses(output):
    """The per-iteration train losses that train.py printed (log_interval=1)."""
    return [float(line.split('| loss ')[1].split()[0]) for line in output.splitlines() if line.startswith('iter ')
            and '| loss ' in line]
