"""
The training loss of every model, computed without the (B*T, V) logits, and the evaluation's scores the same way.

    loss = mean over rows with y != -1 of CE(h W^T + b, y)          h (M, D), W (V, D), b (V,) or None, y (M,)

LinearCrossEntropy works through the rows in chunks, so that the logits, their softmax and their gradient are never
held in full: per chunk, logits = h_c W^T + b (m, V) and p = softmax(logits) (one fused kernel), loss += -log p[y]
(= lse - logit[y]; rows where p[y] underflows to < 1e-30 take lse - logit[y] from the logits instead); then in place
p - onehot(y), and the gradients grad_h_c = (p - onehot) W, grad_W += (p - onehot)^T h_c, grad_b += sum of rows are
formed right away (backward only scales them); rows with y = -1 are zeroed on the small (m, D) sides. The FLOPs are
those of Linear + cross_entropy + their backward; what it saves is memory traffic and, on a CPU, the page faults of
fresh (M, V) float32 buffers (the unfused step allocates 3-4 of them, each as large as the logits). For the same
reason all chunks share one logits and one softmax buffer.

linear_score is the no-gradient twin for evaluation: per chunk, the logits, their log-softmax in float32 (what
F.cross_entropy computes) and their argmax, summed into (NLL, scored rows, correct argmax).
"""
from typing import Optional

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 2 ** 22                  # logits per chunk (16 MB in float32)


def logit_chunks(hm, Wm, bm):
    """
    The logits hm Wm^T + bm chunk by chunk (the caller turns autocast off); hm (M, D), Wm (V, D), bm (V,) or None,
    all in the matmul dtype. Yields (rows: slice of the chunk's rows, out: its logits (m, V) in that dtype, e: the
    same in float32, work: a float32 (m, V) scratch). Every chunk reuses the same buffers: fresh (m, V) tensors
    cost page faults.
    """
    M, V = hm.shape[0], Wm.shape[0]
    chunk = max(16, CHUNK_ELEMENTS // V)
    m0 = min(chunk, M)
    buf, work = (torch.empty(m0, V, dtype=torch.float32, device=hm.device) for _ in range(2))
    buf_mm = buf if hm.dtype == torch.float32 else torch.empty(m0, V, dtype=hm.dtype, device=hm.device)
    for r0 in range(0, M, chunk):
        hc = hm[r0:r0 + chunk]
        m = hc.shape[0]
        out = buf_mm[:m]
        if bm is None:
            torch.mm(hc, Wm.t(), out=out)
        else:
            torch.addmm(bm, hc, Wm.t(), out=out)
        yield slice(r0, r0 + m), out, out if out.dtype == torch.float32 else buf[:m].copy_(out), work[:m]


def matmul_dtype(h, mm_dtype=None):
    """mm_dtype, or if None: the autocast dtype if autocast is on for h's device (train.py's dtype), else float32."""
    if mm_dtype is not None:
        return mm_dtype
    dev = h.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32


@torch.library.custom_op('linlm::linear_cross_entropy', mutates_args=())
def fused_loss_op(h: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], y: torch.Tensor, mm_dtype: torch.dtype,
                  need_h: bool, need_W: bool, need_b: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LinearCrossEntropy's forward, one op that torch.compile holds opaque (its per-chunk loop and the CPU's
    underflow test are eager code): -> loss, and the float32 gradients of the mean loss for h, W, b (an empty
    tensor for one not needed)."""
    V = W.shape[0]
    with torch.autocast(h.device.type, enabled=False):
        hm, Wm = h.to(mm_dtype), W.to(mm_dtype)
        bm = None if b is None else b.to(mm_dtype)
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if need_h else None
        grad_W = torch.zeros(W.shape, dtype=torch.float32, device=W.device) if need_W else None
        grad_b = torch.zeros(V, dtype=torch.float32, device=W.device) if b is not None and need_b else None
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for rows, out, e, work in logit_chunks(hm, Wm, bm):                    # e: logits (m, V), float32
            hc, yc = hm[rows], y[rows]
            valid = (yc != -1).unsqueeze(1)
            yi = yc.clamp(min=0).unsqueeze(1)
            p = torch.ops.aten._softmax.out(e, 1, False, out=work)              # one fused pass
            p_y = p.gather(1, yi)
            nll = -torch.log(p_y)                                                 # lse - logit[y]
            tiny = p_y < 1e-30                        # p[y] underflowed: take those rows from the logits
            if e.device.type != 'cpu':                # no host sync per chunk: a read of the logits instead
                nll = torch.where(tiny, torch.logsumexp(e, 1, keepdim=True) - e.gather(1, yi), nll)
            elif tiny.any():
                r = tiny.squeeze(1)
                nll[r] = torch.logsumexp(e[r], 1, keepdim=True) - e[r].gather(1, yi[r])
            total += (nll * valid).sum()
            if need_h or need_W or grad_b is not None:
                p.scatter_add_(1, yi, torch.full_like(p[:, :1], -1.0))             # - onehot(y)
                pm = p if mm_dtype == torch.float32 else out.copy_(p)
                # rows with y = -1 count for nothing: zeroed on the small (m, D) / (m,) sides of the products
                if need_h:
                    grad_h[rows] = (pm @ Wm).float().mul_(valid)
                if need_W:
                    hv = hc * valid.to(hc.dtype)
                    if mm_dtype == torch.float32:
                        grad_W.addmm_(pm.t(), hv)
                    else:
                        grad_W += pm.t() @ hv
                if grad_b is not None:
                    grad_b.addmv_(p.t(), valid.squeeze(1).to(p.dtype))
    n = (y != -1).sum().clamp(min=1).to(torch.float32)
    return ((total / n).to(torch.float32),
            *(g / n if g is not None else h.new_empty(0, dtype=torch.float32) for g in (grad_h, grad_W, grad_b)))


@fused_loss_op.register_fake
def _(h, W, b, y, mm_dtype, need_h, need_W, need_b):
    f32 = dict(dtype=torch.float32)
    return (h.new_empty((), **f32), h.new_empty(h.shape if need_h else (0,), **f32),
            W.new_empty(W.shape if need_W else (0,), **f32),
            W.new_empty((W.shape[0],) if b is not None and need_b else (0,), **f32))


class LinearCrossEntropy(torch.autograd.Function):
    """apply(h (M, D), W (V, D), b (V,) or None, y (M,) int64, mm_dtype) -> loss (float32 scalar). The matmuls run in
    mm_dtype (float32 or bfloat16/float16), the softmax and all sums in float32, autocast off inside. The gradients
    are formed in the forward (fused_loss_op); backward only scales them."""

    @staticmethod
    def forward(ctx, h, W, b, y, mm_dtype):
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], b is not None and ctx.needs_input_grad[2]]
        loss, *grads = fused_loss_op(h, W, b, y, mm_dtype, *need)
        ctx.save_for_backward(*grads)
        ctx.need, ctx.dtypes = need, (h.dtype, W.dtype, None if b is None else b.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grads = [(g * grad_loss).to(dt) if need else None
                 for g, dt, need in zip(ctx.saved_tensors, ctx.dtypes, ctx.need)]
        return grads[0], grads[1], grads[2], None, None


def linear_cross_entropy(h, weight, bias, targets, mm_dtype=None):
    """h (..., D), weight (V, D), bias (V,) or None, targets (...) int64 (-1 = ignored) -> mean CE, float32 scalar.
    mm_dtype None: the autocast dtype if autocast is on for h's device (train.py's dtype), else float32."""
    return LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, bias, targets.reshape(-1),
                                    matmul_dtype(h, mm_dtype))


@torch.no_grad()
def linear_score(h, weight, bias, targets, mm_dtype=None):
    """
    h (..., D), weight (V, D), bias (V,) or None, targets (...) int64 (-1 = not scored) ->
    (summed NLL: float, scored targets: int, targets equal to the argmax of their logits: int). The logits are
    h W^T + b with the matmul in mm_dtype (as linear_cross_entropy), the NLL is their float32 log-softmax at the
    target: eval.score_logits of the full logits, one chunk of rows at a time.
    """
    mm_dtype = matmul_dtype(h, mm_dtype)
    h, y = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    nll = torch.zeros((), dtype=torch.float64, device=h.device)
    correct = torch.zeros((), dtype=torch.int64, device=h.device)
    with torch.autocast(h.device.type, enabled=False):
        hm, Wm = h.to(mm_dtype), weight.to(mm_dtype)
        bm = None if bias is None else bias.to(mm_dtype)
        for rows, _, e, work in logit_chunks(hm, Wm, bm):
            yc = y[rows]
            valid = yc != -1
            yi = yc.clamp(min=0).unsqueeze(1)
            lp = torch.ops.aten._log_softmax.out(e, 1, False, out=work)            # what F.cross_entropy takes
            nll -= torch.where(valid, lp.gather(1, yi).squeeze(1), 0.0).double().sum()
            if e.device.type != 'cpu':                    # no host sync per chunk
                correct += ((e.argmax(1) == yc) & valid).sum()
                continue
            # a CPU's max reduction is far cheaper than its argmax: argmax only the rows where y's logit is the max
            # (a tie with an earlier class makes that class the argmax, as in torch.argmax)
            hit = ((e.gather(1, yi).squeeze(1) == e.amax(1)) & valid).nonzero().squeeze(1)
            if len(hit):
                correct += (e[hit].argmax(1) == yc[hit]).sum()
    return nll.item(), int((y != -1).sum()), int(correct)


def head_loss(h, head, targets, training):
    """
    The tail of every model's forward(): h (B, T, D) through the nn.Linear head -> (logits, mean CE or None).
    Training with targets and gradients on: the CE from LinearCrossEntropy and logits None (the (B, T, V) logits are
    never formed; train.py only uses the loss). Otherwise: logits (B, T, V) and, given targets, the plain CE
    (ignore_index=-1, in float32).
    """
    if targets is not None and training and torch.is_grad_enabled():
        return None, linear_cross_entropy(h, head.weight, head.bias, targets)
    logits = head(h)
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
