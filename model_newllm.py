"""
New-LLM: a language model without attention. One context vector c (C floats per sequence) is carried from token to
token; it is the whole memory of the model. Exactly the seed's math (its code re-stated: seeds/newllm.py), computed
fast.

Shapes: B batch, T time, E = n_embd, C = n_context, H = n_hidden, L = n_layer, V = vocab_size.

    c_0 = 0                                            (B, C)   no positional embedding at all
    for t in 0 .. T-1:
        u_t = concat(Emb(x_t), c_t)                    (B, E+C)
        h_t = MLP(u_t)                                 (B, H)   L x (Linear -> ReLU -> Dropout), first E+C -> H,
                                                                then H -> H; no residuals
        logits_t = W_tok h_t + b_tok                   (B, V)
        f = sigmoid(W_f h_t + b_f)                     (B, C)   forget gate
        i = sigmoid(W_i h_t + b_i)                     (B, C)   input gate
        d = W_u h_t + b_u                              (B, C)   update
        c_{t+1} = clamp(LayerNorm(f * c_t + i * d), -10, 10)

Fast path, same numbers: layer 1 is split as W1 u = W1[:, :E] Emb(x_t) + W1[:, E:] c_t, and the token half
(bias included) is one (B*T, E) x (E, H) matmul for all positions before the loop; the loop runs only
c_t W1[:, E:]^T, layers 2..L and one fused Linear(H, 3C) whose rows are [W_f; W_i; W_u]; the vocabulary projection
is one (B*T, H) x (H, V) matmul after the loop. The loop's backward is written out (context_loop): it runs only the
step-to-step chain, and every weight gradient is one large matmul after it; all dropout masks are drawn at once.
The parameters are the seed's, so the count is too:
    V E + (E+C) H + H + (L-1)(H^2 + H) + H V + V + 3 (H C + C) + 2 C
= 2,739,432 at V=1000, E=256, H=512, C=256, L=6 and 4,840,936 at C=512, L=12.

Causal by construction (c_t depends on x_0 .. x_{t-1} only). Training memory is O(T) (backprop through time);
the state for streaming and generation is O(1): the context (B, C). The recurrence has no length limit:
block_size only bounds the training windows, forward() and forward_state() accept any T.
bench/newllm.py times a training step against the seed's own loop (seeds/newllm.py); results/ holds the numbers.
"""
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from flop_rules import Row, elementwise, linear
from model_base import LM


@dataclass
class NewLLMConfig:
    vocab_size: int = 1000
    block_size: int = 63   # training window length only; the recurrence itself runs for any length
    n_embd: int = 256      # E, token embedding
    n_hidden: int = 512    # H, width of the MLP
    n_context: int = 256   # C, the context vector
    n_layer: int = 6       # L, Linear-ReLU-Dropout layers of the MLP
    dropout: float = 0.1
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_embd=12, n_hidden=20, n_context=8, n_layer=3)


def dropout_keep(shape, p, device, dtype=torch.bool):
    """Bernoulli(1 - p) keep mask as dtype (bool, or 0/1 to multiply by) from 16 random bits per element, so p is
    rounded to 1/65536; one 64-bit word serves four elements. On a CPU the words come from numpy's PCG64, seeded by
    one draw of torch's generator (torch.manual_seed and a checkpoint's RNG state still decide the masks): torch's
    CPU generator takes about twice as long, and bernoulli_ longer still, for the 25M masks of a headline step."""
    n = math.prod(shape)
    words = (n + 3) // 4
    if torch.device(device).type == 'cpu':
        seed = int(torch.randint(0, 2 ** 62, ()))
        bits = torch.from_numpy(np.random.PCG64(seed).random_raw(words).view(np.int64))
    else:
        bits = torch.empty(words, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1)
    return torch.lt(bits.view(torch.int16)[:n].view(shape), round((1 - p) * 65536) - 32768,
                    out=torch.empty(shape, dtype=dtype, device=device))


# The per-token loop as two torch.library custom ops, forward and backward: torch.compile holds each as one opaque
# node (it would otherwise unroll T steps, and the backward's T steps, into one graph and recompile per length) and
# compiles the parallel work around them. The forward returns what the backward needs as extra outputs.

def context_loop(xw, c0, Wc, Wg, bg, gamma, beta, p, rest):
    """
    The per-token loop of New-LLM after the token half of layer 1, with backpropagation through time written out.

    context_loop(xw (T, B, H), c_0 (B, C), Wc (H, C), Wg (3C, H), bg (3C), gamma, beta (C), p, [W_2, b_2, .. W_L, b_L])
        -> h (B, T, H) the last MLP layer at every position, c_T (B, C)
    per step, with dropout written as h_l = k r_l, r_l = relu(a_l) m_l (mask m_l in {0, 1}, k = 1/(1-p)):
        a_1 = xw_t + c_t Wc^T;   a_l = r_{l-1} (k W_l)^T + b_l  (l = 2 .. L);   h_t = k r_L
        [f~, i~, d] = r_L (k Wg)^T + bg;   f, i = sigmoid(f~), sigmoid(i~);   s_t = f c_t + i d
        n_t = LayerNorm(s_t; gamma, beta);   c_{t+1} = clamp(n_t, -10, 10)
    backward, t = T-1 .. 0, dc = dL/dc_{t+1} (dL/dc_T comes from the caller, 0 in training):
        dn = dc [-10 <= n_t <= 10];   ds = LayerNorm backward(dn);   dc = ds f
        dg = [ds c_t f(1-f), ds d i(1-i), ds i];   dr_L = k dL/dh_t + dg (k Wg)
        da_l = dr_l [r_l > 0];   dr_{l-1} = da_l (k W_l)  (l = L .. 2);   dc += da_1 Wc;   dL/dxw_t = da_1
    The weight gradients need no step order: dW_l = k sum_t da_l,t^T r_{l-1,t} is one (H, T*B) x (T*B, H) matmul
    after the loop, instead of T rank-B updates that autograd would accumulate one by one (the main cost on a CPU).
    No mask is kept: where m_l dropped a unit, r_l = 0 and the ReLU test [r_l > 0] zeroes its gradient too.
    r_l (L, T, B, H), the gates, the LayerNorm inputs and the contexts are saved: O(T) memory, like autograd's.
    Matmuls and gates run in xw's dtype (bf16 under autocast), the context and its LayerNorm in c_0's (float32).
    A step is a chain of small (B, n) ops, so whatever needs no step order is done for all steps at once, outside the
    loop: the masks, and in the backward the clamp's pass mask and the factors [c f(1-f), d i(1-i), i] of ds.
    """

    h, cT, *_ = context_loop_op(xw, c0, Wc, Wg, bg, gamma, beta, p, rest)
    return h, cT


def _scaled_weights(Wc, Wg, bg, p, rest, mm):
    """The loop's weights cast to the matmul dtype mm once (bf16 under autocast), dropout's 1/(1-p) folded in."""
    k = 1.0 / (1.0 - p)
    WcT = Wc.to(mm).t()
    WgT = (Wg * k).to(mm).t() if p > 0 else Wg.to(mm).t()
    Ws = [((W * k).to(mm) if p > 0 else W.to(mm)).t() for W in rest[0::2]]
    return k, WcT, WgT, Ws, [b.to(mm) for b in rest[1::2]], bg.to(mm)


@torch.library.custom_op('linlm::newllm_context_loop', mutates_args=())
def context_loop_op(xw: torch.Tensor, c0: torch.Tensor, Wc: torch.Tensor, Wg: torch.Tensor, bg: torch.Tensor,
                    gamma: torch.Tensor, beta: torch.Tensor, p: float, rest: list[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                               torch.Tensor, torch.Tensor, torch.Tensor]:
    """context_loop's forward -> h, c_T, and for the backward rs, gates, cs, ss, ns, means, rstds."""
    T, B, H = xw.shape
    C = c0.size(1)
    L = len(rest) // 2 + 1
    mm = xw.dtype
    k, WcT, WgT, Ws, bs, bg = _scaled_weights(Wc, Wg, bg, p, rest, mm)
    rs = xw.new_empty(L, T, B, H)
    gates = xw.new_empty(T, B, 3 * C)
    cs = c0.new_empty(T + 1, B, C)
    ss, ns = c0.new_empty(T, B, C), c0.new_empty(T, B, C)
    means, rstds = c0.new_empty(T, B, 1), c0.new_empty(T, B, 1)
    cs[0] = c0
    keep = dropout_keep((L, T, B, H), p, xw.device, mm) if p > 0 else None  # every mask of the window at once
    with torch.autocast(xw.device.type, enabled=False):
        for t in range(T):
            r = torch.addmm(xw[t], cs[t].to(mm), WcT, out=rs[0, t]).relu_()
            for l in range(L):
                if l > 0:
                    r = torch.addmm(bs[l - 1], r, Ws[l - 1], out=rs[l, t]).relu_()
                if keep is not None:
                    r.mul_(keep[l, t])  # 0/1: several times faster than masked_fill_ on a CPU
            g = torch.addmm(bg, r, WgT, out=gates[t])
            g[:, :2 * C].sigmoid_()
            torch.addcmul(g[:, :C] * cs[t], g[:, C:2 * C], g[:, 2 * C:], out=ss[t])
            n, means[t], rstds[t] = torch.native_layer_norm(ss[t], (C,), gamma, beta, 1e-5)
            ns[t] = n
            torch.clamp(n, -10.0, 10.0, out=cs[t + 1])
    h = rs[L - 1].transpose(0, 1)
    h = h * k if p > 0 else h.clone(memory_format=torch.contiguous_format)   # never a view of rs (B = 1, T = 0)
    return h, cs[T].clone(), rs, gates, cs, ss, ns, means, rstds


@context_loop_op.register_fake
def _(xw, c0, Wc, Wg, bg, gamma, beta, p, rest):
    T, B, H = xw.shape
    C = c0.size(1)
    L = len(rest) // 2 + 1
    h = xw.new_empty(T, B, H).transpose(0, 1) if p > 0 else xw.new_empty(B, T, H)    # the strides of the real h
    return (h, c0.new_empty(B, C), xw.new_empty(L, T, B, H), xw.new_empty(T, B, 3 * C),
            c0.new_empty(T + 1, B, C), c0.new_empty(T, B, C), c0.new_empty(T, B, C), c0.new_empty(T, B, 1),
            c0.new_empty(T, B, 1))


@torch.library.custom_op('linlm::newllm_context_loop_backward', mutates_args=())
def context_loop_backward_op(dh_out: torch.Tensor, dc: Optional[torch.Tensor], rs: torch.Tensor, gates: torch.Tensor,
                             cs: torch.Tensor, ss: torch.Tensor, ns: torch.Tensor, means: torch.Tensor,
                             rstds: torch.Tensor, Wc: torch.Tensor, Wg: torch.Tensor, gamma: torch.Tensor,
                             beta: torch.Tensor, p: float, rest: list[torch.Tensor]) -> list[torch.Tensor]:
    """context_loop's backward (see its docstring) -> [dxw, dc_0, dWc, dWg, dbg, dgamma, dbeta, dW_2, db_2, ..]."""
    L, T, B, H = rs.shape
    C, mm, pd = cs.size(2), rs.dtype, Wg.dtype
    k, WcT, WgT, Ws, _, _ = _scaled_weights(Wc, Wg, Wg.new_empty(0), p, rest, mm)
    dr_out = (dh_out * k if k != 1.0 else dh_out).to(mm).transpose(0, 1).contiguous()  # (T, B, H)
    dc = torch.zeros_like(cs[0]) if dc is None else dc.to(cs.dtype, copy=True)     # an output: not the input
    W_back = [WcT.t()] + [W.t() for W in Ws]  # dL/d(input of layer l) = da_l W_back[l]
    f, i, d = gates.to(cs.dtype).split(C, dim=2)
    ds_to_dg = torch.cat([cs[:T] * f * (1 - f), d * i * (1 - i), i], dim=2).view(T, B, 3, C)  # dg = ds * this
    passed = ns.abs() <= 10.0  # where the clamp let the gradient through
    da = torch.empty_like(rs)
    dgates = torch.empty_like(gates)
    dns = torch.empty_like(ns)
    for t in range(T - 1, -1, -1):
        dn = torch.mul(dc, passed[t], out=dns[t])
        ds = torch.ops.aten.native_layer_norm_backward(dn, ss[t], [C], means[t], rstds[t], gamma, beta,
                                                       [True, False, False])[0]
        dg = torch.mul(ds.unsqueeze(1), ds_to_dg[t], out=dgates[t].view(B, 3, C)).view(B, 3 * C)
        dr = torch.addmm(dr_out[t], dg, WgT.t())
        for l in range(L - 1, -1, -1):
            torch.ops.aten.threshold_backward.grad_input(dr, rs[l, t], 0, grad_input=da[l, t])  # ReLU and mask
            dr = da[l, t] @ W_back[l]
        dc = ds * f[t] + dr  # layer 1 reads c_t through Wc: dr is the MLP's part of dL/dc_t
    flat = lambda x: x.reshape(-1, x.size(-1))  # (T, B, n) -> (T*B, n)
    grads = []
    for l in range(1, L):
        grads += [(flat(da[l]).t() @ flat(rs[l - 1])).to(pd) * k, flat(da[l]).sum(0).to(pd)]
    dWc = (flat(da[0]).t() @ flat(cs[:T]).to(mm)).to(pd)
    dWg = (flat(dgates).t() @ flat(rs[L - 1])).to(pd) * k
    dbg = flat(dgates).sum(0).to(pd)
    xhat = (ss - means) * rstds
    dgamma, dbeta = flat(dns * xhat).sum(0), flat(dns).sum(0)
    return [da[0], dc, dWc, dWg, dbg, dgamma, dbeta] + grads


@context_loop_backward_op.register_fake
def _(dh_out, dc, rs, gates, cs, ss, ns, means, rstds, Wc, Wg, gamma, beta, p, rest):
    return [torch.empty_like(t) for t in (rs[0], cs[0], Wc, Wg)] + [Wg.new_empty(Wg.size(0))] + \
        [torch.empty_like(t) for t in (gamma, beta, *rest)]


def _context_loop_setup(ctx, inputs, output):
    xw, c0, Wc, Wg, bg, gamma, beta, p, rest = inputs
    ctx.save_for_backward(*output[2:], Wc, Wg, gamma, beta, *rest)
    ctx.p = p


def _context_loop_backward(ctx, dh_out, dc, *_):
    rs, gates, cs, ss, ns, means, rstds, Wc, Wg, gamma, beta, *rest = ctx.saved_tensors
    dxw, dc0, dWc, dWg, dbg, dgamma, dbeta, *grads = context_loop_backward_op(
        dh_out, dc, rs, gates, cs, ss, ns, means, rstds, Wc, Wg, gamma, beta, ctx.p, rest)
    return dxw, dc0, dWc, dWg, dbg, dgamma, dbeta, None, grads


context_loop_op.register_autograd(_context_loop_backward, setup_context=_context_loop_setup)


class NewLLM(LM):

    # parameter name -> component of flops.py's parameter breakdown, first match
    PARAM_GROUPS = [(r'wte\.', 'embedding'), (r'mlp\.(\d+)\.', 'layer +{}'), (r'context_head\.', 'context heads'),
                    (r'ln_c\.', 'context LayerNorm'), (r'lm_head\.', 'lm_head')]

    @staticmethod
    def is_recurrent(config):
        """True: the context c carries the whole past from window to window, O(1) in its length."""
        return True

    def __init__(self, config):
        super().__init__()
        if config.vocab_size is None or config.n_layer < 1:
            raise ValueError(f"New-LLM needs a vocab_size and n_layer >= 1 (got {config.vocab_size}, {config.n_layer})")
        self.config = config
        E, C, H = config.n_embd, config.n_context, config.n_hidden
        self.wte = nn.Embedding(config.vocab_size, E)
        # mlp[0].weight is W1 (H, E+C): columns :E read the token, E: read the context (the seed's concat order)
        self.mlp = nn.ModuleList([nn.Linear(E + C, H)] + [nn.Linear(H, H) for _ in range(config.n_layer - 1)])
        self.lm_head = nn.Linear(H, config.vocab_size)
        self.context_head = nn.Linear(H, 3 * C)  # rows [forget gate; input gate; update], each H -> C
        self.ln_c = nn.LayerNorm(C)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # the seed: every Linear and Embedding weight N(0, 0.02), biases 0; LayerNorm keeps its default (1, 0)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear):
            torch.nn.init.zeros_(module.bias)

    def _run(self, idx, c=None):
        """idx (B, T), c (B, C) or None (zeros) -> hidden states h (B, T, H), last context (B, C).
        Under autocast the matmuls run in low precision while the context stays float32."""
        B, T = idx.size()
        E, C = self.config.n_embd, self.config.n_context
        W1 = self.mlp[0].weight
        # token half of layer 1 for all positions at once, time-major so that xw[t] is a contiguous (B, H)
        xw = F.linear(self.wte(idx.t()), W1[:, :E], self.mlp[0].bias)                  # (T, B, H)
        if c is None:
            c = torch.zeros(B, C, device=idx.device, dtype=self.ln_c.weight.dtype)
        p = self.config.dropout if self.training else 0.0
        rest = [t for layer in self.mlp[1:] for t in (layer.weight, layer.bias)]
        return context_loop(xw, c, W1[:, E:], self.context_head.weight, self.context_head.bias,
                            self.ln_c.weight, self.ln_c.bias, p, rest)

    def hidden(self, idx):
        """idx (B, T) int64 (any T) -> the MLP's last layer h_t (B, T, H) from a zero context, what lm_head reads.
        forward() builds on it; eval.py scores it with linear_ce.linear_score, without the (B, T, V) logits."""
        return self._run(idx)[0]

    def forward_state(self, idx, state=None):
        """Streaming: state is the context (B, C) after the tokens before idx (None = zeros, the beginning).
        Returns logits (B, T, V) and the context after idx. There is no window: passing the state back runs the
        recurrence on past any length, exactly as one long forward would. Meant for eval mode (no dropout)."""
        h, c = self._run(idx, state)
        return self.lm_head(h), c

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules.
        Layer 1 is counted as it runs: its token half as one matmul over B*T, its context half inside the loop;
        the context heads: 2 sigmoids and f*c + i*d, 5 per element of C; LayerNorm(C) and the clamp 8."""
        M, E, H, C, V = B * T, cfg.n_embd, cfg.n_hidden, cfg.n_context, cfg.vocab_size
        act = (2 if cfg.dropout > 0 else 1) * M * H  # ReLU (+ dropout)
        steps = f' ({T} steps)'
        rows = [Row('embedding', 'wte lookup', 0, 0, 0, M * E),
                linear('layer 1', 'token half W1[:, :E] x_t + b1 (one matmul over B*T)', M, E, H),
                linear('layer 1', 'context half W1[:, E:] c_t, ReLU' + (', dropout' if cfg.dropout > 0 else '') +
                       steps, M, C, H, bias=False, extra=M * H + act)]
        for l in range(2, cfg.n_layer + 1):
            rows.append(linear(f'layer {l}', 'Linear(H,H), ReLU' + (', dropout' if cfg.dropout > 0 else '') + steps,
                               M, H, H, extra=act))
        rows += [linear('context heads', 'Linear(H,3C), 2 sigmoids, f*c + i*d' + steps, M, H, 3 * C, extra=5 * M * C),
                 elementwise('context LayerNorm', 'LayerNorm(C), clamp' + steps, 8 * M * C),
                 linear('lm_head', 'lm_head Linear(H,V) (fused with the loss)', M, H, V),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows
