"""
The model registry, atomic file writes, a training run's state, and loading any model from a checkpoint.

A checkpoint is a dict of tensors and plain Python values only, so `torch.load(weights_only=True)` reads it:
    model       state_dict of the bare model (no DDP / torch.compile prefixes)
    model_type  a key of MODELS
    model_args  the model config as a dict (dataclasses.asdict)
    meta        the dataset's meta.json (tokenizer, vocabulary, split sizes), so sampling needs no data folder
    config      train.py's settings (config.py)
and in a training checkpoint (train.py's ckpt.pt, best.pt, ckpt_epochN.pt) also
    optimizer   [state_dict of each optimizer] (optim.build: one, or Muon's two)
    scaler      the GradScaler's state_dict
    rng         [(cpu RNG state, device RNG state or None) of each DDP rank]
    the fields of TrainState (iter_num, best_val_loss, history, ...), at the top level
The model contract (what a model file provides) is model_base.LM.
"""
import dataclasses
import glob
import importlib
import os
import tempfile
import math
import typing

import torch

# model_type -> (module, config class, model class); imported on first use. A model is one file (see model_base.py)
# and one line here; tests/test_models.py runs the shared interface tests on every entry.
MODELS = {
    'gpt': ('model_gpt', 'GPTConfig', 'GPT'),
    'newllm': ('model_newllm', 'NewLLMConfig', 'NewLLM'),
    'resnetbk': ('model_resnetbk', 'ResNetBKConfig', 'ResNetBK'),
    'lstm': ('model_lstm', 'LSTMConfig', 'LSTM'),
    'gdn': ('model_gdn', 'GDNConfig', 'GDN'),
}


def model_classes(model_type):
    """-> (ConfigClass, ModelClass) for a model_type."""
    if model_type not in MODELS:
        raise ValueError(f"unknown model_type {model_type!r}; choose one of {', '.join(MODELS)}")
    module, config_name, model_name = MODELS[model_type]
    module = importlib.import_module(module)
    return getattr(module, config_name), getattr(module, model_name)


def config_fields(model_type):
    """{field: (type, default)} of a model's config dataclass."""
    config_cls, _ = model_classes(model_type)
    hints = typing.get_type_hints(config_cls)
    return {f.name: (hints.get(f.name), f.default) for f in dataclasses.fields(config_cls)}


def atomic_write(path, write):
    """write(tmp_path) then rename over path: readers see the old file or the new one, never half of one."""
    path = str(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=os.path.dirname(path) or '.')
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text, path):
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    atomic_write(path, write)


def load_checkpoint(path, map_location='cpu'):
    """torch.load with weights_only=True. A missing file raises FileNotFoundError, an unreadable or foreign one
    ValueError, each with a one-line message."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic[:4] != b'PK\x03\x04' and magic[:1] != b'\x80':  # torch.save's zip, or its legacy pickle
        raise ValueError(f"{path} is not a checkpoint (torch.save did not write it; train.py's are "
                         f"<out_dir>/best.pt and ckpt.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's message would advise weights_only=False: unsafe, and no cure for a bad file
        raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt?): {type(e).__name__}") from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_type' not in ckpt:
        raise ValueError(f"{path} is not a linlm checkpoint (no 'model'/'model_type' entries)")
    return ckpt


@dataclasses.dataclass
class TrainState:
    """What a training run carries besides weights, optimizer and RNG states; saved at a checkpoint's top level."""
    iter_num: int = 0
    best_val_loss: float = math.inf   # val loss of the weights in best.pt
    grid_best_loss: float = math.inf  # best val loss at the periodic evaluations: patience counts from it
    evals_since_best: int = 0
    train_seconds: float = 0.0
    history: list = dataclasses.field(default_factory=list)    # one record per evaluation (train.py)
    epoch_log: list = dataclasses.field(default_factory=list)  # per finished epoch: mean train loss and seconds
    epoch_running: list = dataclasses.field(default_factory=lambda: [0.0, 0, 0.0])  # the epoch so far: loss sum,
    #                                                           count, train_seconds at its start
    peak_flops: float = 0.0           # the MFU reference, measured once at the run's first start (resume keeps it)
    wall_seconds: float = 0.0         # wall time of the run so far, evaluations and checkpoints included

    @classmethod
    def from_checkpoint(cls, ckpt):
        """The one reader of older runs too: a field their checkpoints lack takes its default (grid_best_loss: the
        best.pt loss, as it was before the two were kept apart)."""
        known = {f.name: ckpt[f.name] for f in dataclasses.fields(cls) if f.name in ckpt}
        known.setdefault('grid_best_loss', known.get('best_val_loss', math.inf))
        return cls(**known)

    def record_eval(self, val_loss, min_delta):
        """A periodic evaluation's val loss: update the best and the patience count. -> whether best.pt takes it."""
        improved = val_loss < self.best_val_loss - min_delta
        if val_loss < self.grid_best_loss - min_delta:
            self.grid_best_loss, self.evals_since_best = val_loss, 0
        else:
            self.evals_since_best += 1
        if improved:
            self.best_val_loss = val_loss
        return improved

    def record_step(self, train_loss, iters_per_epoch):
        """After iter_num's increment: add a finite train loss (None: a skipped step) to the epoch's mean, and close
        the epoch when it ends. -> whether it ended."""
        if train_loss is not None:
            self.epoch_running[0] += train_loss
            self.epoch_running[1] += 1
        if self.iter_num % iters_per_epoch:
            return False
        loss_sum, loss_count, epoch_start = self.epoch_running
        self.epoch_log.append({'epoch': self.iter_num // iters_per_epoch, 'train_loss': loss_sum / max(loss_count, 1),
                               'seconds': self.train_seconds - epoch_start})
        self.epoch_running = [0.0, 0, self.train_seconds]
        return True


RUN_FILES = ('ckpt.pt', 'best.pt', 'history.json', 'results.json', 'curves.png')


def check_run_folder(out_dir, overwrite):
    """A scratch run never silently replaces another run (ValueError naming the way out)."""
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
    if held and not overwrite:
        raise ValueError(f"{out_dir} already holds a run ({', '.join(held)}); continue it with --init_from=resume, "
                         f"write to another --out_dir, or replace it with --overwrite=True")


def clear_run_folder(out_dir):
    """--overwrite: the old run's files all go, not only those the new run rewrites."""
    for f in [os.path.join(out_dir, f) for f in RUN_FILES] + glob.glob(os.path.join(out_dir, 'ckpt_epoch*.pt')):
        if os.path.exists(f):
            os.remove(f)


def training_checkpoint(model, model_type, meta, config, optimizers, scaler, rngs, state):
    """-> the dict train.py saves (the layout in this module's docstring)."""
    return {'model': model.state_dict(), 'model_type': model_type, 'model_args': dataclasses.asdict(model.config),
            'meta': meta, 'config': config, 'optimizer': [o.state_dict() for o in optimizers],
            'scaler': scaler.state_dict(), 'rng': rngs, **dataclasses.asdict(state)}


def restore_optimizers(ckpt, optimizers, scaler, source):
    """Load a training checkpoint's optimizer and scaler states (ValueError when the optimizers differ)."""
    if len(ckpt['optimizer']) != len(optimizers):
        raise ValueError(f"{source} holds the state of {len(ckpt['optimizer'])} optimizer(s), this run has "
                         f"{len(optimizers)}: resume with the optimizer the run started with")
    for opt, saved in zip(optimizers, ckpt['optimizer']):
        if 'fused' in opt.defaults:  # the saved groups' flag would win (the run may be on another device)
            for group in saved['param_groups']:
                group['fused'] = opt.defaults['fused']
        opt.load_state_dict(saved)
    scaler.load_state_dict(ckpt['scaler'])


def device_rng(device_type):
    """The accelerator's RNG module (dropout masks drawn on the device), or None on the CPU."""
    return {'cuda': torch.cuda, 'mps': getattr(torch, 'mps', None)}.get(device_type)


def rng_states(device_type, world=1):
    """Every rank's RNG states [(cpu, device or None), ...]; under DDP (world > 1) a collective all ranks call."""
    dev = device_rng(device_type)
    mine = (torch.get_rng_state(), dev.get_rng_state().cpu() if dev else None)
    if world == 1:
        return [mine]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def restore_rng(saved, rank, device_type):
    """Set this rank's RNG states from rng_states()'s list (rank modulo its length)."""
    cpu, dev_state = saved[rank % len(saved)]
    torch.set_rng_state(cpu)
    if dev_state is not None and device_rng(device_type) is not None:
        device_rng(device_type).set_rng_state(dev_state)


def build_model(model_type, model_args):
    config_cls, model_cls = model_classes(model_type)
    return model_cls(config_cls(**model_args))


def merge_model_args(model_type, saved_args, overrides, source):
    """
    The model config of a run that starts from a checkpoint (resume or fine-tuning): the checkpoint's saved_args
    with the overrides the user gave applied, as long as they leave every parameter's name and shape as it is
    (dropout, a scan or kernel choice, ...). -> (merged args, {field: (old, new)} applied). Raises ValueError naming
    the fields that would change the shapes (models are built on the meta device: no memory, no compute).
    """
    def shapes(args):
        with torch.device('meta'):
            model = build_model(model_type, args)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    changed = {k: (saved_args.get(k), v) for k, v in overrides.items() if saved_args.get(k) != v}
    reference = shapes(saved_args)
    refused = [k for k, (_, v) in changed.items() if shapes(dict(saved_args, **{k: v})) != reference]
    if refused:
        raise ValueError(f"{source} has another shape: " + ', '.join(
            f"{k}={changed[k][1]!r} vs the checkpoint's {changed[k][0]!r}" for k in refused) +
            " (only fields that keep the parameters' shapes can change)")
    return dict(saved_args, **{k: v for k, (_, v) in changed.items()}), changed


def start_args(ckpt, source, model_type, overrides):
    """The model config of a run that starts from ckpt (resume or fine-tuning): its model_args with the user's
    overrides that keep the shapes (merge_model_args; block_size is the run's window, not a change of the model).
    -> (args, {field: (old, new)} applied); ValueError for another model type or another shape."""
    if ckpt['model_type'] != model_type:
        raise ValueError(f"{source} holds a {ckpt['model_type']} model, not {model_type}")
    wanted = {k: v for k, v in overrides.items() if k != 'block_size'}
    return merge_model_args(model_type, ckpt['model_args'], wanted, source)


def load_model(path, device='cpu'):
    """-> (model in eval mode on device, checkpoint dict) for any linlm checkpoint."""
    ckpt = load_checkpoint(path, map_location=device)
    model = build_model(ckpt['model_type'], ckpt['model_args'])
    model.load_state_dict(ckpt['model'])
    model.to(device).eval()
    return model, ckpt


