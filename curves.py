"""
Learning curves of a run as a PNG, drawn from train.py's history (out_dir/history.json): train and val loss, val PPL
and the learning rate against iterations, a secondary axis in epochs, and the best evaluation marked.
"""
import os

import matplotlib
matplotlib.use('Agg')  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from checkpoint import atomic_write  # noqa: E402


def plot(history, iters_per_epoch, path, title=''):
    """history: list of dicts with iter, train_loss, val_loss, val_ppl, lr, best. Writes path atomically."""
    if not history:
        return
    it = [h['iter'] for h in history]
    fig, (ax_loss, ax_ppl, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    ax_loss.plot(it, [h['train_loss'] for h in history], label='train', marker='.')
    ax_loss.plot(it, [h['val_loss'] for h in history], label='val', marker='.')
    ax_ppl.plot(it, [h['val_ppl'] for h in history], color='C1', marker='.', label='val')
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
