"""
The model registry, atomic file writes, and loading any model from a checkpoint.

A checkpoint is a dict of tensors and plain Python values only, so `torch.load(weights_only=True)` reads it:
    model       state_dict of the bare model (no DDP / torch.compile prefixes)
    model_type  'gpt' | 'newllm' | 'resnetbk'
    model_args  the model config as a dict (dataclasses.asdict)
    meta        the dataset's meta.json (tokenizer, vocabulary, split sizes), so sampling needs no data folder
    config      train.py's configuration; and, in training checkpoints, the optimizer/scaler/RNG/progress state.
"""
import dataclasses
import importlib
import os
import sys
import tempfile
import typing

import torch

# model_type -> (module, config class, model class); imported on first use
MODELS = {
    'gpt': ('model_gpt', 'GPTConfig', 'GPT'),
    'newllm': ('model_newllm', 'NewLLMConfig', 'NewLLM'),
    'resnetbk': ('model_resnetbk', 'ResNetBKConfig', 'ResNetBK'),
}


def model_classes(model_type):
    """-> (ConfigClass, ModelClass) for a model_type."""
    if model_type not in MODELS:
        raise SystemExit(f"error: unknown model_type {model_type!r}; choose one of {', '.join(MODELS)}")
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
    """torch.load with weights_only=True; a missing or unreadable file is a one-line error."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: checkpoint {path} is unreadable (truncated or corrupt?): {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_type' not in ckpt:
        raise SystemExit(f"error: {path} is not a linlm checkpoint (no 'model'/'model_type' entries)")
    return ckpt


def build_model(model_type, model_args):
    config_cls, model_cls = model_classes(model_type)
    return model_cls(config_cls(**model_args))


def load_model(path, device='cpu'):
    """-> (model in eval mode on device, checkpoint dict) for any linlm checkpoint."""
    ckpt = load_checkpoint(path, map_location=device)
    model = build_model(ckpt['model_type'], ckpt['model_args'])
    model.load_state_dict(ckpt['model'])
    model.to(device).eval()
    return model, ckpt


