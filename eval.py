"""
Metrics of a model on a whole split, one definition everywhere (train.py's final evaluation uses this file too).

Over a split evaluated whole -- the token stream x[0..N) cut into non-overlapping windows of the model's context, in
order; every token x[1..N) is predicted exactly once:
    loss (mean NLL, nats/token) = total NLL / (N - 1)
    token PPL                   = exp(loss)                      (unit: the dataset's tokenizer)
    bits per byte               = total NLL / (ln 2 * bytes)     (bytes: UTF-8 bytes of the split's source text)
    word PPL                    = exp(total NLL / words)         (words: whitespace-split words of the split)
    accuracy                    = share of positions where argmax(logits) == target
bits/byte and word PPL are comparable across tokenizers; token PPL is not. With a `word` tokenizer the text mapped
to <unk> is predicted as one token, so its bits/byte is a lower bound (it does not spell the unknown words).
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_tokens(model, tokens, block_size, batch_size, device, autocast_ctx, carry_state=False):
    """
    tokens: 1-D array (the split). -> {'nll_sum', 'targets', 'correct', 'seconds'}.
    carry_state=False: each window starts fresh (every model). carry_state=True: the stream is cut into batch_size
    contiguous strands and each strand is read window by window with the model's state carried across windows
    (forward_state), so a recurrent model sees all the context before each token.
    """
    model.eval()
    t0 = time.time()
    x = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    nll_sum, n_targets, n_correct = 0.0, 0, 0

    def score(inputs, targets, state=None):
        nonlocal nll_sum, n_targets, n_correct
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast_ctx:
            if carry_state:
                logits, state = model.forward_state(inputs, state)
            else:
                logits, _ = model(inputs)
        logits = logits.float()
        nll = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1, reduction='sum')
        mask = targets != -1
        nll_sum += nll.item()
        n_targets += int(mask.sum())
        n_correct += int(((logits.argmax(-1) == targets) & mask).sum())
        return state

    if not carry_state:
        n_windows = math.ceil((len(x) - 1) / block_size)
        for w0 in range(0, n_windows, batch_size):
            rows = range(w0, min(w0 + batch_size, n_windows))
            inputs = torch.zeros(len(rows), block_size, dtype=torch.long)
            targets = torch.full((len(rows), block_size), -1, dtype=torch.long)
            for r, w in enumerate(rows):
                chunk = x[w * block_size: (w + 1) * block_size + 1]
                inputs[r, :len(chunk) - 1] = chunk[:-1]
                targets[r, :len(chunk) - 1] = chunk[1:]
            score(inputs, targets)
    else:
        strand = (len(x) - 1) // batch_size  # the last (len-1) % batch_size targets are not scored
        starts = torch.arange(batch_size) * strand
        state = None
        for t0_ in range(0, strand, block_size):
            T = min(block_size, strand - t0_)
            pos = starts[:, None] + t0_ + torch.arange(T)[None, :]
            state = score(x[pos], x[pos + 1], state)
    return {'nll_sum': nll_sum, 'targets': n_targets, 'correct': n_correct, 'seconds': time.time() - t0}


def split_metrics(result, split_meta):
    """result of evaluate_tokens + meta.json's entry for the split -> the reported metrics."""
    nll, n = result['nll_sum'], max(result['targets'], 1)
    out = {'loss': nll / n, 'ppl': math.exp(nll / n), 'accuracy': result['correct'] / n, 'tokens': result['targets'],
           'seconds': result['seconds']}
    if split_meta and split_meta.get('bytes'):
        out['bits_per_byte'] = nll / (math.log(2) * split_meta['bytes'])
    if split_meta and split_meta.get('words'):
        out['word_ppl'] = math.exp(nll / split_meta['words'])
    return out
