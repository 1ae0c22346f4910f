"""
The ResNet-BK seed's BK-Core backward, kept only to reproduce the seed's training (bk_core's bk_grad='seed', and
seeds/resnetbk.py's reference); it is wrong (seeds/README.md, bug 3). Its own file so that bk_core.py and
seeds/resnetbk.py both import it without importing each other.
"""
import torch


class BKSeedBackward(torch.autograd.Function):
    """
    The seed's BK-Core backward, kept only to reproduce the seed's training (bk_grad='seed'); it is wrong.
    Forward: g from a correct forward (`compute(v)`), v the real potential diagonal (B, N).
    Backward, as the seed's BKCoreFunction: with gG = dL/dRe g + 1j dL/dIm g (the seed stacks [Re g, Im g]),
        theoretical = -Re(gG * g^2)                      # diagonal term only, and g^2 where conj(g^2) is right
        hypothesis7 = -Re(gG / g2s),  g2s = g^2 rescaled to magnitude 1e-3 where |g^2| < 1e-3, then + 1e-6
        grad_v = 0.5 * theoretical + 0.5 * hypothesis7, non-finite -> 0, clamped to [-1000, 1000]
    It drops every off-diagonal term dG_ii/dv_j (j != i), conjugates wrongly and blends in an ad-hoc inverse
    term; its cosine similarity to the true gradient is 0.29-0.45 (seeds/README.md, bug 3).
    apply(v, compute): returns g (B, N) complex.
    """

    @staticmethod
    def forward(ctx, v, compute):
        with torch.no_grad():
            g = compute(v)
        ctx.save_for_backward(g)
        return g

    @staticmethod
    def backward(ctx, grad_g):
        (g,) = ctx.saved_tensors
        g2 = g * g
        mag = g2.abs()
        g2s = torch.where(mag < 1e-3, g2 / (mag + 1e-9) * 1e-3, g2)
        theoretical = -(grad_g * g2).real
        hypothesis7 = -(grad_g / (g2s + 1e-6)).real
        grad_v = 0.5 * theoretical + 0.5 * hypothesis7
        grad_v = torch.where(torch.isfinite(grad_v), grad_v, torch.zeros_like(grad_v)).clamp(-1000.0, 1000.0)
        return grad_v, None
