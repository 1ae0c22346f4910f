"""
The New-LLM seed's model as its code wrote it: a Python loop over the tokens, each step a concat, an nn.Sequential
MLP, the vocabulary projection and three separate context heads. The reference that tests/test_newllm.py checks
model_newllm.NewLLM against (logits, gradients, dropout, the carried context) and that bench/newllm.py times as the
seed's speed. Same math and parameter count as NewLLM, the parameters in the seed's layout:

    c_0 = 0                                                  (B, C)
    for t in 0 .. T-1:
        h = fnn(concat(token_embedding(x_t), c_t))           (B, H)   L x (Linear -> ReLU -> Dropout)
        logits_t = token_output(h)                           (B, V)
        f, i = sigmoid(forget_gate(h)), sigmoid(input_gate(h))
        d = context_update(h)                                (B, C)
        c_{t+1} = clamp(context_norm(f * c_t + i * d), -10, 10)

from_newllm / to_newllm map parameters (or their gradients) between this layout and NewLLM's, which fuses the three
heads into one Linear(H, 3C) with rows [forget; input; update].
"""
import torch
import torch.nn as nn

HEADS = ('forget_gate', 'input_gate', 'context_update')      # the row blocks of NewLLM's context_head, in order
RENAMES = {'token_embedding': 'wte', 'token_output': 'lm_head', 'context_norm': 'ln_c'}   # seed -> NewLLM


class SeedNewLLM(nn.Module):

    def __init__(self, config):
        super().__init__()
        E, C, H, L = config.n_embd, config.n_context, config.n_hidden, config.n_layer
        self.token_embedding = nn.Embedding(config.vocab_size, E)
        layers = []
        for i in range(L):
            layers += [nn.Linear(E + C if i == 0 else H, H), nn.ReLU(), nn.Dropout(config.dropout)]
        self.fnn = nn.Sequential(*layers)
        self.token_output = nn.Linear(H, config.vocab_size)
        self.forget_gate = nn.Linear(H, C)
        self.input_gate = nn.Linear(H, C)
        self.context_update = nn.Linear(H, C)
        self.context_norm = nn.LayerNorm(C)
        self.context_dim = C

    def forward(self, input_ids, context=None, masks=None):
        """
        input_ids (B, T) -> logits (B, T, V), the context after the last token (B, C).
        context: (B, C), the context before input_ids (None: zeros, as the seed started every window).
        masks: (L, T, B, H) 0/1 keep masks applied instead of the Dropout layers' own draws (tests use NewLLM's).
        """
        B, T = input_ids.shape
        token_embeds = self.token_embedding(input_ids)
        if context is None:
            context = torch.zeros(B, self.context_dim, dtype=token_embeds.dtype, device=input_ids.device)
        logits_list = []
        for t in range(T):
            hidden = torch.cat([token_embeds[:, t, :], context], dim=-1)
            if masks is None:
                hidden = self.fnn(hidden)
            else:
                for l in range(len(self.fnn) // 3):
                    linear, relu, dropout = self.fnn[3 * l:3 * l + 3]
                    hidden = relu(linear(hidden)) * masks[l, t] / (1 - dropout.p)
            logits_list.append(self.token_output(hidden))
            forget = torch.sigmoid(self.forget_gate(hidden))
            inp = torch.sigmoid(self.input_gate(hidden))
            delta = self.context_update(hidden)
            context = self.context_norm(forget * context + inp * delta)
            context = torch.clamp(context, -10.0, 10.0)
        return torch.stack(logits_list, dim=1), context


def from_newllm(tensors):
    """{NewLLM name: tensor} (e.g. its state_dict) -> {seed name: tensor}, for SeedNewLLM.load_state_dict."""
    back = {v: k for k, v in RENAMES.items()}
    out = {}
    for name, t in tensors.items():
        module, kind = name.rsplit('.', 1)
        if module == 'context_head':
            out.update({f'{head}.{kind}': part for head, part in zip(HEADS, t.chunk(3))})
        elif module.startswith('mlp.'):
            out[f'fnn.{3 * int(module[4:])}.{kind}'] = t
        else:
            out[f'{back[module]}.{kind}'] = t
    return out


def to_newllm(tensors):
    """{seed name: tensor} (parameters or their gradients) -> {NewLLM name: tensor}: the inverse of from_newllm."""
    out = {}
    for name, t in tensors.items():
        module, kind = name.rsplit('.', 1)
        if module in HEADS:
            continue
        out[f'mlp.{int(module[4:]) // 3}.{kind}' if module.startswith('fnn.') else f'{RENAMES[module]}.{kind}'] = t
    for kind in ('weight', 'bias'):
        out[f'context_head.{kind}'] = torch.cat([tensors[f'{head}.{kind}'] for head in HEADS])
    return out
