"""
Gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule", ICLR 2025): a
linear-time language model whose state is a matrix per head, written by the gated delta rule.

Per head, with q_t, k_t (d_k) L2-normalised, v_t (d_v), a decay alpha_t in (0, 1) and a write strength beta_t in
(0, 1), all computed from the token:
    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T          S (d_v, d_k)
    o_t = S_t q_t
alpha forgets the whole memory at once (Mamba-2's gate); the delta rule replaces the value stored under key k_t by
v_t (in a proportion beta_t) instead of adding to it, so the state keeps a key -> value map. alpha_t = exp(-a_t),
a_t = exp(A_log) softplus(w_a . x_t + dt_bias) per head; beta_t = sigmoid(w_b . x_t + b_b).

Two forms of the same map (gated_delta_recurrent, gated_delta_chunked; tests/test_gdn.py holds them equal):
- recurrent: one position at a time, O(1) state (d_k x d_v per head): forward_state one token at a time, generation;
- chunked (training): the WY / UT form. Within a chunk of C positions, with g_i = sum_{j<=i} log alpha_j (from the
  chunk's start), gamma_i = exp(g_i), S_0 the state entering the chunk and u_i = beta_i (v_i - alpha_i S_{i-1} k_i)
  the value a position writes (S_i = alpha_i S_{i-1} + u_i k_i^T), every u_i is found at once from one triangular
  solve:   (I + A) U = diag(beta) V - diag(beta gamma) K S_0^T,   A_ij = beta_i exp(g_i - g_j) k_i . k_j  (j < i)
  so U = U0 - W S_0^T with U0 = (I + A)^-1 diag(beta) V and W = (I + A)^-1 diag(beta gamma) K computed for all chunks
  in parallel. Then, chunk after chunk (T / C sequential steps of matmuls):
      O   = diag(gamma) Q S_0^T + (Q K^T * M) U,       M_ij = exp(g_i - g_j) for j <= i, else 0
      S_C = gamma_C S_0 + sum_j exp(g_C - g_j) u_j k_j^T
  (the code keeps the transposed state St = S^T (d_k, d_v), so that every product is a plain matmul). Padding T to
  a multiple of C with k = v = 0, beta = 0, alpha = 1 leaves the state as it was.

The block (the paper's): x + mixer(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). The mixer: q, k, v = SiLU(short causal
depthwise convolution (conv_size taps) of W_qkv x); the delta rule per head; o -> RMSNorm over d_v (shared gain),
times SiLU(W_g x) (the output gate), then W_o. Tied input embedding and lm_head, no positional embedding (the
convolutions and the recurrence order the tokens). The delta rule runs in float32 also under autocast (the state
accumulates over the whole sequence).

Causal by construction; any T runs (block_size is the training window only). forward_state carries, per layer, the
convolution's last conv_size - 1 inputs and St.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from flop_rules import Row, elementwise, linear
from model_base import LM


@dataclass
class GDNConfig:
    vocab_size: int = 1000
    block_size: int = 63       # training window length only; the recurrence runs for any length
    n_embd: int = 256          # D, the residual stream
    n_layer: int = 3
    n_head: int = 2            # H heads of the delta rule
    head_dim: int = 128        # d_k = d_v: each head's state is head_dim x head_dim
    conv_size: int = 4         # taps of the short causal convolutions on q, k, v
    mlp_hidden: int = 640      # F, the SwiGLU's width
    chunk_size: int = 16       # C, positions per chunk of the chunked (training) form
    dropout: float = 0.1
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_embd=16, n_layer=2, n_head=2, head_dim=8, mlp_hidden=32, chunk_size=4)


def gated_delta_recurrent(q, k, v, log_alpha, beta, St=None):
    """
    The gated delta rule one position at a time (the reference form; generation).
    q, k (B, H, T, d_k) L2-normalised, v (B, H, T, d_v), log_alpha, beta (B, H, T), St (B, H, d_k, d_v) = S^T or
    None (zeros) -> o (B, H, T, d_v), St after the last position. Per step: St <- alpha St, then
    St <- St + beta k (v - St^T k)^T, and o = St^T q.
    """
    B, H, T, dk = k.shape
    St = q.new_zeros(B, H, dk, v.shape[-1]) if St is None else St
    out = []
    for t in range(T):
        St = St * log_alpha[:, :, t, None, None].exp()
        kt = k[:, :, t]                                                        # (B, H, d_k)
        written = beta[:, :, t, None] * (v[:, :, t] - (kt.unsqueeze(-2) @ St).squeeze(-2))   # (B, H, d_v)
        St = St + kt.unsqueeze(-1) * written.unsqueeze(-2)
        out.append((q[:, :, t].unsqueeze(-2) @ St).squeeze(-2))
    return torch.stack(out, 2), St


def unit_lower_inverse(A):
    """
    (I + A)^-1 for A (..., C, C) strictly lower triangular: the triangular solve, in matmuls. A is nilpotent
    (A^C = 0), so (I + A)^-1 = sum_k (-A)^k = (I - A)(I + A^2)(I + A^4) ... (I + A^(2^(m-1))) with 2^m >= C:
    2 (m - 1) products of C x C matrices.
    """
    C = A.shape[-1]
    eye = torch.eye(C, dtype=A.dtype, device=A.device)
    power, inverse = -A, eye - A
    for _ in range(unit_lower_inverse_steps(C)):
        power = power @ power
        inverse = inverse @ (eye + power)
    return inverse


def unit_lower_inverse_steps(C):
    """The squarings unit_lower_inverse makes for C x C: m - 1, 2^m >= C."""
    return max(math.ceil(math.log2(C)) - 1, 0) if C > 1 else 0


def gated_delta_chunked(q, k, v, log_alpha, beta, St=None, chunk_size=16, final_state=True):
    """The same map as gated_delta_recurrent in the chunked WY form (module docstring): matmuls and one triangular
    solve within each chunk of chunk_size positions, T / chunk_size sequential steps across them. final_state=False:
    the state after the last chunk is not computed (training needs only o) and None is returned for it."""
    B, H, T, dk = k.shape
    dv, C = v.shape[-1], chunk_size
    pad = -T % C
    if pad:  # k = v = 0, beta = 0, alpha = 1: the padded positions leave the state as it was
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_alpha, beta = F.pad(log_alpha, (0, pad)), F.pad(beta, (0, pad))
    n = (T + pad) // C
    q, k, v = (x.reshape(B, H, n, C, -1) for x in (q, k, v))
    g = log_alpha.reshape(B, H, n, C).cumsum(-1)                               # log gamma_i within each chunk
    beta = beta.reshape(B, H, n, C)
    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = g.unsqueeze(-1) - g.unsqueeze(-2)                                   # g_i - g_j  (B, H, n, C, C)
    decay_strict = diff.masked_fill(lower.logical_not() | torch.eye(C, dtype=torch.bool, device=q.device),
                                    -math.inf).exp()                            # exp(g_i - g_j), j < i
    decay_lower = diff.masked_fill(lower.logical_not(), -math.inf).exp()       # exp(g_i - g_j), j <= i
    A = beta.unsqueeze(-1) * decay_strict * (k @ k.transpose(-1, -2))
    rhs = torch.cat((beta.unsqueeze(-1) * v, (beta * g.exp()).unsqueeze(-1) * k), -1)    # (B, H, n, C, d_v + d_k)
    U0, W = (unit_lower_inverse(A) @ rhs).split((dv, dk), -1)
    attn = (q @ k.transpose(-1, -2)) * decay_lower                             # (Q K^T * M)
    q_decayed = q * g.exp().unsqueeze(-1)
    k_to_end = k * (g[..., -1:] - g).exp().unsqueeze(-1)                       # exp(g_C - g_j) k_j
    out = []
    for c in range(n):
        if St is None:  # the empty state: its products are zero (and not computed)
            U = U0[:, :, c]
            out.append(attn[:, :, c] @ U)
        else:
            U = U0[:, :, c] - W[:, :, c] @ St                                  # (B, H, C, d_v)
            out.append(q_decayed[:, :, c] @ St + attn[:, :, c] @ U)
        if c == n - 1 and not final_state:
            St = None
        elif St is None:
            St = k_to_end[:, :, c].transpose(-1, -2) @ U
        else:
            St = g[:, :, c, -1, None, None].exp() * St + k_to_end[:, :, c].transpose(-1, -2) @ U
    return torch.cat(out, 2)[:, :, :T], St


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


# torch.compile traces the mixer once and stamps its code out for every layer: the first compiled step of
# config/cmp_gdn.py comes in less than half the time (bench/compile.py). A no-op in eager; torch < 2.8 lacks it.
compile_once = getattr(torch.compiler, 'nested_compile_region', lambda fn: fn)


class GatedDeltaMixer(nn.Module):
    """The token mixer of one block (module docstring): x (B, T, D), state -> (B, T, D), state."""

    def __init__(self, config):
        super().__init__()
        D, H, dh = config.n_embd, config.n_head, config.head_dim
        self.H, self.dh, self.K, self.chunk_size = H, dh, config.conv_size, config.chunk_size
        self.qkv = nn.Linear(D, 3 * H * dh, bias=False)
        self.conv = nn.Parameter(torch.zeros(config.conv_size, 3 * H * dh))  # depthwise taps, the last = current
        self.a_proj = nn.Linear(D, H, bias=False)
        self.b_proj = nn.Linear(D, H)
        self.A_log = nn.Parameter(torch.zeros(H))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.g_proj = nn.Linear(D, H * dh, bias=False)
        self.o_norm = RMSNorm(dh)
        self.o_proj = nn.Linear(H * dh, D, bias=False)

    @compile_once
    def forward(self, x, state=None, carry=True):
        """x (B, T, D); state (the last conv_size - 1 inputs (B, K - 1, 3 H dh), St (B, H, dh, dh)) or None ->
        (B, T, D), the state after x (None with carry=False: training needs none)."""
        B, T, _ = x.shape
        H, dh, K = self.H, self.dh, self.K
        u = self.qkv(x)                                                        # (B, T, 3 H dh)
        cache = u.new_zeros(B, K - 1, 3 * H * dh) if state is None else state[0].to(u.dtype)
        u = torch.cat((cache, u), 1)                                           # the K - 1 inputs before x first
        conv = sum(u[:, i:i + T] * self.conv[i].to(u.dtype) for i in range(K))  # causal depthwise, (B, T, 3 H dh)
        q, k, v = F.silu(conv).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4).float().unbind(0)  # (B, H, T, dh) each
        with torch.autocast(x.device.type, enabled=False):                     # the delta rule in float32
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            a = self.a_proj(x.float()).transpose(1, 2).contiguous()           # (B, H, T)
            log_alpha = -self.A_log.exp()[:, None] * F.softplus(a + self.dt_bias[:, None])
            beta = torch.sigmoid(self.b_proj(x.float()).transpose(1, 2).contiguous())
            St = None if state is None else state[1]
            args = (q, k, v, log_alpha, beta, St)
            o, St = (gated_delta_recurrent(*args) if T == 1 else
                     gated_delta_chunked(*args, self.chunk_size, final_state=carry))
        o = self.o_norm(o).transpose(1, 2) * F.silu(self.g_proj(x)).reshape(B, T, H, dh)      # (B, T, H, dh)
        return self.o_proj(o.reshape(B, T, H * dh).to(x.dtype)), (u[:, -(K - 1):], St) if carry else None


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        D, F_ = config.n_embd, config.mlp_hidden
        self.norm1, self.norm2 = RMSNorm(D), RMSNorm(D)
        self.mixer = GatedDeltaMixer(config)
        self.gate_up = nn.Linear(D, 2 * F_, bias=False)
        self.down = nn.Linear(F_, D, bias=False)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, state=None, carry=True):
        m, state = self.mixer(self.norm1(x), state, carry)
        x = x + self.drop(m)
        gate, up = self.gate_up(self.norm2(x)).chunk(2, -1)
        return x + self.drop(self.down(F.silu(gate) * up)), state


class GDN(LM):

    # parameter name -> component of flops.py's parameter breakdown, first match (the tied head is wte's)
    PARAM_GROUPS = [(r'wte\.', 'embedding'), (r'blocks\.(\d+)\.', 'layer +{}'), (r'norm_f\.', 'final norm')]

    @staticmethod
    def is_recurrent(config):
        """True: each layer's St and convolution inputs carry the whole past, O(1) in its length."""
        return True

    def __init__(self, config):
        super().__init__()
        if config.n_layer < 1 or config.conv_size < 2 or config.chunk_size < 1:
            raise ValueError(f"Gated DeltaNet needs n_layer >= 1, conv_size >= 2, chunk_size >= 1 (got "
                             f"{config.n_layer}, {config.conv_size}, {config.chunk_size})")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for block in self.blocks:  # residual branches scaled down with depth (GPT-2); the gates as Mamba-2's
            for w in (block.mixer.o_proj.weight, block.down.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * config.n_layer))
            mixer = block.mixer
            with torch.no_grad():
                mixer.A_log.copy_(torch.empty(config.n_head).uniform_(1, 16).log())
                dt = torch.empty(config.n_head).uniform_(math.log(1e-3), math.log(1e-1)).exp()
                mixer.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus(dt_bias) = dt
                nn.init.normal_(mixer.conv, std=config.conv_size ** -0.5)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _run(self, idx, states=None, carry=True):
        x = self.drop(self.wte(idx))
        new = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if states is None else states[i], carry)
            new.append(s)
        return self.norm_f(x), new

    def hidden(self, idx):
        """idx (B, T) int64 (any T) -> the final normed stream (B, T, D) from an empty state, what lm_head reads."""
        return self._run(idx, carry=False)[0]

    def forward_state(self, idx, state=None):
        """Streaming: state is each layer's (convolution inputs, St) after the tokens before idx (None = the
        beginning). One token runs the recurrent form, more the chunked one; either continues the sequence exactly
        as one long forward would. Meant for eval mode (no dropout)."""
        h, state = self._run(idx, state)
        return self.lm_head(h), state

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """
        FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules; M = B*T.
        The chunked delta rule on T padded to n chunks of C, per chunk and head (d = head_dim): K K^T, Q K^T and
        (Q K^T * M) U 2 C^2 d each; the solve's 2 (m - 1) products of C x C (unit_lower_inverse) 2 C^3 each and its
        product with [beta V | beta gamma K] 2 C^2 (2d); W St, Q St (not in the first chunk: it starts from the empty state)
        and the state update (not after the last: training keeps no state) 2 C d^2 each. Backward 2x.
        """
        M, D, H, d, F_, V, K = B * T, cfg.n_embd, cfg.n_head, cfg.head_dim, cfg.mlp_hidden, cfg.vocab_size, cfg.conv_size
        C = cfg.chunk_size
        n = -(-T // C)
        drop = 1 if cfg.dropout > 0 else 0
        chunks = B * H * n
        rows = [Row('embedding', 'wte lookup' + (', dropout' if drop else ''), 0, drop * M * D, 0,
                    M * D + 2 * drop * M * D)]
        for l in range(cfg.n_layer):
            g = f'layer {l + 1}'
            rule_mm = chunks * (2 * C * C * d * 3 + 4 * unit_lower_inverse_steps(C) * C ** 3 + 2 * C * C * 2 * d +
                                2 * C * d * d * 3) - B * H * 2 * C * d * d * 3   # no state to read in the first
            #                                                   chunk, none to write after the last (training)
            rows += [elementwise(g, 'RMSNorm (square, mean, rsqrt, scale, gain)', 5 * M * D),
                     linear(g, 'W_qkv', M, D, 3 * H * d, bias=False),
                     elementwise(g, f'causal depthwise convolution ({K} taps), SiLU', (2 * K + 4) * M * 3 * H * d),
                     elementwise(g, 'L2 norm of q, k', 2 * 4 * M * H * d),
                     linear(g, 'w_a (decay), softplus, exp(A_log) scale', M, D, H, bias=False, extra=5 * M * H),
                     linear(g, 'w_b (write strength), sigmoid', M, D, H, extra=4 * M * H),
                     Row(g, f'gated delta rule, chunked ({n} chunks of {C})', rule_mm, chunks * (12 * C * C + 6 * C * d),
                         2 * rule_mm, 2 * chunks * (12 * C * C + 6 * C * d)),
                     elementwise(g, 'output RMSNorm per head, SiLU gate', (5 + 5) * M * H * d),
                     linear(g, 'W_g (output gate)', M, D, H * d, bias=False),
                     linear(g, 'W_o', M, H * d, D, bias=False),
                     elementwise(g, 'residual add' + (', dropout' if drop else ''), (1 + drop) * M * D),
                     elementwise(g, 'RMSNorm', 5 * M * D),
                     linear(g, 'SwiGLU W_gate, W_up', M, D, 2 * F_, bias=False),
                     elementwise(g, 'SiLU(gate) * up', 5 * M * F_),
                     linear(g, 'SwiGLU W_down', M, F_, D, bias=False),
                     elementwise(g, 'residual add' + (', dropout' if drop else ''), (1 + drop) * M * D)]
        rows += [elementwise('final norm', 'RMSNorm', 5 * M * D),
                 linear('lm_head', 'lm_head Linear(D,V), tied to wte (fused with the loss)', M, D, V, bias=False),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows
