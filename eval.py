"""
Metrics of a checkpoint on a whole split, one definition everywhere (train.py's final evaluation uses this file too).

    python eval.py --ckpt out/ckpt.pt [--split val|test] [--dataset DIR] [--json OUT]
    python eval.py --ckpt out/ckpt.pt --carry_state                       # recurrent models: state across windows
    python eval.py --ckpt out/ckpt.pt --context_lengths 64,256,1024,4096  # loss vs context read (table + PNG)
    python eval.py --ckpt out/ckpt.pt --quantize int8                     # post-training dynamic INT8 on CPU

Over a split evaluated whole -- the token stream x[0..N) cut into non-overlapping windows of the checkpoint's
block_size, in order; every token x[1..N) is predicted exactly once, x[0] never:
    loss (mean NLL, nats/token) = total NLL / (N - 1)
    token PPL                   = exp(loss)                      (unit: the dataset's tokenizer, not comparable
                                                                  across tokenizers or vocabulary sizes)
    bits per byte               = total NLL / (ln 2 * bytes)     (bytes: UTF-8 bytes of the split's source text)
    word PPL                    = exp(total NLL / words)         (words: whitespace-split words of the split)
    accuracy                    = share of targets where argmax(logits) == target
bits/byte and word PPL are comparable across tokenizers; token PPL is not. With a `word` tokenizer the text mapped
to <unk> is predicted as one token, so its bits/byte is a lower bound (it does not spell the unknown words), and the
<bos>/<eos> tokens of the bos_eos line format are scored too (they stand for the line breaks of the text).
Without --carry_state each window starts from nothing, so a token's context is its offset in its window (0 ..
block_size-1 earlier tokens): the number depends on block_size, and every model type is scored the same way.

--carry_state (New-LLM, causal ResNet-BK): the N-1 targets are cut into batch_size contiguous strands of equal
length (+-1); each strand is read window by window with the model's state carried across windows, so every target
is still scored exactly once, now with all the tokens since its strand's start as context. Only the batch_size
strand starts begin from an empty state (--batch_size 1 reads the split as one sequence).

--context_lengths c_1,..,c_K: how the loss depends on the context already read. The split is cut into S = (N-1) // L
consecutive strands of L = c_K targets (the tail is not used). In a strand, target t (0-based: token t+1 predicted
from tokens 0..t) is read with
    New-LLM, causal ResNet-BK: the state carried from the strand's start, context(t) = t + 1 tokens;
    GPT: its block_size window W. Targets t < W come from one forward of the strand's first W tokens
         (context t + 1, exact); later ones from a window sliding by --stride s that scores its last s positions,
         so context(t) is between W - s + 1 and W (exactly W with --stride 1).
loss(t) is the NLL of target t averaged over the S strands; the table reports its mean over each bucket
(c_{k-1}, c_k] of t + 1 (c_0 = 0), i.e. by the number of tokens the model has read, not by what it can use, with
its standard error over strands (few strands make the short buckets noisy). The PNG plots loss(t) (averaged in
log-spaced bins) against t + 1 with the bucket means +- 2 standard errors.

--quantize int8: torch.ao.quantization.quantize_dynamic of nn.Linear layers (int8 weights per tensor, activations
quantized on the fly per batch), evaluated on CPU (the only place its kernels run) against the float32 model on the
same tokens and threads. What stays float32: embeddings, norms, every non-Linear op, and any Linear the model reads as
a raw weight tensor (a quantized Linear has none; each Linear is tried alone, see quantize_int8). Per model:
    GPT:       every Linear becomes int8, lm_head included; lm_head's weight is the tied token embedding, which
               stays float32 for the input lookup, so the V x C matrix is then stored twice (float32 + int8 copy);
    New-LLM:   the per-token loop (model_newllm.py's context_loop) takes the weights of layer 1, layers 2..L and the
               fused context head Linear(H, 3C) as tensors, so they stay float32: only lm_head becomes int8;
    ResNet-BK: the experts, router, potential and output projections and lm_head become int8; the complex BK-Core
               runs in float32/complex64 as always.
Size = bytes of torch.save(state_dict) in memory, packed int8 weights and their scales included.
torch.ao.quantization is deprecated in favour of torchao (not a dependency here); it works in torch 2.13.
"""
import argparse
import copy
import io
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import hardware
from checkpoint import model_classes
from cli import fail
from linear_ce import linear_score


def score_logits(logits, targets):
    """logits (B, T, V), targets (B, T) with -1 = not scored -> (summed NLL, scored targets, correct argmax), floats."""
    logits, mask = logits.float(), targets != -1
    nll = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction='sum')
    return nll.item(), int(mask.sum()), int(((logits.argmax(-1) == targets) & mask).sum())


def score_batch(model, inputs, targets):
    """
    score_logits of model(inputs) without its (B, T, V) logits: the final hidden states (model.hidden) go through
    lm_head chunk by chunk (linear_ce.linear_score), as the fused training loss does. A head that is not a plain
    nn.Linear (--quantize int8 makes it a quantized one) is scored from its logits. Call it under the autocast
    context and no_grad.
    """
    head = model.lm_head
    if isinstance(head, nn.Linear):
        return linear_score(model.hidden(inputs), head.weight, head.bias, targets)
    logits, _ = model(inputs)
    return score_logits(logits, targets)


class Progress:
    """A line every `every` seconds while a long loop runs: done/total, rate and ETA. Call it with (done, total)."""

    def __init__(self, label, every=10.0, unit='tokens', file=None):
        self.label, self.every, self.unit, self.file = label, every, unit, file or sys.stderr
        self.t0 = self.last = time.time()

    def __call__(self, done, total):
        now = time.time()
        if now - self.last < self.every or done >= total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        print(f"{self.label}: {done:,}/{total:,} {self.unit} ({100 * done / total:.0f}%) | {rate:,.0f} {self.unit}/s "
              f"| ETA {(total - done) / max(rate, 1e-9):.0f} s", file=self.file, flush=True)


@torch.no_grad()
def evaluate_tokens(model, tokens, block_size, batch_size, device, autocast_ctx, carry_state=False, progress=None):
    """
    tokens: 1-D array (the split). -> {'nll_sum', 'targets', 'correct', 'seconds' (wall), 'cpu_seconds' (process)}.
    progress: called as progress(targets scored so far, all targets) after each batch (e.g. a Progress).
    carry_state=False: windows x[w*bs .. (w+1)*bs] from a fresh start, batch_size windows at a time (any model).
    carry_state=True: batch_size strands of equal length (+-1) read window by window with the state carried by
    forward_state (recurrent models); the last window of a shorter strand is padded with target -1 (the state after
    a strand's end is never used). Both score every target x[1..N) exactly once.
    """
    model.eval()
    t0, c0 = time.time(), time.process_time()
    x = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n = len(x) - 1  # targets
    nll_sum, n_targets, n_correct = 0.0, 0, 0

    def score(inputs, targets, state=None):
        nonlocal nll_sum, n_targets, n_correct
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast_ctx:
            if carry_state:
                logits, state = model.forward_state(inputs, state)
                nll, count, correct = score_logits(logits, targets)
            else:
                nll, count, correct = score_batch(model, inputs, targets)
        nll_sum, n_targets, n_correct = nll_sum + nll, n_targets + count, n_correct + correct
        if progress is not None:
            progress(n_targets, n)
        return state

    if not carry_state:
        n_windows = math.ceil(n / block_size)
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
        B = max(1, min(batch_size, n))
        bounds = torch.tensor([b * n // B for b in range(B + 1)])   # strand b: targets bounds[b] .. bounds[b+1]-1
        starts, ends = bounds[:-1], bounds[1:]
        longest = int((ends - starts).max())
        state = None
        for t0_ in range(0, longest, block_size):
            pos = starts[:, None] + t0_ + torch.arange(min(block_size, longest - t0_))[None, :]   # (B, T)
            valid = pos < ends[:, None]
            pos = pos.clamp(max=n - 1)
            state = score(x[pos], torch.where(valid, x[pos + 1], -1), state)
    return {'nll_sum': nll_sum, 'targets': n_targets, 'correct': n_correct, 'seconds': time.time() - t0,
            'cpu_seconds': time.process_time() - c0}


@torch.no_grad()
def evaluate_lines(model, tokens, bos, pad, block_size, batch_size, device, autocast_ctx, progress=None):
    """
    The New-LLM seed's metric: the split cut into its line windows (data.line_windows: each `<bos> ... <eos>` line
    of at most block_size + 1 tokens is one window, a longer one windows of block_size + 1 at stride
    (block_size + 1) // 2), every window read from a zero context; the mean is per scored token (the seed averaged
    per-batch means, which weighs short batches more; the difference is small). Long lines' overlapping windows
    score their shared tokens twice, as the seed did. -> the same dict as evaluate_tokens.
    """
    model.eval()
    t0, c0 = time.time(), time.process_time()
    windows = data.line_windows(tokens, block_size + 1, bos)
    n_rows = len(windows[0])
    total = int((windows[1] - 1).sum())
    nll_sum, n_targets, n_correct = 0.0, 0, 0
    for r0 in range(0, n_rows, batch_size):
        x, y = data.windows_batch(tokens, windows, np.arange(r0, min(r0 + batch_size, n_rows)), block_size, pad)
        with autocast_ctx:
            nll, count, correct = score_batch(model, torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        nll_sum, n_targets, n_correct = nll_sum + nll, n_targets + count, n_correct + correct
        if progress is not None:
            progress(n_targets, total)
    return {'nll_sum': nll_sum, 'targets': n_targets, 'correct': n_correct, 'seconds': time.time() - t0,
            'cpu_seconds': time.process_time() - c0, 'windows': n_rows}


def evaluate_split(model, tokens, windows, meta, block_size, batch_size, device, autocast_ctx, progress=None):
    """A whole split in 'stream' windows (evaluate_tokens) or the seed's 'lines' (evaluate_lines)."""
    if windows == 'lines':
        return evaluate_lines(model, tokens, data.bos_token(meta, "the 'lines' metric"), meta.get('pad_token') or 0,
                              block_size, batch_size, device, autocast_ctx, progress)
    return evaluate_tokens(model, tokens, block_size, batch_size, device, autocast_ctx, progress=progress)


def evaluate_best(model, data_dir, meta, block_size, batch_size, device, autocast_ctx, log):
    """train.py's last step, on the best checkpoint: each held-out split the data has (val, test), whole, in stream
    windows. -> {split: split_metrics}; the log says which splits there were and that val selected the checkpoint."""
    final = {}
    for split in ('val', 'test'):
        if not (os.path.isfile(os.path.join(data_dir, f'{split}.bin')) and meta['splits'].get(split, {}).get('tokens', 0) > 1):
            log(f"no {split} split in {data_dir}: not evaluated")
            continue
        r = evaluate_split(model, data.load_split(data_dir, split), 'stream', meta, block_size, batch_size, device,
                           autocast_ctx, Progress(f"final {split} evaluation", file=sys.stdout))
        m = final[split] = split_metrics(r, meta['splits'][split])
        log(f"best checkpoint, whole {split} split (stream windows): loss {m['loss']:.4f}, token ppl {m['ppl']:.2f}, "
            f"bits/byte {m.get('bits_per_byte', math.nan):.4f}, word ppl {m.get('word_ppl', math.nan):.2f}, acc "
            f"{m['accuracy']:.3f}" + (" (best.pt was chosen on val: a val figure selected on val)" if split == 'val' else ''))
    return final


def perplexity(loss):
    """exp(loss); inf where that overflows a float (a diverged run's loss, above ~709 nats); nan stays nan."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float('inf')


def diverged(val_loss, vocab_size):
    """A val loss above twice a uniform guess's (2 ln V), or not finite: the run has diverged. (An untrained model
    scores about ln V; training can overfit a little past it, never to twice it.)"""
    return not val_loss <= 2 * math.log(vocab_size)


def split_metrics(result, split_meta):
    """result of evaluate_tokens + meta.json's entry for the split -> the reported metrics (see the docstring)."""
    nll, n = result['nll_sum'], max(result['targets'], 1)
    out = {'loss': nll / n, 'ppl': perplexity(nll / n), 'accuracy': result['correct'] / n, 'tokens': result['targets'],
           'seconds': result['seconds'], 'tokens_per_second': result['targets'] / max(result['seconds'], 1e-9)}
    if 'cpu_seconds' in result:  # CPU time of the process (all its threads): steadier than wall time on a busy machine
        out['tokens_per_cpu_second'] = result['targets'] / max(result['cpu_seconds'], 1e-9)
    if split_meta and split_meta.get('bytes'):
        out['bits_per_byte'] = nll / (math.log(2) * split_meta['bytes'])
    if split_meta and split_meta.get('words'):
        out['word_ppl'] = perplexity(nll / split_meta['words'])
    return out


# -----------------------------------------------------------------------------
# loss as a function of the context read

def is_recurrent(model_type, model_args):
    """Whether the model carries an O(1) state from window to window (its class's is_recurrent): New-LLM, the LSTM
    and causal ResNet-BK do; GPT has a window; seed (non-causal) ResNet-BK has neither. model_args: dict or config."""
    config_cls, model_cls = model_classes(model_type)
    return model_cls.is_recurrent(model_args if isinstance(model_args, config_cls) else config_cls(**model_args))


@torch.no_grad()
def context_curve(model, tokens, length, batch_size, device, autocast_ctx, recurrent, block_size, stride):
    """
    Per-position NLL over strands (see the module docstring). tokens: 1-D array; length: L targets per strand.
    recurrent: carry the state (chunks of block_size); else GPT's sliding window of block_size, step stride.
    -> {'nll': (S, L) NLL of target t in strand s, 'correct': (S, L) bool, 'strands': S, 'seconds'}
    """
    model.eval()
    t0 = time.time()
    x = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    S = (len(x) - 1) // length
    nll_st, correct_st = torch.zeros(S, length), torch.zeros(S, length, dtype=torch.bool)

    def score(logits, targets, t_lo):
        """logits (B, T, V) for targets (B, T) at strand positions t_lo .. t_lo + T - 1 of the strands rows."""
        logits = logits.float()
        T = targets.size(1)
        nll_st[rows, t_lo:t_lo + T] = F.cross_entropy(logits.transpose(1, 2), targets, reduction='none').cpu()
        correct_st[rows, t_lo:t_lo + T] = (logits.argmax(-1) == targets).cpu()

    for s0 in range(0, S, batch_size):
        rows = slice(s0, min(s0 + batch_size, S))
        seq = x[torch.arange(rows.start, rows.stop)[:, None] * length + torch.arange(length + 1)].to(device)  # (B, L+1)
        if recurrent:
            state = None
            for c0 in range(0, length, block_size):
                c1 = min(c0 + block_size, length)
                with autocast_ctx:
                    logits, state = model.forward_state(seq[:, c0:c1], state)
                score(logits, seq[:, c0 + 1:c1 + 1], c0)
        else:
            W = min(block_size, length)
            with autocast_ctx:
                logits, _ = model(seq[:, :W])
            score(logits, seq[:, 1:W + 1], 0)
            scored = W                       # targets 0 .. scored-1 are done
            while scored < length:           # window [end - W, end) scores its last end - scored positions
                end = min(scored + stride, length)
                with autocast_ctx:
                    logits, _ = model(seq[:, end - W:end])
                score(logits[:, scored - end:], seq[:, scored + 1:end + 1], scored)
                scored = end
    return {'nll': nll_st, 'correct': correct_st, 'strands': S, 'seconds': time.time() - t0}


def context_table(curve, edges):
    """
    Bucket the curve by context c = t + 1 into (edges[k-1], edges[k]] -> list of rows. 'se' is the standard error
    of the bucket's loss over strands (std of the S per-strand bucket means / sqrt(S)): tokens of one strand are
    correlated, strands far less, so differences between buckets within ~2 se are noise.
    """
    S, rows, lo = curve['strands'], [], 0
    for hi in edges:
        per_strand = curve['nll'][:, lo:hi].double().mean(1)                                  # (S,)
        loss = per_strand.mean().item()
        rows.append({'context_from': lo + 1, 'context_to': hi, 'tokens': (hi - lo) * S, 'loss': loss,
                     'se': per_strand.std().item() / math.sqrt(S) if S > 1 else float('nan'),
                     'ppl': perplexity(loss), 'accuracy': curve['correct'][:, lo:hi].double().mean().item()})
        lo = hi
    return rows


def plot_context(curve, rows, path, title):
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    from checkpoint import atomic_write
    loss_t = curve['nll'].double().mean(0).numpy()
    L = len(loss_t)
    bins = np.unique(np.geomspace(1, L + 1, 60).astype(int))   # log-spaced bins of c = t + 1
    cs, ls = [], []
    for a, b in zip(bins[:-1], bins[1:]):
        cs.append(math.sqrt(a * (b - 1)) if b - 1 > a else a)
        ls.append(loss_t[a - 1:b - 1].mean())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(cs, ls, marker='.', label=f"loss(t), mean over {curve['strands']} strands (log bins)")
    for i, r in enumerate(rows):
        ax.hlines(r['loss'], r['context_from'], r['context_to'], colors='C1', linewidth=2.5,
                  label='bucket mean +- 2 s.e. over strands' if i == 0 else None)
        ax.fill_between([r['context_from'], r['context_to']], r['loss'] - 2 * r['se'], r['loss'] + 2 * r['se'],
                        color='C1', alpha=0.2)
    ax.set_xscale('log')
    ax.set_xlabel('tokens of context read (t + 1)')
    ax.set_ylabel('loss (nats/token)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


# -----------------------------------------------------------------------------
# INT8

def serialized_bytes(model):
    """Bytes of torch.save(model.state_dict()): what a checkpoint of the weights costs on disk (tied tensors once)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _quantize(model, names):
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.ao.quantization's deprecation notice
        return quantize_dynamic(copy.deepcopy(model), {n: default_dynamic_qconfig for n in names}).eval()


def quantize_int8(model):
    """
    -> (int8 copy of the float32 CPU model, names of the Linear layers made int8, names kept float32).
    A quantized Linear has no weight tensor (its .weight is a method returning a dequantized copy), so a model that
    reads a layer's .weight directly (New-LLM's fused loop) breaks on it: each Linear is tried alone on a short
    input through forward and forward_state, and the ones that fail stay float32.
    """
    idx = torch.zeros(1, 3, dtype=torch.long)
    ok, kept = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            try:
                with torch.no_grad():
                    q = _quantize(model, [name])
                    q(idx)
                    q.forward_state(idx)
                ok.append(name)
            except Exception:
                kept.append(name)
    return _quantize(model, ok), ok, kept


# -----------------------------------------------------------------------------
# command line

def load_data(dataset, split, ckpt):
    """-> (tokens memmap, meta, data_dir); FileNotFoundError / ValueError for a missing dataset or split, a vocabulary
    mismatch, or a split too short to score."""
    data_dir, meta = data.load_meta(dataset)
    tokens = data.load_split(data_dir, split)
    data.check_vocabulary(ckpt.get('meta', {}), meta, 'the checkpoint', data_dir)
    if len(tokens) < 2:
        raise ValueError(f"the {split} split of {data_dir} holds {len(tokens)} tokens; nothing to evaluate")
    return tokens, meta, data_dir


def fmt(m):
    s = f"loss {m['loss']:.4f} nats/token | token ppl {m['ppl']:.3f} | "
    if 'bits_per_byte' in m:
        s += f"bits/byte {m['bits_per_byte']:.4f} | "
    if 'word_ppl' in m:
        s += f"word ppl {m['word_ppl']:.3f} | "
    return s + (f"acc {m['accuracy']:.4f} | {m['tokens']:,} tokens in {m['seconds']:.1f} s "
                f"({m['tokens_per_second']:,.0f} tok/s)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ckpt', required=True, help='checkpoint written by train.py')
    p.add_argument('--split', default='val', help='val | test | train (default val)')
    p.add_argument('--dataset', default=None, help="folder under data/ or a path; default: the checkpoint's dataset")
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    p.add_argument('--batch_size', type=int, default=None, help="windows (or strands) per batch; default: training's")
    p.add_argument('--device', default='auto', help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument('--dtype', default='auto', choices=['auto', 'float32', 'bfloat16', 'float16'],
                   help='autocast dtype; auto = bfloat16 where it is fast on this device, else float32 (hardware.py)')
    p.add_argument('--max_tokens', type=int, default=0,
                   help='evaluate only the first N tokens of the split (0 = all); bytes and words are then pro-rated')
    p.add_argument('--carry_state', action='store_true', help='recurrent models: carry the state across windows')
    p.add_argument('--windows', default='stream', choices=['stream', 'lines'],
                   help="stream: the split in consecutive windows (default); lines: the New-LLM seed's metric, its "
                        "<bos> line windows each from a zero context")
    p.add_argument('--context_lengths', default=None, help='e.g. 64,256,1024,4096: loss by context read (+ PNG)')
    p.add_argument('--stride', type=int, default=0, help='GPT sliding-window step for --context_lengths '
                                                         '(default block_size // 2; 1 = every context exactly W)')
    p.add_argument('--png', default=None, help='--context_lengths plot (default: beside the checkpoint)')
    p.add_argument('--quantize', default=None, choices=['int8'], help='compare float32 with dynamic INT8 on CPU')
    args = p.parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as e:
        fail(e)


def run(args):
    from checkpoint import load_model
    if args.batch_size is not None and args.batch_size < 1 or args.max_tokens < 0 or args.stride < 0:
        raise ValueError("--batch_size must be >= 1, --max_tokens and --stride >= 0")
    device = hardware.resolve_device(args.device)
    if args.quantize and args.dtype not in ('auto', 'float32'):
        raise ValueError("--quantize int8 compares with the float32 model; leave --dtype at auto or float32")
    if args.quantize and device != 'cpu':
        print("note: dynamic INT8 kernels run on CPU only; evaluating on cpu", file=sys.stderr)
        device = 'cpu'
    dtype_choice = hardware.choose_dtype('float32' if args.quantize else args.dtype, device)
    if dtype_choice.warning:
        print(dtype_choice.warning, file=sys.stderr)
    dtype = dtype_choice.dtype
    ctx = hardware.autocast(device, dtype)
    model, ckpt = load_model(args.ckpt, device)
    model_type, model_args, cfg = ckpt['model_type'], ckpt['model_args'], ckpt.get('config', {})
    tokens, meta, data_dir = load_data(args.dataset or cfg.get('dataset', ''), args.split, ckpt)
    if args.max_tokens > 0:
        tokens = tokens[:args.max_tokens]
    block_size = cfg.get('block_size') or model_args['block_size']
    batch_size = args.batch_size or cfg.get('batch_size', 12)
    recurrent = is_recurrent(model_type, model_args)
    if (args.carry_state or args.context_lengths) and model_type == 'resnetbk' and not recurrent:
        raise ValueError("this ResNet-BK is non-causal (bk_causal=False, the seed's mode): each position sees "
                         "the tokens after it, so it has no state to carry and no valid context curve")
    if args.carry_state and not recurrent:
        raise ValueError(f"--carry_state needs a recurrent model (one whose is_recurrent(config) is true: New-LLM, "
                         f"the LSTM, causal ResNet-BK); {model_type}'s "
                         f"context is its block_size window (see --context_lengths for its sliding window)")
    bos = meta['special_tokens'].get('<bos>')
    if args.windows == 'lines':
        data.bos_token(meta, '--windows lines')
        if args.carry_state:
            raise ValueError("--windows lines reads each window from a zero context: drop --carry_state")

    split_meta = dict(meta['splits'].get(args.split, {}))
    scored_fraction = (len(tokens) - 1) / max(split_meta.get('tokens', len(tokens)) - 1, 1)
    prorated = scored_fraction < 1.0
    if prorated:  # a prefix: its bytes and words are unknown, estimate them from the token share
        split_meta = {k: v * scored_fraction for k, v in split_meta.items() if k in ('bytes', 'words', 'unk_bytes')}
    if args.windows == 'lines':  # overlapping windows score some tokens twice: no per-byte or per-word figures
        split_meta = {}
    unit = (f"token = {meta['tokenizer']} tokenizer token (vocab {meta['vocab_size']}); bits/byte over the UTF-8 bytes "
            f"and word ppl over the whitespace words of the {args.split} split")
    if prorated:
        unit += f" (pro-rated: first {len(tokens):,} of {meta['splits'][args.split]['tokens']:,} tokens)"
    print(f"{model_type}: {model.get_num_params():,} parameters | {data_dir} {args.split}: {len(tokens):,} tokens | "
          f"window {block_size} | batch {batch_size} | {device} | {dtype_choice.reason}")
    print(f"units: {unit}")
    mode = (f"carry_state: {min(batch_size, len(tokens) - 1)} strands, state carried across windows of {block_size}"
            if args.carry_state else f"non-overlapping windows of {block_size}, each from a fresh start")
    if args.windows == 'lines':
        mode = (f"the New-LLM seed's line windows ({block_size + 1} tokens, stride {(block_size + 1) // 2} in long "
                f"lines), each from a zero context, mean per token")
    if model_type == 'resnetbk' and not recurrent:
        mode += "; NON-CAUSAL (seed mode): positions see later tokens, this is not a valid language-model loss"
    out = {'ckpt': args.ckpt, 'model_type': model_type, 'num_params': model.get_num_params(), 'dataset': data_dir,
           'split': args.split, 'tokenizer': meta['tokenizer'], 'vocab_size': meta['vocab_size'], 'unit': unit,
           'block_size': block_size, 'batch_size': batch_size, 'device': device, 'dtype': dtype, 'mode': mode}

    if args.windows == 'lines':
        result = evaluate_lines(model, tokens, bos, meta.get('pad_token') or 0, block_size, batch_size, device, ctx,
                                progress=Progress(args.split))
        out['windows'] = result['windows']
    else:
        result = evaluate_tokens(model, tokens, block_size, batch_size, device, ctx, args.carry_state,
                                 progress=Progress(args.split))
    m = split_metrics(result, split_meta)
    out['metrics'] = m
    print(f"{args.split} ({mode}):\n  {fmt(m)}")
    unk = meta['special_tokens'].get('<unk>')
    if unk is not None and meta['tokenizer'] == 'word':
        targets = np.asarray(tokens[1:])
        out['unk'] = {'token_rate': float((targets == unk).mean()),
                      'byte_rate': (split_meta['unk_bytes'] / split_meta['bytes']) if split_meta.get('unk_bytes')
                      is not None and split_meta.get('bytes') else None}
        byte_text = (f", {100 * out['unk']['byte_rate']:.1f}% of its bytes" if out['unk']['byte_rate'] is not None
                     else '')
        if out['unk']['token_rate'] > 0:
            out['unk']['note'] = ("bits_per_byte and word_ppl are lower bounds: the model predicts <unk> as one token "
                                  "and never spells the words it stands for; not comparable with a gpt2-token model's")
            if 'bits_per_byte' in m:  # (line windows score some tokens twice: they have no per-byte figures)
                print(f"  <unk>: {100 * out['unk']['token_rate']:.1f}% of the targets{byte_text}: "
                      f"bits/byte and word ppl are lower bounds")
            else:
                print(f"  <unk>: {100 * out['unk']['token_rate']:.1f}% of the targets{byte_text}; token ppl counts "
                      f"<unk> as one word")

    if args.context_lengths:
        try:
            edges = sorted({int(c) for c in args.context_lengths.split(',')})
        except ValueError:
            raise ValueError(f"--context_lengths must be comma-separated integers, not {args.context_lengths!r}")
        if edges[0] < 1:
            raise ValueError("--context_lengths must be positive")
        L = edges[-1]
        if len(tokens) - 1 < L:
            raise ValueError(f"the {args.split} split has {len(tokens) - 1:,} targets, fewer than the longest "
                             f"context {L:,}")
        stride = args.stride or max(1, block_size // 2)
        curve = context_curve(model, tokens, L, batch_size, device, ctx, recurrent, block_size, stride)
        rows = context_table(curve, edges)
        how = ("state carried from each strand's start (context = t + 1)" if recurrent else
               f"sliding window of {block_size}, stride {stride}: context = t + 1 up to {block_size}, then "
               f"{max(block_size - stride + 1, 1)}..{block_size}")
        print(f"loss by context read: {curve['strands']} strands of {L:,} targets, {how}")
        print(f"  {'context':>15} {'tokens':>10} {'loss':>8} {'+-se':>7} {'ppl':>9} {'acc':>7}")
        for r in rows:
            print(f"  {r['context_from']:>6,} - {r['context_to']:<6,} {r['tokens']:>10,} {r['loss']:>8.4f} "
                  f"{r['se']:>7.4f} {r['ppl']:>9.3f} {r['accuracy']:>7.4f}")
        png = args.png or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), f'context_lengths_{args.split}.png')
        plot_context(curve, rows, png, f"{model_type} ({model.get_num_params():,} params), {args.split} split, "
                                       f"{meta['tokenizer']} tokens (vocab {meta['vocab_size']})\n{how}")
        print(f"  plot: {png}")
        out['context_lengths'] = {'strands': curve['strands'], 'length': L, 'how': how, 'stride': None if recurrent
                                  else stride, 'buckets': rows, 'seconds': curve['seconds'], 'png': png,
                                  'loss_by_position': curve['nll'].double().mean(0).tolist()}

    if args.quantize:
        qmodel, quantized, kept = quantize_int8(model)
        q = split_metrics(evaluate_tokens(qmodel, tokens, block_size, batch_size, device, ctx, args.carry_state,
                                          progress=Progress(f"{args.split} int8")), split_meta)
        size32, size8 = serialized_bytes(model), serialized_bytes(qmodel)
        qparams = sum(dict(model.named_modules())[n].weight.numel() for n in quantized)
        out['int8'] = {'metrics': q, 'fp32_bytes': size32, 'int8_bytes': size8, 'size_ratio': size8 / size32,
                       'ppl_change': q['ppl'] / m['ppl'] - 1,
                       'speed_change': q['tokens_per_second'] / m['tokens_per_second'] - 1,
                       'cpu_speed_change': q['tokens_per_cpu_second'] / m['tokens_per_cpu_second'] - 1,
                       'linear_int8': quantized, 'linear_fp32': kept,
                       'weights_int8': qparams, 'threads': torch.get_num_threads()}
        print(f"int8 (dynamic, {len(quantized)} Linear layers, {qparams:,} of {model.get_num_params():,} weights; "
              f"Linear kept float32: {', '.join(kept) or 'none'}; embeddings, norms and the rest stay float32):")
        print(f"  {fmt(q)}")
        print(f"  size {size32 / 2**20:.2f} MB -> {size8 / 2**20:.2f} MB (x{size8 / size32:.3f}) | "
              f"ppl {m['ppl']:.3f} -> {q['ppl']:.3f} ({100 * out['int8']['ppl_change']:+.2f}%) | "
              f"tok/s {m['tokens_per_second']:,.0f} -> {q['tokens_per_second']:,.0f} "
              f"({100 * out['int8']['speed_change']:+.1f}% wall, {100 * out['int8']['cpu_speed_change']:+.1f}% per "
              f"CPU second, {torch.get_num_threads()} threads)")

    if args.json:
        from checkpoint import atomic_write_text
        atomic_write_text(json.dumps({**hardware.run_record(device), **out}, indent=2), args.json)
    return out


if __name__ == '__main__':
    main()
