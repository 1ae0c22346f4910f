"""
What a training run writes about itself (train.py): one history record per evaluation, results.json at the end, and
the running figures of the log (time left, MFU). Each record is built here and nowhere else.
"""
import dataclasses
import json
import math
import os
import time

import checkpoint as ckpt_io
import curves
import hardware
from eval import perplexity


def history_record(state, losses, iters_per_epoch, tokens_per_iter, lr, best, last=False):
    """
    One evaluation -> {iter, epoch, tokens, seconds (training), wall_seconds (the run's so far, evaluations included),
    lr, train_loss, val_loss (the metric that selects best.pt),
    val_ppl, val_accuracy, best, val_<kind>_loss of every whole-split metric}. last: a stop off the evaluation
    grid (recorded, but neither patience nor the grid's best count it).
    """
    rec = {'iter': state.iter_num, 'epoch': state.iter_num / iters_per_epoch, 'tokens': state.iter_num * tokens_per_iter,
           'seconds': state.train_seconds, 'wall_seconds': state.wall_seconds, 'lr': lr, 'train_loss': losses['train']['loss'],
           'val_loss': losses['val']['loss'], 'val_ppl': perplexity(losses['val']['loss']),
           'val_accuracy': losses['val']['accuracy'], 'best': best,
           **{f'{k}_loss': v['loss'] for k, v in losses.items() if k.startswith('val_')}}
    if last:
        rec['last'] = True
    return rec


def write_history(records, out_dir, iters_per_epoch, title):
    ckpt_io.atomic_write_text(json.dumps(records, indent=1), os.path.join(out_dir, 'history.json'))
    curves.plot(records, iters_per_epoch, os.path.join(out_dir, 'curves.png'), title=title)


def results(cfg, state, model, meta, final, step_flops, dtype_choice, device, peak_memory, stop_reason,
            tokens_per_iter):
    """results.json: the seed's schema (model_name ... epoch_times) and what this project adds."""
    n_params = model.get_num_params()
    last = state.history[-1] if state.history else {'val_loss': math.nan}
    kind = 'whole val split' if cfg.eval_full else f'an estimate from {cfg.eval_iters} random val batches'
    return {
        'model_name': cfg.model_type, 'dataset_name': cfg.dataset,
        'final_loss': last['val_loss'], 'final_perplexity': perplexity(last['val_loss']),
        'best_perplexity': perplexity(state.best_val_loss), 'training_time': state.train_seconds,
        'total_tokens': state.iter_num * tokens_per_iter, 'vocab_size': meta['vocab_size'],
        'num_params': n_params,
        'model_size_mb': sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20,
        'peak_memory_mb': peak_memory[0], 'peak_memory_kind': peak_memory[1],
        'forward_flops': step_flops['forward'], 'backward_flops': step_flops['backward'],
        'optimizer_flops': step_flops['optimizer'], 'total_flops_per_step': step_flops['per_step'],
        'total_training_flops': step_flops['per_step'] * state.iter_num, 'peak_flops': state.peak_flops,
        'wall_seconds': state.wall_seconds,
        'device': device, 'dtype': dtype_choice.dtype, 'dtype_choice': dtype_choice.reason,
        'machine': hardware.machine_info(device), 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'epoch_losses': [e['train_loss'] for e in state.epoch_log],
        'epoch_perplexities': [perplexity(e['train_loss']) for e in state.epoch_log],
        'epoch_times': [e['seconds'] for e in state.epoch_log],
        'iterations': state.iter_num, 'stop_reason': stop_reason,
        'perplexity_unit': f"token ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']}); final_/best_perplexity "
                           f"are from the periodic evaluation ({kind}); epoch_losses are train cross-entropy "
                           "(auxiliary terms excluded)",
        'final_eval_of_best': final, 'config': cfg.settings, 'model_args': dataclasses.asdict(model.config),
    }


def eval_text(losses, val_kinds, eval_full, eval_iters):
    """The log's words for an evaluation: each val figure says which metric it is (the first of val_kinds selects
    best.pt; the others are recorded beside it)."""
    main = f"whole split, {curves.VAL_KIND[val_kinds[0]]}" if eval_full else f'estimate from {eval_iters} batches'
    others = ''.join(f", {curves.VAL_KIND[kind]} val ppl {perplexity(losses[f'val_{kind}']['loss']):.2f}"
                     for kind in val_kinds[1:] if f'val_{kind}' in losses)
    return (f"train loss {losses['train']['loss']:.4f} (estimate), val loss {losses['val']['loss']:.4f}, val ppl "
            f"{perplexity(losses['val']['loss']):.2f} ({main}), val acc {losses['val']['accuracy']:.3f}{others}")


class Clock:
    """
    The log's time left: a smoothed iteration time (exponential average, so one slow step does not swing it) times
    the iterations left (to total_iters, or to max_time in training seconds), plus the evaluations still to come
    (every eval_interval iterations, or one per epoch) at the measured time of the last one, plus the final whole-split
    evaluation, given as final_eval_iters training iterations' worth.
    """

    def __init__(self, total_iters, max_time, eval_interval, iters_per_epoch, final_eval_iters, smoothing=0.9):
        self.total_iters, self.max_time, self.final_eval_iters = total_iters, max_time, final_eval_iters
        self.eval_every = eval_interval or iters_per_epoch
        self.smoothing, self.step_seconds, self.eval_seconds = smoothing, None, 0.0

    def step(self, seconds):
        s = self.step_seconds
        self.step_seconds = seconds if s is None else self.smoothing * s + (1 - self.smoothing) * seconds

    def eta_minutes(self, iter_num, train_seconds):
        left = [self.total_iters - iter_num] if self.total_iters else []
        if self.max_time:
            left.append((self.max_time - train_seconds) / self.step_seconds)
        left = max(min(left), 0)
        evals_left = int((iter_num + left) // self.eval_every) - iter_num // self.eval_every
        return ((left + self.final_eval_iters) * self.step_seconds + evals_left * self.eval_seconds) / 60


def peak_flops(configured, saved, dtype_choice):
    """The MFU reference of a run -> (FLOP/s, where it comes from): the config's, else the run's own (measured at its
    first start, kept for its resumes), else the matmul rate measured now at the run's precision."""
    if configured:
        return configured, 'peak_flops from the config'
    if saved:
        return saved, "the run's own peak, measured at its first start"
    return (dtype_choice.rates[dtype_choice.dtype],
            f"{dtype_choice.dtype} matmul rate measured now, best of 3; kept for the run's resumes")


def mfu_text(model_flops, optimizer_flops, seconds, peak):
    """Model FLOPs utilisation (forward + backward against the run's peak), the optimizer's share beside it."""
    mfu = model_flops / (seconds * peak)
    note = ' (above 100%: the peak was measured low)' if mfu > 1 else ''
    return f"MFU {100 * mfu:.1f}%{note} (+ optimizer {100 * optimizer_flops / (seconds * peak):.1f}%)"
