"""ResNet-BK: the BK-Core against dense inverses, its scan and analytic backward, the seed reference, the model and its
flags (the interface shared by every model, run on each flag too, is in test_models.py)."""
import os
import shlex
import shutil

import pytest
import torch

import bk_core
import bk_kernel
import model_resnetbk as bk
import seeds.resnetbk as seed

SCANS = ('sequential', 'parallel', 'chunked')
HAS_CC = shutil.which(shlex.split(os.environ.get('CC', 'cc'))[0]) is not None    # bk_kernel.py's compiler


def dense_resolvent(v, n):
    """[(H_{0..n-1} - 1j I)^-1] for H = tridiag(1, -2 + v, 1), dense, complex128. v (B, >=n) -> (B, n, n)."""
    B = v.shape[0]
    H = torch.diag_embed(v[:, :n].double() - 2.0).to(torch.complex128)
    off = torch.ones(B, n - 1, dtype=torch.complex128)
    H = H + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.inv(H - 1j * torch.eye(n, dtype=torch.complex128))


def causal_reference(v):
    """g_i = leading-block resolvent diagonal, one dense inverse per i."""
    return torch.stack([dense_resolvent(v, i + 1)[:, i, i] for i in range(v.shape[1])], 1)


def rand_v(B, N, dtype=torch.float64, seed_=0):
    g = torch.Generator().manual_seed(seed_)
    return torch.rand(B, N, generator=g, dtype=dtype) * 6 - 3      # the model clamps v to [-3, 3]


# ---------------------------------------------------------------------------------------------- BK-Core math

@pytest.mark.parametrize("N", [1, 2, 7, 64, 256])
def test_causal_equals_leading_block_inverse(N):
    v = rand_v(2, N)
    ref = causal_reference(v) if N <= 64 else None
    if ref is None:       # N = 256: check every 17th position against its own leading block
        idx = list(range(0, N, 17)) + [N - 1]
        ref_sub = torch.stack([dense_resolvent(v, i + 1)[:, i, i] for i in idx], 1)
    s = (v - 2.0) - 1j
    for fn in (bk_core.bk_causal_sequential, bk_core.bk_causal_scan, bk_core.bk_causal_chunked):
        g = fn(s)
        if ref is not None:
            assert (g - ref).abs().max() < 1e-12, fn.__name__
        else:
            assert (g[:, idx] - ref_sub).abs().max() < 1e-12, fn.__name__
    for scan in SCANS:
        assert (bk_core.bk_core(v, scan=scan) - bk_core.bk_causal_sequential(s)).abs().max() < 1e-12


@pytest.mark.parametrize("N", [1, 2, 7, 64, 256])
def test_full_diagonal_equals_dense_inverse(N):
    v = rand_v(3, N)
    ref = dense_resolvent(v, N).diagonal(dim1=-2, dim2=-1)
    for scan in SCANS:
        for grad in ('autograd', 'analytic', 'seed'):
            g = bk_core.bk_core(v, causal=False, grad=grad, scan=scan)
            assert (g - ref).abs().max() < 1e-12, (scan, grad)


def test_causal_depends_only_on_past_and_full_on_all():
    v = rand_v(1, 40)
    v2 = v.clone()
    v2[0, 25] += 1.0
    gc, gc2 = bk_core.bk_core(v), bk_core.bk_core(v2)
    assert torch.equal(gc[:, :25], gc2[:, :25]) and (gc[:, 25:] - gc2[:, 25:]).abs().min() > 0
    gf, gf2 = bk_core.bk_core(v, causal=False), bk_core.bk_core(v2, causal=False)
    assert (gf[:, :25] - gf2[:, :25]).abs().max() > 1e-8          # the seed's diagonal sees the future


def test_long_sequence_finite_where_seed_theta_phi_overflows():
    v = rand_v(2, 4096, dtype=torch.float32)
    for causal in (True, False):
        for scan in SCANS:
            g = bk_core.bk_core(v, causal=causal, scan=scan)
            assert torch.isfinite(torch.view_as_real(g)).all() and g.abs().max() <= 1.0 + 1e-5
    exact = bk_core.bk_core(v.double(), causal=False)
    assert (bk_core.bk_core(v, causal=False) - exact).abs().max() < 1e-4
    off = torch.ones(2, 4095)
    g_seed = seed.seed_bk_diag_batched(v - 2.0, off, off, torch.tensor(1j, dtype=torch.complex64))
    assert (g_seed == 0).all()                   # theta_N overflowed complex128: every G became 0


def test_seed_theta_phi_matches_at_short_length():
    v = rand_v(2, 128)
    off = torch.ones(2, 127, dtype=torch.float64)
    g_seed = seed.seed_bk_diag_batched(v - 2.0, off, off, torch.tensor(1j, dtype=torch.complex128))
    assert (g_seed - bk_core.bk_core(v, causal=False)).abs().max() < 1e-6      # complex64 output


@pytest.mark.parametrize("N", [1, 2, 5, 128, 1000, 4096])
def test_scans_equal_sequential_float32(N):
    """float32 scans against the float64 loop (the loop itself in float32 is within ~1e-6 of it)."""
    v = rand_v(4, N, dtype=torch.float32)
    s = (v - 2.0) - 1j
    g0 = torch.complex(torch.randn(4), torch.rand(4))
    keep = torch.rand(4, N, generator=torch.Generator().manual_seed(1)) > 0.3
    for args in ((), (g0,), (g0, keep), (None, keep)):
        ref = bk_core.bk_causal_sequential(s.to(torch.complex128), *[a if a is None or a.dtype == torch.bool else
                                                                a.to(torch.complex128) for a in args])
        for fn in (bk_core.bk_causal_sequential, bk_core.bk_causal_scan, bk_core.bk_causal_chunked):
            g = fn(s, *args)
            assert g.dtype == torch.complex64 and (g - ref).abs().max() < 2e-6, fn.__name__
    coef, x = torch.complex(torch.rand(4, N), torch.rand(4, N)) * 0.7, torch.randn(4, N, dtype=torch.complex64)
    ref = bk_core.linear_recurrence_sequential(coef.to(torch.complex128), x.to(torch.complex128))
    for fn in (bk_core.linear_recurrence_sequential, bk_core.linear_recurrence_scan, bk_core.linear_recurrence_chunked):
        assert (fn(coef, x) - ref).abs().max() < 1e-5, fn.__name__


def test_carried_state_continues_the_chain():
    v = rand_v(2, 30)
    s = (v - 2.0) - 1j
    g = bk_core.bk_causal_sequential(s)
    for fn in (bk_core.bk_causal_sequential, bk_core.bk_causal_scan, bk_core.bk_causal_chunked):
        assert (fn(s[:, 12:], g[:, 11]) - g[:, 12:]).abs().max() < 1e-13
    keep = torch.rand(2, 30, generator=torch.Generator().manual_seed(2)) > 0.5
    gk = bk_core.bk_causal_sequential(s, keep=keep)
    # a skipped position carries g, and the kept positions equal the chain over the kept positions alone
    for b in range(2):
        kept = s[b:b + 1, keep[b]]
        assert (gk[b, keep[b]] - bk_core.bk_causal_sequential(kept)[0]).abs().max() < 1e-13


@pytest.mark.parametrize("scan", SCANS + (('c',) if HAS_CC else ()))
def test_analytic_backward_gradcheck(scan):
    v = rand_v(2, 9)
    s = ((v - 2.0) - 1j).requires_grad_()
    g0 = torch.complex(torch.randn(2, dtype=torch.float64), torch.rand(2, dtype=torch.float64)).requires_grad_()
    keep = torch.rand(2, 9, generator=torch.Generator().manual_seed(3)) > 0.3
    assert torch.autograd.gradcheck(lambda s_, g_: bk_core.BKCausalAnalytic.apply(s_, g_, keep, scan), (s, g0))
    assert torch.autograd.gradcheck(lambda s_: bk_core.BKCausalAnalytic.apply(s_, None, None, scan), (s,))
    # with z, the input is the real potential v and s = (v - 2) - z is formed inside (bk_core's causal path)
    v = v.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v_, g_: bk_core.BKCausalAnalytic.apply(v_, g_, keep, scan, 1j), (v, g0))


@pytest.mark.parametrize("causal", [True, False])
def test_analytic_equals_autograd_and_seed_does_not(causal):
    v = rand_v(3, 50).requires_grad_()
    w = torch.randn(3, 50, 2, dtype=torch.float64)

    def grad_of(mode, scan='sequential'):
        g = bk_core.bk_core(v, causal=causal, grad=mode, scan=scan)
        loss = (torch.view_as_real(g) * w).sum()
        return torch.autograd.grad(loss, v)[0]

    ref = grad_of('autograd')
    for scan in SCANS:
        assert (grad_of('analytic', scan) - ref).abs().max() < 1e-10
        assert (grad_of('autograd', scan) - ref).abs().max() < 1e-10
    # the seed's blended diagonal backward is far from the true gradient (seeds/README.md, bug 3)
    gs = grad_of('seed')
    cos = torch.nn.functional.cosine_similarity(gs.flatten(), ref.flatten(), dim=0)
    assert cos < 0.8


def test_seed_backward_matches_seed_reference():
    """bk_grad='seed' on the stable full diagonal == the seed's theta/phi forward under the same backward (written once,
    in BKSeedBackward): the values the backward reads agree, and the [Re g, Im g] features carry the same gradient."""
    v = rand_v(2, 128, dtype=torch.float32).requires_grad_()
    w = torch.randn(2, 128, 2)
    g = bk_core.bk_core(v, causal=False, grad='seed')
    (gr_ours,) = torch.autograd.grad((torch.view_as_real(g) * w).sum(), v)
    v2 = v.detach().clone().requires_grad_()
    (gr_seed,) = torch.autograd.grad((seed.seed_bk_features(v2) * w).sum(), v2)
    assert (gr_ours - gr_seed).abs().max() < 1e-4 * gr_seed.abs().max()


needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler")


@needs_cc
def test_c_kernel_equals_sequential_and_dense_inverse():
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-13)):
        v = rand_v(4, 300, dtype=dtype)
        s = (v - 2.0) - 1j
        g0 = torch.complex(torch.randn(4, dtype=dtype), torch.rand(4, dtype=dtype))
        keep = torch.rand(4, 300, generator=torch.Generator().manual_seed(4)) > 0.3
        for args in ((), (g0,), (g0, keep), (None, keep)):
            g = bk_kernel.bk_causal(s, *args)
            assert g.dtype == s.dtype and (g - bk_core.bk_causal_sequential(s, *args)).abs().max() < tol
        coef = torch.complex(torch.rand(4, 300, dtype=dtype), torch.rand(4, 300, dtype=dtype)) * 0.7
        x = torch.randn(4, 300, dtype=s.dtype)
        assert (bk_kernel.linear_recurrence(coef, x) - bk_core.linear_recurrence_sequential(coef, x)).abs().max() < tol
    v = rand_v(2, 64)
    assert (bk_core.bk_core(v, scan='c') - causal_reference(v)).abs().max() < 1e-12
    for grad in ('analytic', 'seed'):
        full = bk_core.bk_core(v, causal=False, grad=grad, scan='c')
        assert (full - dense_resolvent(v, 64).diagonal(dim1=-2, dim2=-1)).abs().max() < 1e-12
    g = bk_core.bk_core(rand_v(2, 4096, dtype=torch.float32), scan='c')
    assert torch.isfinite(torch.view_as_real(g)).all() and g.abs().max() <= 1.0 + 1e-5


@needs_cc
def test_c_kernel_is_the_cpu_default_and_refuses_autograd():
    v = rand_v(2, 50, dtype=torch.float32).requires_grad_()
    w = torch.randn(2, 50, 2)
    grads = {}
    for scan in ('auto', 'c', 'chunked'):
        g = bk_core.bk_core(v, scan=scan)
        (grads[scan],) = torch.autograd.grad((torch.view_as_real(g) * w).sum(), v)
    assert torch.equal(grads['auto'], grads['c']) and (grads['c'] - grads['chunked']).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no autograd graph"):
        bk_core.bk_core(v, grad='autograd', scan='c')
    with pytest.raises(ValueError, match="no autograd graph"):
        small(bk_scan='c', bk_grad='autograd')
    with pytest.raises(ValueError, match="CPU only"):
        bk_kernel.bk_causal(torch.zeros(1, 3, dtype=torch.complex64, device='meta'))


@needs_cc
def test_c_kernel_reads_values_not_memory():
    # lazy conj / neg views and non-contiguous inputs hold other numbers in memory than they stand for
    s = ((rand_v(3, 40) - 2.0) - 1j).conj()                          # conj bit set
    g0 = torch.complex(torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    keep = torch.rand(40, 3, generator=torch.Generator().manual_seed(5)).t() > 0.3     # non-contiguous
    for s_, g0_ in ((s, g0.conj()), (torch._neg_view(s), g0), (torch.cat([s, s], 1)[:, ::2], None)):
        ref = bk_core.bk_causal_sequential(s_.resolve_conj().resolve_neg(), g0_, keep)
        assert (bk_kernel.bk_causal(s_, g0_, keep) - ref).abs().max() < 1e-13
    coef = torch.rand(3, 40, dtype=torch.complex128).conj()
    x = torch._neg_view(torch.randn(3, 40, dtype=torch.complex128))
    ref = bk_core.linear_recurrence_sequential(coef.resolve_conj(), x.resolve_neg())
    assert (bk_kernel.linear_recurrence(coef, x) - ref).abs().max() < 1e-13
    for args, text in (((s, g0[:1]), "g0 must have shape"), ((s, None, keep[:1]), "keep must be a bool"),
                       ((s, None, keep.long()), "keep must be a bool")):
        with pytest.raises(ValueError, match=text):
            bk_kernel.bk_causal(*args)
    with pytest.raises(ValueError, match="coef must have the shape"):
        bk_kernel.linear_recurrence(coef[:1], x)
    with pytest.raises(ValueError, match="CPU only"):
        bk_kernel.bk_causal(s, g0.to('meta'))


def test_c_kernel_without_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(bk_kernel, '_lib', None)
    monkeypatch.setattr(bk_kernel, '_available', None)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-cc'))
    with pytest.raises(RuntimeError, match="could not build its C kernel"):
        bk_kernel.load()
    assert not bk_kernel.available()
    with pytest.raises(ValueError, match="could not build its C kernel"):
        small(bk_scan='c')
    calls = []                                    # 'auto' falls back to the chunked form
    chunked = bk_core.SCANS['chunked']
    monkeypatch.setitem(bk_core.SCANS, 'chunked', chunked._replace(bk=lambda *a: calls.append(1) or chunked.bk(*a)))
    v = rand_v(2, 20)
    assert (bk_core.bk_core(v) - bk_core.bk_causal_sequential((v - 2.0) - 1j)).abs().max() < 1e-12 and calls


def test_bk_core_float32_under_autocast_and_bad_args():
    v = rand_v(2, 16, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        g = bk_core.bk_core(v.bfloat16())
    assert g.dtype == torch.complex64
    with pytest.raises(ValueError, match="bk_scan"):
        bk_core.bk_core(v, scan='fast')
    with pytest.raises(ValueError, match="bk_grad"):
        bk_core.bk_core(v, grad='exact')


@pytest.mark.parametrize("scan", SCANS + (('c',) if HAS_CC else ()))
@pytest.mark.parametrize("causal", [True, False])
def test_nan_potential_gives_nan_not_an_exception(scan, causal):
    # a non-finite step is for train.py to skip; the BK-Core must not raise on it (the chunked form's cap once did)
    v = rand_v(2, 30, dtype=torch.float32)
    v[1, 7] = float('nan')
    g = bk_core.bk_core(v, causal=causal, scan=scan)
    finite = torch.isfinite(torch.view_as_real(g)).all(-1)
    assert finite[0].all() and not finite[1].all()


# ---------------------------------------------------------------------------------------------- the model

def small(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=97, block_size=40, n_embd=16, n_layer=2, dropout=0.0)
    args.update(kw)
    return bk.ResNetBK(bk.ResNetBKConfig(**args))


def tokens(B=2, T=40, seed_=1):
    return torch.randint(0, 97, (B, T), generator=torch.Generator().manual_seed(seed_))


def test_param_count_seed_config():
    m = bk.ResNetBK(bk.ResNetBKConfig(vocab_size=30000, block_size=128, n_embd=64, n_layer=4))
    assert m.get_num_params() == 4_146_120
    assert seed.SeedResNetBK().state_dict().keys() == m.state_dict().keys()


def test_seed_mode_equals_seed_reference():
    """Non-causal + seed backward + seed router == the seed's code (theta/phi, its backward, its MoE loop)."""
    ours = small(block_size=32, bk_causal=False, bk_grad='seed', router='seed', balance_loss=0.0)
    ref = seed.SeedResNetBK(vocab_size=97, block_size=32, n_embd=16, n_layer=2, dropout=0.0)
    ref.load_state_dict(ours.state_dict())
    idx = tokens(T=32)
    logits, _ = ours(idx)
    _, loss = ours(idx, idx)
    ref_logits = ref(idx)
    assert (logits - ref_logits).abs().max() < 1e-5
    loss.backward()
    F = torch.nn.functional
    F.cross_entropy(ref_logits.view(-1, 97), idx.view(-1)).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-4 * (1 + q.grad.abs().max()), name


def test_causality_probe_fails_in_seed_mode():
    m = small(bk_causal=False).eval()
    idx = tokens()
    idx2 = idx.clone()
    idx2[:, 23] = (idx2[:, 23] + 1) % 97
    a, _ = m(idx)
    b, _ = m(idx2)
    assert (a[:, :23] - b[:, :23]).abs().max() > 1e-4       # earlier positions see the changed token


def test_forward_state_past_block_size():
    m = small(block_size=16).eval()
    idx = tokens(T=50)
    one, _ = m.forward_state(idx)
    lo1, st = m.forward_state(idx[:, :20])
    lo2, st = m.forward_state(idx[:, 20:], st)
    assert one.shape == (2, 50, 97) and (torch.cat([lo1, lo2], 1) - one).abs().max() < 1e-4 and st['pos'] == 50
    first, _ = m(idx[:, :16])
    assert (one[:, :16] - first).abs().max() < 1e-5
    with pytest.raises(ValueError, match="block_size"):
        m(idx)


def test_forward_state_seed_mode_recomputes():
    m = small(bk_causal=False).eval()
    idx = tokens(T=30)
    full, _ = m(idx)
    _, st = m.forward_state(idx[:, :20])
    lo, st = m.forward_state(idx[:, 20:], st)
    assert (lo - full[:, 20:]).abs().max() < 1e-5 and st['tokens'].shape == (2, 30)


def test_generate_greedy_equals_recomputation_in_seed_mode():
    """Non-causal: forward_state recomputes the window at every token (causal mode is in test_models.py)."""
    m = small(bk_causal=False).eval()
    prompt = tokens(T=5)
    out = m.generate(prompt, 8, temperature=0.0)
    ref = prompt
    for _ in range(8):
        logits, _ = m(ref)
        ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


def test_any_length_up_to_block_size():
    m = small()
    for T in (1, 2, 17, 40):
        logits, _ = m(tokens(T=T))
        _, loss = m(tokens(T=T), tokens(T=T))
        assert logits.shape == (2, T, 97) and torch.isfinite(loss)


def test_router_learns_only_with_softmax_gate():
    idx = tokens()
    for router, balance_loss, learns in (('softmax', 0.0, True), ('softmax', 0.01, True), ('seed', 0.01, False)):
        m = small(router=router, balance_loss=balance_loss)     # 0.01 = the default: no balance loss in seed mode
        _, loss = m(idx, idx)
        loss.backward()
        for blk in m.blocks:
            w = blk.layer.moe.router.weight.grad
            assert (w is not None and w.abs().max() > 0) == learns, (router, balance_loss)
        assert ('balance' in m.last_aux) == (balance_loss > 0 and router == 'softmax')


def test_balance_loss_in_training_loss_only():
    m = small(balance_loss=0.5)
    idx = tokens()
    _, train_loss = m(idx, idx)
    m.eval()
    logits, eval_loss = m(idx, idx)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 97), idx.view(-1))
    assert abs(eval_loss.item() - ce.item()) < 1e-6
    # balance >= 1 per layer (1 = perfectly uniform), 2 layers at coefficient 0.5
    assert train_loss.item() - ce.item() >= 0.5 * 2 * 1.0 - 1e-4


@pytest.mark.parametrize("causal", [True, False])
def test_model_gradients_analytic_equal_autograd(causal):
    idx = tokens()
    grads = {}
    for mode in ('autograd', 'analytic'):
        m = small(bk_grad=mode, bk_causal=causal)
        _, loss = m(idx, idx)
        loss.backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in m.parameters()])
    assert (grads['analytic'] - grads['autograd']).abs().max() < 1e-5 * grads['autograd'].abs().max()


def test_bad_config_is_one_line_error():
    for kw, text in ((dict(bk_grad='exact'), 'bk_grad'), (dict(bk_scan='fast'), 'bk_scan'),
                     (dict(router='hash'), 'router'), (dict(top_k=5), 'top_k'),
                     (dict(use_sparse_bk=True, bk_causal=False), 'bk_causal=True')):
        with pytest.raises(ValueError, match=text):
            small(**kw)


def test_last_aux_is_loss_minus_ce():
    # balance + ponder (+ multi-scale's coarse layers) are deterministic at dropout 0: train CE == eval CE
    m = small(use_act=True, use_multi_scale=True, balance_loss=0.3, act_ponder_cost=0.05)
    idx, tgt = tokens(), tokens(seed_=2)
    tgt[0, :5] = -1
    for grad in (True, False):                                 # fused loss, and the logits path under no_grad
        m.train()
        with torch.set_grad_enabled(grad):
            _, loss = m(idx, tgt)
        aux = m.last_aux
        assert set(aux) == {'balance', 'ponder'}
        assert all(v.dtype == torch.float32 and v.dim() == 0 and not v.requires_grad for v in aux.values())
        assert aux['balance'] >= 0.3 * 4 - 1e-4                # >= 1 per MoE (4: 2 blocks x fine + coarse)
        m.eval()
        logits, _ = m(idx)
        assert m.last_aux == {}
        ce = torch.nn.functional.cross_entropy(logits.view(-1, 97), tgt.view(-1), ignore_index=-1)
        assert abs((loss - sum(aux.values())).item() - ce.item()) < 1e-5
    m.train()
    sparse = small(use_sparse_bk=True, balance_loss=0.0).train()
    sparse(idx, tgt)
    assert set(sparse.last_aux) == {'sparsity'}
    plain = small(balance_loss=0.0).train()
    plain(idx, tgt)
    assert plain.last_aux == {}


# ---------------------------------------------------------------------------------------------- the flags

def test_autocast_governs_dense_parts_bk_stays_float32(monkeypatch):
    """One rule for all models: the surrounding autocast (train.py's dtype) sets the dense parts' precision."""
    m = small().eval()
    seen = {}
    m.lm_head.register_forward_hook(lambda mod, i, o: seen.update(head=o.dtype) and None)
    for e, expert in enumerate(m.blocks[0].layer.moe.experts):
        expert.register_forward_hook(lambda mod, i, o, e=e: seen.update({f'expert{e}': o.dtype}) and None)
    orig = bk_core.bk_features

    def spy(v, *a, **k):
        g = orig(v, *a, **k)
        seen['bk'] = g.dtype
        return g
    monkeypatch.setattr(bk_core, 'bk_features', spy)
    idx = tokens()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, _ = m(idx)
    assert seen.pop('head') == torch.bfloat16 and seen.pop('bk') == torch.float32      # [Re g, Im g] of complex64
    assert seen and set(seen.values()) == {torch.bfloat16}   # every expert that got tokens
    assert logits.dtype == torch.float32
    seen.clear()
    ref, _ = m(idx)                                           # no autocast: float32 throughout
    assert seen.pop('head') == torch.float32 and set(seen.values()) == {torch.float32}
    assert 0 < (logits - ref).abs().max() < 0.1               # same weights: close, not equal


def test_act_halting_weights_and_ponder_cost():
    m = small(use_act=True, n_layer=3)
    idx = tokens()
    _, train_loss = m(idx, idx)
    m.eval()
    logits, ce = m(idx, idx)
    # nothing halts early at init (bias -2): every token uses all 3 blocks, ponder N + R >= 3
    assert train_loss.item() - ce.item() >= 0.01 * 3 - 1e-4
    # a halting unit that fires at once: every token stops after block 0 -> the model is its first block alone
    with torch.no_grad():
        m.halt[0].bias.fill_(20.0)
    halted, _ = m(idx)
    one = small(use_act=True, n_layer=1).eval()
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith(('blocks.1', 'blocks.2', 'halt.1', 'halt.2'))}
    one.load_state_dict(sd)
    ref, _ = one(idx)
    assert (halted - ref).abs().max() < 1e-4


def test_multi_scale_pairs_are_causal_and_half_resolution():
    m = small(use_multi_scale=True).eval()
    block = m.blocks[0]
    shapes = []
    block.coarse.register_forward_hook(lambda mod, i, o: shapes.append(i[0].shape) and None)
    u = torch.randn(2, 21, 16)
    a, _ = block.multi_scale(u, None, {})
    assert shapes[-1] == (2, 10, 16)                           # 21 positions -> 10 complete pairs
    u2 = u.clone()
    u2[:, 9] += 1.0                                            # second element of pair 4 = (8, 9)
    b, _ = block.multi_scale(u2, None, {})
    diff = (a - b).abs().amax(dim=(0, 2))
    assert diff[:9].max() == 0 and diff[9] > 0                 # first seen at 9, where its pair completes
    u3 = u.clone()
    u3[:, 8] += 1.0                                            # first element of pair 4: waits for position 9
    c, _ = block.multi_scale(u3, None, {})
    diff = (a - c).abs().amax(dim=(0, 2))
    assert diff[:9].max() == 0 and diff[9] > 0


def test_sparse_bk_mask_interpolator_and_loss():
    m = small(use_sparse_bk=True, sparse_bk_target=0.25, sparse_bk_loss=1.0, balance_loss=0.0)
    idx = tokens()
    mask_logits, keeps = [], []
    hooks = [blk.layer.mask_proj.register_forward_hook(lambda mod, i, o: mask_logits.append(o.squeeze(-1).float()))
             for blk in m.blocks]
    orig = bk_core.bk_core

    def spy(v, *a, **k):
        keeps.append(k['keep'])
        g = orig(v, *a, **k)
        keeps.append(g)
        return g
    bk_core.bk_core = spy
    try:
        _, train_loss = m(idx, idx)
    finally:
        bk_core.bk_core = orig
    for h in hooks:
        h.remove()
    # the sparsity term is sum over layers of (mean mask probability - target)^2, on the logits the layers used
    want = sum((torch.sigmoid(lg).mean() - 0.25) ** 2 for lg in mask_logits)
    assert len(mask_logits) == 2 and abs(m.last_aux['sparsity'].item() - want.item()) < 1e-6
    # the chain really skips the dropped positions: there g_t = g_{t-1} (g_{-1} = 0), and some are dropped
    for keep, g in zip(keeps[::2], keeps[1::2]):
        prev = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], 1)
        assert 0 < (~keep).sum() < keep.numel() and torch.equal(g[~keep], prev[~keep])
    m.eval()
    logits, ce = m(idx, idx)
    assert train_loss.item() > ce.item()
    # every position kept: the layer is the plain BK layer (the interpolator is unused)
    dense = small(balance_loss=0.0).eval()
    with torch.no_grad():
        for blk in m.blocks:
            blk.layer.mask_proj.weight.zero_()
            blk.layer.mask_proj.bias.fill_(10.0)
    dense.load_state_dict({k: v for k, v in m.state_dict().items() if 'mask_proj' not in k and 'interp' not in k})
    assert (m(idx)[0] - dense(idx)[0]).abs().max() < 1e-5
    # no position kept: the BK-Core result is unused, features come from the interpolator alone
    with torch.no_grad():
        for blk in m.blocks:
            blk.layer.mask_proj.bias.fill_(-10.0)
    before = m(idx)[0]
    with torch.no_grad():
        for blk in m.blocks:
            blk.layer.v_proj.bias.add_(1.0)                    # moves every potential v
    assert (m(idx)[0] - before).abs().max() < 1e-6
    # the mask gets gradient (straight-through) in training mode
    m.train()
    with torch.no_grad():
        for blk in m.blocks:
            blk.layer.mask_proj.bias.fill_(0.0)
    m(idx, idx)[1].backward()
    assert m.blocks[0].layer.mask_proj.weight.grad.abs().max() > 0
