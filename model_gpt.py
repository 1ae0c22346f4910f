"""
GPT baseline, after nanoGPT's model.py: pre-LayerNorm blocks, causal self-attention through
scaled_dot_product_attention, a 4x GELU MLP, learned positions, input and output embeddings tied, GPT-2 init.

Shapes: B batch, T time, C = n_embd, nh = n_head, hs = C // nh, V = vocab_size.

    x = wte(idx) + wpe(pos)                        # (B, T, C)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = ln_f(x) @ wte.weight^T                # (B, T, V)

Parameters: V*C + block_size*C + n_layer*(12 C^2 + 13 C) + 2 C with bias; n_layer*(12 C^2 + 2 C) + C without.
forward_state() keeps a key/value cache, so generation costs one position per new token, not the whole prefix.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from flop_rules import Row, elementwise, linear
from model_base import LM


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, like GPT-2; False is a little better and faster
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_layer=2, n_head=2, n_embd=16)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x, cache=None):
        """x (B, T, C); cache None or (k, v) each (B, nh, P, hs) for the P positions before x.
        Returns y (B, T, C) and the new cache (B, nh, P + T, hs)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k = torch.cat((cache[0], k), dim=2)
            v = torch.cat((cache[1], v), dim=2)
        P = k.size(2) - T  # positions already in the cache
        dropout_p = self.attn_dropout if self.training else 0.0
        if P == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # query i sits at absolute position P + i and may see keys 0 .. P + i
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, cache


class GPT(LM):

    # parameter name -> component of flops.py's parameter breakdown, first match
    PARAM_GROUPS = [(r'transformer\.(wte|wpe)\.', 'embedding'), (r'transformer\.h\.(\d+)\.', 'layer {}'),
                    (r'transformer\.ln_f\.', 'final norm'), (r'lm_head\.', 'lm_head')]

    @staticmethod
    def is_recurrent(config):
        """False: the context is the block_size window (forward_state slides it), not a state carried on."""
        return False

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _run(self, idx, caches=None, pos0=0):
        """idx (B, T) at absolute positions pos0 .. pos0+T-1 -> final hidden states (B, T, C), new caches."""
        B, T = idx.size()
        if pos0 + T > self.config.block_size:
            raise ValueError(f"cannot run {pos0 + T} positions, block_size is only {self.config.block_size}")
        pos = torch.arange(pos0, pos0 + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        new_caches = []
        for i, block in enumerate(self.transformer.h):
            x, c = block(x, None if caches is None else caches[i])
            new_caches.append(c)
        return self.transformer.ln_f(x), new_caches

    def hidden(self, idx):
        """idx (B, T) int64, T <= block_size -> the final hidden states ln_f(x) (B, T, C), what lm_head reads.
        forward() builds on it; eval.py scores it with linear_ce.linear_score, without the (B, T, V) logits."""
        return self._run(idx)[0]

    def forward_state(self, idx, state=None):
        """
        Streaming forward with a key/value cache. state = {'caches': [(k, v)] * n_layer, 'tokens': (B, P)} or None.
        Past block_size the model keeps the last block_size tokens (a sliding window): the cache is rebuilt from
        them, and logits are returned for the last min(T, block_size) positions of idx.
        """
        tokens = idx if state is None else torch.cat((state['tokens'], idx), dim=1)
        if tokens.size(1) <= self.config.block_size:
            P = 0 if state is None else state['tokens'].size(1)
            x, caches = self._run(idx, None if state is None else state['caches'], pos0=P)
        else:  # window slides: positions shift, so every cached key is stale; recompute the window
            tokens = tokens[:, -self.config.block_size:]
            x, caches = self._run(tokens)
            x = x[:, -min(idx.size(1), tokens.size(1)):]
        return self.lm_head(x), {'caches': caches, 'tokens': tokens}

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """
        FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules; M = B*T.
        Attention scores q k^T and att @ v are 2 B nh T^2 hs each over the full T x T square (what the kernels
        run). Their backward: a fused SDPA kernel (CUDA, or a CPU without attention dropout) recomputes q k^T, so
        the scores cost 3x their forward there and 2x in the math fallback (a CPU with dropout > 0).
        """
        M, C, V, nh = B * T, cfg.n_embd, cfg.vocab_size, cfg.n_head
        hs = C // nh
        drop = 1 if cfg.dropout > 0 else 0
        fused = device_type != 'cpu' or not drop
        ln = (7 if cfg.bias else 6) * M * C
        rows = [Row('embedding', 'wte + wpe lookups, add' + (', dropout' if drop else ''), 0, M * C * (1 + drop),
                    0, 2 * M * C + 2 * drop * M * C)]
        for i in range(cfg.n_layer):
            g = f'layer {i}'
            scores, probs = 2 * B * nh * T * T * hs, B * nh * T * T
            rows += [elementwise(g, 'ln_1', ln),
                     linear(g, 'attention qkv Linear(C,3C)', M, C, 3 * C, cfg.bias),
                     Row(g, 'attention scores q k^T, scale, mask, softmax' + (', dropout' if drop else ''),
                         scores, (7 + drop) * probs, (3 if fused else 2) * scores, 2 * (7 + drop) * probs),
                     Row(g, 'attention values att v', scores, 0, 2 * scores, 0),
                     linear(g, 'attention proj Linear(C,C), residual', M, C, C, cfg.bias, extra=(1 + drop) * M * C),
                     elementwise(g, 'ln_2', ln),
                     linear(g, 'MLP Linear(C,4C), GELU', M, C, 4 * C, cfg.bias, extra=5 * M * 4 * C),
                     linear(g, 'MLP Linear(4C,C), residual', M, 4 * C, C, cfg.bias, extra=(1 + drop) * M * C)]
        rows += [elementwise('final norm', 'ln_f', ln),
                 linear('lm_head', 'lm_head Linear(C,V), tied to wte (fused with the loss)', M, C, V, bias=False),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows

    def crop_block_size(self, block_size):
        """Shrink the model's context (e.g. load a block_size 1024 model and use 256)."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
