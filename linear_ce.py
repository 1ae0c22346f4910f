"""
The training loss of all three models, computed without the (B*T, V) logits.

    loss = mean over rows with y != -1 of CE(h W^T + b, y)          h (M, D), W (V, D), b (V,) or None, y (M,)

LinearCrossEntropy works through the rows in chunks, so that the logits, their softmax and their gradient are never
held in full: per chunk, logits = h_c W^T + b (m, V), lse = logsumexp, loss += lse - logit[y]; then in place
p = softmax - onehot(y) (zero for y = -1) and the gradients grad_h_c = p W, grad_W += p^T h_c, grad_b += sum(p) are
formed right away (backward only scales them). The FLOPs are those of Linear + cross_entropy + their backward; what it
saves is memory traffic and, on a CPU, the page faults of fresh (M, V) float32 buffers (245 MB at vocab 30000 and
16 x 128 positions, ~0.2 s each; the unfused step allocates 3-4 of them). For the same reason all chunks share one
logits buffer (440 vs 474 ms per call at 1 thread, 2048 x 64 x 30000, against a fresh buffer per chunk).
"""
import torch


class LinearCrossEntropy(torch.autograd.Function):
    """apply(h (M, D), W (V, D), b (V,) or None, y (M,) int64, mm_dtype) -> loss (float32 scalar). The matmuls run in
    mm_dtype (float32 or bfloat16/float16), the softmax and all sums in float32, autocast off inside."""

    CHUNK_ELEMENTS = 2 ** 22                              # logits per chunk (16 MB in float32; fastest of 2^19..2^24 on the CPU)

    @staticmethod
    def forward(ctx, h, W, b, y, mm_dtype):
        M, V = h.shape[0], W.shape[0]
        chunk = max(16, LinearCrossEntropy.CHUNK_ELEMENTS // V)
        need = ctx.needs_input_grad[:3]
        with torch.autocast(h.device.type, enabled=False):
            hm, Wm = h.to(mm_dtype), W.to(mm_dtype)
            bm = None if b is None else b.to(mm_dtype)
            grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if need[0] else None
            grad_W = torch.zeros(W.shape, dtype=torch.float32, device=W.device) if need[1] else None
            grad_b = torch.zeros(V, dtype=torch.float32, device=W.device) if b is not None and need[2] else None
            total = torch.zeros((), dtype=torch.float64, device=h.device)
            # one logits buffer for all chunks: a fresh (m, V) tensor per chunk costs its page faults every time
            buf = torch.empty(min(chunk, M), V, dtype=torch.float32, device=h.device)
            buf_mm = buf if mm_dtype == torch.float32 else torch.empty(buf.shape, dtype=mm_dtype, device=h.device)
            for r0 in range(0, M, chunk):
                hc, yc = hm[r0:r0 + chunk], y[r0:r0 + chunk]
                valid = (yc != -1).unsqueeze(1)
                yi = yc.clamp(min=0).unsqueeze(1)
                out = buf_mm[:hc.shape[0]]
                if bm is None:
                    torch.mm(hc, Wm.t(), out=out)
                else:
                    torch.addmm(bm, hc, Wm.t(), out=out)
                e = out if out.dtype == torch.float32 else buf[:hc.shape[0]].copy_(out)     # logits (m, V)
                mx = e.amax(1, keepdim=True)
                target = e.gather(1, yi) - mx
                e.sub_(mx).exp_()                                            # one exp pass: exp(logits - max)
                se = e.sum(1, keepdim=True)
                total += ((torch.log(se) - target) * valid).sum()            # lse - logit[y]
                if any(need):
                    p = e.mul_(valid / se)                                   # softmax, zero rows for y = -1
                    p.scatter_add_(1, yi, -valid.to(p.dtype))                # - onehot(y)
                    pm = p if mm_dtype == torch.float32 else out.copy_(p)
                    if need[0]:
                        grad_h[r0:r0 + chunk] = pm @ Wm
                    if need[1]:
                        if mm_dtype == torch.float32:
                            grad_W.addmm_(pm.t(), hc)
                        else:
                            grad_W += pm.t() @ hc
                    if grad_b is not None:
                        grad_b += p.sum(0)
        n = (y != -1).sum().clamp(min=1).to(torch.float32)
        ctx.save_for_backward(*(g / n if g is not None else None for g in (grad_h, grad_W, grad_b)))
        ctx.dtypes = (h.dtype, W.dtype, None if b is None else b.dtype)
        return (total / n).to(torch.float32)

    @staticmethod
    def backward(ctx, grad_loss):
        grads = [None if g is None else (g * grad_loss).to(dt) for g, dt in zip(ctx.saved_tensors, ctx.dtypes)]
        return grads[0], grads[1], grads[2], None, None


def linear_cross_entropy(h, weight, bias, targets, mm_dtype=None):
    """h (..., D), weight (V, D), bias (V,) or None, targets (...) int64 (-1 = ignored) -> mean CE, float32 scalar.
    mm_dtype None: the autocast dtype if autocast is on for h's device (train.py's dtype), else float32."""
    if mm_dtype is None:
        dev = h.device.type
        mm_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32
    return LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, bias, targets.reshape(-1), mm_dtype)
