"""
Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient
Language Models"): what a model can look up from earlier in its input. A sequence binds n_pairs keys to values, then
asks for n_queries of the keys again; the model must answer each with its value. An attention model can look the key
up; a recurrent model must have kept every pair in its fixed-size state.

Layout of one sequence of seq_len = T tokens, vocabulary V (vocab_size):
    keys   from [1, V // 2), unique within a sequence       values from [V // 2, V), unique within a sequence
    token 0 is the filler: never a key or a value
    positions 0 .. 2n-1:   k_1 v_1 k_2 v_2 ... k_n v_n      (n = n_pairs)
    positions 2n .. T-1:   (T - 2n) // 2 slots of two tokens; n_queries of them, chosen uniformly, hold
                           [k_j, 0] for a queried pair j (each pair at most once while n_queries <= n_pairs,
                           in random order), the rest [0, 0]
    targets y (B, T):      v_j at the position of a query k_j, -1 (ignored) everywhere else
The answer is never in the input: after a query comes the filler. Zoology differs in two details: its query gaps
follow a power law (most queries close after the pairs; here uniform, so the distance grows with T) and its filler
is random tokens (here a single token, which only removes noise).

Example, T = 10, n_pairs = 2, n_queries = 2, V = 16 (keys 1..7, values 8..15):
    x = [3 12  5  9 | 0  0  5  0  3  0]
    y = [-1 -1 -1 -1 | -1 -1  9 -1 12 -1]
Score (accuracy): the share of query positions where argmax(logits) is the bound value.

make_batch takes n_queries > n_pairs too: then every pair is asked about equally often. Training (train_recall)
uses that, a query in every free slot, and scores held-out sequences that ask each key once. Its command line trains
one model on one setting; compare.py --task recall runs it for every model and setting:
    python mqar.py --model_type lstm --model_args '{"n_embd": 64, "n_hidden": 64}' --n_pairs 4 --seq_len 64
"""
import argparse
import json
import math
import time

import numpy as np
import torch

from cli import fail

FILLER = 0


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def check_setting(n_pairs, n_queries, seq_len, vocab_size):
    """ValueError unless the setting fits: enough distinct keys and values, and room for the query slots."""
    if n_pairs < 1 or n_queries < 1:
        raise ValueError(f"need n_pairs >= 1 and n_queries >= 1, not {n_pairs} and {n_queries}")
    if vocab_size // 2 - 1 < n_pairs or vocab_size - vocab_size // 2 < n_pairs:
        raise ValueError(f"vocab_size {vocab_size} has too few keys ({vocab_size // 2 - 1}) or values "
                         f"({vocab_size - vocab_size // 2}) for {n_pairs} pairs")
    if (seq_len - 2 * n_pairs) // 2 < n_queries:
        raise ValueError(f"seq_len {seq_len} is too short for {n_pairs} pairs and {n_queries} queries "
                         f"(needs 2 * (n_pairs + n_queries) = {2 * (n_pairs + n_queries)})")


def make_batch(batch, n_pairs, n_queries, seq_len, vocab_size, rng=None):
    """-> x, y: (batch, seq_len) int64 tensors in the layout of the module docstring. rng: a numpy Generator or a
    seed (the same seed gives the same batch)."""
    check_setting(n_pairs, n_queries, seq_len, vocab_size)
    rng = _rng(rng)
    B, n, half = batch, n_pairs, vocab_size // 2
    # n distinct keys and values per row: the first n of a random permutation of each range
    keys = np.argsort(rng.random((B, half - 1)), axis=1)[:, :n] + 1
    values = np.argsort(rng.random((B, vocab_size - half)), axis=1)[:, :n] + half
    x = np.full((B, seq_len), FILLER, dtype=np.int64)
    y = np.full((B, seq_len), -1, dtype=np.int64)
    x[:, 0:2 * n:2], x[:, 1:2 * n:2] = keys, values
    slots = (seq_len - 2 * n) // 2
    chosen = np.sort(np.argsort(rng.random((B, slots)), axis=1)[:, :n_queries], axis=1)   # (B, n_queries)
    # which pair each query asks: a random permutation of the pairs, repeated when n_queries > n_pairs
    asked = np.concatenate([np.argsort(rng.random((B, n)), axis=1) for _ in range(-(-n_queries // n))], axis=1)
    asked = asked[:, :n_queries]
    pos = 2 * n + 2 * chosen
    rows = np.arange(B)[:, None]
    x[rows, pos] = keys[rows, asked]
    y[rows, pos] = values[rows, asked]
    return torch.from_numpy(x), torch.from_numpy(y)


def count_correct(logits, y):
    """logits (B, T, V), y (B, T) -> (correct answers, queries) over the positions where y != -1."""
    mask = y != -1
    return int(((logits.argmax(-1) == y) & mask).sum()), int(mask.sum())


def accuracy(logits, y):
    """Share of the query positions (y != -1) where argmax(logits) is the bound value."""
    correct, total = count_correct(logits, y)
    if total == 0:
        raise ValueError("y has no query positions (every target is -1)")
    return correct / total


@torch.no_grad()
def evaluate(model, x, y, batch_size=256):
    model.eval()
    correct = total = 0
    for i in range(0, len(x), batch_size):
        logits, _ = model(x[i:i + batch_size])
        c, t = count_correct(logits, y[i:i + batch_size])
        correct, total = correct + c, total + t
    model.train()
    return correct / total


def train_recall(model, n_pairs, seq_len, vocab_size, steps, batch_size=32, lr=1e-3, weight_decay=0.1, warmup=0.1,
                 seed=0, eval_sequences=500, evals=5, dense=True, log=None):
    """
    Train on fresh batches of n_pairs pairs (step s draws from seed (seed, s)), then score eval_sequences held-out
    sequences (seed (seed, 2^31)) in which every key is asked once (n_queries = n_pairs, as Zoology).
    dense: the training sequences ask a query in every free slot (keys repeat), not n_pairs of them: many more
    answers per sequence, without which a small model finds the lookup far later (on this CPU budget, not at all).
    AdamW (betas 0.9, 0.98; weight decay on >= 2-D weights only, as train.py), warm-up over a `warmup` share of the
    steps, cosine to lr/10, gradient clipping at 1, float32. The loss is the model's training loss on the query
    positions only (all other targets are -1).
    -> {'accuracy', 'curve': [{'step', 'accuracy', 'train_loss'}], 'seconds' (training steps only), 'tokens'}
    """
    check_setting(n_pairs, n_pairs, seq_len, vocab_size)
    n_train_queries = (seq_len - 2 * n_pairs) // 2 if dense else n_pairs
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                             {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}],
                            lr=lr, betas=(0.9, 0.98), fused=True)
    n_warm = max(1, int(warmup * steps))

    def lr_at(s):
        if s < n_warm:
            return lr * (s + 1) / n_warm
        r = (s - n_warm) / max(1, steps - n_warm)
        return lr / 10 + 0.5 * (1 + math.cos(math.pi * r)) * (lr - lr / 10)

    x_eval, y_eval = make_batch(eval_sequences, n_pairs, n_pairs, seq_len, vocab_size, rng=[seed, 2 ** 31])
    eval_at = {max(1, round(steps * k / evals)) for k in range(1, evals + 1)}
    curve, seconds, losses = [], 0.0, []
    model.train()
    for s in range(steps):
        x, y = make_batch(batch_size, n_pairs, n_train_queries, seq_len, vocab_size, rng=[seed, s])
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group['lr'] = lr_at(s)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - t0
        losses.append(loss.item())
        if s + 1 in eval_at:
            acc = evaluate(model, x_eval, y_eval)
            curve.append({'step': s + 1, 'accuracy': acc, 'train_loss': float(np.mean(losses[-20:]))})
            if log:
                log(f"step {s + 1}/{steps}: train loss {curve[-1]['train_loss']:.4f}, held-out accuracy {acc:.4f}")
    return {'accuracy': curve[-1]['accuracy'], 'curve': curve, 'train_queries': n_train_queries, 'seconds': seconds,
            'tokens': steps * batch_size * seq_len}


def state_floats(model_type, cfg, seq_len):
    """Floats of context a model carries per sequence after seq_len tokens (what recall must fit in)."""
    if model_type == 'gpt':
        return 2 * cfg['n_layer'] * cfg['n_embd'] * seq_len                  # keys and values of every position
    if model_type == 'newllm':
        return cfg['n_context']
    if model_type == 'lstm':
        return 2 * cfg['n_layer'] * cfg['n_hidden']                          # h and c
    if model_type == 'resnetbk':
        return 2 * cfg['n_layer']                                            # one complex g per BK chain
    if model_type == 'gdn':  # per layer: each head's d x d matrix and the convolutions' last conv_size - 1 inputs
        import model_gdn
        c = model_gdn.GDNConfig(**cfg)
        return c.n_layer * c.n_head * c.head_dim * (c.head_dim + 3 * (c.conv_size - 1))
    raise ValueError(f"unknown model_type {model_type!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model_type', required=True)
    p.add_argument('--model_args', default='{}', help='JSON of the model config fields (vocab and block_size are set)')
    p.add_argument('--n_pairs', type=int, required=True)
    p.add_argument('--seq_len', type=int, required=True)
    p.add_argument('--vocab_size', type=int, default=18)
    p.add_argument('--sparse', action='store_true', help='train with n_pairs queries per sequence, not one per slot')
    p.add_argument('--steps', type=int, default=1000)
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--eval_sequences', type=int, default=500)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = leave as is)')
    p.add_argument('--out', default=None, help='write the result as JSON here')
    args = p.parse_args(argv)
    import checkpoint as ckpt_io
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        check_setting(args.n_pairs, args.n_pairs, args.seq_len, args.vocab_size)
        model_args = dict(json.loads(args.model_args), vocab_size=args.vocab_size)
        if 'block_size' in ckpt_io.config_fields(args.model_type):
            model_args['block_size'] = args.seq_len
        torch.manual_seed(args.seed)
        model = ckpt_io.build_model(args.model_type, model_args)
    except (ValueError, TypeError) as e:
        fail(f"{e}")
    n_params = model.get_num_params()
    print(f"{args.model_type} ({n_params:,} params) on MQAR: {args.n_pairs} pairs, T {args.seq_len}, vocab "
          f"{args.vocab_size}; {args.steps} steps of {args.batch_size}, lr {args.lr}", flush=True)
    r = train_recall(model, args.n_pairs, args.seq_len, args.vocab_size, args.steps, args.batch_size, args.lr,
                     seed=args.seed, eval_sequences=args.eval_sequences, dense=not args.sparse,
                     log=lambda s: print(s, flush=True))
    r.update(model_type=args.model_type, model_args=model_args, num_params=n_params, n_pairs=args.n_pairs,
             seq_len=args.seq_len,
             vocab_size=args.vocab_size, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
             eval_sequences=args.eval_sequences, state_floats=state_floats(args.model_type, model_args, args.seq_len),
             threads=torch.get_num_threads())
    print(f"held-out accuracy {r['accuracy']:.4f} ({r['seconds']:.1f} s of training)")
    if args.out:
        from checkpoint import atomic_write_text
        atomic_write_text(json.dumps(r, indent=1), args.out)
    return r


if __name__ == '__main__':
    main()
