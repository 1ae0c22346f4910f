"""
The training loss of all three models, computed without the (B*T, V) logits.

    loss = mean over rows with y != -1 of CE(h W^T + b, y)          h (M, D), W (V, D), b (V,) or None, y (M,)

LinearCrossEntropy works through the rows in chunks, so that the logits, their softmax and their gradient are never
held in full: per chunk, logits = h_c W^T + b (m, V) and p = softmax(logits) (one fused kernel), loss += -log p[y]
(= lse - logit[y]; rows where p[y] underflows to < 1e-30 take lse - logit[y] from the logits instead); then in place
p - onehot(y), and the gradients grad_h_c = (p - onehot) W, grad_W += (p - onehot)^T h_c, grad_b += sum of rows are
formed right away (backward only scales them); rows with y = -1 are zeroed on the small (m, D) sides. The FLOPs are
those of Linear + cross_entropy + their backward; what it saves is memory traffic and, on a CPU, the page faults of
fresh (M, V) float32 buffers (245 MB at vocab 30000 and 16 x 128 positions, ~0.2 s each; the unfused step allocates
3-4 of them). For the same reason all chunks share one logits and one softmax buffer. Measured at 1 thread,
2048 x 64 x 30000, per call: 474 ms with a fresh buffer per chunk and max/exp/sum/scale as separate passes, 440 ms
with shared buffers, ~400 ms with the fused softmax.
"""
import torch


class LinearCrossEntropy(torch.autograd.Function):
    """apply(h (M, D), W (V, D), b (V,) or None, y (M,) int64, mm_dtype) -> loss (float32 scalar). The matmuls run in
    mm_dtype (float32 or bfloat16/float16), the softmax and all sums in float32, autocast off inside."""

    CHUNK_ELEMENTS = 2 ** 22              # logits per chunk (16 MB in float32; fastest of 2^19..2^24 on the CPU)

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
            # one logits and one softmax buffer for all chunks: fresh (m, V) tensors per chunk cost page faults
            m0 = min(chunk, M)
            buf, buf_p = (torch.empty(m0, V, dtype=torch.float32, device=h.device) for _ in range(2))
            buf_mm = buf if mm_dtype == torch.float32 else torch.empty(m0, V, dtype=mm_dtype, device=h.device)
            for r0 in range(0, M, chunk):
                hc, yc = hm[r0:r0 + chunk], y[r0:r0 + chunk]
                m = hc.shape[0]
                valid = (yc != -1).unsqueeze(1)
                yi = yc.clamp(min=0).unsqueeze(1)
                out = buf_mm[:m]
                if bm is None:
                    torch.mm(hc, Wm.t(), out=out)
                else:
                    torch.addmm(bm, hc, Wm.t(), out=out)
                e = out if out.dtype == torch.float32 else buf[:m].copy_(out)          # logits (m, V)
                p = torch.ops.aten._softmax.out(e, 1, False, out=buf_p[:m])          # one fused pass
                p_y = p.gather(1, yi)
                nll = -torch.log(p_y)                                                 # lse - logit[y]
                tiny = p_y < 1e-30                        # p[y] underflowed: take those rows from the logits
                if e.device.type != 'cpu':                # no host sync per chunk: a read of the logits instead
                    nll = torch.where(tiny, torch.logsumexp(e, 1, keepdim=True) - e.gather(1, yi), nll)
                elif tiny.any():
                    rows = tiny.squeeze(1)
                    nll[rows] = torch.logsumexp(e[rows], 1, keepdim=True) - e[rows].gather(1, yi[rows])
                total += (nll * valid).sum()
                if any(need):
                    p.scatter_add_(1, yi, torch.full_like(p[:, :1], -1.0))             # - onehot(y)
                    pm = p if mm_dtype == torch.float32 else out.copy_(p)
                    # rows with y = -1 count for nothing: zeroed on the small (m, D) / (m,) sides of the products
                    if need[0]:
                        grad_h[r0:r0 + chunk] = (pm @ Wm).float().mul_(valid)
                    if need[1]:
                        hv = hc * valid.to(hc.dtype)
                        if mm_dtype == torch.float32:
                            grad_W.addmm_(pm.t(), hv)
                        else:
                            grad_W += pm.t() @ hv
                    if grad_b is not None:
                        grad_b.addmv_(p.t(), valid.squeeze(1).to(p.dtype))
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
