"""
Autoregressive generation, shared by every model (the library; sample.py is its command line).

Every model implements `forward_state(idx, state=None) -> (logits, state)`: it reads the tokens `idx` (B, T) as the
continuation of the sequence that `state` summarises (None = the beginning) and returns the logits (B, T, V) and the
state after the last token. For New-LLM the state is one context vector per sequence, for causal ResNet-BK the last
resolvent entry of every layer, for GPT the key/value cache. Generation is then the same for all of them: read the
prompt once, then feed back one sampled token at a time, so no model ever re-reads its prefix.
"""
import torch


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """logits (B, V) -> next token ids (B, 1). temperature 0 means greedy (argmax)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, state=None, on_token=None, stop_tokens=None):
    """
    Continue idx (B, T) by max_new_tokens sampled tokens; returns (B, T + n) with n <= max_new_tokens.

    state: the model's state before idx (None = idx starts the sequence); the final state is not returned here,
           use generate_with_state for that (chat mode).
    on_token(tok): called with each new token (B, 1) as soon as it is sampled (streaming output).
    stop_tokens: a set of ids; generation stops early once every sequence has produced one of them.
    """
    out, _ = generate_with_state(model, idx, max_new_tokens, temperature, top_k, state, on_token, stop_tokens)
    return out


@torch.no_grad()
def generate_with_state(model, idx, max_new_tokens, temperature=1.0, top_k=None, state=None, on_token=None,
                        stop_tokens=None):
    """As generate(), but also returns the model state after the last returned token: (idx, state)."""
    was_training = model.training
    model.eval()
    logits, state = model.forward_state(idx, state)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for i in range(max_new_tokens):
        idx_next = sample_next(logits[:, -1, :], temperature, top_k)
        idx = torch.cat((idx, idx_next), dim=1)
        if on_token is not None:
            on_token(idx_next)
        if stop_tokens is not None:
            done |= torch.isin(idx_next[:, 0], torch.tensor(sorted(stop_tokens), device=idx.device))
            if bool(done.all()):
                # the state must still include the stop token, so the next turn continues after it
                _, state = model.forward_state(idx_next, state)
                break
        logits, state = model.forward_state(idx_next, state)
    model.train(was_training)
    return idx, state
