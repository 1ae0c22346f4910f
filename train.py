"""
One training loop for every model (GPT, New-LLM, ResNet-BK, ...), after nanoGPT's train.py.

    python train.py config/wt2_gpt.py --max_iters=2000        # one process: CUDA, Apple mps or the CPU
    torchrun --standalone --nproc_per_node=2 train.py config/wt2_gpt.py   # DDP (NCCL on CUDA, Gloo on CPU)
    python train.py --help                                     # every key, its default and what it does

Configuration: the globals below, then config files, then --key=value (configurator.py). Every field of the chosen
model's config dataclass (e.g. New-LLM's n_hidden, ResNet-BK's n_experts) is a valid key too.

Writes to out_dir (made when training starts; a scratch run refuses an out_dir that holds another run unless
--overwrite=True): ckpt.pt (latest, for init_from='resume'), best.pt (best val loss), ckpt_epochN.pt (snapshots),
history.json and curves.png (every evaluation), results.json (at the end). All written atomically, so a kill at any
moment leaves every file loadable.

Resume is exact: a run stopped at any iteration (max_iters/max_epochs/max_time, SIGTERM or Ctrl-C) and resumed
continues bit for bit as if it had never stopped (the data order is a function of the step, every rank's RNG state
is saved). A stop off the evaluation grid saves ckpt.pt first, then evaluates the last weights for the record
without touching the patience state or best.pt; a signal saves ckpt.pt and exits.
"""
import dataclasses
import glob
import json
import math
import os
import resource
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint as ckpt_io
import configurator
import curves
import data
import flops
import hardware
import optim
from cli import fail
from eval import Progress, diverged, evaluate_lines, evaluate_tokens, perplexity, score_batch, split_metrics

# -----------------------------------------------------------------------------
# default config values
# I/O
out_dir = 'out'
overwrite = False          # a scratch run into an out_dir that holds a run: True deletes that run's files first
eval_interval = 250        # iterations between evaluations; 0 = at the end of every epoch
log_interval = 10
eval_iters = 50            # batches per quick estimate of train/val loss (ignored when eval_full)
eval_full = False          # evaluate the whole val split at each evaluation instead of eval_iters random batches
val_windows = ''           # eval_full: 'stream' (consecutive windows) or 'lines' (the New-LLM seed's metric); '' = as batch_mode
eval_only = False          # evaluate the initial (or resumed) model and exit
always_save_checkpoint = True   # write ckpt.pt at every evaluation (best.pt is written whenever val improves)
snapshot_every_epochs = 0  # also keep out_dir/ckpt_epoch{N}.pt at every N-th epoch boundary; 0 = off
init_from = 'scratch'      # 'scratch', 'resume' (out_dir/ckpt.pt), or a path to a checkpoint to start from
# wandb logging
wandb_log = False
wandb_project = 'linlm'
wandb_run_name = 'run'
# data
dataset = 'wikitext2-gpt2'  # a folder under data/ (beside this file), or a path to one
prepare_args = ''           # prepare.py's arguments that make `dataset`; '' = `<name>` for <name>-gpt2, else unchecked
batch_mode = 'random'       # 'random': windows at random offsets of the stream; 'seed_lines': New-LLM seed's line windows
data_limit = 0              # use only the first data_limit train tokens; 0 = all
gradient_accumulation_steps = 1
batch_size = 12
block_size = 256
# model
model_type = 'gpt'          # a model of checkpoint.MODELS; its fields (n_layer, n_embd, ...) are set like globals
# optimizer
optimizer = 'adamw'         # 'adamw' (decay on >= 2-D weights only), 'adam' (no decay), 'muon' (Muon for hidden matrices, AdamW for the rest; optim.py)
learning_rate = 6e-4
max_iters = 5000            # 0 = no limit by iterations
max_epochs = 0              # 0 = no limit by epochs
max_time = 0.0              # seconds of training; 0 = no limit
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
muon_momentum = 0.95       # optimizer='muon': Muon's (Nesterov) momentum
adamw_lr_ratio = 1.0        # optimizer='muon': the AdamW share's (embeddings, head, biases, gains) lr / learning_rate
grad_clip = 1.0             # clip the global gradient norm at this value; 0 = off
grad_clip_schedule = []     # [(from_epoch, clip), ...] from epoch 0, e.g. the New-LLM seed's [(0, 0.5), (10, 1.0), (30, 2.0)]
# learning rate schedule
decay_lr = True             # cosine decay to min_lr after warmup (over lr_decay_iters, else the run); False = constant
warmup_iters = 100
lr_decay_iters = 0          # 0 = the run's length: its iterations, or for a max_time-only run its seconds
min_lr = 6e-5
# early stopping
patience = 0                # stop after this many evaluations without improvement; 0 = off
min_delta = 0.0             # an improvement must lower the val loss by more than this
max_bad_steps = 5           # stop after this many non-finite losses in a row
# system
device = 'auto'             # 'auto' (cuda, else mps, else cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'
dtype = 'auto'              # 'auto' (bfloat16 where it is fast here, else float32: hardware.py), 'float32', 'bfloat16', 'float16'
compile = 'auto'            # torch.compile the model: True, False, or 'auto': on where bench/compile.py measured the
                            # model's compiled step faster on this device type (results/<cpu|cuda>/compile.json).
                            # New-LLM's token loop, ResNet-BK's BK-Core and the fused loss are custom ops the compiler
                            # keeps whole; GPT, New-LLM and ResNet-BK compile as one graph, the LSTM around nn.LSTM
peak_flops = 0.0            # peak FLOP/s of one device, for MFU; 0 = the matmul rate of the run's dtype, measured
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, list))]
_defaults = {k: globals()[k] for k in config_keys}
_model_keys = {}
for _mt in ckpt_io.MODELS:
    for _k, (_t, _d) in ckpt_io.config_fields(_mt).items():
        if _k not in _defaults:
            _model_keys[_k] = _t
_overrides = configurator.parse_args(sys.argv[1:], _defaults, _model_keys, script=__file__,
                                     model_configs={_mt: ckpt_io.model_classes(_mt)[0] for _mt in ckpt_io.MODELS})
globals().update({k: v for k, v in _overrides.items() if k in _defaults})
config = {k: globals()[k] for k in config_keys}
# model config: the fields the user set, the rest from the model's dataclass defaults
try:
    _fields = ckpt_io.config_fields(model_type)
except ValueError as e:
    fail(e)
for _k in _overrides:
    if _k in _model_keys and _k not in _fields:
        fail(f"'{_k}' is not a field of {model_type}'s config ({', '.join(_fields)})")
model_overrides = {k: v for k, v in _overrides.items() if k in _fields}
config.update(model_overrides)


def check_config():
    """Values that are wrong whatever the data: one line each, before anything is read or written."""
    positive = ('batch_size', 'block_size', 'gradient_accumulation_steps', 'log_interval', 'max_bad_steps')
    for k in positive:
        if globals()[k] < 1:
            fail(f"{k} must be >= 1, not {globals()[k]}")
    for k in ('eval_interval', 'eval_iters', 'data_limit', 'max_iters', 'max_epochs', 'max_time', 'warmup_iters',
              'lr_decay_iters', 'patience', 'snapshot_every_epochs', 'learning_rate', 'min_lr', 'weight_decay',
              'grad_clip', 'peak_flops'):
        if globals()[k] < 0:
            fail(f"{k} must be >= 0, not {globals()[k]}")
    if not eval_full and eval_iters < 1:
        fail("eval_iters must be >= 1 (or eval_full=True)")
    if batch_mode not in ('random', 'seed_lines'):
        fail(f"batch_mode must be 'random' or 'seed_lines', not {batch_mode!r}")
    try:
        optim.check(optimizer, adamw_lr_ratio)
    except ValueError as e:
        fail(str(e))
    if grad_clip_schedule:
        try:
            sched = sorted((int(e), float(c)) for e, c in grad_clip_schedule)
        except (TypeError, ValueError):
            fail(f"grad_clip_schedule must be a list of (from_epoch, clip) pairs, not {grad_clip_schedule!r}")
        if sched[0][0] != 0:
            fail(f"grad_clip_schedule must start at epoch 0 (it starts at {sched[0][0]}): {grad_clip_schedule!r}")
    if not (max_iters or max_epochs or max_time):
        fail("set max_iters, max_epochs or max_time, or the run never ends")
    if init_from not in ('scratch', 'resume') and not os.path.isfile(init_from):
        fail(f"init_from={init_from!r}: no such checkpoint (use 'scratch', 'resume' or a path to a .pt file)")


check_config()
# -----------------------------------------------------------------------------
# device, precision, DDP: one process per device, rank 0 logs and writes
try:
    device = hardware.resolve_device(device)
except ValueError as e:
    fail(e)
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    ddp_rank, ddp_local_rank, ddp_world_size = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device.startswith('cuda'):
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % ddp_world_size != 0:
        fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the number of "
             f"processes ({ddp_world_size})")
else:
    ddp_rank, ddp_world_size = 0, 1
master_process = ddp_rank == 0
local_accum_steps = gradient_accumulation_steps // ddp_world_size
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
torch.manual_seed(seed + ddp_rank)
device_type = hardware.device_type(device)
try:  # the run's precision, measured on this device (hardware.py); every rank takes rank 0's choice
    dtype_choice = hardware.choose_dtype(dtype, device)
except ValueError as e:
    fail(e)
if ddp:
    _choice = [dtype_choice.dtype]
    dist.broadcast_object_list(_choice, src=0)
    dtype_choice.dtype = _choice[0]
run_dtype = dtype_choice.dtype  # config['dtype'] keeps what was asked for ('auto')
ctx = hardware.autocast(device, run_dtype)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def log(*args):
    if master_process:
        print(*args, flush=True)


# -----------------------------------------------------------------------------
# data (data.py): the splits as memmaps, the seed's line windows, batches as a pure function of the step
try:
    data_dir, meta = data.load_meta(dataset, prepare_args)
    train_data, val_data = data.load_split(data_dir, 'train'), data.load_split(data_dir, 'val')
except (FileNotFoundError, ValueError) as e:
    fail(e)
if data_limit:
    train_data = train_data[:data_limit]
bos = meta['special_tokens'].get('<bos>')
if batch_mode == 'random':
    for name, split in (('train', train_data), ('val', val_data)):
        if len(split) < block_size + 1:
            fail(f"the {name} split has {len(split):,} tokens{' (data_limit)' if name == 'train' and data_limit else ''}"
                 f", fewer than block_size + 1 = {block_size + 1}")
    n_train_windows = 0
else:
    if bos is None:
        fail("batch_mode='seed_lines' needs <bos> segments (prepare.py --line_format bos_eos)")
    train_lines = data.line_windows(train_data, block_size + 1, bos)
    val_lines = data.line_windows(val_data, block_size + 1, bos)
    if len(train_lines[0]) == 0 or len(val_lines[0]) == 0:
        fail(f"no <bos> line windows in the {'train' if len(train_lines[0]) == 0 else 'val'} split")
    n_train_windows = len(train_lines[0])
    log(f"seed_lines: {len(train_lines[0]):,} train windows, {len(val_lines[0]):,} val windows")
# eval_full's val metrics: the selecting one first
val_kinds = [val_windows or ('lines' if batch_mode == 'seed_lines' else 'stream')]
if val_kinds[0] not in ('stream', 'lines'):
    fail(f"val_windows must be 'stream', 'lines' or '', not {val_windows!r}")
if val_kinds[0] == 'lines' and bos is None:
    fail("val_windows='lines' needs <bos> lines (prepare.py --line_format bos_eos)")
if bos is not None:
    val_kinds.append('stream' if val_kinds[0] == 'lines' else 'lines')
samples_per_epoch = data.samples_per_epoch(batch_mode, len(train_data), n_train_windows, block_size)
iters_per_epoch = data.iters_per_epoch(samples_per_epoch, batch_size, gradient_accumulation_steps)
pad_token = meta.get('pad_token') or 0


def get_batch(split, step, micro_step, purpose=0):
    """
    The batch of one micro-step, a pure function of (seed, purpose, split, step, micro_step): resuming needs no data
    state, and under DDP rank r takes micro-steps r, r + world, ... of the same global step, exactly as one process
    would. purpose 0 = training; 1 = the fixed batches of the quick loss estimates.
    """
    split_data = train_data if split == 'train' else val_data
    rng = np.random.default_rng([seed, purpose, split == 'train', step, micro_step])
    if batch_mode == 'seed_lines':
        windows = train_lines if split == 'train' else val_lines
        if split == 'train' and purpose == 0:  # a fresh permutation of the windows every epoch
            epoch, i = divmod(step, iters_per_epoch)
            perm = np.random.default_rng([seed, epoch]).permutation(samples_per_epoch)
            first = (i * gradient_accumulation_steps + micro_step) * batch_size
            rows = perm[first:first + batch_size]
            if len(rows) == 0:  # more accumulation slots than windows left in the epoch's last step
                rows = perm[:batch_size]
        else:
            rows = rng.integers(len(windows[0]), size=batch_size)
        x, y = data.windows_batch(split_data, windows, rows, block_size, pad_token)
    else:
        x, y = data.random_batch(split_data, rng, batch_size, block_size)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# the run's folder: a scratch run never silently replaces another run's results
RUN_FILES = ('ckpt.pt', 'best.pt', 'history.json', 'results.json', 'curves.png')
if init_from != 'resume' and not eval_only:
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
    if held and not overwrite:
        fail(f"{out_dir} already holds a run ({', '.join(held)}); continue it with --init_from=resume, write to "
             f"another --out_dir, or replace it with --overwrite=True")
if init_from == 'resume' and not os.path.isfile(os.path.join(out_dir, 'ckpt.pt')):
    fail(f"init_from='resume' but {out_dir}/ckpt.pt does not exist (start with init_from='scratch')")

# -----------------------------------------------------------------------------
# model, optimizer, state
model_args = dict(model_overrides, vocab_size=meta['vocab_size'])
if 'block_size' in _fields:
    model_args['block_size'] = block_size
iter_num, best_val_loss, evals_since_best, bad_steps, train_seconds = 0, float('inf'), 0, 0, 0.0
history, epoch_log = [], []
loss_sum, loss_count, epoch_start_seconds = 0.0, 0, 0.0  # running train cross-entropy of the current epoch
checkpoint = None
if init_from != 'scratch':
    source = os.path.join(out_dir, 'ckpt.pt') if init_from == 'resume' else init_from
    try:
        checkpoint = ckpt_io.load_checkpoint(source, map_location=device)
        if checkpoint['model_type'] != model_type:
            raise ValueError(f"{source} holds a {checkpoint['model_type']} model, not {model_type}")
        data.check_vocabulary(checkpoint.get('meta', {}), meta, source, dataset)
        # the checkpoint's model, with the user's overrides that keep its shapes (dropout, scans, ...)
        wanted = {k: v for k, v in model_overrides.items() if k != 'block_size'}
        model_args, changed = ckpt_io.merge_model_args(model_type, checkpoint['model_args'], wanted, source)
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    for k, (old, new) in changed.items():
        log(f"{source}: {k} = {new!r} (the checkpoint had {old!r})")
    if init_from == 'resume':
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        evals_since_best, train_seconds = checkpoint['evals_since_best'], checkpoint['train_seconds']
        history, epoch_log = checkpoint['history'], checkpoint['epoch_log']
        loss_sum, loss_count, epoch_start_seconds = checkpoint['epoch_running']
if model_args.get('block_size', block_size) < block_size:
    fail(f"block_size {block_size} exceeds the model's {model_args['block_size']}")
try:
    model = ckpt_io.build_model(model_type, model_args)
except (TypeError, ValueError) as e:
    fail(f"{model_type}: {e}")
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
model.to(device)

optimizers = optim.build(model, optimizer, learning_rate, weight_decay, (beta1, beta2), muon_momentum,
                         adamw_lr_ratio, device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(run_dtype == 'float16'))


def device_rng():
    """The accelerator's RNG module (dropout masks on the device), or None on the CPU."""
    return {'cuda': torch.cuda, 'mps': getattr(torch, 'mps', None)}.get(device_type)


def rng_states():
    """Every rank's RNG states [(cpu, device or None), ...] (a collective under DDP: all ranks call it)."""
    mine = (torch.get_rng_state(), device_rng().get_rng_state().cpu() if device_rng() else None)
    if not ddp:
        return [mine]
    gathered = [None] * ddp_world_size
    dist.all_gather_object(gathered, mine)
    return gathered


if init_from == 'resume':
    saved = checkpoint['optimizer']
    saved = saved if isinstance(saved, list) else [saved]  # an older run saved its one optimizer's state alone
    if len(saved) != len(optimizers):
        fail(f"{out_dir}/ckpt.pt holds the state of {len(saved)} optimizer(s), optimizer={optimizer!r} has "
             f"{len(optimizers)}: resume with the optimizer the run started with")
    for opt, state in zip(optimizers, saved):
        if 'fused' in opt.defaults:  # the saved groups' flag would win (the run may be on another device)
            for group in state['param_groups']:
                group['fused'] = opt.defaults['fused']
        opt.load_state_dict(state)
    scaler.load_state_dict(checkpoint['scaler'])
    saved = checkpoint.get('rng') or [(checkpoint['rng_cpu'], checkpoint.get('rng_cuda'))]  # or an older run's
    if len(saved) != ddp_world_size:
        log(f"resume: the checkpoint holds the RNG states of {len(saved)} process(es), this run has "
            f"{ddp_world_size}: the run continues, but not bit for bit as it would have")
    cpu_state, dev_state = saved[ddp_rank % len(saved)]
    torch.set_rng_state(cpu_state)
    if dev_state is not None and device_rng() is not None:
        device_rng().set_rng_state(dev_state)
checkpoint = None  # free memory

raw_model = model
try:
    compile_on, compile_why = hardware.choose_compile(compile, model_type, device)   # measured: bench/compile.py
except ValueError as e:
    fail(e)
log(compile_why)
if compile_on:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)
n_params = raw_model.get_num_params()
log(f"{model_type}: {n_params:,} parameters | {dataset}: {len(train_data):,} train tokens, vocab {meta['vocab_size']} "
    f"| {iters_per_epoch:,} iterations per epoch of {tokens_per_iter:,} tokens")
log(f"device {device} | {dtype_choice.reason}")
if dtype_choice.warning:
    log(dtype_choice.warning)
# FLOPs of one iteration (all micro-batches and ranks, the optimizer once; flops.py) and the peak for MFU
step_flops = flops.step_flops(model_type, raw_model.config, batch_size, block_size, gradient_accumulation_steps,
                              optimizer, bool(grad_clip_schedule) or grad_clip > 0, device_type=device_type,
                              model=raw_model)
flops_per_iter = step_flops['per_step']
if peak_flops > 0:
    peak, peak_source = peak_flops, 'peak_flops from the config'
else:
    peak, peak_source = dtype_choice.rates[run_dtype], f"{run_dtype} matmul rate measured at start-up, best of 3"
log(f"{flops_per_iter:.4g} FLOPs per iteration (forward {step_flops['forward']:.4g}, backward "
    f"{step_flops['backward']:.4g}, optimizer {step_flops['optimizer']:.4g}) | MFU against {peak:.4g} FLOP/s per "
    f"device ({peak_source})")

# run length in iterations: the tightest of max_iters and max_epochs (max_time is checked as we go)
total_iters = min([n for n in (max_iters, max_epochs * iters_per_epoch) if n > 0], default=0)
decay_iters = lr_decay_iters or total_iters


def get_lr(it, seconds):
    """
    Linear warmup over warmup_iters, then cosine from learning_rate to min_lr (or constant with decay_lr=False).
    The cosine runs over decay_iters iterations, or in a run bounded by max_time alone over its training seconds:
    progress = seconds / max_time (a timed run is not repeatable bit for bit anyway; resume continues the schedule
    from the saved seconds).
    """
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay_lr:
        return learning_rate
    if decay_iters:
        ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    else:
        ratio = seconds / max_time
    ratio = min(ratio, 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def get_clip(epoch):
    if grad_clip_schedule:
        return [c for e, c in sorted(grad_clip_schedule) if epoch >= e][-1]
    return grad_clip


def aux_losses():
    """The auxiliary terms of the last training forward (ResNet-BK's balance, ponder, sparsity), detached."""
    return getattr(raw_model, 'last_aux', {}) or {}


@torch.no_grad()
def estimate_loss():
    """
    Mean loss (per target token, padding excluded) and accuracy on eval_iters fixed batches per split; with
    eval_full, val is the whole split instead (eval.py): in consecutive windows ('stream'), or in the New-LLM seed's
    line windows each from a zero context ('lines'). Data with <bos> lines gets both: val_windows picks the one
    that selects best.pt, the other is recorded beside it.
    """
    out = {}
    model.eval()
    for split in ('train', 'val'):
        if eval_full and split == 'val':
            for kind in val_kinds:
                if kind == 'lines':
                    r = evaluate_lines(raw_model, val_data, bos, pad_token, block_size, batch_size, device, ctx)
                else:
                    r = evaluate_tokens(raw_model, val_data, block_size, batch_size, device, ctx)
                m = split_metrics(r, None)
                out[f'val_{kind}'] = {'loss': m['loss'], 'accuracy': m['accuracy']}
            out['val'] = out[f'val_{val_kinds[0]}']
            continue
        nll = count = correct = 0
        for k in range(eval_iters):
            x, y = get_batch(split, k, 0, purpose=1)
            with ctx:
                scores = score_batch(raw_model, x, y)
            nll, count, correct = nll + scores[0], count + scores[1], correct + scores[2]
        out[split] = {'loss': nll / max(count, 1), 'accuracy': correct / max(count, 1)}
    model.train()
    return out


def save_checkpoint(path, rngs):
    """rngs: rng_states(), gathered by every rank before rank 0 writes."""
    ckpt_io.atomic_torch_save({
        'model': raw_model.state_dict(), 'model_type': model_type, 'model_args': dataclasses.asdict(raw_model.config),
        'meta': meta, 'config': config, 'optimizer': [o.state_dict() for o in optimizers],
        'scaler': scaler.state_dict(),
        'iter_num': iter_num, 'best_val_loss': best_val_loss, 'evals_since_best': evals_since_best,
        'train_seconds': train_seconds, 'history': history, 'epoch_log': epoch_log,
        'epoch_running': [loss_sum, loss_count, epoch_start_seconds], 'rng': rngs,
    }, path)


def save_latest():
    """ckpt.pt, the exact state to resume from (all ranks call it)."""
    rngs = rng_states()
    if master_process and always_save_checkpoint:
        save_checkpoint(os.path.join(out_dir, 'ckpt.pt'), rngs)


def mfu_text(mfu):
    # the peak is a measurement too: on a busy machine it can come out low, and MFU then above 100%
    return f"{100 * mfu:.1f}%" + (' (above 100%: the peak was measured low)' if mfu > 1 else '')


def peak_memory_mb():
    """CUDA: max allocated by tensors on the device; CPU: the process's peak resident set size."""
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20, 'cuda_max_allocated'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'cpu_peak_rss'


def write_history(records):
    ckpt_io.atomic_write_text(json.dumps(records, indent=1), os.path.join(out_dir, 'history.json'))
    curves.plot(records, iters_per_epoch, os.path.join(out_dir, 'curves.png'), title=f"{model_type} on {dataset}")


def evaluate_and_checkpoint():
    """Evaluate, update best/patience state, history, curves and checkpoints. Returns why training must stop
    (patience ran out, or the run diverged), else None."""
    global best_val_loss, evals_since_best
    losses = estimate_loss()
    val_loss = losses['val']['loss']
    improved = val_loss < best_val_loss - min_delta
    if improved:
        best_val_loss, evals_since_best = val_loss, 0
    else:
        evals_since_best += 1
    history.append({'iter': iter_num, 'epoch': iter_num / iters_per_epoch, 'tokens': iter_num * tokens_per_iter,
                    'seconds': train_seconds, 'lr': get_lr(max(iter_num - 1, 0), train_seconds),
                    'train_loss': losses['train']['loss'], 'val_loss': val_loss, 'val_ppl': perplexity(val_loss),
                    'val_accuracy': losses['val']['accuracy'], 'best': improved,
                    **{f'{k}_loss': v['loss'] for k, v in losses.items() if k.startswith('val_')}})
    others = ''.join(f", {k[4:]} val ppl {perplexity(losses[f'val_{k[4:]}']['loss']):.2f}" for k in losses
                     if k.startswith('val_') and k != f'val_{val_kinds[0]}')
    log(f"eval iter {iter_num}: train loss {losses['train']['loss']:.4f}, val loss {val_loss:.4f}, "
        f"val ppl {perplexity(val_loss):.2f}, val acc {losses['val']['accuracy']:.3f}{others}"
        f"{' (best)' if improved else f' (no improvement for {evals_since_best})'}")
    if wandb_log and master_process:
        wandb.log({k: v for k, v in history[-1].items() if k != 'best'}, step=iter_num)
    rngs = rng_states()
    if master_process:
        if improved:
            save_checkpoint(os.path.join(out_dir, 'best.pt'), rngs)
        if always_save_checkpoint:
            save_checkpoint(os.path.join(out_dir, 'ckpt.pt'), rngs)
        write_history(history)
    if diverged(val_loss, meta['vocab_size']):
        return (f"val loss {val_loss:.4g} is above twice a uniform guess's (2 ln {meta['vocab_size']} = "
                f"{2 * math.log(meta['vocab_size']):.2f}); the run diverged (lower learning_rate?)")
    if patience > 0 and evals_since_best >= patience:
        return f"early stopping: no improvement in {patience} evaluations"
    return None


if eval_only:
    losses = estimate_loss()
    log(f"val loss {losses['val']['loss']:.4f}, val ppl {perplexity(losses['val']['loss']):.2f}")
    sys.exit(0)

# -----------------------------------------------------------------------------
# training loop
if master_process:
    if init_from != 'resume' and overwrite:  # the old run's files all go, not only those this run rewrites
        for f in [os.path.join(out_dir, f) for f in RUN_FILES] + glob.glob(os.path.join(out_dir, 'ckpt_epoch*.pt')):
            if os.path.exists(f):
                os.remove(f)
    os.makedirs(out_dir, exist_ok=True)
if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
stop_signal = None


def on_signal(signum, frame):  # finish the current iteration, save ckpt.pt, exit; a second signal stops at once
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt
    stop_signal = signal.Signals(signum).name


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
val_targets = len(val_data) - 1
model.train()
stop_reason = None
while True:
    if total_iters and iter_num >= total_iters:
        stop_reason = f"reached {'max_epochs' if total_iters != max_iters else 'max_iters'} ({total_iters} iterations)"
        break
    if max_time and train_seconds >= max_time:
        stop_reason = f"reached max_time ({max_time:.0f} s)"
        break
    signalled = stop_signal is not None
    if ddp:  # every rank stops at the same iteration
        flag = torch.tensor(float(signalled))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signalled = bool(flag.item())
    if signalled:
        stop_reason = f"{stop_signal or 'a signal on another rank'}: ckpt.pt saved, resume with --init_from=resume"
        break
    epoch = iter_num // iters_per_epoch
    lr = get_lr(iter_num, train_seconds)
    for opt in optimizers:
        for group in opt.param_groups:
            group['lr'] = lr * group.get('lr_ratio', 1.0)  # (an older checkpoint's groups lack it)
    t0 = time.time()
    loss_value = torch.zeros((), device=device)  # mean loss over the step's micro-batches (all ranks)
    aux_value = torch.zeros((), device=device)   # its auxiliary terms (the rest is cross-entropy)
    for micro in range(local_accum_steps):
        x, y = get_batch('train', iter_num, micro * ddp_world_size + ddp_rank)
        if ddp:  # sync gradients only on the last micro-step
            model.require_backward_grad_sync = micro == local_accum_steps - 1
        with ctx:
            _, loss = model(x, y)
            loss = loss / local_accum_steps
        loss_value += loss.detach().float()
        aux_value += sum(aux_losses().values(), 0.0) / local_accum_steps
        scaler.scale(loss).backward()
    if ddp:
        dist.all_reduce(loss_value, op=dist.ReduceOp.AVG)
        dist.all_reduce(aux_value, op=dist.ReduceOp.AVG)
    finite = bool(torch.isfinite(loss_value))
    if finite:
        clip = get_clip(epoch)
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
        log(f"iter {iter_num}: non-finite loss, step skipped ({bad_steps} in a row)")
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if device_type != 'cpu':
        hardware.synchronize(device)
    dt = time.time() - t0
    train_seconds += dt
    iter_num += 1
    if bad_steps >= max_bad_steps:
        stop_reason = f"{bad_steps} non-finite losses in a row; the run diverged (lower learning_rate?)"
        save_latest()
        break
    ce_value = (loss_value - aux_value).item()
    if finite:
        loss_sum, loss_count = loss_sum + ce_value, loss_count + 1
    if iter_num % log_interval == 0:
        remaining = [(total_iters - iter_num) * dt] if total_iters else []
        if max_time:
            remaining.append(max_time - train_seconds)
        # the final whole-split evaluation: forward only, about a third of a training step per token
        final_eval = val_targets * dt / tokens_per_iter / 3 / ddp_world_size
        aux_text = f" (+ aux {aux_value.item():.4f})" if aux_losses() else ''
        log(f"iter {iter_num} | epoch {iter_num / iters_per_epoch:.2f} | loss {ce_value:.4f}{aux_text} | lr {lr:.2e} | "
            f"{dt * 1000:.1f} ms/iter | {tokens_per_iter / dt:,.0f} tok/s | "
            f"MFU {mfu_text(flops_per_iter / (dt * peak * ddp_world_size))} | "
            f"ETA {(min(remaining) + final_eval) / 60:.1f} min")
    end_of_epoch = iter_num % iters_per_epoch == 0
    if end_of_epoch:
        epoch_log.append({'epoch': iter_num // iters_per_epoch, 'train_loss': loss_sum / max(loss_count, 1),
                          'seconds': train_seconds - epoch_start_seconds})
        loss_sum, loss_count, epoch_start_seconds = 0.0, 0, train_seconds
    if (eval_interval and iter_num % eval_interval == 0) or (not eval_interval and end_of_epoch):
        stop_reason = evaluate_and_checkpoint()
        if stop_reason:
            break
    if end_of_epoch and snapshot_every_epochs and (iter_num // iters_per_epoch) % snapshot_every_epochs == 0:
        rngs = rng_states()
        if master_process:
            save_checkpoint(os.path.join(out_dir, f'ckpt_epoch{iter_num // iters_per_epoch}.pt'), rngs)

log(f"stopping: {stop_reason}")
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
last_weights = None  # a stop off the evaluation grid: the last weights' quick estimate, for the record
if not history or history[-1]['iter'] != iter_num:
    save_latest()  # first: the state to resume from, exactly as it is now
    if stop_signal is None and bad_steps < max_bad_steps:
        losses = estimate_loss()
        last_weights = {'iter': iter_num, 'epoch': iter_num / iters_per_epoch, 'tokens': iter_num * tokens_per_iter,
                        'seconds': train_seconds, 'lr': get_lr(max(iter_num - 1, 0), train_seconds),
                        'train_loss': losses['train']['loss'], 'val_loss': losses['val']['loss'],
                        'val_ppl': perplexity(losses['val']['loss']), 'val_accuracy': losses['val']['accuracy'],
                        'best': False, 'last': True}
        log(f"last weights (iter {iter_num}, off the evaluation grid): val loss {last_weights['val_loss']:.4f}, "
            f"val ppl {last_weights['val_ppl']:.2f} (recorded; best.pt and patience untouched)")
        rngs = rng_states()
        if master_process:
            write_history(history + [last_weights])
            if not os.path.exists(os.path.join(out_dir, 'best.pt')):  # no evaluation yet: these are the best
                save_checkpoint(os.path.join(out_dir, 'best.pt'), rngs)
if stop_signal is not None or not os.path.exists(os.path.join(out_dir, 'best.pt')):
    if stop_signal is None:
        log("no evaluation was made: no best.pt, no results.json")
    if ddp:
        dist.destroy_process_group()
    sys.exit(0)

# -----------------------------------------------------------------------------
# final whole-split evaluation of the best checkpoint, and results.json in the seed's schema
if master_process:
    best = ckpt_io.load_checkpoint(os.path.join(out_dir, 'best.pt'), map_location=device)
    raw_model.load_state_dict(best['model'])
    final = {}
    for split in ('val', 'test'):
        if os.path.isfile(os.path.join(data_dir, f'{split}.bin')) and meta['splits'].get(split, {}).get('tokens', 0) > 1:
            final[split] = split_metrics(evaluate_tokens(raw_model, data.load_split(data_dir, split), block_size,
                                                         batch_size, device, ctx,
                                                         progress=Progress(f"final {split} evaluation",
                                                                           file=sys.stdout)),
                                         meta['splits'][split])
        else:
            log(f"no {split} split in {data_dir}: not evaluated")
    peak_mb, peak_kind = peak_memory_mb()
    last = last_weights or {'val_loss': history[-1]['val_loss']}
    results = {
        'model_name': model_type, 'dataset_name': dataset,
        'final_loss': last['val_loss'], 'final_perplexity': perplexity(last['val_loss']),
        'best_perplexity': perplexity(best_val_loss), 'training_time': train_seconds,
        'total_tokens': iter_num * tokens_per_iter, 'vocab_size': meta['vocab_size'],
        'num_params': n_params, 'model_size_mb': sum(t.numel() * t.element_size() for t in raw_model.state_dict().values()) / 2**20,
        'peak_memory_mb': peak_mb, 'peak_memory_kind': peak_kind,
        'forward_flops': step_flops['forward'], 'backward_flops': step_flops['backward'],
        'optimizer_flops': step_flops['optimizer'], 'total_flops_per_step': flops_per_iter,
        'total_training_flops': flops_per_iter * iter_num, 'peak_flops': peak, 'peak_flops_source': peak_source,
        'device': device, 'dtype': run_dtype, 'dtype_choice': dtype_choice.reason,
        'machine': hardware.machine_info(device), 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'epoch_losses': [e['train_loss'] for e in epoch_log],
        'epoch_perplexities': [perplexity(e['train_loss']) for e in epoch_log],
        'epoch_times': [e['seconds'] for e in epoch_log],
        'iterations': iter_num, 'stop_reason': stop_reason,
        'perplexity_unit': f"token ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']}); "
                           "final_/best_perplexity are from the periodic evaluation "
                           f"({'whole val split' if eval_full else f'{eval_iters} random val batches'}); "
                           "epoch_losses are train cross-entropy (auxiliary terms excluded)",
        'final_eval_of_best': final, 'config': config, 'model_args': dataclasses.asdict(raw_model.config),
    }
    ckpt_io.atomic_write_text(json.dumps(results, indent=2), os.path.join(out_dir, 'results.json'))
    for split, m in final.items():
        log(f"best checkpoint, whole {split} split: loss {m['loss']:.4f}, token ppl {m['ppl']:.2f}, "
            f"bits/byte {m.get('bits_per_byte', float('nan')):.4f}, word ppl {m.get('word_ppl', float('nan')):.2f}, "
            f"acc {m['accuracy']:.3f}")
if wandb_log and master_process:
    wandb.finish()
if ddp:
    dist.destroy_process_group()
