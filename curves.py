"""
Learning curves of a run as a PNG, drawn from train.py's history (out_dir/history.json): train and val loss, val PPL
and the learning rate against iterations, a secondary axis in epochs, and the best evaluation marked. train.py calls
plot() at every evaluation.

Several runs side by side (e.g. the equal-budget comparison): val loss against training time and against training
FLOPs (iterations x the run's FLOPs per step from results.json):
    python curves.py out-cmp-gpt out-cmp-newllm out-cmp-resnetbk --png results/cpu/cmp_curves.png
"""
import argparse
import json
import math
import os

import matplotlib
matplotlib.use('Agg')  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from checkpoint import atomic_write  # noqa: E402

VAL_KIND = {'lines': "the seed's line windows", 'stream': 'stream windows'}


def plot(history, iters_per_epoch, path, title=''):
    """history: list of dicts with iter, train_loss, val_loss, val_ppl, lr, best. Writes path atomically."""
    if not history:
        return
    it = [h['iter'] for h in history]
    fig, (ax_loss, ax_ppl, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    kinds = [k[4:-5] for k in history[-1] if k.startswith('val_') and k.endswith('_loss') and k != 'val_loss']
    ax_loss.plot(it, [h['train_loss'] for h in history], label='train', marker='.')
    ax_loss.plot(it, [h['val_loss'] for h in history], label='val' + ('' if kinds else ' (estimate)'), marker='.')
    if kinds:  # eval_full: each whole-split metric (the first selects best.pt)
        for i, kind in enumerate(kinds):
            ax_ppl.plot(it, [math.exp(min(h.get(f'val_{kind}_loss', math.nan), 700)) for h in history], marker='.',
                        color=f'C{i + 1}', label=f"val, {VAL_KIND.get(kind, kind)}" + (' (selects best.pt)' if i == 0 else ''))
    else:
        ax_ppl.plot(it, [h['val_ppl'] for h in history], color='C1', marker='.', label='val (estimate)')
    ax_lr.plot(it, [h['lr'] for h in history], color='C2', marker='.')
    best = [h for h in history if h['best']]
    if best:
        b = min(best, key=lambda h: h['val_loss'])
        ax_loss.scatter([b['iter']], [b['val_loss']], s=90, facecolors='none', edgecolors='k', zorder=3,
                        label=f"best val {b['val_loss']:.3f}")
        ax_ppl.scatter([b['iter']], [b['val_ppl']], s=90, facecolors='none', edgecolors='k', zorder=3,
                       label=f"best {b['val_ppl']:.2f}")
    ax_loss.set_ylabel('loss (nats/token)')
    ax_ppl.set_ylabel('val perplexity (token)')
    ax_lr.set_ylabel('learning rate')
    for ax in (ax_loss, ax_ppl, ax_lr):
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        sec = ax.secondary_xaxis('top', functions=(lambda x: x / iters_per_epoch, lambda e: e * iters_per_epoch))
        sec.set_xlabel('epoch')
    ax_loss.legend()
    ax_ppl.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=90))
    plt.close(fig)


def compare(out_dirs, path):
    """Val loss of each run in out_dirs against training minutes and training FLOPs, one PNG written atomically."""
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 4))
    for d in out_dirs:
        files = [os.path.join(d, n) for n in ('history.json', 'results.json')]
        missing = [p for p in files if not os.path.exists(p)]
        if missing:
            raise SystemExit(f"error: {missing[0]} not found (is {d} an out_dir of a finished train.py run?)")
        with open(files[0]) as f:
            history = json.load(f)
        with open(files[1]) as f:
            results = json.load(f)
        label = f"{results['model_name']} ({results['num_params'] / 1e6:.2f}M)"
        loss = [h['val_loss'] for h in history]
        ax_t.plot([h['seconds'] / 60 for h in history], loss, marker='.', label=label)
        ax_f.plot([h['iter'] * results['total_flops_per_step'] for h in history], loss, marker='.', label=label)
    ax_t.set_xlabel('training time (min)')
    ax_f.set_xlabel('training FLOPs')
    ax_f.set_xscale('log')
    for ax in (ax_t, ax_f):
        ax.set_ylabel('val loss (nats/token)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=90))
    plt.close(fig)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description='val loss of several train.py runs against time and FLOPs, as a PNG')
    p.add_argument('out_dirs', nargs='+', help='out_dir of each run (history.json and results.json)')
    p.add_argument('--png', required=True, help='where to write the plot')
    args = p.parse_args()
    compare(args.out_dirs, args.png)
    print(f"wrote {args.png}")
