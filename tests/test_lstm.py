"""The LSTM baseline: its tied head, forget-gate init, float32 state under bf16, its size, and its FLOP rows against
torch's counter (the interface shared by every model is in test_models.py)."""
import pytest
import torch

import flops
from model_lstm import LSTM, LSTMConfig

TINY = dict(vocab_size=37, n_embd=12, n_hidden=20, n_layer=2, block_size=16, dropout=0.0, tie_weights=False)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return LSTM(LSTMConfig(**{**TINY, **kw})).eval()


def test_param_count_at_the_defaults():
    """config/cmp_lstm.py's size (the formula itself is checked in test_models.py)."""
    assert LSTM(LSTMConfig()).get_num_params() == 2_750_440  # within 0.5% of New-LLM's 2,739,432


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


def test_bf16_autocast_keeps_state_float32_and_close():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 10))
    ref, _ = model.forward_state(idx)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, (h, c) = model.forward_state(idx)
        _, loss = model.train()(idx, idx)   # the fused loss under autocast too
    assert h.dtype == c.dtype == torch.float32 and torch.isfinite(loss)
    assert h.shape == c.shape == (2, 2, 20)  # (L, B, H)
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
