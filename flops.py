"""
FLOPs of one training step of any linlm model, by component, and the checks that make them trustworthy.

    python flops.py config/X.py [--batch_size 16] [--block_size 128] [--key=value ...]   # the table
    python flops.py config/X.py --check             # + one real step under torch's FlopCounterMode, compared
    python flops.py config/wt103_resnetbk.py --batch_size 16 --convention seed   # the ResNet-BK seed's table

The configuration is read exactly as train.py reads it (its globals' defaults, config files, --key=value; the model's
config dataclass fills what is not set). vocab_size: an explicit vocab_size, else the dataset's meta.json, else the
model's default. Every count is for one optimizer step of train.py: gradient_accumulation_steps micro-batches of
batch_size x block_size tokens (forward + backward each), then one optimizer update.

Convention 'exact' (the default). B batch, T sequence length, M = B*T positions.
- Matmuls: 2 FLOPs per multiply-add, so x (m, k) @ W (k, n) is 2*m*k*n; a Linear's bias add is m*n more, counted as
  elementwise. Attention scores q k^T and att @ v are 2*B*nh*T*T*hs each over the full T x T square, causal or not
  (what the kernels and torch's counter count). Conv1d is 2 * outputs * (in_channels * kernel).
  Backward of a matmul is exactly 2x its forward (the input gradient and the weight gradient, one matmul each).
  Attention (scaled_dot_product_attention) backward: the fused kernels (flash / memory-efficient on CUDA, flash on
  a CPU) recompute q k^T, so 5 matmuls = 2.5x the forward's two (scores 3x, values 2x); the math fallback (a CPU
  with attention dropout > 0) runs 4 = 2x. We count what runs, so device_type matters for GPT only.
  These are the FLOPs that torch.utils.flop_counter.FlopCounterMode sees, and --check shows they are equal for a
  whole step. Forward and backward are the mathematical split: an implementation may form some gradients during
  its forward pass (the fused lm_head + cross-entropy of linear_ce.py does, in training), which moves them, not
  changes the step.
- Everything else is analytic, by these rules, and the counter cannot see it:
  one FLOP per element for each add, subtract, multiply, divide, max, compare, clamp, and for each special function
  (exp, log, erf, sigmoid, sqrt, reciprocal). So: ReLU 1, GELU (erf form, 0.5 x (1 + erf(x / sqrt 2))) 5,
  dropout 1 (training, p > 0), residual add 1, bias 1, LayerNorm 7 per element (mean, centre, square, sum, times
  rstd, gain, bias; 6 without bias), softmax 5 per element (max, subtract, exp, sum, divide), cross-entropy 5 per
  logit (log-softmax), top-k selection 1 per candidate. Complex numbers in real FLOPs: add 2, multiply 6,
  reciprocal 5 (1/(a+ib) = (a-ib)/(a^2+b^2)). The BK-Core recurrence g_i = 1/(s_i - g_{i-1}) is 2 (s_i = a_i - z)
  + 7 per position; the non-causal seed diagonal runs it twice and combines (25 per position). The parallel forms
  of the recurrence (bk_scan: log-depth scan, chunked) compute the same g with more work for fewer sequential
  steps; we count the O(N) algorithm. Embedding lookups are gathers (0 FLOPs); adding the position embedding is
  1 per element; in the backward each table's gradient is a scatter-add, 1 per element.
  Backward of every non-matmul part: 2x its forward (its derivative, times the incoming gradient).
- Optimizer (per parameter, torch's Adam/AdamW step): first moment lerp 3, second moment 4, denominator 3
  (sqrt, bias correction, eps), update 3 = 13; AdamW's decoupled weight decay +1 on the parameters train.py decays
  (>= 2-D); gradient clipping +3 (square, sum, scale) when it is on.

Convention 'seed' (ResNet-BK only, the seed's flags off) is the seed's own formula (the one its code reported), with
T = B*N tokens: forward: embedding T*D; per layer LayerNorm 5TD, gating 2TDE, softmax 3TE, experts TK(8D^2 + 2D),
BK-Core 34T, output projection 4TD; final LayerNorm 5TD; lm_head 2TDV. Not counted: v_proj, residual adds, loss.
Backward: the Linear/MoE terms 2x, LayerNorm and embedding 1x, BK-Core 26T. Optimizer: 15 per parameter.

Also reported: per token, the whole configured run (iterations x per step, train.py's iteration rule), parameters by
component, and the 6*N*D estimate (N parameters, D tokens) beside the exact count. train.py imports step_flops() for
MFU and results.json (the peak is hardware.py's measured matmul rate when the config gives none).
"""
import dataclasses
import json
import os
import re
import sys

import torch

import checkpoint as ckpt_io
import config
import data
import hardware
import linear_ce  # noqa: F401 (defines torch.ops.linlm.linear_cross_entropy, counted below)
import model_newllm  # noqa: F401 (defines torch.ops.linlm.newllm_context_loop*)
import optim
from cli import fail
from flop_rules import Row

def _config(model_type, model_args):
    config_cls, _ = ckpt_io.model_classes(model_type)
    return model_args if isinstance(model_args, config_cls) else config_cls(**model_args)


def breakdown(model_type, model_args, batch_size, seq_len, convention='exact', device_type='cuda'):
    """-> [Row] of one forward + backward on a (batch_size, seq_len) batch; model_args: dict or config object.
    The rows are the model class's: flop_rows(cfg, B, T, device_type) for 'exact', seed_flop_rows(cfg, B, T) for
    'seed'. device_type ('cuda' | 'cpu' | ...) only picks GPT's attention kernel whose backward is counted."""
    cfg = _config(model_type, model_args)
    model_cls = ckpt_io.model_classes(model_type)[1]
    if convention == 'seed':
        if not hasattr(model_cls, 'seed_flop_rows'):
            seeded = [mt for mt in ckpt_io.MODELS if hasattr(ckpt_io.model_classes(mt)[1], 'seed_flop_rows')]
            raise ValueError(f"the seed convention exists for {', '.join(seeded)} only, not {model_type}")
        return model_cls.seed_flop_rows(cfg, batch_size, seq_len)
    if convention != 'exact':
        raise ValueError(f"convention must be 'exact' or 'seed', not {convention!r}")
    return model_cls.flop_rows(cfg, batch_size, seq_len, device_type)


# -----------------------------------------------------------------------------------------------------------------
# parameters, optimizer, one training step

def param_groups(model_type, model):
    """{component: parameters} (shared parameters once), in model order. The components are the model class's
    PARAM_GROUPS, [(regex on the parameter name, label)], first match; '{}' in a label takes the regex's number,
    '+{}' that number + 1; a parameter none matches (or every one, without PARAM_GROUPS) counts under its
    top-level module's name."""
    out = {}
    groups = getattr(ckpt_io.model_classes(model_type)[1], 'PARAM_GROUPS', [])
    for name, p in model.named_parameters():
        comp = name.split('.')[0]
        for pattern, label in groups:
            m = re.match(pattern, name)
            if m:
                idx = [g for g in m.groups() if g and g.isdigit()]
                comp = label.replace('+{}', str(int(idx[0]) + 1)) if '+{}' in label else label.format(*idx)
                break
        out[comp] = out.get(comp, 0) + p.numel()
    return out


def optimizer_rows(model, optimizer, grad_clip, convention='exact'):
    """The optimizer update of one step (see the module docstring)."""
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    if convention == 'seed':
        return [Row('optimizer', f'{optimizer} 15 per parameter (seed)', 0, 15 * P, 0, 0)]
    decayed = sum(p.numel() for p in params if p.dim() >= 2) if optimizer in ('adamw', 'muon') else 0
    rows = [Row('optimizer', f'{optimizer} 13 per parameter' + (' + decay of >= 2-D weights' if decayed else ''),
                0, 13 * P + decayed, 0, 0)]
    if optimizer == 'muon':  # AdamW's 13 per parameter stand for Muon's momentum and update too
        rows.append(Row('optimizer', 'muon Newton-Schulz, 5 steps per hidden matrix', 0, optim.muon_flops(model), 0, 0))
    if grad_clip:
        rows.append(Row('optimizer', 'gradient clipping 3 per parameter', 0, 3 * P, 0, 0))
    return rows


def lookup_only_params(model):
    """Parameters of embedding tables that are only looked up (not also a matmul weight, as GPT's tied wte)."""
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Embedding) and id(m.weight) not in linear_weights)


def tied_head(model):
    """Whether lm_head's weight is an embedding table's (GPT's wte, a tied LSTM): counted once, under the table."""
    return any(m.weight is model.lm_head.weight for m in model.modules() if isinstance(m, torch.nn.Embedding))


def step_flops(model_type, model_args, batch_size, seq_len, accum_steps=1, optimizer='adamw', grad_clip=True,
               convention='exact', device_type='cuda', model=None):
    """
    One optimizer step of train.py: accum_steps micro-batches of (batch_size, seq_len), forward + backward each,
    then one update. model: the built model (else one is built on the meta device, no memory). -> dict of
    rows, optimizer_rows, forward, backward, optimizer, per_step, per_token, forward_matmul, backward_matmul,
    tokens, n_params, params (by component), estimate_6nd, estimate_6nd_no_lookup, tied_head.
    """
    cfg = _config(model_type, model_args)
    if model is None:
        with torch.device('meta'):
            model = ckpt_io.build_model(model_type, dataclasses.asdict(cfg))
    rows = breakdown(model_type, cfg, batch_size, seq_len, convention, device_type)
    opt_rows = optimizer_rows(model, optimizer, grad_clip, convention)
    tokens = accum_steps * batch_size * seq_len
    n_params = sum(p.numel() for p in model.parameters())
    out = {'rows': rows, 'optimizer_rows': opt_rows, 'accum_steps': accum_steps, 'tokens': tokens,
           'forward': accum_steps * sum(r.fwd_mm + r.fwd_other for r in rows),
           'backward': accum_steps * sum(r.bwd_mm + r.bwd_other for r in rows),
           'forward_matmul': accum_steps * sum(r.fwd_mm for r in rows),
           'backward_matmul': accum_steps * sum(r.bwd_mm for r in rows),
           'optimizer': sum(r.fwd_other for r in opt_rows),
           'n_params': n_params, 'params': param_groups(model_type, model),
           'estimate_6nd': 6 * n_params * tokens, 'tied_head': tied_head(model),
           'estimate_6nd_no_lookup': 6 * (n_params - lookup_only_params(model)) * tokens}
    out['per_step'] = out['forward'] + out['backward'] + out['optimizer']
    out['per_token'] = out['per_step'] / tokens
    return out


# -----------------------------------------------------------------------------------------------------------------
# measured: torch's FlopCounterMode on one real step, and a peak FLOP/s for MFU

def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out, q, k, v)


def _addmm_(self, a, b, *args, out_shape=None, **kwargs):
    return 2 * a[0] * a[1] * b[1]


def _mkldnn_lstm(x, w_ih, w_hh, *args, out_shape=None, **kwargs):
    # oneDNN's LSTM layer (nn.LSTM on a CPU): x (T, B, in) times W_ih (4H, in) and h times W_hh (4H, H) every step
    return 2 * x[0] * x[1] * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _mkldnn_lstm_backward(x, w_ih, w_hh, *args, out_shape=None, **kwargs):
    return 2 * _mkldnn_lstm(x, w_ih, w_hh)  # input and weight gradients of both matmuls


# the project's custom ops (torch.library): the counter sees the op, not the matmuls inside it
def _fused_loss(h, W, b, y, mm_dtype, need_h, need_W, need_b, *args, out_shape=None, **kwargs):
    # linear_ce.fused_loss_op: the logits h W^T, and with them grad_h = P W and grad_W = P^T h
    return 2 * h[0] * h[1] * W[0] * (1 + need_h + need_W)


def _context_loop(xw, c0, Wc, Wg, bg, gamma, beta, p, rest, *args, out_shape=None, **kwargs):
    # model_newllm.context_loop_op, T steps of (B, C) x (C, H), L-1 of (B, H) x (H, H), (B, H) x (H, 3C)
    (T, B, H), C, L = xw, c0[1], len(rest) // 2 + 1
    return 2 * T * B * H * (C + (L - 1) * H + 3 * C)


def _context_loop_backward(dh, dc, rs, gates, cs, *args, out_shape=None, **kwargs):
    L, T, B, H = rs
    C = cs[2]
    return 4 * T * B * H * (C + (L - 1) * H + 3 * C)    # input and weight gradients of every matmul: 2x


def measure_step(model, batch_size, seq_len, vocab_size, device='cpu', optimizer='adamw'):
    """
    One real training step (forward, backward, optimizer update) on random tokens under FlopCounterMode.
    -> {'forward': n, 'backward': n, 'optimizer': n, 'by_op': {op: n}}. torch's counter has no formula for the CPU
    flash-attention kernel (SDPA without dropout on a CPU) nor for the in-place addmm_ (the fused loss
    accumulates its lm_head gradient with it); we register torch's own formulas for them. Nor for oneDNN's LSTM
    layer (nn.LSTM on a CPU, one op per layer): ours, its two matmuls per step, backward 2x. Nor for the
    project's custom ops (the fused loss, New-LLM's token loop): ours, from their shapes.
    """
    from torch.utils.flop_counter import FlopCounterMode
    aten = torch.ops.aten
    custom = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
              aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
              aten.addmm_: _addmm_,
              aten.mkldnn_rnn_layer: _mkldnn_lstm, aten.mkldnn_rnn_layer_backward: _mkldnn_lstm_backward,
              torch.ops.linlm.linear_cross_entropy: _fused_loss, torch.ops.linlm.newllm_context_loop: _context_loop,
              torch.ops.linlm.newllm_context_loop_backward: _context_loop_backward}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g).to(device)
    y = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g).to(device)
    model.to(device).train()
    opts = optim.build(model, optimizer, 1e-4, 0.1, (0.9, 0.95), device_type=torch.device(device).type)
    counts, by_op = {}, {}
    for phase in ('forward', 'backward', 'optimizer'):
        with FlopCounterMode(display=False, custom_mapping=custom) as fc:
            if phase == 'forward':
                _, loss = model(x, y)
            elif phase == 'backward':
                loss.backward()
            else:
                for opt in opts:
                    opt.step()
        counts[phase] = fc.get_total_flops()
        for op, n in fc.get_flop_counts().get('Global', {}).items():
            by_op[str(op)] = by_op.get(str(op), 0) + n
    counts['by_op'] = by_op
    return counts


# -----------------------------------------------------------------------------------------------------------------
# command line

def run_iterations(cfg, data_dir, meta):
    """Iterations of the configured run by train.py's rule (tightest of max_iters and max_epochs) -> (n, how)."""
    why = []
    if cfg.max_epochs:
        if meta is not None and os.path.isfile(os.path.join(data_dir, 'train.bin')):
            train = data.load_split(data_dir, 'train')
            train = train[:cfg.data_limit] if cfg.data_limit else train
            per_epoch = data.Batches(train, meta, cfg.batch_mode, cfg.block_size, cfg.batch_size,
                                     cfg.gradient_accumulation_steps).iters_per_epoch
            why.append((cfg.max_epochs * per_epoch, f"max_epochs={cfg.max_epochs} x {per_epoch:,} per epoch"))
        else:
            why.append(f"max_epochs={cfg.max_epochs} (iterations per epoch unknown without {data_dir})")
    if cfg.max_iters:
        why.append((cfg.max_iters, f"max_iters={cfg.max_iters}"))
    known = [w for w in why if isinstance(w, tuple)]
    if known:
        return min(known)
    return None, (why[0] if why else f"max_time={cfg.max_time} s: iterations unknown in advance")


def _fmt(n):
    return f"{n:,.0f}" if abs(n) >= 1 or n == 0 else f"{n:.3g}"


def print_table(s, width=66, matmul=True):
    """The rows grouped by component (a group's parts indented below its total), then the step's totals.
    matmul: also a column of the matmul FLOPs (forward; the backward's on its total line), what torch's counter sees."""
    mm = lambda n: f" {_fmt(n):>16}" if matmul else ''
    print(f"{'component':<{width}} {'forward':>17} {'backward':>17}" + (f" {'matmul':>16}" if matmul else ''))
    groups = []
    for r in s['rows']:
        if not groups or groups[-1][0] != r.group:
            groups.append((r.group, []))
        groups[-1][1].append(r)
    for group, rows in groups:
        f, b, m = (sum(x) for x in zip(*[(r.fwd_mm + r.fwd_other, r.bwd_mm + r.bwd_other, r.fwd_mm) for r in rows]))
        label = group if len(rows) > 1 or rows[0].name == group else f"{group}: {rows[0].name}"
        print(f"{label:<{width}} {_fmt(f):>17} {_fmt(b):>17}" + mm(m))
        if len(rows) > 1:
            for r in rows:
                print(f"  {r.name:<{width - 2}} {_fmt(r.fwd_mm + r.fwd_other):>17} {_fmt(r.bwd_mm + r.bwd_other):>17}"
                      + mm(r.fwd_mm))
    accum = s['accum_steps']
    x = f" (x{accum} micro-batches)" if accum > 1 else ''
    print('-' * (width + 36 + (17 if matmul else 0)))
    print(f"{'forward' + x:<{width}} {_fmt(s['forward']):>17} {'':>17}" + mm(s['forward_matmul']))
    print(f"{'backward' + x:<{width}} {'':>17} {_fmt(s['backward']):>17}" + mm(s['backward_matmul']))
    for r in s['optimizer_rows']:
        print(f"  {r.name:<{width - 2}} {_fmt(r.fwd_other):>17}")
    print(f"{'optimizer':<{width}} {_fmt(s['optimizer']):>17}")
    print(f"{'per step':<{width}} {_fmt(s['per_step']):>17}")
    print(f"{'per token (' + format(s['tokens'], ',') + ' tokens per step)':<{width}} {s['per_token']:>17,.1f}")


def main(argv):
    try:
        run(argv)
    except (FileNotFoundError, ValueError) as e:
        fail(e)


def run(argv):
    check = '--check' in argv
    argv = [a for a in argv if a != '--check']
    convention, rest, i = 'exact', [], 0
    while i < len(argv):  # accept `--key value` as well as `--key=value`
        a = argv[i]
        if a.startswith('--') and '=' not in a and i + 1 < len(argv) and not argv[i + 1].startswith('--') \
                and not argv[i + 1].endswith('.py'):
            a, i = f"{a}={argv[i + 1]}", i + 1
        if a.startswith('--convention='):
            convention = a.split('=', 1)[1]
        else:
            rest.append(a)
        i += 1
    cfg = config.load(rest, check_values=False)
    model_type, model_args = cfg.model_type, {k: v for k, v in cfg.model_args.items() if k != 'vocab_size'}
    if 'vocab_size' in cfg.model_set:
        model_args['vocab_size'] = cfg.model_set['vocab_size']
    data_dir = data.dataset_dir(cfg.dataset)
    meta = None
    if os.path.isfile(os.path.join(data_dir, 'meta.json')):
        with open(os.path.join(data_dir, 'meta.json')) as f:
            meta = json.load(f)
    if 'vocab_size' in model_args:
        vocab_from = 'set in the config'
        if meta is not None and meta['vocab_size'] != model_args['vocab_size']:
            vocab_from += f"; {data_dir}/meta.json says {meta['vocab_size']}"
    elif meta is not None:
        model_args['vocab_size'], vocab_from = meta['vocab_size'], f"{data_dir}/meta.json"
    else:
        vocab_from = f"model default; no {data_dir}/meta.json"
    cfg_obj = _config(model_type, model_args)
    B, T, accum = cfg.batch_size, cfg.block_size, cfg.gradient_accumulation_steps
    clip = bool(cfg.grad_clip_schedule) or cfg.grad_clip > 0
    device = hardware.resolve_device(cfg.device)
    device_type = hardware.device_type(device)
    s = step_flops(model_type, cfg_obj, B, T, accum, cfg.optimizer, clip, convention, device_type)

    print(f"{model_type}: {s['n_params']:,} parameters | batch {B} x {T} tokens"
          f"{f' x {accum} accumulation steps' if accum > 1 else ''} | vocab {cfg_obj.vocab_size:,} ({vocab_from}) "
          f"| convention {convention} | {device_type}")
    print_table(s, matmul=convention == 'exact')
    iters, how = run_iterations(cfg, data_dir, meta)
    if iters:
        print(f"{'whole run: ' + f'{iters:,} iterations ({how})':<66} {_fmt(iters * s['per_step']):>17}")
    else:
        print(f"whole run: {how}")
    ratio = s['per_step'] / s['estimate_6nd']
    print(f"6*N*D estimate, N = {s['n_params']:,} parameters, D = {s['tokens']:,} tokens: "
          f"{s['estimate_6nd']:,} (exact per step / estimate = {ratio:.3f})")
    n_mm = s['estimate_6nd_no_lookup'] // (6 * s['tokens'])
    if n_mm != s['n_params']:
        print(f"6*N*D without lookup-only embedding tables, N = {n_mm:,}: {s['estimate_6nd_no_lookup']:,} "
              f"(exact / estimate = {s['per_step'] / s['estimate_6nd_no_lookup']:.3f})")
    print("parameters by component:")
    for comp, n in s['params'].items():
        print(f"  {comp:<30} {n:>14,} {100 * n / s['n_params']:6.2f}%")
    if s['tied_head']:
        print("  (lm_head shares the token embedding's weight)")

    if check:
        bc = min(B, 4)
        torch.manual_seed(0)
        model = ckpt_io.build_model(model_type, dataclasses.asdict(cfg_obj))
        a = step_flops(model_type, cfg_obj, bc, T, 1, cfg.optimizer, clip, 'exact', device_type, model=model)
        m = measure_step(model, bc, T, cfg_obj.vocab_size, device, cfg.optimizer)
        print(f"\n--check: one training step (forward, backward, {cfg.optimizer} update) at batch {bc} x {T} on "
              f"{device}, under torch.utils.flop_counter.FlopCounterMode (it counts matmuls, SDPA, convolutions)")
        print(f"{'':<20} {'analytic matmul':>20} {'measured':>20}")
        step_a, step_m = a['forward_matmul'] + a['backward_matmul'], m['forward'] + m['backward']
        # training runs lm_head fused with the loss (linear_ce.py): its gradient matmuls, 4 M D V, run in the forward
        head = 4 * bc * T * cfg_obj.vocab_size * model.lm_head.weight.shape[1]
        opt_mm = optim.muon_flops(model) if cfg.optimizer == 'muon' else 0  # Newton-Schulz matmuls
        for phase, want, got in (('forward', a['forward_matmul'] + head, m['forward']),
                                 ('backward', a['backward_matmul'] - head, m['backward']),
                                 ('forward + backward', step_a, step_m), ('optimizer', opt_mm, m['optimizer'])):
            print(f"{phase:<20} {want:>20,} {got:>20,}   {'equal' if want == got else 'different'}")
        ok = step_a == step_m and m['optimizer'] == opt_mm
        print(f"(forward/backward as they run: the fused lm_head + loss forms its gradients, 4 M D V = {head:,}, "
              f"in the forward pass; the tables above keep the mathematical split)")
        print("measured by op: " + ', '.join(f"{op} {n:,}" for op, n in sorted(m['by_op'].items())))
        print(f"analytic only (the counter cannot see them: elementwise, norms, softmax, activations, loss, "
              f"recurrences/scans, optimizer): forward {a['forward'] - a['forward_matmul']:,}, "
              f"backward {a['backward'] - a['backward_matmul']:,}, optimizer {a['optimizer']:,}")
        if not ok:
            raise ValueError("the analytic matmul FLOPs of the step differ from torch's FlopCounterMode")


if __name__ == '__main__':
    main(sys.argv[1:])
