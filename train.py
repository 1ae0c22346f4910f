"""
One training loop for every model (GPT, New-LLM, ResNet-BK, ...), after nanoGPT's train.py.

    python train.py config/wt2_gpt.py --max_iters=2000        # one process: CUDA, Apple mps or the CPU
    torchrun --standalone --nproc_per_node=2 train.py config/wt2_gpt.py   # DDP (NCCL on CUDA, Gloo on CPU)
    python train.py --help                                     # every setting, its default and what it does

Settings: config.py's defaults, then config files, then --key=value. Every field of the chosen model's config
dataclass (e.g. New-LLM's n_hidden, ResNet-BK's n_experts) is a valid key too.

Writes to out_dir (a scratch run refuses an out_dir that holds another run unless --overwrite=True): ckpt.pt (the
latest state, for init_from='resume'), best.pt (the best val loss seen), ckpt_epochN.pt (snapshots), history.json and
curves.png (every evaluation), results.json (at the end). All written atomically: a kill at any moment leaves every
file loadable.

Resume is exact: a run stopped at any iteration (max_iters/max_epochs/max_time, SIGTERM or Ctrl-C) and resumed
continues bit for bit as if it had never stopped (batches are a function of the step, every rank's RNG state is
saved). A stop off the evaluation grid saves ckpt.pt first, then evaluates the last weights: best.pt takes them if
they are the best seen, and the patience count is left as it was.
"""
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint as ckpt_io
import config
import data
import flops
import hardware
import optim
import records
from cli import fail
from eval import diverged, evaluate_best, evaluate_split, score_batch, split_metrics

try:
    cfg = config.load(sys.argv[1:])
except ValueError as e:
    fail(e)

# -----------------------------------------------------------------------------
# device, precision, DDP: one process per device, rank 0 logs and writes
try:
    device = hardware.resolve_device(cfg.device)
    dtype_choice = hardware.choose_dtype(cfg.dtype, device)  # measured on this device (hardware.py)
except ValueError as e:
    fail(e)
ddp = int(os.environ.get('RANK', -1)) != -1
rank, world = 0, 1
if ddp:
    dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith('cuda'):
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    if cfg.gradient_accumulation_steps % world != 0:
        fail(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a multiple of the number of "
             f"processes ({world})")
    choice = [dtype_choice.dtype]  # every rank takes rank 0's measured choice
    dist.broadcast_object_list(choice, src=0)
    dtype_choice.dtype = choice[0]
master = rank == 0
local_accum_steps = cfg.gradient_accumulation_steps // world
tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
torch.manual_seed(cfg.seed + rank)
device_type = hardware.device_type(device)
ctx = hardware.autocast(device, dtype_choice.dtype)
if device_type == 'cpu':
    hardware.keep_freed_memory()  # the step's large buffers stay in the heap, not page-faulted in at every step
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def log(*args):
    if master:
        print(*args, flush=True)


# -----------------------------------------------------------------------------
# data: batches are a pure function of the step (data.Batches); eval_full's val metrics, the selecting one first
try:
    data_dir, meta = data.load_meta(cfg.dataset)
    train_tokens, val_tokens = data.load_split(data_dir, 'train'), data.load_split(data_dir, 'val')
    if cfg.data_limit:
        train_tokens = train_tokens[:cfg.data_limit]
    batch_args = (meta, cfg.batch_mode, cfg.block_size, cfg.batch_size, cfg.gradient_accumulation_steps, cfg.seed)
    train_batches = data.Batches(train_tokens, *batch_args, 'train', ' (data_limit)' if cfg.data_limit else '')
    val_batches = data.Batches(val_tokens, *batch_args, 'val')
    val_kinds = data.val_kinds(meta, cfg.val_windows, cfg.batch_mode)
except (FileNotFoundError, ValueError) as e:
    fail(e)
iters_per_epoch = train_batches.iters_per_epoch
if cfg.batch_mode == 'seed_lines':
    log(f"seed_lines: {train_batches.samples_per_epoch:,} train windows, {val_batches.samples_per_epoch:,} val windows")


def get_batch(split, step, micro_step, estimate=False):
    x, y = (train_batches if split == 'train' else val_batches).get(step, micro_step, estimate)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# the run's folder (a scratch run never silently replaces another run), the model, its optimizers, the run's state
model_args, state, checkpoint, changed = dict(cfg.model_args, vocab_size=meta['vocab_size']), ckpt_io.TrainState(), None, {}
source = os.path.join(cfg.out_dir, 'ckpt.pt') if cfg.init_from == 'resume' else cfg.init_from
try:
    if cfg.init_from != 'resume':
        ckpt_io.check_run_folder(cfg.out_dir, cfg.overwrite)
    if cfg.init_from != 'scratch':
        checkpoint = ckpt_io.load_checkpoint(source, map_location=device)
        model_args, changed = ckpt_io.start_args(checkpoint, source, cfg.model_type, cfg.model_set)
        data.check_vocabulary(checkpoint.get('meta', {}), meta, source, cfg.dataset)
except (FileNotFoundError, ValueError) as e:
    fail(e)
for k, (old, new) in changed.items():
    log(f"{source}: {k} = {new!r} (the checkpoint had {old!r})")
if model_args.get('block_size', cfg.block_size) < cfg.block_size:
    fail(f"block_size {cfg.block_size} exceeds the model's {model_args['block_size']}")
try:
    model = ckpt_io.build_model(cfg.model_type, model_args)
except (TypeError, ValueError) as e:
    fail(f"{cfg.model_type}: {e}")
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
model.to(device)
optimizers = optim.build(model, cfg.optimizer, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                         cfg.muon_momentum, cfg.adamw_lr_ratio, device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype_choice.dtype == 'float16'))


def rng_states():
    return ckpt_io.rng_states(device_type, world if ddp else 1)


if cfg.init_from == 'resume':
    try:
        ckpt_io.restore_optimizers(checkpoint, optimizers, scaler, source)
    except ValueError as e:
        fail(e)
    state = ckpt_io.TrainState.from_checkpoint(checkpoint)
    if len(checkpoint['rng']) != world:
        log(f"resume: the checkpoint holds the RNG states of {len(checkpoint['rng'])} process(es), this run has "
            f"{world}: the run continues, but not bit for bit as it would have")
    ckpt_io.restore_rng(checkpoint['rng'], rank, device_type)
    log(f"resumed from {source} at iter {state.iter_num} ({state.train_seconds / 60:.1f} min trained, best val loss "
        f"{state.best_val_loss:.4f})")
checkpoint = None  # free memory

raw_model = model
try:
    compile_on, compile_why = hardware.choose_compile(cfg.compile, cfg.model_type, device)  # measured: bench/compile.py
except ValueError as e:
    fail(e)
log(compile_why)
if compile_on:
    model = hardware.compile_model(model, device)
if ddp:
    model = DDP(model, device_ids=[int(os.environ['LOCAL_RANK'])] if device_type == 'cuda' else None)
log(f"{cfg.model_type}: {raw_model.get_num_params():,} parameters | {cfg.dataset}: {len(train_tokens):,} train tokens, "
    f"vocab {meta['vocab_size']} | {iters_per_epoch:,} iterations per epoch of {tokens_per_iter:,} tokens")
log(f"device {device} | {dtype_choice.reason}")
if dtype_choice.warning:
    log(dtype_choice.warning)
# FLOPs of one iteration (all micro-batches and ranks; flops.py) and the peak for MFU, fixed for the whole run
step_flops = flops.step_flops(cfg.model_type, raw_model.config, cfg.batch_size, cfg.block_size,
                              cfg.gradient_accumulation_steps, cfg.optimizer,
                              bool(cfg.grad_clip_schedule) or cfg.grad_clip > 0, device_type=device_type,
                              model=raw_model)
model_flops = step_flops['forward'] + step_flops['backward']
state.peak_flops, peak_source = records.peak_flops(cfg.peak_flops, state.peak_flops, dtype_choice)
log(f"{step_flops['per_step']:.4g} FLOPs per iteration (forward {step_flops['forward']:.4g}, backward "
    f"{step_flops['backward']:.4g}, optimizer {step_flops['optimizer']:.4g}) | MFU against "
    f"{state.peak_flops:.4g} FLOP/s per device ({peak_source})")

# run length in iterations: the tightest of max_iters and max_epochs (max_time is checked as we go)
total_iters = min([n for n in (cfg.max_iters, cfg.max_epochs * iters_per_epoch) if n > 0], default=0)
decay_iters = cfg.lr_decay_iters or total_iters


def get_lr(it, seconds):
    """
    Linear warmup over warmup_iters, then cosine from learning_rate to min_lr (or constant with decay_lr=False).
    The cosine runs over decay_iters iterations, or in a run bounded by max_time alone over its training seconds.
    """
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if not cfg.decay_lr:
        return cfg.learning_rate
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters) if decay_iters else seconds / cfg.max_time
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (cfg.learning_rate - cfg.min_lr)


def get_clip(epoch):
    if cfg.grad_clip_schedule:
        return [c for e, c in sorted(cfg.grad_clip_schedule) if epoch >= e][-1]
    return cfg.grad_clip


@torch.no_grad()
def estimate_loss():
    """
    Mean loss (per target token, padding excluded) and accuracy: train on eval_iters fixed batches (an estimate);
    val likewise, or with eval_full the whole split in each of val_kinds (eval.py): consecutive windows ('stream')
    or the New-LLM seed's line windows from a zero context ('lines'); the first selects best.pt.
    """
    out = {}
    model.eval()
    for split in ('train', 'val'):
        if cfg.eval_full and split == 'val':
            for kind in val_kinds:
                r = evaluate_split(raw_model, val_tokens, kind, meta, cfg.block_size, cfg.batch_size, device, ctx)
                out[f'val_{kind}'] = {k: split_metrics(r, None)[k] for k in ('loss', 'accuracy')}
            out['val'] = out[f'val_{val_kinds[0]}']
            continue
        nll = count = correct = 0
        for k in range(cfg.eval_iters):
            x, y = get_batch(split, k, 0, estimate=True)
            with ctx:
                scores = score_batch(raw_model, x, y)
            nll, count, correct = nll + scores[0], count + scores[1], correct + scores[2]
        out[split] = {'loss': nll / max(count, 1), 'accuracy': correct / max(count, 1)}
    model.train()
    return out


def save(name, rngs):
    """One of the run's checkpoints, from rank 0 (rngs: rng_states(), gathered by every rank)."""
    state.wall_seconds = wall_at_start + time.time() - started
    if master:
        ckpt_io.atomic_torch_save(ckpt_io.training_checkpoint(raw_model, cfg.model_type, meta, cfg.settings,
                                                              optimizers, scaler, rngs, state),
                                  os.path.join(cfg.out_dir, name))


def write_history(recs):
    if master:
        records.write_history(recs, cfg.out_dir, iters_per_epoch, f"{cfg.model_type} on {cfg.dataset}")


def evaluate_and_checkpoint():
    """Evaluate; update the best and patience state, history, curves and checkpoints. -> why training must stop
    (patience ran out, or the run diverged), else None."""
    t0 = time.time()
    losses = estimate_loss()
    state.wall_seconds = wall_at_start + time.time() - started
    val_loss = losses['val']['loss']
    improved = state.record_eval(val_loss, cfg.min_delta)
    state.history.append(records.history_record(state, losses, iters_per_epoch, tokens_per_iter,
                                                get_lr(max(state.iter_num - 1, 0), state.train_seconds), improved))
    log(f"eval iter {state.iter_num}: {records.eval_text(losses, val_kinds, cfg.eval_full, cfg.eval_iters)}"
        f"{' (best)' if improved else f' (no improvement for {state.evals_since_best})'}")
    if cfg.wandb_log and master:
        wandb.log({k: v for k, v in state.history[-1].items() if k != 'best'}, step=state.iter_num)
    rngs = rng_states()
    if improved:
        save('best.pt', rngs)
    save('ckpt.pt', rngs)
    write_history(state.history)
    clock.eval_seconds = time.time() - t0
    if diverged(val_loss, meta['vocab_size']):
        return (f"val loss {val_loss:.4g} is above twice a uniform guess's (2 ln {meta['vocab_size']} = "
                f"{2 * math.log(meta['vocab_size']):.2f}); the run diverged (lower learning_rate?)")
    if cfg.patience > 0 and state.evals_since_best >= cfg.patience:
        return f"early stopping: no improvement in {cfg.patience} evaluations"
    return None


# -----------------------------------------------------------------------------
# training loop
if master:
    if cfg.init_from != 'resume' and cfg.overwrite:
        ckpt_io.clear_run_folder(cfg.out_dir)
    os.makedirs(cfg.out_dir, exist_ok=True)
if cfg.wandb_log and master:
    import wandb
    wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=cfg.settings)
stop_signal = None


def on_signal(signum, frame):  # finish the current iteration, save ckpt.pt, exit; a second signal stops at once
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt
    stop_signal = signal.Signals(signum).name


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
# the final whole-split evaluation: forward only, about a third of a training step per token
clock = records.Clock(total_iters, cfg.max_time, cfg.eval_interval, iters_per_epoch,
                      len(val_tokens) / tokens_per_iter / 3 / world)
started, wall_at_start = time.time(), state.wall_seconds
model.train()
stop_reason, bad_steps = None, 0
while True:
    if total_iters and state.iter_num >= total_iters:
        stop_reason = f"reached {'max_epochs' if total_iters != cfg.max_iters else 'max_iters'} ({total_iters} iterations)"
        break
    if cfg.max_time and state.train_seconds >= cfg.max_time:
        stop_reason = f"reached max_time ({cfg.max_time:.0f} s)"
        break
    signalled = stop_signal is not None
    if ddp:  # every rank stops at the same iteration
        flag = torch.tensor(float(signalled))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signalled = bool(flag.item())
    if signalled:
        stop_reason = f"{stop_signal or 'a signal on another rank'}: ckpt.pt saved, resume with --init_from=resume"
        break
    lr = get_lr(state.iter_num, state.train_seconds)
    for opt in optimizers:
        for group in opt.param_groups:
            group['lr'] = lr * group.get('lr_ratio', 1.0)
    t0 = time.time()
    loss_value = torch.zeros((), device=device)  # mean loss over the step's micro-batches (all ranks)
    aux_value = torch.zeros((), device=device)   # its auxiliary terms (the rest is cross-entropy)
    for micro in range(local_accum_steps):
        x, y = get_batch('train', state.iter_num, micro * world + rank)
        if ddp:  # sync gradients only on the last micro-step
            model.require_backward_grad_sync = micro == local_accum_steps - 1
        with ctx:
            _, loss = model(x, y)
            loss = loss / local_accum_steps
        loss_value += loss.detach().float()
        aux_value += sum((getattr(raw_model, 'last_aux', None) or {}).values(), 0.0) / local_accum_steps
        scaler.scale(loss).backward()
    if ddp:
        dist.all_reduce(loss_value, op=dist.ReduceOp.AVG)
        dist.all_reduce(aux_value, op=dist.ReduceOp.AVG)
    finite = bool(torch.isfinite(loss_value))
    if finite:
        clip = get_clip(state.iter_num // iters_per_epoch)
        if clip > 0:
            for opt in optimizers:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        bad_steps = 0
    else:  # skip the step; several in a row means the run has diverged
        bad_steps += 1
        log(f"iter {state.iter_num}: non-finite loss, step skipped ({bad_steps} in a row)")
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if device_type != 'cpu':
        hardware.synchronize(device)
    dt = time.time() - t0
    state.train_seconds += dt
    state.iter_num += 1
    clock.step(dt)
    if bad_steps >= cfg.max_bad_steps:
        stop_reason = f"{bad_steps} non-finite losses in a row; the run diverged (lower learning_rate?)"
        save('ckpt.pt', rng_states())
        break
    ce_value = (loss_value - aux_value).item()
    end_of_epoch = state.record_step(ce_value if finite else None, iters_per_epoch)
    if state.iter_num % cfg.log_interval == 0:
        aux_text = f" (+ aux {aux_value.item():.4f})" if getattr(raw_model, 'last_aux', None) else ''
        log(f"iter {state.iter_num} | epoch {state.iter_num / iters_per_epoch:.2f} | loss {ce_value:.4f}{aux_text} | "
            f"lr {lr:.2e} | {dt * 1000:.1f} ms/iter | {tokens_per_iter / dt:,.0f} tok/s | "
            f"{records.mfu_text(model_flops, step_flops['optimizer'], dt * world, state.peak_flops)} | "
            f"ETA {clock.eta_minutes(state.iter_num, state.train_seconds):.1f} min")
    if (cfg.eval_interval and state.iter_num % cfg.eval_interval == 0) or (not cfg.eval_interval and end_of_epoch):
        stop_reason = evaluate_and_checkpoint()
        if stop_reason:
            break
    epochs_done = state.iter_num // iters_per_epoch
    if end_of_epoch and cfg.snapshot_every_epochs and epochs_done % cfg.snapshot_every_epochs == 0:
        save(f'ckpt_epoch{epochs_done}.pt', rng_states())

log(f"stopping: {stop_reason}")
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
if not state.history or state.history[-1]['iter'] != state.iter_num:  # a stop off the evaluation grid
    rngs = rng_states()
    save('ckpt.pt', rngs)  # first: the state to resume from, exactly as it is now
    if stop_signal is None and bad_steps < cfg.max_bad_steps:
        losses = estimate_loss()  # the last weights: recorded; best.pt takes them if they are the best seen
        state.wall_seconds = wall_at_start + time.time() - started
        improved = losses['val']['loss'] < state.best_val_loss
        last = records.history_record(state, losses, iters_per_epoch, tokens_per_iter,
                                      get_lr(max(state.iter_num - 1, 0), state.train_seconds), improved, last=True)
        log(f"last weights (iter {state.iter_num}, off the evaluation grid): {records.eval_text(losses, val_kinds, cfg.eval_full, cfg.eval_iters)}"
            f"{' (best: best.pt takes them)' if improved else ''}")
        write_history(state.history + [last])
        if improved:
            state.best_val_loss = losses['val']['loss']
            save('best.pt', rngs)
            save('ckpt.pt', rngs)  # the same state, with the loss best.pt now holds
        state.history = state.history + [last]  # for results.json only: ckpt.pt keeps the grid's history
if stop_signal is not None or not state.history:
    if ddp:
        dist.barrier()  # no rank tears down gloo while another still talks to it
        dist.destroy_process_group()
    sys.exit(0)

# -----------------------------------------------------------------------------
# final whole-split evaluation of the best checkpoint, and results.json
if master:
    raw_model.load_state_dict(ckpt_io.load_checkpoint(os.path.join(cfg.out_dir, 'best.pt'), map_location=device)['model'])
    final = evaluate_best(raw_model, data_dir, meta, cfg.block_size, cfg.batch_size, device, ctx, log)
    state.wall_seconds = wall_at_start + time.time() - started
    res = records.results(cfg, state, raw_model, meta, final, step_flops, dtype_choice, device,
                          hardware.peak_memory_mb(device), stop_reason, tokens_per_iter)
    ckpt_io.atomic_write_text(json.dumps(res, indent=2), os.path.join(cfg.out_dir, 'results.json'))
if cfg.wandb_log and master:
    wandb.finish()
if ddp:
    dist.barrier()  # rank 0 may still be evaluating: no rank tears down gloo while another still talks to it
    dist.destroy_process_group()
