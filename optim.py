"""
The optimizers of a training run (train.py, and compare.py's recall task):

    adamw  AdamW; weight decay on >= 2-D weights (matmuls, embeddings) only, not on biases and norm gains
    adam   Adam, no decay (the New-LLM seed's optimizer)
    muon   Muon (torch.optim.Muon: momentum, then the update orthogonalised by 5 Newton-Schulz steps) for the hidden
           2-D weight matrices, AdamW as above for everything else (embedding tables, the output head, biases,
           gains). Muon's learning rate is scaled so its update has AdamW's RMS (adjust_lr_fn='match_rms_adamw'),
           so one learning rate and one schedule drive both; adamw_lr_ratio scales the AdamW share's (each group
           carries its 'lr_ratio': the training loop sets group['lr'] = lr * group['lr_ratio']).

build() returns a list of optimizers: the training loop steps each, and the checkpoint holds the list of their
states. On a CPU or CUDA device AdamW/Adam run fused (one kernel for all parameters); elsewhere (mps) PyTorch's
default implementation.
"""
import torch

OPTIMIZERS = ('adamw', 'adam', 'muon')


def hidden_matrices(model):
    """Muon's share: every trainable 2-D parameter except embedding tables and the output head (`lm_head`): a lookup
    table or the vocabulary projection is not a hidden linear map."""
    skip = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) or name.split('.')[-1] == 'lm_head':
            skip |= {id(p) for p in module.parameters(recurse=False)}
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in skip]


def check(name, adamw_lr_ratio=1.0):
    """Raise ValueError for an optimizer setting build() cannot honour."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be {', '.join(map(repr, OPTIMIZERS[:-1]))} or {OPTIMIZERS[-1]!r}, "
                         f"not {name!r}")
    if adamw_lr_ratio <= 0:
        raise ValueError(f"adamw_lr_ratio must be > 0, not {adamw_lr_ratio}")
    if adamw_lr_ratio != 1.0 and name != 'muon':
        raise ValueError(f"adamw_lr_ratio scales the AdamW share of optimizer='muon', not of optimizer={name!r}")


def build(model, name, lr, weight_decay, betas, muon_momentum=0.95, adamw_lr_ratio=1.0, device_type='cpu'):
    """-> [torch.optim.Optimizer, ...] for the trainable parameters of model (see the module docstring)."""
    check(name, adamw_lr_ratio)
    fused = device_type in ('cpu', 'cuda')
    params = [p for p in model.parameters() if p.requires_grad]

    def adamw(ps, ratio=1.0):
        groups = [{'params': [p for p in ps if p.dim() >= 2], 'weight_decay': weight_decay, 'lr_ratio': ratio},
                  {'params': [p for p in ps if p.dim() < 2], 'weight_decay': 0.0, 'lr_ratio': ratio}]
        return torch.optim.AdamW([g for g in groups if g['params']], lr=lr * ratio, betas=betas, fused=fused)

    if name == 'adamw':
        return [adamw(params)]
    if name == 'adam':
        return [torch.optim.Adam([{'params': params, 'lr_ratio': 1.0}], lr=lr, betas=betas, fused=fused)]
    matrices = hidden_matrices(model)
    in_muon = {id(p) for p in matrices}
    return [torch.optim.Muon([{'params': matrices, 'lr_ratio': 1.0}], lr=lr, weight_decay=weight_decay,
                             momentum=muon_momentum, adjust_lr_fn='match_rms_adamw'),
            adamw([p for p in params if id(p) not in in_muon], adamw_lr_ratio)]


def muon_flops(model):
    """FLOPs of Muon's Newton-Schulz steps in one update: per matrix A x B (A <= B), 5 steps of X X^T (2 A^2 B),
    b S + c S S (2 A^3) and that times X (2 A^2 B)."""
    total = 0
    for p in hidden_matrices(model):
        a, b = sorted(p.shape)
        total += 5 * (4 * a * a * b + 2 * a ** 3)
    return total
