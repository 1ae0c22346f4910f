"""
One training loop for the three models (GPT, New-LLM, ResNet-BK), after nanoGPT's train.py.

    python train.py config/wt2_gpt.py --max_iters=2000        # one process, CPU or one GPU
    torchrun --standalone --nproc_per_node=2 train.py config/wt2_gpt.py   # DDP (NCCL on CUDA, Gloo on CPU)

Configuration: the globals below, then config files, then --key=value (configurator.py). Every field of the chosen
model's config dataclass (e.g. New-LLM's n_hidden, ResNet-BK's n_experts) is a valid key too.

Writes to out_dir: ckpt.pt (latest, for init_from='resume'), best.pt (best val loss), ckpt_epochN.pt (snapshots),
history.json and curves.png (every evaluation), results.json (at the end). All written atomically.
"""
import dataclasses
import json
import math
import os
import resource
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint as ckpt_io
import configurator
import curves
import flops
from eval import evaluate_tokens, score_logits, split_metrics

# -----------------------------------------------------------------------------
# default config values
# I/O
out_dir = 'out'
eval_interval = 250        # iterations between evaluations; 0 = at the end of every epoch
log_interval = 10
eval_iters = 50            # batches per quick estimate of train/val loss (ignored when eval_full)
eval_full = False          # evaluate the whole val split at each evaluation instead of eval_iters random batches
eval_only = False
always_save_checkpoint = True   # write ckpt.pt at every evaluation (best.pt is written whenever val improves)
snapshot_every_epochs = 0  # also keep out_dir/ckpt_epoch{N}.pt every N epochs; 0 = off
init_from = 'scratch'      # 'scratch', 'resume' (out_dir/ckpt.pt), or a path to a checkpoint to start from
# wandb logging
wandb_log = False
wandb_project = 'linlm'
wandb_run_name = 'run'
# data
dataset = 'wikitext2-gpt2'  # a folder under data/, or a path to one
batch_mode = 'random'       # 'random': windows at random offsets of the stream; 'seed_lines': New-LLM seed's line windows
data_limit = 0              # use only the first data_limit train tokens; 0 = all
gradient_accumulation_steps = 1
batch_size = 12
block_size = 256
# model
model_type = 'gpt'          # 'gpt' | 'newllm' | 'resnetbk'; model fields (n_layer, n_embd, ...) are set like globals
# optimizer
optimizer = 'adamw'         # 'adamw' (weight decay on >= 2-D weights only) or 'adam' (no decay)
learning_rate = 6e-4
max_iters = 5000            # 0 = no limit by iterations
max_epochs = 0              # 0 = no limit by epochs
max_time = 0.0              # seconds of training; 0 = no limit
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0             # clip the global gradient norm at this value; 0 = off
grad_clip_schedule = []     # [(from_epoch, clip), ...] e.g. the New-LLM seed's [(0, 0.5), (10, 1.0), (30, 2.0)]
# learning rate schedule
decay_lr = True             # cosine decay to min_lr after warmup; False = constant after warmup
warmup_iters = 100
lr_decay_iters = 0          # 0 = the run's length in iterations
min_lr = 6e-5
# early stopping
patience = 0                # stop after this many evaluations without improvement; 0 = off
min_delta = 0.0             # an improvement must lower the val loss by more than this
max_bad_steps = 5           # stop after this many non-finite losses in a row
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'float32'           # 'float32', 'bfloat16' or 'float16' (autocast; float16 uses a GradScaler)
compile = False
peak_flops = 0.0            # peak FLOP/s of one device, for MFU; 0 = measure once with a short matmul benchmark
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, list))]
_defaults = {k: globals()[k] for k in config_keys}
_model_keys = {}
for _mt in ckpt_io.MODELS:
    for _k, (_t, _d) in ckpt_io.config_fields(_mt).items():
        if _k not in _defaults:
            _model_keys[_k] = _t
_overrides = configurator.parse_args(sys.argv[1:], _defaults, _model_keys)
globals().update({k: v for k, v in _overrides.items() if k in _defaults})
config = {k: globals()[k] for k in config_keys}
# model config: the fields the user set, the rest from the model's dataclass defaults
_fields = ckpt_io.config_fields(model_type)
for _k in _overrides:
    if _k in _model_keys and _k not in _fields:
        raise SystemExit(f"error: '{_k}' is not a field of {model_type}'s config "
                         f"({', '.join(_fields)})")
model_overrides = {k: v for k, v in _overrides.items() if k in _fields}
config.update(model_overrides)
# -----------------------------------------------------------------------------
# DDP: one process per device, rank 0 logs and writes
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    ddp_rank, ddp_local_rank, ddp_world_size = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device.startswith('cuda'):
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % ddp_world_size != 0:
        raise SystemExit(f"error: gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of "
                         f"the number of processes ({ddp_world_size})")
else:
    ddp_rank, ddp_world_size = 0, 1
master_process = ddp_rank == 0
local_accum_steps = gradient_accumulation_steps // ddp_world_size
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if master_process:
    os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(seed + ddp_rank)
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
if dtype not in ('float32', 'bfloat16', 'float16'):
    raise SystemExit(f"error: dtype must be float32, bfloat16 or float16, not {dtype!r}")
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def log(*args):
    if master_process:
        print(*args, flush=True)


# -----------------------------------------------------------------------------
# data
data_dir = dataset if os.path.isdir(dataset) else os.path.join('data', dataset)
if not os.path.isfile(os.path.join(data_dir, 'meta.json')):
    name, _, tok = os.path.basename(dataset.rstrip('/')).partition('-')
    known = name in ('wikitext2', 'wikitext103', 'dailydialog')             # prepare.py's datasets
    if known and tok == 'gpt2':
        hint = f"make it with `python prepare.py {name}`"
    elif known and tok.startswith('word') and tok[4:].isdigit():
        hint = (f"make it with `python prepare.py {name} --tokenizer word --vocab_size {tok[4:]}` and the options "
                f"of its config (README, Data)")
    else:
        hint = "prepare.py writes data/<wikitext2|wikitext103|dailydialog>-<gpt2|word<K>> (README, Data)"
    raise SystemExit(f"error: dataset {dataset!r} not found ({data_dir}/meta.json is missing); {hint}")
with open(os.path.join(data_dir, 'meta.json')) as f:
    meta = json.load(f)


def load_split(split):
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} is missing; re-run prepare.py for this dataset")
    return np.memmap(path, dtype=np.uint16, mode='r')


train_data, val_data = load_split('train'), load_split('val')
if data_limit:
    train_data = train_data[:data_limit]


def line_windows(data, length):
    """
    The New-LLM seed's sequences: each segment from one <bos> to the next (a `<bos> ... <eos>` line of WikiText, a
    whole dialogue of DailyDialog) of at most `length` tokens is one window (padded); a longer one is cut into windows
    of `length` at stride length // 2, the tail dropped. -> (starts, lengths) int64 arrays.
    """
    bos = meta['special_tokens'].get('<bos>')
    if bos is None:
        raise SystemExit("error: batch_mode='seed_lines' needs <bos> segments (prepare.py --line_format bos_eos)")
    arr = np.asarray(data)
    seg_starts = np.flatnonzero(arr == bos)
    seg_ends = np.append(seg_starts[1:], len(arr))
    starts, lengths = [], []
    for s, e in zip(seg_starts, seg_ends):
        n = e - s
        if n <= length:
            starts.append(s); lengths.append(n)
        else:
            for w in range(s, e - length + 1, length // 2):
                starts.append(w); lengths.append(length)
    return np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)


if batch_mode == 'seed_lines':
    train_windows, val_windows = line_windows(train_data, block_size + 1), line_windows(val_data, block_size + 1)
    samples_per_epoch = len(train_windows[0])
    log(f"seed_lines: {len(train_windows[0]):,} train windows, {len(val_windows[0]):,} val windows")
elif batch_mode == 'random':
    samples_per_epoch = (len(train_data) - 1) // block_size  # an epoch reads every train token about once
else:
    raise SystemExit(f"error: batch_mode must be 'random' or 'seed_lines', not {batch_mode!r}")
iters_per_epoch = max(1, math.ceil(samples_per_epoch / (batch_size * gradient_accumulation_steps)))


def windows_batch(data, windows, rows):
    """Rows of the line windows -> x, y (B, block_size); padding is input 0 / target -1."""
    starts, lengths = windows
    pad = meta.get('pad_token') or 0
    offsets = np.arange(block_size + 1)
    idx = starts[rows, None] + offsets[None, :]
    valid = offsets[None, :] < lengths[rows, None]
    seq = np.where(valid, np.asarray(data)[np.minimum(idx, len(data) - 1)].astype(np.int64), -1)
    x = np.where(seq[:, :-1] == -1, pad, seq[:, :-1])
    return torch.from_numpy(x), torch.from_numpy(seq[:, 1:].copy())


def get_batch(split, step, micro_step, purpose=0):
    """
    The batch of one micro-step, a pure function of (seed, purpose, split, step, micro_step): resuming needs no data
    state, and under DDP rank r takes micro-steps r, r + world, ... of the same global step, exactly as one process
    would. purpose 0 = training; 1 = the fixed batches of the quick loss estimates.
    """
    data = train_data if split == 'train' else val_data
    rng = np.random.default_rng([seed, purpose, split == 'train', step, micro_step])
    if batch_mode == 'seed_lines':
        windows = train_windows if split == 'train' else val_windows
        if split == 'train' and purpose == 0:  # a fresh permutation of the windows every epoch
            epoch, i = divmod(step, iters_per_epoch)
            perm = np.random.default_rng([seed, epoch]).permutation(samples_per_epoch)
            first = (i * gradient_accumulation_steps + micro_step) * batch_size
            rows = perm[first:first + batch_size]
            if len(rows) == 0:  # more accumulation slots than windows left in the epoch's last step
                rows = perm[:batch_size]
        else:
            rows = rng.integers(len(windows[0]), size=batch_size)
        x, y = windows_batch(data, windows, rows)
    else:
        ix = rng.integers(len(data) - block_size - 1, size=batch_size)
        x = torch.from_numpy(np.stack([data[i:i + block_size] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64))
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# model, optimizer, state
model_args = dict(model_overrides, vocab_size=meta['vocab_size'])
if 'block_size' in _fields:
    model_args['block_size'] = block_size
iter_num, best_val_loss, evals_since_best, bad_steps, train_seconds = 0, float('inf'), 0, 0, 0.0
history, epoch_log = [], []
loss_sum, loss_count, epoch_start_seconds = 0.0, 0, 0.0  # running train loss of the current epoch
checkpoint = None
if init_from == 'resume':
    checkpoint = ckpt_io.load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), map_location=device)
    if checkpoint['model_type'] != model_type:
        raise SystemExit(f"error: {out_dir}/ckpt.pt holds a {checkpoint['model_type']} model, not {model_type}")
    model_args = checkpoint['model_args']
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    evals_since_best, train_seconds = checkpoint['evals_since_best'], checkpoint['train_seconds']
    history, epoch_log = checkpoint['history'], checkpoint['epoch_log']
    loss_sum, loss_count, epoch_start_seconds = checkpoint['epoch_running']
elif init_from != 'scratch':  # fine-tuning: the weights of another run, everything else new
    checkpoint = ckpt_io.load_checkpoint(init_from, map_location=device)
    if checkpoint['model_type'] != model_type:
        raise SystemExit(f"error: {init_from} holds a {checkpoint['model_type']} model, not {model_type}")
    src_meta = checkpoint.get('meta', {})
    if src_meta.get('tokenizer') != meta['tokenizer'] or src_meta.get('vocab_size') != meta['vocab_size'] or \
            src_meta.get('words') != meta.get('words'):
        raise SystemExit(f"error: vocabulary mismatch: {init_from} was trained with {src_meta.get('tokenizer')} "
                         f"(vocab {src_meta.get('vocab_size')}) but {dataset} uses {meta['tokenizer']} "
                         f"(vocab {meta['vocab_size']}); prepare the data with the same tokenizer "
                         f"(word: prepare.py --vocab_from <pretraining meta.json>)")
    shape_keys = [k for k in checkpoint['model_args'] if k != 'dropout']
    diff = [k for k in shape_keys if checkpoint['model_args'][k] != model_args.get(k, checkpoint['model_args'][k])]
    if diff:
        raise SystemExit("error: model config differs from the checkpoint's: " +
                         ', '.join(f"{k}={model_args[k]} vs {checkpoint['model_args'][k]}" for k in diff))
    model_args = dict(checkpoint['model_args'], **{k: v for k, v in model_args.items() if k == 'dropout'})
model = ckpt_io.build_model(model_type, model_args)
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
model.to(device)
if model_args.get('block_size', block_size) < block_size:
    raise SystemExit(f"error: block_size {block_size} exceeds the model's {model_args['block_size']}")

# AdamW decays only >= 2-D weights (matmuls, embeddings); biases and norm gains are not decayed
# fused: one kernel for all parameters (device_type is cpu or cuda; on this 2-core CPU 3.1 ms per step against
# 10.8-26 ms for the per-tensor loops at ResNet-BK's 4.1M parameters)
params = [p for p in model.parameters() if p.requires_grad]
if optimizer == 'adamw':
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=learning_rate, betas=(beta1, beta2), fused=True)
elif optimizer == 'adam':
    opt = torch.optim.Adam(params, lr=learning_rate, betas=(beta1, beta2), fused=True)
else:
    raise SystemExit(f"error: optimizer must be 'adamw' or 'adam', not {optimizer!r}")
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
if init_from == 'resume':
    for group in checkpoint['optimizer']['param_groups']:
        group['fused'] = True                  # the saved groups' flag would win (older CPU runs saved False)
    opt.load_state_dict(checkpoint['optimizer'])
    scaler.load_state_dict(checkpoint['scaler'])
    torch.set_rng_state(checkpoint['rng_cpu'])
    if device_type == 'cuda' and checkpoint.get('rng_cuda') is not None:
        torch.cuda.set_rng_state(checkpoint['rng_cuda'])
checkpoint = None  # free memory

raw_model = model
if compile:
    log("compiling the model...")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)
n_params = raw_model.get_num_params()
log(f"{model_type}: {n_params:,} parameters | {dataset}: {len(train_data):,} train tokens, vocab {meta['vocab_size']} "
    f"| {iters_per_epoch:,} iterations per epoch of {tokens_per_iter:,} tokens")
# FLOPs of one iteration (all micro-batches and ranks, the optimizer once; flops.py) and the peak for MFU
step_flops = flops.step_flops(model_type, raw_model.config, batch_size, block_size, gradient_accumulation_steps,
                              optimizer, bool(grad_clip_schedule) or grad_clip > 0, device_type=device_type,
                              model=raw_model)
flops_per_iter = step_flops['per_step']
if peak_flops > 0:
    peak, peak_source = peak_flops, 'peak_flops from the config'
elif master_process:
    peak, peak_source = flops.measure_peak_flops(device, ptdtype)
else:
    peak, peak_source = float('inf'), 'measured on rank 0'  # only rank 0 logs
log(f"{flops_per_iter:.4g} FLOPs per iteration (forward {step_flops['forward']:.4g}, backward "
    f"{step_flops['backward']:.4g}, optimizer {step_flops['optimizer']:.4g}) | MFU against {peak:.4g} FLOP/s per "
    f"device ({peak_source})")

# run length in iterations: the tightest of max_iters and max_epochs (max_time is checked as we go)
total_iters = min([n for n in (max_iters, max_epochs * iters_per_epoch) if n > 0], default=0)
if total_iters == 0 and max_time <= 0:
    raise SystemExit("error: set max_iters, max_epochs or max_time, or the run never ends")
decay_iters = lr_decay_iters or total_iters


def get_lr(it):
    """Linear warmup, then cosine from learning_rate to min_lr over decay_iters (or constant)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay_lr or decay_iters == 0:
        return learning_rate
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def get_clip(epoch):
    if grad_clip_schedule:
        return [c for e, c in sorted(grad_clip_schedule) if epoch >= e][-1]
    return grad_clip


@torch.no_grad()
def estimate_loss():
    """
    Mean loss (per target token, padding excluded) and accuracy on eval_iters fixed batches per split, or with
    eval_full the whole val split: the stream in windows (eval.py), or in seed_lines mode the seed's val windows.
    """
    out = {}
    model.eval()
    for split in ('train', 'val'):
        if eval_full and split == 'val' and batch_mode == 'random':
            m = split_metrics(evaluate_tokens(raw_model, val_data, block_size, batch_size, device, ctx),
                              meta['splits'].get('val'))
            out['val'] = {'loss': m['loss'], 'accuracy': m['accuracy']}
            continue
        if eval_full and split == 'val':  # the seed's metric: its val windows, each from a zero context
            n_rows = len(val_windows[0])
            batches = (windows_batch(val_data, val_windows, np.arange(r0, min(r0 + batch_size, n_rows)))
                       for r0 in range(0, n_rows, batch_size))
        else:
            batches = (get_batch(split, k, 0, purpose=1) for k in range(eval_iters))
        nll = count = correct = 0
        for x, y in batches:
            with ctx:
                logits, _ = raw_model(x.to(device))
            scores = score_logits(logits, y.to(device))
            nll, count, correct = nll + scores[0], count + scores[1], correct + scores[2]
        out[split] = {'loss': nll / max(count, 1), 'accuracy': correct / max(count, 1)}
    model.train()
    return out


def save_checkpoint(path):
    ckpt_io.atomic_torch_save({
        'model': raw_model.state_dict(), 'model_type': model_type, 'model_args': dataclasses.asdict(raw_model.config),
        'meta': meta, 'config': config, 'optimizer': opt.state_dict(), 'scaler': scaler.state_dict(),
        'iter_num': iter_num, 'best_val_loss': best_val_loss, 'evals_since_best': evals_since_best,
        'train_seconds': train_seconds, 'history': history, 'epoch_log': epoch_log,
        'epoch_running': [loss_sum, loss_count, epoch_start_seconds],
        'rng_cpu': torch.get_rng_state(), 'rng_cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None,
    }, path)


def peak_memory_mb():
    """CUDA: max allocated by tensors on the device; CPU: the process's peak resident set size."""
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20, 'cuda_max_allocated'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'cpu_peak_rss'


if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)


def evaluate_and_checkpoint():
    """Evaluate, update best/patience state, history, curves and checkpoints. Returns True if patience ran out."""
    global best_val_loss, evals_since_best
    losses = estimate_loss()
    val_loss = losses['val']['loss']
    improved = val_loss < best_val_loss - min_delta
    if improved:
        best_val_loss, evals_since_best = val_loss, 0
    else:
        evals_since_best += 1
    history.append({'iter': iter_num, 'epoch': iter_num / iters_per_epoch, 'tokens': iter_num * tokens_per_iter,
                    'seconds': train_seconds, 'lr': get_lr(max(iter_num - 1, 0)),
                    'train_loss': losses['train']['loss'], 'val_loss': val_loss, 'val_ppl': math.exp(val_loss),
                    'val_accuracy': losses['val']['accuracy'], 'best': improved})
    log(f"eval iter {iter_num}: train loss {losses['train']['loss']:.4f}, val loss {val_loss:.4f}, "
        f"val ppl {math.exp(val_loss):.2f}, val acc {losses['val']['accuracy']:.3f}"
        f"{' (best)' if improved else f' (no improvement for {evals_since_best})'}")
    if wandb_log and master_process:
        wandb.log({k: v for k, v in history[-1].items() if k != 'best'}, step=iter_num)
    if master_process:
        if improved:
            save_checkpoint(os.path.join(out_dir, 'best.pt'))
        if always_save_checkpoint:
            save_checkpoint(os.path.join(out_dir, 'ckpt.pt'))
        ckpt_io.atomic_write_text(json.dumps(history, indent=1), os.path.join(out_dir, 'history.json'))
        curves.plot(history, iters_per_epoch, os.path.join(out_dir, 'curves.png'), title=f"{model_type} on {dataset}")
    return patience > 0 and evals_since_best >= patience


if eval_only:
    losses = estimate_loss()
    log(f"val loss {losses['val']['loss']:.4f}, val ppl {math.exp(losses['val']['loss']):.2f}")
    sys.exit(0)

# -----------------------------------------------------------------------------
# training loop
model.train()
stop_reason = None
while True:
    if total_iters and iter_num >= total_iters:
        stop_reason = f"reached {'max_epochs' if total_iters != max_iters else 'max_iters'} ({total_iters} iterations)"
        break
    if max_time and train_seconds >= max_time:
        stop_reason = f"reached max_time ({max_time:.0f} s)"
        break
    epoch = iter_num // iters_per_epoch
    lr = get_lr(iter_num)
    for group in opt.param_groups:
        group['lr'] = lr
    t0 = time.time()
    loss_value = torch.zeros((), device=device)  # mean loss over the step's micro-batches (all ranks)
    for micro in range(local_accum_steps):
        x, y = get_batch('train', iter_num, micro * ddp_world_size + ddp_rank)
        if ddp:  # sync gradients only on the last micro-step
            model.require_backward_grad_sync = micro == local_accum_steps - 1
        with ctx:
            _, loss = model(x, y)
            loss = loss / local_accum_steps
        loss_value += loss.detach().float()
        scaler.scale(loss).backward()
    if ddp:
        dist.all_reduce(loss_value, op=dist.ReduceOp.AVG)
    finite = bool(torch.isfinite(loss_value))
    if finite:
        clip = get_clip(epoch)
        if clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(opt)
        scaler.update()
        bad_steps = 0
    else:  # skip the step; several in a row means the run has diverged
        bad_steps += 1
        log(f"iter {iter_num}: non-finite loss, step skipped ({bad_steps} in a row)")
    opt.zero_grad(set_to_none=True)
    if device_type == 'cuda':
        torch.cuda.synchronize()
    dt = time.time() - t0
    train_seconds += dt
    iter_num += 1
    if bad_steps >= max_bad_steps:
        stop_reason = f"{bad_steps} non-finite losses in a row; the run diverged (lower learning_rate?)"
        if master_process:
            save_checkpoint(os.path.join(out_dir, 'ckpt.pt'))
        break
    if finite:
        loss_sum, loss_count = loss_sum + loss_value.item(), loss_count + 1
    if iter_num % log_interval == 0:
        remaining = [(total_iters - iter_num) * dt] if total_iters else []
        if max_time:
            remaining.append(max_time - train_seconds)
        eta = min(remaining)
        log(f"iter {iter_num} | epoch {iter_num / iters_per_epoch:.2f} | loss {loss_value.item():.4f} | lr {lr:.2e} | "
            f"{dt * 1000:.1f} ms/iter | {tokens_per_iter / dt:,.0f} tok/s | "
            f"MFU {100 * flops_per_iter / (dt * peak * ddp_world_size):.1f}% | ETA {eta / 60:.1f} min")
    end_of_epoch = iter_num % iters_per_epoch == 0
    if end_of_epoch:
        epoch_log.append({'epoch': iter_num // iters_per_epoch, 'train_loss': loss_sum / max(loss_count, 1),
                          'seconds': train_seconds - epoch_start_seconds})
        loss_sum, loss_count, epoch_start_seconds = 0.0, 0, train_seconds
    if (eval_interval and iter_num % eval_interval == 0) or (not eval_interval and end_of_epoch):
        if evaluate_and_checkpoint():
            stop_reason = f"early stopping: no improvement in {patience} evaluations"
            break
        if end_of_epoch and snapshot_every_epochs and (iter_num // iters_per_epoch) % snapshot_every_epochs == 0 \
                and master_process:
            save_checkpoint(os.path.join(out_dir, f'ckpt_epoch{iter_num // iters_per_epoch}.pt'))

log(f"stopping: {stop_reason}")
if not history or history[-1]['iter'] != iter_num:
    evaluate_and_checkpoint()

# -----------------------------------------------------------------------------
# final whole-split evaluation of the best checkpoint, and results.json in the seed's schema
if master_process:
    best = ckpt_io.load_checkpoint(os.path.join(out_dir, 'best.pt'), map_location=device)
    raw_model.load_state_dict(best['model'])
    final = {}
    for split in ('val', 'test'):
        path = os.path.join(data_dir, f'{split}.bin')
        if os.path.isfile(path) and meta['splits'].get(split, {}).get('tokens', 0) > 1:
            final[split] = split_metrics(evaluate_tokens(raw_model, load_split(split), block_size, batch_size,
                                                         device, ctx), meta['splits'][split])
    peak_mb, peak_kind = peak_memory_mb()
    results = {
        'model_name': model_type, 'dataset_name': dataset,
        'final_loss': history[-1]['val_loss'], 'final_perplexity': history[-1]['val_ppl'],
        'best_perplexity': math.exp(best_val_loss), 'training_time': train_seconds,
        'total_tokens': iter_num * tokens_per_iter, 'vocab_size': meta['vocab_size'],
        'num_params': n_params, 'model_size_mb': sum(t.numel() * t.element_size() for t in raw_model.state_dict().values()) / 2**20,
        'peak_memory_mb': peak_mb, 'peak_memory_kind': peak_kind,
        'forward_flops': step_flops['forward'], 'backward_flops': step_flops['backward'],
        'optimizer_flops': step_flops['optimizer'], 'total_flops_per_step': flops_per_iter,
        'total_training_flops': flops_per_iter * iter_num, 'peak_flops': peak, 'peak_flops_source': peak_source,
        'epoch_losses': [e['train_loss'] for e in epoch_log],
        'epoch_perplexities': [math.exp(e['train_loss']) for e in epoch_log],
        'epoch_times': [e['seconds'] for e in epoch_log],
        'iterations': iter_num, 'stop_reason': stop_reason,
        'perplexity_unit': f"token ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']}); "
                           "final_/best_perplexity are from the periodic evaluation "
                           f"({'whole val split' if eval_full else f'{eval_iters} random val batches'})",
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
