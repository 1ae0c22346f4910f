"""
A run's configuration: train.py's settings with their defaults (the block below, whose comments `--help` shows), one
loader for config files and `--key=value` overrides (configurator.py parses them), and one validation.

    cfg = config.load(['config/wt2_gpt.py', '--batch_size=32'])
    cfg.batch_size, cfg.model_type     # every setting, as an attribute
    cfg.model_args                     # the model's config fields: its dataclass defaults, then the user's values

train.py, flops.py, compare.py and bench/ read configurations through load(); nothing parses train.py.
"""
import dataclasses
import os

import checkpoint as ckpt_io
import configurator
import optim

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
overwrite = False          # a scratch run into an out_dir that holds a run: True deletes that run's files first
eval_interval = 250        # iterations between evaluations; 0 = at the end of every epoch
log_interval = 10
eval_iters = 50            # batches per quick estimate of train/val loss (ignored for val when eval_full)
eval_full = False          # evaluate the whole val split at each evaluation instead of eval_iters random batches
val_windows = ''           # eval_full: 'stream' (consecutive windows) or 'lines' (the New-LLM seed's metric); '' = as batch_mode
snapshot_every_epochs = 0  # also keep out_dir/ckpt_epoch{N}.pt at every N-th epoch boundary; 0 = off
init_from = 'scratch'      # 'scratch', 'resume' (out_dir/ckpt.pt), or a path to a checkpoint to start from
# wandb logging
wandb_log = False
wandb_project = 'linlm'
wandb_run_name = 'run'
# data
dataset = 'wikitext2-gpt2'  # a folder under data/ (beside this file) or a path to one; a known name (prepare.NAMED) says how to make it
batch_mode = 'random'       # 'random': windows at random offsets of the stream; 'seed_lines': New-LLM seed's line windows
data_limit = 0              # use only the first data_limit train tokens; 0 = all
gradient_accumulation_steps = 1
batch_size = 12
block_size = 256
# model
model_type = 'gpt'          # a model of checkpoint.MODELS; its fields (n_layer, n_embd, ...) are set like settings
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
peak_flops = 0.0            # peak FLOP/s of one device, for MFU; 0 = the matmul rate of the run's dtype, measured once per run
seed = 1337
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, list))}
HERE = os.path.abspath(__file__)


@dataclasses.dataclass
class Config:
    """Every setting (DEFAULTS, then the user's), the model type and its config fields."""
    settings: dict
    model_args: dict    # all fields of the model's config dataclass (vocab_size and block_size set at build time)
    model_set: dict     # the model fields the user set: what a resumed or fine-tuned run applies to a checkpoint's

    def __getattr__(self, key):
        try:
            return self.__dict__['settings'][key]
        except KeyError:
            raise AttributeError(key) from None


def model_field_types():
    """{field: type} of every registered model's config fields that are not settings (n_layer, n_hidden, ...)."""
    return {k: t for mt in ckpt_io.MODELS for k, (t, _) in ckpt_io.config_fields(mt).items() if k not in DEFAULTS}


def load(argv, check_values=True):
    """
    Config files and --key=value overrides (in order; `-h`/`--help` prints every key and exits) -> Config.
    Unknown keys and wrong types exit with a one-line error (configurator.py); wrong values raise ValueError.
    """
    model_keys = model_field_types()
    overrides = configurator.parse_args(argv, DEFAULTS, model_keys, script=HERE,
                                        model_configs={mt: ckpt_io.model_classes(mt)[0] for mt in ckpt_io.MODELS})
    settings = {**DEFAULTS, **{k: v for k, v in overrides.items() if k in DEFAULTS}}
    fields = ckpt_io.config_fields(settings['model_type'])  # ValueError for an unknown model_type
    for k in overrides:
        if k in model_keys and k not in fields:
            raise ValueError(f"'{k}' is not a field of {settings['model_type']}'s config ({', '.join(fields)})")
    model_set = {k: v for k, v in overrides.items() if k in fields}
    model_args = {**{k: d for k, (_, d) in fields.items()}, **model_set}
    if 'block_size' in fields:
        model_args['block_size'] = settings['block_size']
    cfg = Config(settings, model_args, model_set)
    if check_values:
        check(cfg)
    return cfg


def check(cfg):
    """Values that are wrong whatever the data: ValueError with one line, before anything is read or written."""
    for k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'log_interval', 'max_bad_steps'):
        if cfg.settings[k] < 1:
            raise ValueError(f"{k} must be >= 1, not {cfg.settings[k]}")
    for k in ('eval_interval', 'eval_iters', 'data_limit', 'max_iters', 'max_epochs', 'max_time', 'warmup_iters',
              'lr_decay_iters', 'patience', 'snapshot_every_epochs', 'learning_rate', 'min_lr', 'weight_decay',
              'grad_clip', 'peak_flops'):
        if cfg.settings[k] < 0:
            raise ValueError(f"{k} must be >= 0, not {cfg.settings[k]}")
    if not cfg.eval_full and cfg.eval_iters < 1:
        raise ValueError("eval_iters must be >= 1 (or eval_full=True)")
    if cfg.batch_mode not in ('random', 'seed_lines'):
        raise ValueError(f"batch_mode must be 'random' or 'seed_lines', not {cfg.batch_mode!r}")
    if cfg.val_windows not in ('', 'stream', 'lines'):
        raise ValueError(f"val_windows must be 'stream', 'lines' or '', not {cfg.val_windows!r}")
    optim.check(cfg.optimizer, cfg.adamw_lr_ratio)
    if cfg.grad_clip_schedule:
        try:
            sched = sorted((int(e), float(c)) for e, c in cfg.grad_clip_schedule)
        except (TypeError, ValueError):
            raise ValueError(f"grad_clip_schedule must be a list of (from_epoch, clip) pairs, "
                             f"not {cfg.grad_clip_schedule!r}") from None
        if sched[0][0] != 0:
            raise ValueError(f"grad_clip_schedule must start at epoch 0 (it starts at {sched[0][0]}): "
                             f"{cfg.grad_clip_schedule!r}")
    if not (cfg.max_iters or cfg.max_epochs or cfg.max_time):
        raise ValueError("set max_iters, max_epochs or max_time, or the run never ends")
    if cfg.init_from not in ('scratch', 'resume') and not os.path.isfile(cfg.init_from):
        raise ValueError(f"init_from={cfg.init_from!r}: no such checkpoint (use 'scratch', 'resume' or a path to a "
                         f".pt file)")
    if cfg.init_from == 'resume' and not os.path.isfile(os.path.join(cfg.out_dir, 'ckpt.pt')):
        raise ValueError(f"init_from='resume' looks for the run in out_dir={cfg.out_dir!r}, but "
                         f"{os.path.join(cfg.out_dir, 'ckpt.pt')} does not exist: give the run's config file or "
                         f"--out_dir (or start with init_from='scratch')")
