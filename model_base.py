"""
The model contract: what every language model of the registry (checkpoint.MODELS) provides, and the code they share.

A model is one file with
    a config dataclass   with vocab_size and block_size among its fields, and TINY: the small config (a dict of
                         fields) that the tests, the benchmarks' --quick and compare.py --quick build it with
    a model class        LM's subclass, built as Model(config), that sets self.config and self.lm_head (an nn.Linear
                         from the hidden width D to V) and implements:
        hidden(idx) -> (B, T, D)                  the states lm_head reads (eval.py scores them without the logits)
        forward_state(idx, state=None) -> (logits (B, T, V), state)
                                                  idx read as the continuation of what `state` summarises (None =
                                                  the beginning); generation.py builds on it
        is_recurrent(config) (static)             whether forward_state carries an O(1) state (eval.py --carry_state)
        flop_rows(config, B, T, device_type) (static)   [flops.Row] of one forward + backward (flops.py)
      and may set PARAM_GROUPS (optim.py) or override forward (ResNet-BK adds its auxiliary losses).
Adding a model: copy model_lstm.py, change it, add one line to checkpoint.MODELS; tests/test_models.py then runs the
shared interface tests (causality, streaming, generation, the fused loss, FLOPs) on it.
"""
import torch.nn as nn

import generation
from linear_ce import head_loss


class LM(nn.Module):

    def get_num_params(self):
        """All parameters; a tied lm_head weight is counted once (it is the token embedding)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        """idx (B, T) int64, targets (B, T) or None -> logits (B, T, V), mean CE loss (ignore_index=-1) or None.
        Training with targets and gradients on: the loss comes fused with lm_head (linear_ce.py) and logits is None
        (the (B, T, V) logits are never formed; train.py only uses the loss)."""
        return head_loss(self.hidden(idx), self.lm_head, targets, self.training)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Continue idx (B, T) by max_new_tokens sampled tokens; the prefix is read once (generation.py)."""
        return generation.generate(self, idx, max_new_tokens, temperature, top_k)
