"""
The interface every registered model shares (checkpoint.MODELS), tested once for all of them: causality, streaming
(forward_state in chunks == forward), greedy generation == recomputation, the fused training loss == the eval loss
with equal gradients, the evaluation's scoring of the hidden states == scoring the logits, the parameter count,
bf16 autocast reaching lm_head. A model added to the registry runs through these tests as it is (its default config
with dropout 0) at its config class's small TINY size. What is particular to one model stays in its own file.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import checkpoint as ckpt_io
import linear_ce
from eval import is_recurrent, score_batch, score_logits

V = 97
# each model's small config (its config class's TINY) at block_size 40; dropout is set to 0 for all (training and
# eval then compute the same function); ResNet-BK without its balance loss (the training loss is then the CE alone)
EXTRA = {'resnetbk': dict(balance_loss=0.0)}
# options that change what a model computes, run through the same tests (auxiliary loss weights 0: the training loss
# is then the cross-entropy alone)
VARIANTS = {
    'gpt': [dict(bias=False)],
    'resnetbk': [dict(use_act=True, act_ponder_cost=0.0), dict(use_multi_scale=True),
                 dict(use_sparse_bk=True, sparse_bk_loss=0.0), dict(bk_grad='analytic', bk_scan='parallel'),
                 dict(bk_grad='autograd', bk_scan='sequential'),
                 dict(use_act=True, use_multi_scale=True, use_sparse_bk=True, act_ponder_cost=0.0, sparse_bk_loss=0.0)],
    'lstm': [dict(n_embd=20, tie_weights=True), dict(bias=False, n_layer=3)],
}
# how far a logit may move when a later token changes: 0 (bit-exact) unless the arithmetic of a position depends on
# other positions' values: ResNet-BK's experts run on the tokens routed to them, so a changed route changes the
# matmul shapes (and so the rounding) of every token of those experts
PREFIX_TOL = {'resnetbk': 1e-5}
# chunked forward_state against forward under bf16 autocast: GPT attends over a key/value cache of another length
# than forward's, which bf16 rounds differently; the others compute the same products
STREAM_TOL_BF16 = {'gpt': 0.1}
# a carried state (and the logits read with it) against one long call, float32: Gated DeltaNet's chunked form
# rounds with where its chunks fall
STATE_TOL = {'gdn': 1e-5}
RECURRENT = {'gpt': False, 'newllm': True, 'resnetbk': True, 'lstm': True}   # what eval.py may carry

CASES = [pytest.param(name, kw, id=name + ''.join(f'-{k}={v}' for k, v in kw.items()))
         for name in ckpt_io.MODELS for kw in [{}] + VARIANTS.get(name, [])]
# ResNet-BK's sparse mask draws Gumbel noise in training mode: its training loss is not the eval loss
TRAIN_CASES = [c for c in CASES if not c.values[1].get('use_sparse_bk')]
AMP = [pytest.param(False, id='float32'), pytest.param(True, id='bf16')]
BASE = list(ckpt_io.MODELS)


def config(name, **kw):
    fields = {f.name for f in dataclasses.fields(ckpt_io.model_classes(name)[0])}
    args = dict(ckpt_io.model_classes(name)[0].TINY, block_size=40, vocab_size=V, **EXTRA.get(name, {}))
    args.update(kw)
    if 'dropout' in fields:
        args.setdefault('dropout', 0.0)
    return args


def build(name, **kw):
    """The model in eval mode with unit-scale weights (N(0, 1/fan_in) matrices, 1-D parameters moved by N(0, 0.01)):
    the models' own small inits would leave the state's and the later layers' share of the logits near rounding."""
    torch.manual_seed(0)
    model = ckpt_io.build_model(name, config(name, **kw))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def tokens(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def autocast(on):
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=on)


def flat_state(state):
    """The tensors and numbers of a forward_state state (nested tuples, lists, dicts), in order."""
    if isinstance(state, dict):
        return [x for k in sorted(state) for x in flat_state(state[k])]
    if isinstance(state, (list, tuple)):
        return [x for s in state for x in flat_state(s)]
    return [] if state is None else [state]


def grads(model):
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


@pytest.mark.parametrize('amp', AMP)
@pytest.mark.parametrize('name, kw', CASES)
def test_causal(name, kw, amp):
    """Changing token j leaves the logits before j as they were, and changes those of j and the positions after it."""
    model = build(name, **kw)
    a_idx = tokens(2, 40)
    b_idx = a_idx.clone()
    j = 23
    b_idx[:, j] = (b_idx[:, j] + 1) % V
    with autocast(amp):
        a, _ = model(a_idx)
        b, _ = model(b_idx)
    diff = (a.float() - b.float()).abs().amax(dim=(0, 2))                           # per position
    tol = PREFIX_TOL.get(name, 0.0)
    assert diff[:j].max() <= tol
    assert diff[j] > 1e-3 and diff[j:j + 4].min() > 1e-5


@pytest.mark.parametrize('amp', AMP)
@pytest.mark.parametrize('name, kw', CASES)
def test_forward_state_in_chunks_equals_forward(name, kw, amp):
    model = build(name, **kw)
    idx = tokens(2, 37)
    outs, state = [], None
    with autocast(amp):
        full, _ = model(idx)
        for a, b in ((0, 10), (10, 11), (11, 24), (24, 37)):      # uneven chunks, one token alone, odd and even
            logits, state = model.forward_state(idx[:, a:b], state)
            outs.append(logits)
    tol = STREAM_TOL_BF16.get(name, 1e-4) if amp else STATE_TOL.get(name, 1e-6) * max(1.0, full.abs().max().item())
    torch.testing.assert_close(torch.cat(outs, 1).float(), full.float(), rtol=0, atol=tol)


@pytest.mark.parametrize('name, kw', [c for c in CASES if RECURRENT.get(c.values[0], True)])
def test_recurrent_state_carries_any_length(name, kw):
    """A recurrent model (is_recurrent) reads a sequence longer than block_size in windows with its state carried,
    exactly as in one call, and its state does not grow with the length read."""
    model = build(name, **kw)
    if not model.is_recurrent(model.config):
        pytest.skip(f"{name} with {kw} has no carried state")
    idx = tokens(2, 100)                                         # 2.5 x block_size
    whole, whole_state = model.forward_state(idx)
    outs, state, sizes = [], None, []
    for a, b in ((0, 13), (13, 14), (14, 53), (53, 100)):
        logits, state = model.forward_state(idx[:, a:b], state)
        outs.append(logits)
        sizes.append([x.numel() for x in flat_state(state) if torch.is_tensor(x)])
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=0,
                               atol=STATE_TOL.get(name, 1e-6) * max(1.0, whole.abs().max().item()))
    for x, y in zip(flat_state(state), flat_state(whole_state), strict=True):
        if torch.is_tensor(x):
            torch.testing.assert_close(x, y, rtol=0, atol=STATE_TOL.get(name, 1e-6))
        else:
            assert x == y
    assert sizes[0] == sizes[2] and sizes[1] == sizes[3]        # after 13 and 53, 14 and 100 tokens: O(1) in length


def test_is_recurrent_as_eval_sees_it():
    for name in ckpt_io.MODELS:
        model = build(name)
        assert is_recurrent(name, config(name)) == model.is_recurrent(model.config) == RECURRENT.get(name, True)
    assert not is_recurrent('resnetbk', config('resnetbk', bk_causal=False))     # the seed's mode sees the future


@pytest.mark.parametrize('name, kw', CASES)
def test_greedy_generation_equals_recomputation(name, kw):
    """generate reads the prompt once and then one token per step through forward_state; recomputing the whole prefix
    with forward at every step must pick the same tokens."""
    model = build(name, **kw)
    prompt = tokens(2, 5)
    out = model.generate(prompt, 20, temperature=0.0)
    assert out.shape == (2, 25) and torch.equal(out[:, :5], prompt)
    ref = prompt
    for _ in range(20):
        logits, _ = model(ref)
        ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


@pytest.mark.parametrize('name, kw', TRAIN_CASES)
def test_fused_training_loss_equals_eval_loss_and_gradients(name, kw):
    """Training mode (the fused lm_head + CE of linear_ce.py, no logits) against autograd through F.cross_entropy on
    the eval logits; -1 targets are ignored by both."""
    model = build(name, **kw)
    idx, targets = tokens(3, 16), tokens(3, 16, seed=2)
    targets[0, :5] = -1
    targets[2, 11:] = -1
    model.train()
    logits, loss = model(idx, targets)
    assert logits is None
    loss.backward()
    fused = grads(model)
    model.zero_grad()
    model.eval()
    logits, eval_loss = model(idx, targets)
    assert logits.shape == (3, 16, V)
    ref = F.cross_entropy(logits.float().view(-1, V), targets.view(-1), ignore_index=-1)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-5 and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert eval_loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for n, g in grads(model).items():
        torch.testing.assert_close(fused[n], g, rtol=1e-4, atol=1e-6, msg=n)
        assert (fused[n] - g).abs().max() < 1e-5, n


@pytest.mark.parametrize('name', BASE)
def test_every_parameter_gets_gradient_in_training_mode(name):
    model = build(name, **({'dropout': 0.1} if 'dropout' in ckpt_io.config_fields(name) else {})).train()
    idx = tokens(4, 16)
    _, loss = model(idx, tokens(4, 16, seed=2))
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize('name', [n for n in BASE if 'dropout' in ckpt_io.config_fields(n)])
def test_dropout_only_in_training(name):
    model = build(name, dropout=0.5)
    idx = tokens(2, 8)
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize('amp', AMP)
@pytest.mark.parametrize('name, kw', CASES)
def test_scoring_hidden_states_equals_scoring_logits(name, kw, amp):
    """eval.py scores model.hidden through lm_head in chunks (linear_ce.linear_score): the same NLL, count and correct
    predictions as the (B, T, V) logits of forward, in float32 and under bf16 autocast (the head's matmul in bf16)."""
    model = build(name, **kw)
    idx, targets = tokens(4, 40), tokens(4, 40, seed=3)
    targets[1, 30:] = -1
    with torch.no_grad(), autocast(amp):
        logits, _ = model(idx)
        targets[0, :10] = logits[0, :10].argmax(-1)             # some targets predicted right
        want = score_logits(logits, targets)
        got = score_batch(model, idx, targets)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[1:] == want[1:] and want[2] >= 10


def num_params_gpt(c):
    C, L, N = c.n_embd, c.n_layer, c.block_size
    return V * C + N * C + (L * (12 * C * C + 13 * C) + 2 * C if c.bias else L * (12 * C * C + 2 * C) + C)


def num_params_newllm(c):
    E, C, H, L = c.n_embd, c.n_context, c.n_hidden, c.n_layer
    return V * E + (E + C) * H + H + (L - 1) * (H * H + H) + H * V + V + 3 * (H * C + C) + 2 * C


def num_params_lstm(c):
    E, H, L, b = c.n_embd, c.n_hidden, c.n_layer, 1 if c.bias else 0
    layers = 4 * H * (E + H) + (L - 1) * 4 * H * (2 * H) + b * 8 * H * L      # two bias vectors per layer
    return V * E + layers + (0 if c.tie_weights else H * V) + b * V


def num_params_resnetbk(c):
    D, E, L = c.n_embd, c.n_experts, c.n_layer
    moe = E * (D * 2 * D + 2 * D + 2 * D * D + D) + D * E + E
    bk_layer = moe + (D + 1) + (2 * D + D) + 1 + ((D + 1) + (3 * 2 * 3 + 2) if c.use_sparse_bk else 0)
    block = 2 * D + bk_layer + ((2 * D) + bk_layer + (D * 2 * D + 2 * D) if c.use_multi_scale else 0)
    return V * D + c.block_size * D + L * block + (L * (D + 1) if c.use_act else 0) + 2 * D + D * V + V


NUM_PARAMS = {'gpt': num_params_gpt, 'newllm': num_params_newllm, 'lstm': num_params_lstm,
              'resnetbk': num_params_resnetbk}


@pytest.mark.parametrize('name, kw', CASES)
def test_num_params(name, kw):
    """get_num_params counts every parameter once (a tied head is the embedding) and equals the model's formula."""
    model = build(name, **kw)
    unique = {id(p): p.numel() for m in model.modules() for p in m.parameters(recurse=False)}
    assert model.get_num_params() == sum(unique.values()) == sum(p.numel() for p in model.parameters())
    if name in NUM_PARAMS:
        assert model.get_num_params() == NUM_PARAMS[name](model.config)


@pytest.mark.parametrize('name', BASE)
def test_bf16_autocast_reaches_lm_head_and_fused_loss(name, monkeypatch):
    """One rule for every model: the surrounding autocast (train.py's dtype) sets the head's precision, in eval
    (lm_head), in training (the fused loss's matmuls) and in scoring (linear_score's matmuls)."""
    model = build(name)
    heads, fused, chunks = [], [], []
    model.lm_head.register_forward_hook(lambda mod, i, o: heads.append(o.dtype) and None)
    apply = linear_ce.LinearCrossEntropy.apply
    monkeypatch.setattr(linear_ce.LinearCrossEntropy, 'apply', lambda *a: fused.append(a[4]) or apply(*a))
    logit_chunks = linear_ce.logit_chunks       # the matmuls of the fused loss and of linear_score
    monkeypatch.setattr(linear_ce, 'logit_chunks', lambda hm, *a: chunks.append(hm.dtype) or logit_chunks(hm, *a))
    idx = tokens(2, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model.eval()
        model(idx)
        with torch.no_grad():
            score_batch(model, idx, idx)
        model.train()
        _, loss = model(idx, idx)
    assert heads == [torch.bfloat16] and fused == [torch.bfloat16] and chunks == [torch.bfloat16] * 2
    assert torch.isfinite(loss)
    model(idx, idx)
    with torch.no_grad():
        score_batch(model.eval(), idx, idx)
    assert fused[-1] == chunks[-1] == chunks[-2] == torch.float32     # autocast off: float32
