"""
LSTM language model: the classic recurrent baseline (Zaremba et al. 2014, Merity et al. 2017) on torch.nn.LSTM, so the
recurrence runs in the maintained kernels (oneDNN on a CPU, cuDNN on a GPU), not in a hand-written cell.

Shapes: B batch, T time, E = n_embd, H = n_hidden, L = n_layer, V = vocab_size.

    x_t = Dropout(Emb(idx_t))                                   (B, E)    no positional embedding
    for layer l = 1 .. L (input u = x_t for l = 1, else Dropout(h^{l-1}_t)):
        [i, f, g, o] = W_ih u + b_ih + W_hh h^l_{t-1} + b_hh    (B, 4H)   torch's gate order
        c^l_t = sigmoid(f) * c^l_{t-1} + sigmoid(i) * tanh(g)   (B, H)
        h^l_t = sigmoid(o) * tanh(c^l_t)                        (B, H)
    logits_t = W_out Dropout(h^L_t) + b_out                     (B, V)
    h^l_{-1} = c^l_{-1} = 0 at the start of every sequence.

Dropout (p = dropout) on the embedding, between layers (nn.LSTM's own) and before the head, as Zaremba et al.
Init: torch's LSTM default U(-1/sqrt(H), 1/sqrt(H)) for the recurrent weights, then the biases zero except the
forget gate's b_ih = 1 (Jozefowicz et al. 2015: the cell starts by remembering); embedding and head U(-0.1, 0.1),
head bias 0.

tie_weights: the head reuses the embedding (W_out = Emb, needs E == H), as GPT here and AWD-LSTM (Press & Wolf 2017:
tying helps small LMs); New-LLM and ResNet-BK do not tie. On by default: at equal size it buys a wider LSTM.

Parameters (bias=True; torch keeps two bias vectors per layer, b_ih and b_hh, which only sum):
    V E + 4H (E + H) + 8H + (L-1) (4H (2H) + 8H) + H V + V        untied
    V E + 4H (E + H) + 8H + (L-1) (4H (2H) + 8H) + V              tied (E = H)
= 2,750,440 at V=1000, E=H=384, L=2, tied (the defaults, config/cmp_lstm.py); bias=False drops each 8H and the V.

Causal by construction. Training memory is O(T) (backprop through time); the state for streaming and generation is
O(1): (h, c), each (L, B, H). block_size only bounds the training windows: forward() and forward_state() accept any T.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

from flop_rules import Row, elementwise, linear
from model_base import LM


@dataclass
class LSTMConfig:
    vocab_size: int = 1000
    block_size: int = 63      # training window length only (train.py and bench/lengths.py set it); any T runs
    n_embd: int = 384         # E, token embedding
    n_hidden: int = 384       # H, LSTM state width
    n_layer: int = 2          # L, stacked LSTM layers
    dropout: float = 0.1
    bias: bool = True         # LSTM biases (b_ih, b_hh) and the head's
    tie_weights: bool = True  # head weight = embedding (needs n_embd == n_hidden)
    # the small config of the tests and --quick runs (model_base.py)
    TINY = dict(n_embd=12, n_hidden=20, n_layer=2, tie_weights=False)


class LSTM(LM):

    # parameter name -> component of flops.py's parameter breakdown, first match (a tied head is wte's)
    PARAM_GROUPS = [(r'wte\.', 'embedding'), (r'lstm\.\w+_l(\d+)$', 'layer +{}'), (r'lm_head\.', 'lm_head')]

    @staticmethod
    def is_recurrent(config):
        """True: (h, c) carries the whole past from window to window, O(1) in its length."""
        return True

    def __init__(self, config):
        super().__init__()
        if config.n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, not {config.n_layer}")
        if config.tie_weights and config.n_embd != config.n_hidden:
            raise ValueError(f"tie_weights needs n_embd == n_hidden, not {config.n_embd} and {config.n_hidden}")
        self.config = config
        E, H = config.n_embd, config.n_hidden
        self.wte = nn.Embedding(config.vocab_size, E)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(E, H, num_layers=config.n_layer, bias=config.bias, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(H, config.vocab_size, bias=config.bias)
        nn.init.uniform_(self.wte.weight, -0.1, 0.1)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        else:
            nn.init.uniform_(self.lm_head.weight, -0.1, 0.1)
        if config.bias:
            nn.init.zeros_(self.lm_head.bias)
            with torch.no_grad():
                for name, p in self.lstm.named_parameters():
                    if name.startswith('bias'):
                        p.zero_()
                        if name.startswith('bias_ih'):
                            p[H:2 * H] = 1.0  # forget gate (torch's order i, f, g, o)

    def _run(self, idx, state=None):
        """idx (B, T), state (h, c) each (L, B, H) or None (zeros) -> last layer's outputs (B, T, H) after dropout,
        the state after idx in the parameters' dtype (float32 also under autocast, so it can be passed back either
        way)."""
        out, (h, c) = self.lstm(self.drop(self.wte(idx)), state)
        dt = self.lm_head.weight.dtype
        # contiguous (the kernel's output is time-major): lm_head is then one addmm, rounded as linear_score rounds
        return self.drop(out.contiguous()), (h.to(dt), c.to(dt))

    def hidden(self, idx):
        """idx (B, T) int64 (any T) -> the last layer's outputs (B, T, H) from a zero state, what lm_head reads.
        forward() builds on it; eval.py scores it with linear_ce.linear_score, without the (B, T, V) logits."""
        return self._run(idx)[0]

    def forward_state(self, idx, state=None):
        """Streaming: state is (h, c) after the tokens before idx (None = zeros, the beginning). Returns logits
        (B, T, V) and the state after idx; passing it back continues the sequence exactly as one long forward
        would. Meant for eval mode (no dropout)."""
        h, state = self._run(idx, state)
        return self.lm_head(h), state

    @staticmethod
    def flop_rows(cfg, B, T, device_type='cuda'):
        """FLOPs of one forward + backward on a (B, T) batch by component, as flops.Row, by flops.py's rules.
        The kernels (oneDNN, cuDNN) run both matmuls of every step, W_ih u_t and W_hh h_{t-1}, summed, + 2 biases;
        the gates: 3 sigmoids, 2 tanh, c = f c + i g, h = o tanh(c), 9 per element of H."""
        M, E, H, V = B * T, cfg.n_embd, cfg.n_hidden, cfg.vocab_size
        drop = 1 if cfg.dropout > 0 else 0
        bias = 1 if cfg.bias else 0
        rows = [Row('embedding', 'wte lookup' + (', dropout' if drop else ''), 0, drop * M * E,
                    0, M * E + 2 * drop * M * E)]
        for l in range(cfg.n_layer):
            n_in = E if l == 0 else H
            rows += [Row(f'layer {l + 1}', f'W_ih u_t + W_hh h_t-1 (4H gates, {T} steps)', 8 * M * H * (n_in + H),
                         (4 + 8 * bias) * M * H, 16 * M * H * (n_in + H), 2 * (4 + 8 * bias) * M * H),
                     elementwise(f'layer {l + 1}', '3 sigmoids, 2 tanh, c = f c + i g, h = o tanh(c)' +
                                 (', dropout' if drop else ''), (9 + drop) * M * H)]
        rows += [linear('lm_head', 'lm_head Linear(H,V)' + (', tied to wte' if cfg.tie_weights else '') +
                        ' (fused with the loss)', M, H, V, cfg.bias),
                 elementwise('loss', 'cross-entropy', 5 * M * V)]
        return rows
