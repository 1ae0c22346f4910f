"""torch.compile: every model's compiled training step equals eager, the custom ops pass torch.library.opcheck, the
BK-Core op's gradient is the dense inverse's, train.py resumes exactly with compile=True, and the 'auto' rule.

Equality runs on backend='aot_eager' (Dynamo's graph capture, AOTAutograd's joint forward/backward and the ops' fake
implementations, without code generation: bit-exact on this CPU); one test runs inductor, which is what train.py
compiles with, within 1e-5."""
import dataclasses

import pytest
import torch
import torch._dynamo

import bk_core
import bk_kernel
import checkpoint as ckpt_io
import hardware
import linear_ce
import model_newllm
from helpers import make_dataset, run, train_losses
from test_models import config

# models Dynamo cannot hold in one graph: nn.LSTM is not traceable, so the LSTM compiles in pieces around it
GRAPH_BREAKS = {'lstm'}


def build(name, **kw):
    torch.manual_seed(0)
    args = config(name, **kw)
    if 'dropout' in {f.name for f in dataclasses.fields(ckpt_io.model_classes(name)[0])}:
        args['dropout'] = 0.1      # the masks drawn inside the step must match too
    return ckpt_io.build_model(name, args).train()


def step(model, x, y):
    """model(x, y) + backward with a fixed RNG -> (loss, [grad of each parameter])."""
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = None
    _, loss = model(x, y)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def batch(B=3, T=20, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 97, (B, T), generator=g), torch.randint(0, 97, (B, T), generator=g)


@pytest.mark.parametrize('name', list(ckpt_io.MODELS))
def test_compiled_training_step_equals_eager(name, monkeypatch):
    """aot_eager: the same loss and gradients, bit for bit; one graph (fullgraph=True) unless in GRAPH_BREAKS, also
    when the compiled step is the process's first (bk_scan='auto' asks whether the C kernel builds while tracing)."""
    model = build(name)
    x, y = batch()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=name not in GRAPH_BREAKS)
    monkeypatch.setattr(bk_kernel, '_available', None)
    loss_c, grads_c = step(compiled, x, y)
    loss, grads = step(model, x, y)
    assert torch.equal(loss, loss_c)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_c))


def test_inductor_newllm_step_close_to_eager_one_graph_no_recompile():
    """Inductor, as train.py runs it: one graph (the token loop an opaque op, not T unrolled steps), loss and
    gradients within 1e-5 of eager, and a second batch of the same shape reuses the compiled code."""
    model = build('newllm')
    x, y = batch()
    loss, grads = step(model, x, y)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss_c, grads_c = step(compiled, x, y)
    assert (loss - loss_c).abs() < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(grads, grads_c)) < 1e-5
    with torch._dynamo.config.patch(error_on_recompile=True):
        step(compiled, *batch(seed=3))


def test_a_short_batch_compiles_once_more_then_never():
    """README's claim: a second batch size (seed_lines' short last step) compiles once more, dynamic in the batch
    size, and a third size reuses that graph (but for one row: the compiler specialises sizes 0 and 1)."""
    model = build('newllm')
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager')
    step(compiled, *batch(B=3))
    step(compiled, *batch(B=2))
    with torch._dynamo.config.patch(error_on_recompile=True):
        step(compiled, *batch(B=5))
        step(compiled, *batch(B=3))


def test_compile_model_draws_eagers_dropout_masks_on_cpu():
    """hardware.compile_model (train.py's) on a CPU: inductor takes dropout's random numbers from eager's ops, so a
    compiled GPT step with dropout 0.1 gives eager's loss; with inductor's own generator (inductor_rng) the masks,
    and so the loss, differ."""
    model = build('gpt', n_layer=1)
    x, y = batch()
    loss, _ = step(model, x, y)
    losses = {}
    for inductor_rng in (False, True):
        torch._dynamo.reset()
        losses[inductor_rng], _ = step(hardware.compile_model(model, 'cpu', inductor_rng), x, y)
    torch._dynamo.reset()
    hardware.compile_model(model, 'cpu')  # leave the setting as train.py has it
    assert (loss - losses[False]).abs() < 1e-5
    assert (loss - losses[True]).abs() > 1e-3


# -------------------------------------------------------------------------------------------------- the custom ops

def rand_v(B, N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, N, generator=g, dtype=dtype) * 6 - 3)


@pytest.mark.parametrize('scan', ['chunked', 'c'])
def test_opcheck_bk_causal(scan):
    if scan == 'c' and not bk_kernel.available():
        pytest.skip('no C compiler here for the BK kernel')
    v = rand_v(2, 9, torch.float32).requires_grad_()
    keep = torch.rand(2, 9, generator=torch.Generator().manual_seed(1)) > 0.3
    g0 = torch.randn(2, 2).requires_grad_()
    for args in [(v, None, None, scan, 0.0, 1.0), (v, g0, keep, scan, 0.0, 1.0)]:
        torch.library.opcheck(bk_core.bk_causal_op, args)
    g = bk_core.bk_causal_op(v, g0, keep, scan, 0.0, 1.0).detach()
    torch.library.opcheck(bk_core.bk_causal_backward_op, (g, keep, torch.randn_like(g), scan))


def test_bk_causal_op_gradient_is_the_dense_inverses():
    """v -> g through the op (float64 in, complex128 inside): values and the gradient of a real loss equal those of
    the leading-block inverses diag((H_{0..i} - zI)^-1)_i, formed densely and differentiated by autograd; and
    torch.autograd.gradcheck against finite differences, with a carried g0."""
    B, N = 2, 7
    v = rand_v(B, N).requires_grad_()
    w = torch.randn(B, N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g = bk_core.bk_causal_op(v, None, None, 'chunked', 0.0, 1.0)
    ref = []
    for i in range(N):
        n = i + 1
        H = (torch.diag_embed(v[:, :n] - 2.0) + torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
             + torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)).to(torch.complex128)
        ref.append(torch.linalg.inv(H - 1j * torch.eye(n, dtype=torch.complex128))[:, i, i])
    ref = torch.view_as_real(torch.stack(ref, 1))
    assert (g - ref).abs().max() < 1e-12
    (grad,) = torch.autograd.grad((g * w).sum(), v)
    (grad_ref,) = torch.autograd.grad((ref * w).sum(), v)
    assert (grad - grad_ref).abs().max() < 1e-10
    g0 = torch.randn(B, 2, dtype=torch.float64).mul(0.3).requires_grad_()
    keep = torch.rand(B, N, generator=torch.Generator().manual_seed(4)) > 0.3
    for scan in ('sequential', 'chunked'):
        assert torch.autograd.gradcheck(lambda v_, g_: bk_core.bk_causal_op(v_, g_, keep, scan, 0.0, 1.0), (v, g0))


def test_opcheck_newllm_context_loop():
    torch.manual_seed(0)
    T, B, E, H, C, L = 4, 3, 5, 6, 4, 3
    xw = torch.randn(T, B, H, requires_grad=True)
    c0 = torch.randn(B, C, requires_grad=True)
    params = [torch.randn(H, C), torch.randn(3 * C, H) * 0.3, torch.randn(3 * C), torch.ones(C), torch.zeros(C)]
    params = [p.requires_grad_() for p in params]
    rest = [p.requires_grad_() for p in (torch.randn(H, H) * 0.3, torch.randn(H)) * (L - 1)]
    args = (xw, c0, *params, 0.0, rest)                   # p = 0: opcheck compares repeated calls, dropout would differ
    torch.library.opcheck(model_newllm.context_loop_op, args)
    out = model_newllm.context_loop_op(*args)
    saved = [t.detach() for t in out[2:]]
    torch.library.opcheck(model_newllm.context_loop_backward_op,
                          (torch.randn(B, T, H), torch.randn(B, C), *saved,
                           *(params[i].detach() for i in (0, 1, 3, 4)), 0.0, [t.detach() for t in rest]))


@pytest.mark.parametrize('with_bias', [True, False])
def test_opcheck_linear_cross_entropy(with_bias):
    g = torch.Generator().manual_seed(0)
    h, W = torch.randn(10, 6, generator=g), torch.randn(13, 6, generator=g)
    b = torch.randn(13, generator=g) if with_bias else None
    y = torch.randint(0, 13, (10,), generator=g)
    y[3] = -1
    torch.library.opcheck(linear_ce.fused_loss_op, (h, W, b, y, torch.float32, True, True, with_bias))


# -------------------------------------------------------------------------------------------- train.py with compile

def test_resume_is_exact_compiled(tmp_path):
    """New-LLM with compile=True (inductor), dropout on: 6 iterations in one go == 3, resume, 3 more, bit for bit."""
    data = make_dataset(tmp_path / 'd')
    common = ['--model_type=newllm', '--n_embd=16', '--n_context=16', '--n_hidden=32', '--n_layer=2', '--dropout=0.1',
              '--block_size=16', '--batch_size=4', '--log_interval=1', '--eval_iters=2', '--device=cpu',
              '--dtype=float32', f'--dataset={data}', '--eval_interval=3', '--compile=True']
    a = run('train.py', *common, f'--out_dir={tmp_path}/a', '--max_iters=6')
    assert 'compile True (asked)' in a.stdout
    first = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=3')
    b = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=6', '--init_from=resume')
    assert len(train_losses(a.stdout)) == 6
    assert train_losses(a.stdout) == train_losses(first.stdout) + train_losses(b.stdout)
    wa, wb = (torch.load(tmp_path / r / 'ckpt.pt', weights_only=True)['model'] for r in 'ab')
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_compile_auto_follows_the_benchmark():
    rows = {'rows': [{'model': 'newllm', 'speedup': 0.9, 'cpu_speedup': 1.4, 'compile_s': 9.0},
                     {'model': 'lstm', 'speedup': 1.2, 'cpu_speedup': 0.97, 'compile_s': 3.0}]}
    on, why = hardware.choose_compile('auto', 'newllm', 'cpu', rows)
    assert on and why.startswith('compile auto -> on (newllm') and '1.40x' in why
    on, why = hardware.choose_compile('auto', 'lstm', 'cpu', rows)
    assert not on and 'under 1.05x' in why
    on, why = hardware.choose_compile('auto', 'gpt', 'cpu', rows)
    assert not on and 'no bench/compile.py measurement of gpt on cpu' in why
    assert hardware.choose_compile('auto', 'lstm', 'cuda', {'rows': []})[0] is False
    assert hardware.choose_compile(False, 'newllm', 'cpu', rows) == (False, 'compile False (asked)')
    with pytest.raises(ValueError, match="compile must be True, False or 'auto', not 'yes'"):
        hardware.choose_compile('yes', 'newllm', 'cpu', rows)
