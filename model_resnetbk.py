"""
ResNet-BK: a language model with no attention. Each block mixes positions only through the "BK-Core", the diagonal
of the resolvent of a tridiagonal "Hamiltonian" whose potential is computed from the tokens.

    h = TokEmb(x) + PosEmb(0..T-1)                          # learned positions
    for each of L blocks:  h = h + Layer(LayerNorm(h))      # pre-norm
    logits = Linear(LayerNorm(h))                           # untied head, with bias

    Layer(u):                                               # u (B,T,D)
        f = MoE(u)                                          # E experts D->2D->D, top-k router
        v = clamp(Linear_{D->1}(f), -3, 3)                  # (B,T) one real "potential" per position
        s = (-2 + v) - z,  z = 1j                           # H = Laplacian (diag -2, off-diagonals 1) + diag(v)
        g = BK-Core(s)                                      # (B,T) complex, see below
        return f + bk_scale * Linear_{2->D}(clamp([Re g, Im g], -10, 10))

BK-Core (bk_core.py: the math, its forms and backwards): causal (default) g_i = [(H_{0..i} - zI)^-1]_{ii}, the
continued fraction g_i = 1 / (s_i - g_{i-1}), so g_i depends on v_0..v_i only; non-causal (the seed's, for
reproduction only) the full diagonal G_ii = [(H - zI)^-1]_{ii}, which depends on every v_j, so position i sees the
tokens after it (its own target included).

This is the ResNet-BK seed's model (4,146,120 parameters at its config) with its bugs fixed (seeds/README.md):
causal by default, exact gradients, a router that learns, any length <= block_size, and its optimisation flags made
real.

Reproduction only. Three options bring back one seed bug each; they exist to rerun the seed, not to train with:
    bk_causal=False   the full resolvent diagonal: position i depends on every token after it, its own target
                      included, so the training loss reads the answer (seeds/README.md, bug 1)
    bk_grad='seed'    the seed's BK-Core backward: diagonal terms only, the wrong conjugate and an ad-hoc blended
                      inverse term, far from the true gradient (bug 3); seeds/resnetbk_grad.py
    router='seed'     the gate is a softmax over the chosen logits only, exactly 1 at top_k=1, so the router gets
                      no gradient and never learns; no balance loss either, the seed had none (bug 4)
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import bk_core
import bk_kernel
import seeds.resnetbk as seed
from flop_rules import Row, elementwise, linear
from linear_ce import head_loss
from model_base import LM


@dataclass
class ResNetBKConfig:
    vocab_size: int = 30000
    block_size: int = 128         # training window; forward() takes T <= block_size, forward_state() any T
    n_embd: int = 64
    n_layer: int = 4
    n_experts: int = 4
    top_k: int = 1
    dropout: float = 0.1          # inside the experts, as the seed
    bk_causal: bool = True        # False: the seed's full resolvent diagonal, which sees future tokens (reproduction)
    bk_grad: str = 'analytic'     # 'analytic' (exact O(N) adjoint, fastest) | 'autograd' | 'seed' (the seed's wrong one)
    bk_scan: str = 'auto'         # 'auto' | 'sequential' | 'parallel' (log-depth scan) | 'chunked' (two-level) | 'c'
    router: str = 'softmax'       # 'softmax': gate = router probability of the chosen expert (learns);
                                  # 'seed': softmax over the chosen logits only (a constant 1 at top_k=1)
    balance_loss: float = 0.01    # Switch load-balancing loss coefficient (training loss only); 0 = off; none with
                                  # router='seed' (the seed had none, and it would teach the router)
    use_act: bool = False         # adaptive computation time over the blocks, ponder cost in the training loss
    act_threshold: float = 0.99   # a token halts once its cumulative halting probability reaches this
    act_ponder_cost: float = 0.01
    use_multi_scale: bool = False  # each block adds a half-resolution BK layer over causally pooled pairs
    use_sparse_bk: bool = False   # learned mask of the positions where the BK chain runs; causal interpolation elsewhere
    sparse_bk_target: float = 0.5  # target fraction of positions where the BK-Core is computed
    sparse_bk_loss: float = 0.1   # coefficient of (mean mask probability - target)^2 in the training loss
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_embd=16, n_layer=2, n_experts=2)


def check_config(config):
    """Raise ValueError with one line unless the ResNet-BK options are valid together: the one check of them."""
    bk_core.check_bk_options(config.bk_grad, config.bk_scan)
    if config.router not in ('softmax', 'seed'):
        raise ValueError(f"router must be 'softmax' or 'seed', not {config.router!r}")
    if not 1 <= config.top_k <= config.n_experts:
        raise ValueError(f"top_k must be between 1 and n_experts={config.n_experts}, not {config.top_k}")
    if config.bk_scan == 'c':
        try:
            bk_kernel.load()
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    if config.use_sparse_bk and not config.bk_causal:
        raise ValueError("use_sparse_bk needs bk_causal=True (the seed's full diagonal has no chain to skip)")


def add_aux(aux, name, value):
    """aux[name] += value: the auxiliary training losses of all layers, by name."""
    aux[name] = aux[name] + value if name in aux else value


class MoE(nn.Module):
    """
    Mixture of experts, top-k routing. x (B, T, D) -> y (B, T, D), y_t = sum_{e in topk(r_t)} gate_{t,e} Expert_e(x_t)
    with r_t = Router(x_t) (E logits) and Expert_e = Linear(D, 2D) -> ReLU -> Dropout -> Linear(2D, D).
    router='softmax': gate_{t,e} = softmax(r_t)_e over all E experts, so the router gets gradient from the loss.
    router='seed':    gate = softmax over the k chosen logits only; at top_k=1 it is exactly 1 and the router never
                      learns (reproduction only, see the module docstring).
    Each expert runs only on its tokens (gather, Linear, scatter-add). Also returns the Switch Transformer
    load-balancing loss E * sum_e f_e P_e (f_e: fraction of routed slots to e, P_e: mean router probability),
    which is 1 for a uniform router and grows as routing collapses.
    """

    def __init__(self, config):
        super().__init__()
        D, E = config.n_embd, config.n_experts
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(D, 2 * D), nn.ReLU(), nn.Dropout(config.dropout),
                                                   nn.Linear(2 * D, D)) for _ in range(E))
        self.router = nn.Linear(D, E)
        self.top_k, self.router_mode = config.top_k, config.router

    def forward(self, x):
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        logits = self.router(xf).float()                                  # (M, E)
        probs = F.softmax(logits, dim=-1)
        top_logits, top_idx = torch.topk(logits, self.top_k, dim=-1)      # (M, k)
        gates = F.softmax(top_logits, dim=-1) if self.router_mode == 'seed' else probs.gather(1, top_idx)
        out = torch.zeros_like(xf)
        for e, expert in enumerate(self.experts):
            tok, slot = (top_idx == e).nonzero(as_tuple=True)      # no test for 0 tokens: it would break the graph
            out.index_add_(0, tok, (expert(xf[tok]) * gates[tok, slot].unsqueeze(1)).to(out.dtype))
        E = len(self.experts)
        frac = torch.bincount(top_idx.flatten(), minlength=E).float() / top_idx.numel()
        balance = E * (frac * probs.mean(0)).sum()
        return out.view(B, T, D), balance


class BKLayer(nn.Module):
    """
    The seed's MoE-ResNet-BK layer: u (B, T, D) -> f + bk_scale * Linear_{2->D}(clamp([Re g, Im g], -10, 10)),
    f = MoE(u), g = BK-Core(v), v = clamp(Linear_{D->1}(f), -3, 3). bk_scale: a learnable scalar, init 1.

    use_sparse_bk: a mask m_t in {0, 1} from u_t (Linear_{D->1}, Gumbel-sigmoid noise while training, threshold 0.5,
    straight-through gradient of the soft value) chooses the positions where the BK chain runs: where m_t = 0 the
    position is removed from the chain (g_t = g_{t-1}, as if its row/column were not in H) and its features come
    from a causal interpolator instead, Conv1d(3 -> 2, kernel 3, left-padded) over [m Re g, m Im g, m] of positions
    t-2..t. A sparsity loss sparse_bk_loss * (mean sigmoid(logit) - sparse_bk_target)^2 pulls the kept fraction
    to the target. What this saves: nothing here. The skipped positions still cost a step of the chain (a masked
    step in the loop or an identity matrix in the scan), and the mask and interpolator add work. A compacted chain
    (gather kept positions, run, scatter) would cut the BK-Core's own cost by the skipped fraction, but the BK-Core
    is a small part of a training step at the seed config (lm_head holds ~97% of the FLOPs), so it is not implemented.
    The flag changes what the model computes (a learned, input-dependent sparse chain), not its speed.
    """

    def __init__(self, config):
        super().__init__()
        D = config.n_embd
        self.config = config
        self.moe = MoE(config)
        self.v_proj = nn.Linear(D, 1)
        self.out_proj = nn.Linear(2, D)
        self.bk_scale = nn.Parameter(torch.ones(()))
        if config.use_sparse_bk:
            self.mask_proj = nn.Linear(D, 1)
            self.interp = nn.Conv1d(3, 2, kernel_size=3)

    @staticmethod
    def flop_rows(group, cfg, B, N):
        """FLOPs of one BKLayer over B sequences of N as flops.Row: MoE (router softmax, top-k, balance 7 per
        logit), v_proj, the BK-Core (the causal recurrence 2 + 7 per position, the seed's full diagonal 25), the
        sparse BK parts if on, the output projection."""
        M, D, E, K = B * N, cfg.n_embd, cfg.n_experts, cfg.top_k
        drop = 2 * D if cfg.dropout > 0 else 0
        chain, core = (9, 'causal recurrence') if cfg.bk_causal else (25, 'full diagonal, seed')
        seed_gate = cfg.router == 'seed'
        rows = [linear(group, 'router Linear(D,E)', M, D, E),
                elementwise(group, 'router softmax, top-k, balance' + (', gate softmax' if seed_gate else ''),
                            M * (7 * E + (5 * K if seed_gate else 0))),
                Row(group, f'experts Linear(D,2D)-ReLU-Linear(2D,D), top_{K} of {E}', 8 * M * K * D * D,
                    M * K * (7 * D + drop), 16 * M * K * D * D, 2 * M * K * (7 * D + drop)),
                linear(group, 'v_proj Linear(D,1), clamp', M, D, 1, extra=M),
                elementwise(group, f'BK-Core ({core})', M * (chain + (1 if cfg.use_sparse_bk else 0)))]
        if cfg.use_sparse_bk:
            rows += [linear(group, 'sparse mask Linear(D,1), Gumbel-sigmoid, sparsity loss', M, D, 1, extra=11 * M),
                     Row(group, 'sparse interpolator Conv1d(3,2,3), mix', 36 * M, 11 * M, 72 * M, 22 * M)]
        rows.append(linear(group, 'output projection Linear(2,D), clamp, bk_scale, add', M, 2, D,
                           extra=2 * M + 2 * M * D))
        return rows

    def forward(self, u, state, aux):
        """u (B, T, D); state None (start) or {'g': (B,) complex, 'interp': (B, 3, 2)}; aux: dict name -> auxiliary
        training loss, summed over the layers (this one adds its terms). -> out (B, T, D), new state."""
        cfg = self.config
        f, balance = self.moe(u)
        if self.training and cfg.balance_loss > 0 and cfg.router != 'seed':
            add_aux(aux, 'balance', cfg.balance_loss * balance)
        v = torch.clamp(self.v_proj(f).squeeze(-1), -3.0, 3.0)
        keep = m = None
        if cfg.use_sparse_bk:
            logit = self.mask_proj(u).squeeze(-1).float()                      # (B, T)
            noisy = logit
            if self.training:                                                  # Gumbel-sigmoid: logistic noise
                uni = torch.rand_like(logit).clamp(1e-6, 1 - 1e-6)
                noisy = logit + torch.log(uni) - torch.log1p(-uni)
            soft = torch.sigmoid(noisy)
            keep = soft > 0.5
            m = (keep.float() + soft - soft.detach()).unsqueeze(-1)            # straight-through (B, T, 1)
            if self.training and cfg.sparse_bk_loss > 0:
                add_aux(aux, 'sparsity', cfg.sparse_bk_loss * (torch.sigmoid(logit).mean() - cfg.sparse_bk_target) ** 2)
        g0 = None if state is None else state['g']
        feats = bk_core.bk_features(v, cfg.bk_causal, cfg.bk_grad, cfg.bk_scan, g0, keep)   # (B, T, 2) [Re g, Im g]
        new_state = {'g': feats[:, -1]}                                        # (B, 2) [Re, Im] of the last g
        if m is not None:
            x = torch.cat([feats * m, m], -1).transpose(1, 2)                  # (B, 3, T)
            past = x.new_zeros(x.shape[0], 3, 2) if state is None else state['interp'].to(x.dtype)
            x = torch.cat([past, x], 2)                                        # causal: left context only
            new_state['interp'] = x[:, :, -2:]
            interp = self.interp(x).transpose(1, 2).float()                    # (B, T, 2)
            feats = m * feats + (1 - m) * interp
        feats = torch.clamp(feats, -10.0, 10.0)
        return f + self.bk_scale * self.out_proj(feats), new_state


class Block(nn.Module):
    """
    Pre-norm residual block: h + Layer(LayerNorm(h)).

    use_multi_scale: before the full-resolution layer, u = LayerNorm(h) gets a half-resolution view of the past:
        c_j = w_0 * u_{2j} + w_1 * u_{2j+1}         (w = softmax of learned (2, D) weights; pair j is complete at 2j+1)
        y = BKLayer_coarse(c)                        (its own MoE and BK chain over the pairs, causal)
        u_t += Up(y_{j(t)})[parity of t],  j(t) = (t+1)//2 - 1   (the last pair complete at t; zeros before the first)
    Up = Linear(D, 2D), one D-vector per parity. Position t only uses pairs that end at or before t: causal.
    Cost: one more BK layer at half the positions, ~+50% of the layer work (not of the step: lm_head dominates);
    it buys a second chain whose steps span two tokens, not speed (the seed's "~2x speedup" cannot hold for a
    design that still runs the full-resolution layer).
    """

    def __init__(self, config):
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd)
        self.layer = BKLayer(config)
        if config.use_multi_scale:
            self.pool = nn.Parameter(torch.zeros(2, config.n_embd))
            self.coarse = BKLayer(config)
            self.up = nn.Linear(config.n_embd, 2 * config.n_embd)

    def multi_scale(self, u, state, aux):
        """u (B, T, D) -> coarse contribution (B, T, D), new state {'coarse', 'pending' (B, 0|1, D), 'last' (B, D)}."""
        B, T, D = u.shape
        if state is None:
            state = {'coarse': None, 'pending': u[:, :0], 'last': u.new_zeros(B, D)}
        p = state['pending'].shape[1]                              # 1 if the previous chunk ended mid-pair
        xs = torch.cat([state['pending'].to(u.dtype), u], 1)
        P = xs.shape[1] // 2
        w = F.softmax(self.pool, dim=0)                            # (2, D)
        c = (xs[:, :2 * P].reshape(B, P, 2, D) * w.to(u.dtype)).sum(2)
        y, coarse_state = c, state['coarse']
        if P > 0:
            y, coarse_state = self.coarse(c, coarse_state, aux)
        Y = torch.cat([state['last'].to(y.dtype).unsqueeze(1), y], 1)        # Y[k] = pair (first new pair - 1 + k)
        r = torch.arange(T, device=u.device)
        up = self.up(Y[:, (p + r + 1) // 2]).view(B, T, 2, D)               # pair complete at or before t
        parity = ((p + r) % 2).view(1, T, 1, 1).expand(B, T, 1, D)          # t odd: completes its pair
        out = up.gather(2, parity).squeeze(2)
        return out, {'coarse': coarse_state, 'pending': xs[:, 2 * P:], 'last': Y[:, -1]}

    def forward(self, h, state, aux):
        """h (B, T, D), state None or this block's dict -> h (B, T, D), new state."""
        u = self.ln(h)
        new_state = {}
        if hasattr(self, 'coarse'):
            extra, new_state['ms'] = self.multi_scale(u, None if state is None else state['ms'], aux)
            u = u + extra
        out, new_state['layer'] = self.layer(u, None if state is None else state['layer'], aux)
        return h + out, new_state


class ResNetBK(LM):
    """
    ResNet-BK language model (see the module docstring). PyTorch default initialisation, as the seed.

    use_act (adaptive computation time over the blocks, Graves 2016): after block l a halting unit gives
    p_l = sigmoid(Linear_{D->1}(h_l)) per token (bias init -2, so tokens start deep). A token halts at the first
    block where its cumulative p reaches act_threshold (or at the last block), using the remainder R = 1 - sum of
    its earlier p as the last weight; after halting its state stops updating. The output is the halting-weighted sum
    of its block states, and act_ponder_cost * mean(N + R) (N = blocks used) is added to the training loss.
    What it does not save: every block still runs on every position, because the next block's BK chain needs the
    states of all positions (halted ones frozen); on dense hardware skipping single tokens saves nothing. It gives a
    learned per-token depth, not speed.

    Precision, as GPT and New-LLM: the surrounding autocast (train.py's dtype) governs the dense parts (experts,
    projections, head), the BK-Core always runs in float32/complex64 with autocast off (bk_core), and logits are
    returned as float32. The seed's use_mixed_precision flag is train.py's dtype='bfloat16'.

    Streaming (forward_state), causal mode: the state holds, per block, the last g of its BK chain (plus the
    interpolator's last inputs with use_sparse_bk, the coarse chain, a half-finished pair and the last coarse output
    with use_multi_scale) and the absolute position. Every other part of the model is per position, so chunked
    calls give the same logits as one call. Past block_size the learned positions restart (position t uses
    wpe[t % block_size]) while the chains carry on: the model keeps its whole past, not a window.
    Non-causal (seed) mode has no recurrent state: the state is the last block_size tokens, recomputed each call.
    """

    # parameter name -> component of flops.py's parameter breakdown, first match
    PARAM_GROUPS = [(r'(wte|wpe)\.', 'embedding'), (r'(?:blocks|halt)\.(\d+)\.', 'layer {}'),
                    (r'ln_f\.', 'final norm'), (r'lm_head\.', 'lm_head')]

    @staticmethod
    def is_recurrent(config):
        """Causal: the chains' last g (and the multi-scale/sparse parts' state) carry the whole past, O(1) in its
        length. The non-causal seed mode has no state: each position sees its whole window."""
        return config.bk_causal

    def __init__(self, config):
        super().__init__()
        check_config(config)
        self.config = config
        D = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, D)
        self.wpe = nn.Embedding(config.block_size, D)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        if config.use_act:
            self.halt = nn.ModuleList(nn.Linear(D, 1) for _ in range(config.n_layer))
            for lin in self.halt:
                nn.init.constant_(lin.bias, -2.0)
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, config.vocab_size)
        self.last_aux = {}        # the last forward's auxiliary losses, detached (see forward)

    def _run(self, idx, states=None, pos0=0):
        """idx (B, T) at absolute positions pos0.. -> final hidden states (B, T, D) after ln_f, new block states,
        aux losses {name: scalar}."""
        B, T = idx.shape
        aux = {}
        states = states if states is not None else [None] * len(self.blocks)
        pos = (pos0 + torch.arange(T, device=idx.device)) % self.config.block_size
        h = self.wte(idx) + self.wpe(pos)
        new_states = []
        if not self.config.use_act:
            for block, st in zip(self.blocks, states):
                h, st = block(h, st, aux)
                new_states.append(st)
        else:
            h, new_states = self._run_act(h, states, aux)
        return self.ln_f(h), new_states, aux

    def _logits(self, h):
        return self.lm_head(h).float()

    def _run_act(self, h, states, aux):
        """Adaptive computation time over the blocks (see the class docstring). h (B, T, D) -> output (B, T, D)."""
        B, T, _ = h.shape
        cum = h.new_zeros(B, T, dtype=torch.float32)           # halting mass used so far
        running = torch.ones(B, T, dtype=torch.bool, device=h.device)
        out = torch.zeros_like(h, dtype=torch.float32)
        ponder = h.new_zeros(B, T, dtype=torch.float32)        # N + R per token
        new_states = []
        L = len(self.blocks)
        for l, (block, st) in enumerate(zip(self.blocks, states)):
            h_new, st = block(h, st, aux)
            new_states.append(st)
            h = torch.where(running.unsqueeze(-1), h_new, h)   # halted tokens stop updating
            p = torch.sigmoid(self.halt[l](h).squeeze(-1).float())
            halts = running & ((cum + p >= self.config.act_threshold) | (l == L - 1))
            remainder = 1.0 - cum
            w = torch.where(halts, remainder, torch.where(running, p, torch.zeros_like(p)))
            out = out + w.unsqueeze(-1) * h.float()
            ponder = ponder + running.float() + torch.where(halts, remainder, torch.zeros_like(p))
            cum = cum + w
            running = running & ~halts
        if self.training and self.config.act_ponder_cost > 0:
            add_aux(aux, 'ponder', self.config.act_ponder_cost * ponder.mean())
        return out.to(h.dtype), new_states

    def hidden(self, idx, aux=None):
        """idx (B, T) int64, T <= block_size -> the final hidden states ln_f(h) (B, T, D), what lm_head reads.
        aux: a dict that receives the auxiliary training losses (training mode, see forward). forward() builds on
        it; eval.py scores it with linear_ce.linear_score, without the (B, T, V) logits."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"cannot forward {T} positions, block_size is only {self.config.block_size} "
                             f"(use forward_state for longer sequences)")
        h, _, layer_aux = self._run(idx)
        if aux is not None:
            aux.update(layer_aux)
        return h

    def forward(self, idx, targets=None):
        """
        idx (B, T) int64 with T <= block_size, targets (B, T) or None -> logits (B, T, V) float32, loss.
        Training mode: loss = mean CE (ignore_index=-1) + sum of the auxiliary losses, the total to optimise, and,
        when gradients are on, the CE comes from linear_ce.py (its matmuls in autocast's dtype, as GPT's) and
        logits is None: the (B, T, V) logits are never formed (train.py only uses the loss; call model(idx) for
        logits). Eval mode: logits and the pure mean CE.
        Every call also sets self.last_aux = {name: float32 scalar, detached} for the auxiliary losses in the loss,
        summed over the layers and already scaled by their coefficients: 'balance' (balance_loss > 0 and
        router='softmax'), 'ponder' (use_act), 'sparsity' (use_sparse_bk); {} in eval mode or with none on. So
        CE = loss - sum(last_aux.values()), for logging CE beside the auxiliary terms.
        """
        aux = {}
        h = self.hidden(idx, aux)
        self.last_aux = {k: v.detach().float() for k, v in aux.items()}
        logits, loss = head_loss(h, self.lm_head, targets, self.training)
        if loss is not None and self.training and aux:
            loss = loss + sum(aux.values())
        return (None if logits is None else logits.float()), loss

    def forward_state(self, idx, state=None):
        """
        Streaming forward (eval mode). idx (B, T) continues the sequence summarised by state (None = the start).
        Causal: state = {'pos': tokens seen, 'blocks': per-block chain states}; any T, no window (see the class
        docstring). Non-causal (seed) mode: state = {'tokens': (B, <= block_size)}; the last block_size tokens are
        recomputed and the logits of the last min(T, block_size) positions returned.
        -> logits (B, T', V), new state
        """
        if not self.config.bk_causal:
            tokens = idx if state is None else torch.cat([state['tokens'], idx], 1)
            tokens = tokens[:, -self.config.block_size:]
            h, _, _ = self._run(tokens)
            return self._logits(h[:, -min(idx.shape[1], tokens.shape[1]):]), {'tokens': tokens}
        pos0 = 0 if state is None else state['pos']
        h, blocks, _ = self._run(idx, None if state is None else state['blocks'], pos0)
        return self._logits(h), {'pos': pos0 + idx.shape[1], 'blocks': blocks}

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules.
        The parallel forms of the BK recurrence (bk_scan) compute the same g with more work for fewer sequential
        steps; the O(N) recurrence is what is counted. Multi-scale: a coarse BKLayer over the T // 2 pairs."""
        M, D, V = B * T, cfg.n_embd, cfg.vocab_size
        rows = [Row('embedding', 'wte + wpe lookups, add', 0, M * D, 0, 2 * M * D)]
        for i in range(cfg.n_layer):
            g = f'layer {i}'
            rows.append(elementwise(g, 'LayerNorm', 7 * M * D))
            P = T // 2
            if cfg.use_multi_scale and P > 0:
                rows.append(elementwise(g, 'multi-scale pooling of position pairs', 3 * B * P * D))
                rows += [r._replace(name='coarse ' + r.name) for r in BKLayer.flop_rows(g, cfg, B, P)]
                rows.append(linear(g, 'multi-scale Linear(D,2D) up, add', M, D, 2 * D, extra=M * D))
            rows += BKLayer.flop_rows(g, cfg, B, T)
            rows.append(elementwise(g, 'residual', M * D))
            if cfg.use_act:
                rows.append(linear(g, 'ACT halting Linear(D,1), sigmoid, weighted sum', M, D, 1,
                                   extra=M * (3 * D + 8)))
        rows += [elementwise('final norm', 'LayerNorm', 7 * M * D),
                 linear('lm_head', 'lm_head Linear(D,V) (fused with the loss)', M, D, V),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows

    seed_flop_rows = staticmethod(seed.seed_flop_rows)      # flops.py's convention 'seed'
