import pytest
import torch
import torch.nn.functional as F

from linear_ce import LinearCrossEntropy, linear_cross_entropy, linear_score


@pytest.mark.parametrize('with_bias', [True, False])
def test_equals_unfused_loss_and_gradients(with_bias):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 8, generator=g, requires_grad=True)
    W = torch.randn(5000, 8, generator=g, requires_grad=True)
    b = torch.randn(5000, generator=g, requires_grad=True)
    y = torch.randint(0, 5000, (300,), generator=g)
    y[::7] = -1
    for rows in (300, 40):            # V = 5000: one chunk (838 rows); V = 2**17: chunks of 32 rows, 2 of them
        WW = W if rows == 300 else torch.randn(2 ** 17, 8, generator=g, requires_grad=True)
        bb = b if rows == 300 else torch.zeros(2 ** 17, requires_grad=True)
        bb = bb if with_bias else None
        inputs = (h, WW, bb) if with_bias else (h, WW)
        yy = y[:rows].clamp(max=WW.shape[0] - 1)
        ref = F.cross_entropy(F.linear(h[:rows], WW, bb), yy, ignore_index=-1)
        ref_grads = torch.autograd.grad(ref * 3.0, inputs)
        loss = LinearCrossEntropy.apply(h[:rows], WW, bb, yy, torch.float32)
        grads = torch.autograd.grad(loss * 3.0, inputs)
        assert abs(loss.item() - ref.item()) < 1e-5
        for a, r in zip(grads, ref_grads):
            assert (a - r).abs().max() < 1e-5
    b = b if with_bias else None
    loss16 = LinearCrossEntropy.apply(h, W, b, y, torch.bfloat16)
    assert abs(loss16.item() - F.cross_entropy(F.linear(h, W, b), y, ignore_index=-1).item()) < 0.05


def test_hopeless_targets_keep_an_exact_loss():
    # a target ~200 nats below the best logit has softmax probability 0 in float32; its loss comes from the logits
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, 4, generator=g, requires_grad=True)
    W = torch.randn(50, 4, generator=g)
    W[7] = -60 * h.detach()[2] / h.detach()[2].norm() ** 2 * 3       # logit of class 7 for row 2: about -180
    W.requires_grad_()
    y = torch.tensor([1, 2, 7, 3, -1, 7])
    ref = F.cross_entropy(F.linear(h, W), y, ignore_index=-1)
    ref_grads = torch.autograd.grad(ref, (h, W))
    loss = linear_cross_entropy(h, W, None, y)
    grads = torch.autograd.grad(loss, (h, W))
    assert ref.item() > 30 and abs(loss.item() - ref.item()) < 1e-5 * ref.item()
    for a, r in zip(grads, ref_grads):
        assert (a - r).abs().max() < 1e-5


def test_bf16_matmuls_over_several_chunks_are_close_to_float32():
    # the chunks share one logits buffer (and, in bf16, one bf16 buffer): a chunk reading another's values would
    # be far off, not bf16-rounding close
    g = torch.Generator().manual_seed(2)
    h = torch.randn(70, 8, generator=g, requires_grad=True)
    W = (torch.randn(2 ** 17, 8, generator=g) * 0.3).requires_grad_()
    b = torch.randn(2 ** 17, generator=g, requires_grad=True)
    y = torch.randint(0, 2 ** 17, (70,), generator=g)
    y[::5] = -1
    ref = F.cross_entropy(F.linear(h, W, b), y, ignore_index=-1)
    ref_grads = torch.autograd.grad(ref, (h, W, b))
    loss = LinearCrossEntropy.apply(h, W, b, y, torch.bfloat16)          # 3 chunks of 32, 32, 6 rows
    grads = torch.autograd.grad(loss, (h, W, b))
    assert abs(loss.item() - ref.item()) < 0.02
    for a, r in zip(grads, ref_grads):
        assert a.dtype == torch.float32 and (a - r).abs().max() < 0.02 * r.abs().max()


def test_matmul_dtype_follows_autocast():
    g = torch.Generator().manual_seed(1)
    h, W = torch.randn(64, 16, generator=g), torch.randn(300, 16, generator=g)
    y = torch.randint(0, 300, (64,), generator=g)
    ref = F.cross_entropy(h @ W.t(), y)
    fp32 = linear_cross_entropy(h, W, None, y)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bf16 = linear_cross_entropy(h, W, None, y)
        forced = linear_cross_entropy(h, W, None, y, torch.float32)
    bf16_ref = F.cross_entropy((h.bfloat16() @ W.bfloat16().t()).float(), y)
    assert abs(fp32.item() - ref.item()) < 1e-5 and abs(forced.item() - ref.item()) < 1e-5
    assert abs(bf16.item() - bf16_ref.item()) < 1e-5 and abs(bf16.item() - ref.item()) > 1e-5


@pytest.mark.parametrize('with_bias', [True, False])
def test_linear_score_equals_cross_entropy_and_argmax_of_the_logits(with_bias):
    """The evaluation's scores without the logits: NLL sum, scored count and argmax hits of F.cross_entropy and
    argmax on the full logits, over several chunks, -1 targets left out; under bf16 autocast those of the bf16 logits."""
    g = torch.Generator().manual_seed(4)
    V = 2 ** 17                                                           # chunks of 32 rows: 32, 32, 32, 4
    h, W = torch.randn(100, 8, generator=g), torch.randn(V, 8, generator=g) * 0.5
    b = torch.randn(V, generator=g) if with_bias else None
    W[9] = W[5] = h[0] * 5                                                # classes 5 and 9 tie, at the top of rows 0, 1
    if b is not None:
        b[9] = b[5] = 0.0
    h[1] = h[0]
    logits = F.linear(h, W, b)
    y = torch.randint(0, V, (100,), generator=g)
    y[2::4] = logits[2::4].argmax(1)                                      # some hits
    y[0], y[1], y[3::7] = 9, 5, -1                                        # a tie goes to the first class, as argmax
    for mm_dtype in (torch.float32, torch.bfloat16):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=mm_dtype == torch.bfloat16):
            logits = F.linear(h, W, b).float()
            nll, count, correct = linear_score(h, W, b, y)
        ref = F.cross_entropy(logits, y, ignore_index=-1, reduction='sum').item()
        hits = int(((logits.argmax(1) == y) & (y != -1)).sum())
        assert abs(nll - ref) < 1e-6 * ref and count == int((y != -1).sum()) == 86
        assert correct == hits and hits >= 20 and logits[0].argmax() == logits[1].argmax() == 5
