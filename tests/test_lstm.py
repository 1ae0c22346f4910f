"""The LSTM baseline: the shared model interface (causal, streaming state, generation, fused loss), its parameter
count, and its FLOP rows against torch's counter."""
import pytest
import torch
from torch.nn import functional as F

import checkpoint as ckpt_io
import flops
from eval import is_recurrent
from model_lstm import LSTM, LSTMConfig

TINY = dict(vocab_size=37, n_embd=12, n_hidden=20, n_layer=2, block_size=16, dropout=0.0, tie_weights=False)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return LSTM(LSTMConfig(**{**TINY, **kw})).eval()


def test_param_count_formula():
    V, E, H = 37, 12, 20
    lstm = 4 * H * (E + H) + 8 * H + 4 * H * (2 * H) + 8 * H  # two layers, two bias vectors each
    assert tiny_model().get_num_params() == V * E + lstm + H * V + V
    assert tiny_model(n_embd=20, tie_weights=True).get_num_params() == V * 20 + 4 * H * 40 * 2 + 16 * H + V
    assert tiny_model(bias=False).get_num_params() == V * E + lstm - 16 * H + H * V
    assert LSTM(LSTMConfig()).get_num_params() == 2_750_440  # config/cmp_lstm.py: within 0.5% of New-LLM's 2,739,432
    assert ckpt_io.build_model('lstm', TINY).get_num_params() == tiny_model().get_num_params()  # in the registry


def test_tied_head_is_the_embedding_and_needs_equal_widths():
    model = tiny_model(n_embd=20, tie_weights=True)
    assert model.lm_head.weight is model.wte.weight
    with pytest.raises(ValueError, match='tie_weights needs n_embd == n_hidden'):
        LSTM(LSTMConfig(**dict(TINY, tie_weights=True)))


def test_forget_gate_bias_starts_at_one():
    model = tiny_model()
    H = 20
    for name, p in model.lstm.named_parameters():
        if name.startswith('bias_ih'):
            assert torch.all(p[H:2 * H] == 1) and torch.all(p[:H] == 0) and torch.all(p[2 * H:] == 0)
        elif name.startswith('bias_hh'):
            assert torch.all(p == 0)


def test_recurrent_for_eval():
    assert is_recurrent('lstm', TINY)


def test_causal():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 12))
    j = 7
    idx2 = idx.clone()
    idx2[:, j] = (idx[:, j] + 1) % 37
    a, _ = model(idx)
    b, _ = model(idx2)
    assert torch.equal(a[:, :j], b[:, :j])
    assert (a[:, j:j + 4] - b[:, j:j + 4]).abs().amax(dim=(0, 2)).min() > 1e-6  # and the state carries it on


def test_state_across_windows_equals_one_forward():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 40))  # longer than block_size 16: the recurrence has no length limit
    whole, (h_whole, c_whole) = model.forward_state(idx)
    logits, state = [], None
    for c0 in (0, 13, 14, 30):  # uneven chunks, one of a single token
        c1 = {0: 13, 13: 14, 14: 30, 30: 40}[c0]
        out, state = model.forward_state(idx[:, c0:c1], state)
        logits.append(out)
    torch.testing.assert_close(torch.cat(logits, dim=1), whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(state[0], h_whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(state[1], c_whole, rtol=0, atol=1e-5)
    assert h_whole.shape == c_whole.shape == (2, 2, 20)  # (L, B, H): O(1) in the length
    torch.testing.assert_close(model(idx)[0], whole, rtol=0, atol=1e-6)  # forward == forward_state from zeros


def test_greedy_generation_with_state_equals_recomputation():
    model = tiny_model()
    prompt = torch.randint(0, 37, (2, 5))
    out = model.generate(prompt, 20, temperature=0.0)
    assert out.shape == (2, 25) and torch.equal(out[:, :5], prompt)
    ref = prompt
    for _ in range(20):  # re-read the whole prefix from a zero state every step
        logits, _ = model(ref)
        ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)


@pytest.mark.parametrize('tie', [False, True])
def test_fused_training_loss_equals_eval_loss_and_gradients(tie):
    """Training mode (fused lm_head + CE of linear_ce.py, no logits) against autograd through F.cross_entropy."""
    model = tiny_model(n_embd=20 if tie else 12, tie_weights=tie)  # dropout 0: train and eval compute the same
    idx = torch.randint(0, 37, (3, 11))
    targets = torch.randint(0, 37, (3, 11))
    targets[0, 4:] = -1
    model.train()
    logits, loss = model(idx, targets)
    assert logits is None
    loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.eval()
    logits, eval_loss = model(idx, targets)
    ref = F.cross_entropy(logits.view(-1, 37), targets.view(-1), ignore_index=-1)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert eval_loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(fused[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_every_parameter_gets_gradient_in_training_mode():
    model = tiny_model(dropout=0.1).train()
    idx = torch.randint(0, 37, (4, 16))
    _, loss = model(idx, torch.randint(0, 37, (4, 16)))
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_dropout_only_in_training():
    model = tiny_model(dropout=0.5)
    idx = torch.randint(0, 37, (2, 8))
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_bf16_autocast_keeps_state_float32_and_close():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 10))
    ref, _ = model.forward_state(idx)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, (h, c) = model.forward_state(idx)
        _, loss = model.train()(idx, idx)   # the fused loss under autocast too
    assert h.dtype == c.dtype == torch.float32 and torch.isfinite(loss)
    assert (logits.float() - ref).abs().max() < 0.1 * ref.abs().max()
    model.eval().forward_state(idx, (h, c))  # the state goes back in without autocast


@pytest.mark.parametrize('kw', [dict(), dict(dropout=0.1, tie_weights=True, n_embd=20), dict(bias=False, n_layer=3)])
def test_matmul_flops_equal_flop_counter(kw):
    """One real training step under FlopCounterMode: oneDNN's LSTM layer counted by flops.py's registered formula
    (the kernel is one op per layer); the loss's head gradients move to the forward as for the other models."""
    model = tiny_model(**kw)
    B, T = 3, 13
    a = flops.step_flops('lstm', model.config, B, T, device_type='cpu', model=model)
    m = flops.measure_step(model, B, T, 37, 'cpu')
    head = 4 * B * T * 37 * model.config.n_hidden
    assert (a['forward_matmul'] + head, a['backward_matmul'] - head) == (m['forward'], m['backward'])
    assert m['optimizer'] == 0 and a['forward'] > a['forward_matmul']
    assert sum(a['params'].values()) == model.get_num_params()
    assert [k for k in a['params'] if k.startswith('layer')] == [f'layer {l + 1}' for l in range(model.config.n_layer)]


@pytest.mark.filterwarnings('ignore:TF32 acceleration')  # torch.backends.mkldnn.flags' notice
def test_matmul_flops_against_torch_native_lstm():
    """With oneDNN off, torch's native LSTM runs as plain mm/addmm, counted by torch's own formulas: the forward is
    the analytic count exactly; the backward is too, less the gradient into h_-1 = 0 (a constant, so torch skips
    it: 2 B H 4H per layer), which oneDNN and cuDNN compute."""
    model = tiny_model()
    B, T, H, L = 3, 13, 20, 2
    a = flops.step_flops('lstm', model.config, B, T, device_type='cpu', model=model)
    with torch.backends.mkldnn.flags(enabled=False):
        m = flops.measure_step(model, B, T, 37, 'cpu')
    head = 4 * B * T * 37 * H
    assert m['forward'] == a['forward_matmul'] + head
    assert m['backward'] == a['backward_matmul'] - head - L * 2 * B * H * 4 * H
