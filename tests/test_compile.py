"""torch.compile: a compiled training step equals eager for every registered model; New-LLM's loop is one operator."""
import pytest
import torch

import checkpoint as ckpt_io
import model_newllm

V = 31


def step(fn, model, x, y):
    """loss and gradients of one training step of fn (the model, or its compiled form)."""
    torch.manual_seed(0)
    _, loss = fn(x, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize('model_type', list(ckpt_io.MODELS))
def test_compiled_training_step_equals_eager(model_type):
    """aot_eager: Dynamo's graph capture and AOTAutograd's joint graph, without code generation (seconds, not
    minutes); tolerance 1e-5 relative (the graphs may reorder float32 sums)."""
    torch._dynamo.reset()
    cls = ckpt_io.model_classes(model_type)[0]
    fields = ckpt_io.config_fields(model_type)
    args = dict(cls.TINY, vocab_size=V, block_size=16, **({'dropout': 0.0} if 'dropout' in fields else {}))
    torch.manual_seed(0)
    model = ckpt_io.build_model(model_type, args).train()
    x, y = torch.randint(0, V, (2, 16)), torch.randint(0, V, (2, 16))
    loss, grads = step(model, model, x, y)
    closs, cgrads = step(torch.compile(model, backend='aot_eager'), model, x, y)
    torch.testing.assert_close(closs, loss, rtol=1e-5, atol=1e-6)
    assert cgrads.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(cgrads[n], grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_newllm_loop_operator_opcheck():
    """The loop and its backward as torch.library operators: schema, fake (meta) shapes, autograd registration."""
    g = torch.Generator().manual_seed(0)
    T, B, H, C = 5, 3, 6, 4
    rest = [torch.randn(H, H, generator=g, requires_grad=True), torch.randn(H, generator=g, requires_grad=True)]
    args = (torch.randn(T, B, H, generator=g, requires_grad=True), torch.randn(B, C, generator=g, requires_grad=True),
            torch.randn(H, C, generator=g, requires_grad=True), torch.randn(3 * C, H, generator=g, requires_grad=True),
            torch.randn(3 * C, generator=g, requires_grad=True), torch.ones(C, requires_grad=True),
            torch.zeros(C, requires_grad=True), 0.0, rest)
    torch.library.opcheck(model_newllm._loop, args)
