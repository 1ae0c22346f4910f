"""
New-LLM: a language model without attention. One context vector c (C floats per sequence) is carried from token to
token; it is the whole memory of the model. Exactly the seed's math (../shared/SEEDS.md §1), computed fast.

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
is one (B*T, H) x (H, V) matmul after the loop. The parameters are the seed's, so the count is too:
    V E + (E+C) H + H + (L-1)(H^2 + H) + H V + V + 3 (H C + C) + 2 C
= 2,739,432 at V=1000, E=256, H=512, C=256, L=6 and 4,840,936 at C=512, L=12.

Causal by construction (c_t depends on x_0 .. x_{t-1} only). Training memory is O(T) (backprop through time);
the state for streaming and generation is O(1): the context (B, C). The recurrence has no length limit:
block_size only bounds the training windows, forward() and forward_state() accept any T.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

import sampling


@dataclass
class NewLLMConfig:
    vocab_size: int = 1000
    block_size: int = 63   # training window length only; the recurrence itself runs for any length
    n_embd: int = 256      # E, token embedding
    n_hidden: int = 512    # H, width of the MLP
    n_context: int = 256   # C, the context vector
    n_layer: int = 6       # L, Linear-ReLU-Dropout layers of the MLP
    dropout: float = 0.1


class NewLLM(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.n_layer >= 1
        self.config = config
        E, C, H = config.n_embd, config.n_context, config.n_hidden
        self.wte = nn.Embedding(config.vocab_size, E)
        # mlp[0].weight is W1 (H, E+C): columns :E read the token, E: read the context (the seed's concat order)
        self.mlp = nn.ModuleList([nn.Linear(E + C, H)] + [nn.Linear(H, H) for _ in range(config.n_layer - 1)])
        self.drop = nn.Dropout(config.dropout)
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

    def get_num_params(self):
        """All parameters (there is no positional embedding and nothing is tied)."""
        return sum(p.numel() for p in self.parameters())

    def _run(self, idx, c=None):
        """idx (B, T), c (B, C) or None (zeros) -> hidden states h (B, T, H), last context (B, C).
        Under autocast the matmuls run in low precision while c stays float32 (LayerNorm runs in float32)."""
        B, T = idx.size()
        E, C = self.config.n_embd, self.config.n_context
        W1 = self.mlp[0].weight
        # token half of layer 1 for all positions at once, time-major so that xw[t] is a contiguous (B, H)
        xw = F.linear(self.wte(idx.t()), W1[:, :E], self.mlp[0].bias)          # (T, B, H)
        Wc = W1[:, E:].t()                                                     # (C, H)
        if torch.is_autocast_enabled(idx.device.type):
            # a slice is not a leaf, so autocast would re-cast it at every step; cast it once here
            Wc = Wc.to(torch.get_autocast_dtype(idx.device.type))
        if c is None:
            c = torch.zeros(B, C, device=idx.device, dtype=self.ln_c.weight.dtype)
        hs = []
        for t in range(T):
            h = self.drop(F.relu(torch.addmm(xw[t], c, Wc)))     # (B, H)
            for layer in self.mlp[1:]:
                h = self.drop(F.relu(layer(h)))
            hs.append(h)
            g = self.context_head(h)                                           # (B, 3C)
            fi = torch.sigmoid(g[:, :2 * C])
            c = self.ln_c(fi[:, :C] * c + fi[:, C:] * g[:, 2 * C:]).clamp(-10.0, 10.0)
        return torch.stack(hs, dim=1), c

    def forward(self, idx, targets=None):
        """idx (B, T) int64 (any T), targets (B, T) or None -> logits (B, T, V), mean CE (ignore_index=-1) or None.
        Every sequence starts from a zero context, like every window of the seed."""
        h, _ = self._run(idx)
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def forward_state(self, idx, state=None):
        """Streaming: state is the context (B, C) after the tokens before idx (None = zeros, the beginning).
        Returns logits (B, T, V) and the context after idx. There is no window: passing the state back runs the
        recurrence on past any length, exactly as one long forward would. Meant for eval mode (no dropout)."""
        h, c = self._run(idx, state)
        return self.lm_head(h), c

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Continue idx (B, T) by max_new_tokens sampled tokens; one context per sequence, the prefix is read once."""
        return sampling.generate(self, idx, max_new_tokens, temperature, top_k)
