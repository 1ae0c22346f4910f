"""model_gdn.py: the chunked (WY) delta rule equals the recurrent one, values and gradients; the model's own checks.
The shared interface (causality, streaming, generation, the fused loss, FLOP rows) is tests/test_models.py's and
tests/test_flops.py's, which take every registered model."""
import pytest
import torch
import torch.nn.functional as F

import model_gdn as gdn


def inputs(dtype, B=2, H=3, T=37, dk=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, T, dk, generator=g, dtype=dtype), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, dv, generator=g, dtype=dtype)
    log_alpha = -2 * torch.rand(B, H, T, generator=g, dtype=dtype)      # alpha in (e^-2, 1)
    beta = torch.rand(B, H, T, generator=g, dtype=dtype)
    St = torch.randn(B, H, dk, dv, generator=g, dtype=dtype)
    return q, k, v, log_alpha, beta, St


def naive(q, k, v, log_alpha, beta, St):
    """The paper's formula literally: S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t."""
    S, out = St.transpose(-1, -2), []
    eye = torch.eye(k.shape[-1], dtype=k.dtype)
    for t in range(k.shape[2]):
        kt, a, b = k[:, :, t, :, None], log_alpha[:, :, t, None, None].exp(), beta[:, :, t, None, None]
        S = a * S @ (eye - b * kt @ kt.transpose(-1, -2)) + b * v[:, :, t, :, None] @ kt.transpose(-1, -2)
        out.append((S @ q[:, :, t, :, None]).squeeze(-1))
    return torch.stack(out, 2), S.transpose(-1, -2)


@pytest.mark.parametrize('chunk', [1, 4, 16, 64])   # 37 positions: a partial last chunk, or one chunk longer than T
def test_chunked_equals_recurrent_float64(chunk):
    x = inputs(torch.float64)
    o_ref, s_ref = naive(*x)
    o_rec, s_rec = gdn.gated_delta_recurrent(*x)
    o_chk, s_chk = gdn.gated_delta_chunked(*x, chunk_size=chunk)
    for o, s in ((o_rec, s_rec), (o_chk, s_chk)):
        torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)


def test_chunked_equals_recurrent_float32():
    x = inputs(torch.float32, T=63)
    o_rec, s_rec = gdn.gated_delta_recurrent(*x)
    o_chk, s_chk = gdn.gated_delta_chunked(*x, chunk_size=16)
    assert ((o_chk - o_rec).norm() / o_rec.norm()).item() < 1e-5
    assert ((s_chk - s_rec).norm() / s_rec.norm()).item() < 1e-5


def test_chunked_gradients_equal_autograd_through_the_recurrence():
    x = [t.requires_grad_() for t in inputs(torch.float64, T=21)]
    w_o, w_s = torch.randn_like(x[2][..., :1].expand(-1, -1, -1, 6)), torch.randn_like(x[5])

    def grads(fn):
        o, s = fn(*x)
        return torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), x)
    for a, b in zip(grads(lambda *t: gdn.gated_delta_chunked(*t, chunk_size=8)), grads(gdn.gated_delta_recurrent)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_state_carried_across_calls_equals_one_call():
    """Any split of a sequence, each part from the state the previous one left, gives the one-call result."""
    q, k, v, la, b, St = inputs(torch.float64, T=30)
    o_all, s_all = gdn.gated_delta_chunked(q, k, v, la, b, St, chunk_size=8)
    outs, s = [], St
    for a, e in ((0, 7), (7, 8), (8, 30)):
        fn = gdn.gated_delta_recurrent if e - a == 1 else gdn.gated_delta_chunked
        o, s = fn(q[:, :, a:e], k[:, :, a:e], v[:, :, a:e], la[:, :, a:e], b[:, :, a:e], s)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 2), o_all, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, s_all, rtol=1e-12, atol=1e-12)


def test_comparison_size_and_bad_config():
    import config
    cfg = config.load(['config/cmp_gdn.py'])
    model = gdn.GDN(gdn.GDNConfig(**dict(cfg.model_args, vocab_size=1000)))
    assert abs(model.get_num_params() / 2_739_432 - 1) < 0.03     # the comparison's 2.74M +-3%
    with pytest.raises(ValueError, match='conv_size >= 2'):
        gdn.GDN(gdn.GDNConfig(conv_size=1))
