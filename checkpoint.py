"""
The model registry, atomic file writes, and loading any model from a checkpoint.

A checkpoint is a dict of tensors and plain Python values only, so `torch.load(weights_only=True)` reads it:
    model       state_dict of the bare model (no DDP / torch.compile prefixes)
    model_type  a key of MODELS ('gpt' | 'newllm' | 'resnetbk' | 'lstm')
    model_args  the model config as a dict (dataclasses.asdict)
    meta        the dataset's meta.json (tokenizer, vocabulary, split sizes), so sampling needs no data folder
    config      train.py's configuration; and, in training checkpoints, the optimizer/scaler/RNG/progress state.
"""
import dataclasses
import importlib
import os
import tempfile
import typing

import torch

# model_type -> (module, config class, model class); imported on first use. A model is one file and one line here.
# Its config is a dataclass with vocab_size and block_size; the model class, built as Model(config), provides
#   forward(idx, targets=None) -> (logits (B, T, V), loss); in training with targets, the fused loss (linear_ce.py)
#   hidden(idx) -> (B, T, D) what lm_head (an nn.Linear) reads; forward_state(idx, state) -> (logits, state)
#   generate(idx, max_new_tokens, temperature, top_k) (generation.py), get_num_params()
#   is_recurrent(config) (static): whether forward_state carries an O(1) state (eval.py --carry_state)
#   flop_rows(config, B, T, device_type) (static): [flops.Row] of one forward + backward; PARAM_GROUPS (optional)
# tests/test_models.py runs the shared interface tests on every entry.
MODELS = {
    'gpt': ('model_gpt', 'GPTConfig', 'GPT'),
    'newllm': ('model_newllm', 'NewLLMConfig', 'NewLLM'),
    'resnetbk': ('model_resnetbk', 'ResNetBKConfig', 'ResNetBK'),
    'lstm': ('model_lstm', 'LSTMConfig', 'LSTM'),
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
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable (truncated or corrupt?): {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_type' not in ckpt:
        raise ValueError(f"{path} is not a linlm checkpoint (no 'model'/'model_type' entries)")
    return ckpt


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


def load_model(path, device='cpu'):
    """-> (model in eval mode on device, checkpoint dict) for any linlm checkpoint."""
    ckpt = load_checkpoint(path, map_location=device)
    model = build_model(ckpt['model_type'], ckpt['model_args'])
    model.load_state_dict(ckpt['model'])
    model.to(device).eval()
    return model, ckpt


