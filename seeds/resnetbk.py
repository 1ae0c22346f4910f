"""
The ResNet-BK seed's code re-stated faithfully: the reference that tests/test_resnetbk.py and bench/bkcore.py
compare model_resnetbk.py against. Not for training: it is slow, sees future tokens, overflows for long sequences and
trains with a wrong BK gradient (seeds/README.md, bugs 1, 3, 4, 5). model_resnetbk.py is the real implementation.

What is re-stated, as the seed's code does it:
- seed_bk_diag: the theta/phi determinant recurrences of one sequence in complex128 with Python lists of 0-d
  tensors, G_ii = theta_i phi_i / (det + 1e-18), non-finite values set to 0, magnitudes above 50 scaled to 50,
  result cast to complex64;
- torch.func.vmap of it over the batch;
- seed_bk_features: that forward with the seed's blended "hybrid analytic" backward, which is what the seed trained
  with. The backward's formula lives once, in seeds/resnetbk_grad.py (also the model's bk_grad='seed');
- SeedResNetBK: the seed's model (exactly n_seq positions, MoE with a per-expert dispatch loop and a softmax over
  the chosen top-k logits, the BK features computed from the MoE output). Its parameters have the same names and
  shapes as model_resnetbk.ResNetBK at the seed config, so the same state_dict loads into both;
- seed_flop_rows: the seed's own FLOP formula (flops.py --convention seed; ResNetBK.seed_flop_rows points here).

    python -m seeds.resnetbk      # theta/phi overflow: the fraction of zero G at growing N
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import vmap

import bk_core
from flop_rules import Row
from seeds.resnetbk_grad import BKSeedBackward


def seed_bk_diag(a, b, c, z):
    """
    diag((T - zI)^-1) of one tridiagonal T by the seed's theta/phi recurrences.
    a (N,) diagonal, b (N-1,) super-, c (N-1,) sub-diagonal, z complex 0-d tensor -> (N,) complex64.
        theta_0 = 1, theta_1 = a'_0, theta_{i+1} = a'_i theta_i - c_{i-1} b_{i-1} theta_{i-1}     (a' = a - z)
        phi_{N-1} = 1, phi_{N-2} = a'_{N-1}, phi_i = a'_{i+1} phi_{i+1} - c_i b_i phi_{i+2}
        G_ii = theta_i phi_i / (theta_N + 1e-18)
    theta_N = det(T - zI) grows like |a'|^N, so for N >= ~1000 it overflows complex128 and every G becomes 0.
    """
    n = a.shape[-1]
    a_s = a.to(torch.complex128) - z.to(torch.complex128)
    bc = c.to(torch.complex128) * b.to(torch.complex128)
    theta = [torch.ones((), dtype=torch.complex128, device=a.device), a_s[0]]
    for i in range(1, n):
        theta.append(a_s[i] * theta[i] - bc[i - 1] * theta[i - 1])
    theta = torch.stack(theta)
    phi = [torch.zeros((), dtype=torch.complex128, device=a.device) for _ in range(n)]
    phi[n - 1] = torch.ones((), dtype=torch.complex128, device=a.device)
    if n > 1:
        phi[n - 2] = a_s[-1]
        for i in range(n - 3, -1, -1):
            phi[i] = a_s[i + 1] * phi[i + 1] - bc[i] * phi[i + 2]
    phi = torch.stack(phi)
    g = theta[:-1] * phi / (theta[-1] + torch.tensor(1e-18, dtype=torch.complex128, device=a.device))
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    mag = g.abs()
    g = g * torch.where(mag > 50.0, 50.0 / (mag + 1e-9), torch.ones_like(mag))
    return g.to(torch.complex64)


seed_bk_diag_batched = vmap(seed_bk_diag, in_dims=(0, 0, 0, None), out_dims=0)


def seed_bk_features(v):
    """The seed layer's BK step: v (B, N) clamped potential -> features (B, N, 2) float32 [Re G, Im G]; forward
    G = seed_bk_diag of the diagonal -2 + v, off-diagonals 1, z = 1j; backward the seed's (BKSeedBackward)."""
    B, N = v.shape
    off = torch.ones(B, N - 1, device=v.device)
    z = torch.tensor(1j, dtype=torch.complex64, device=v.device)
    return torch.view_as_real(BKSeedBackward.apply(v, lambda v_: seed_bk_diag_batched(v_ - 2.0, off, off, z)))


class SeedMoE(nn.Module):
    """The seed's SparseMoELayer: top-k of the router logits, gate = softmax over the k chosen logits (exactly 1 at
    top-1: the router gets no gradient), then a Python loop over experts gathering their tokens."""

    def __init__(self, d, n_experts, top_k, dropout):
        super().__init__()
        self.top_k = top_k
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Dropout(dropout),
                                                   nn.Linear(2 * d, d)) for _ in range(n_experts))
        self.router = nn.Linear(d, n_experts)

    def forward(self, x):
        B, N, D = x.shape
        xf = x.reshape(B * N, D)
        top_logits, top_idx = torch.topk(self.router(xf), self.top_k, dim=-1)
        gates = F.softmax(top_logits, dim=-1)
        out = torch.zeros_like(xf)
        for e, expert in enumerate(self.experts):
            mask = top_idx == e
            if not mask.any():
                continue
            tok, slot = mask.nonzero(as_tuple=True)
            out[tok] = out[tok] + expert(xf[tok]) * gates[tok, slot].unsqueeze(-1)
        return out.view(B, N, D)


class SeedLayer(nn.Module):
    def __init__(self, d, n_experts, top_k, dropout):
        super().__init__()
        self.moe = SeedMoE(d, n_experts, top_k, dropout)
        self.v_proj = nn.Linear(d, 1)
        self.out_proj = nn.Linear(2, d)
        self.bk_scale = nn.Parameter(torch.ones(()))

    def forward(self, u):
        f = self.moe(u)
        v = torch.clamp(self.v_proj(f).squeeze(-1), -3.0, 3.0)
        features = torch.clamp(seed_bk_features(v), -10.0, 10.0)
        return f + self.bk_scale * self.out_proj(features)


class SeedBlock(nn.Module):
    def __init__(self, d, n_experts, top_k, dropout):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.layer = SeedLayer(d, n_experts, top_k, dropout)

    def forward(self, h):
        return h + self.layer(self.ln(h))


class SeedResNetBK(nn.Module):
    """The seed's language model: forward(idx (B, n_seq)) -> logits (B, n_seq, V); n_seq must equal block_size."""

    def __init__(self, vocab_size=30000, block_size=128, n_embd=64, n_layer=4, n_experts=4, top_k=1, dropout=0.1):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(SeedBlock(n_embd, n_experts, top_k, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx):
        B, N = idx.shape
        assert N == self.block_size, f"n_seq mismatch: expected {self.block_size}, got {N}"
        h = self.wte(idx) + self.wpe(torch.arange(N, device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.lm_head(self.ln_f(h))


def seed_flop_rows(cfg, B, N):
    """
    flops.py's convention 'seed': the seed's own FLOP formula, for the seed's architecture (flags off), with
    T = B*N tokens. Forward: embedding T D; per layer LayerNorm 5 T D, gating 2 T D E, softmax 3 T E, experts
    T K (8 D^2 + 2 D), BK-Core 34 T, output projection 4 T D; final LayerNorm 5 T D; lm_head 2 T D V. Not
    counted: v_proj, residual adds, the loss. Backward: the Linear/MoE terms 2x, LayerNorm and embedding 1x,
    BK-Core 26 T.
    """
    flags = [f for f in ('use_act', 'use_multi_scale', 'use_sparse_bk') if getattr(cfg, f)]
    if flags:
        raise ValueError(f"the seed convention covers the seed's architecture only; turn off {', '.join(flags)}")
    T, D, E, K, V = B * N, cfg.n_embd, cfg.n_experts, cfg.top_k, cfg.vocab_size
    rows = [Row('embedding', 'embedding T*D', 0, T * D, 0, T * D)]
    for i in range(cfg.n_layer):
        g = f'layer {i}'
        rows += [Row(g, 'LayerNorm 5TD', 0, 5 * T * D, 0, 5 * T * D),
                 Row(g, 'router/gating 2TDE', 2 * T * D * E, 0, 4 * T * D * E, 0),
                 Row(g, 'softmax 3TE', 0, 3 * T * E, 0, 6 * T * E),
                 Row(g, f'experts (top_{K} of {E}) TK(8D^2+2D)', T * K * 8 * D * D, T * K * 2 * D,
                     2 * T * K * 8 * D * D, 2 * T * K * 2 * D),
                 Row(g, 'BK-Core 34N*B (backward 26N*B)', 0, 34 * T, 0, 26 * T),
                 Row(g, 'output projection Linear(2,D) 4TD', 4 * T * D, 0, 8 * T * D, 0)]
    rows += [Row('final norm', 'LayerNorm 5TD', 0, 5 * T * D, 0, 5 * T * D),
             Row('lm_head', 'lm_head 2TDV', 2 * T * D * V, 0, 4 * T * D * V, 0)]
    return rows


if __name__ == '__main__':
    # theta/phi overflow: the seed's G is all zeros at long N, while the stable form stays exact
    torch.manual_seed(0)
    print(f"{'N':>6} {'|theta_N|':>12} {'seed G == 0':>12} {'max |seed - exact|':>20}")
    for N in (128, 512, 1024, 2048, 4096):
        v = torch.rand(2, N, dtype=torch.float64) * 6 - 3
        off = torch.ones(2, N - 1, dtype=torch.float64)
        g_seed = seed_bk_diag_batched(v - 2.0, off, off, torch.tensor(1j, dtype=torch.complex128))
        g_exact = bk_core.bk_full_diagonal((v - 2.0) - 1j, bk_core.bk_causal_sequential)
        # log10 |theta_N| = -sum log10 |g_i| (theta_{i+1} / theta_i = 1 / g_i, g the causal recurrence)
        log_det = -torch.log10(bk_core.bk_causal_sequential((v[:1] - 2.0) - 1j).abs()).sum()
        print(f"{N:>6} {'1e%d' % int(log_det):>12} "
              f"{(g_seed == 0).double().mean().item():>12.3f} {(g_seed - g_exact).abs().max().item():>20.3e}")
