"""New-LLM: the fast model against the seed's per-token loop (seeds/newllm.py) holding the same weights, its init,
dropout masks and float32 context (the interface shared by every model is in test_models.py)."""
import torch
from torch.nn import functional as F

from model_newllm import NewLLM, NewLLMConfig, dropout_keep
from seeds.newllm import SeedNewLLM, from_newllm, to_newllm

TINY = dict(vocab_size=37, n_embd=12, n_hidden=20, n_context=8, n_layer=3, block_size=16)


def seed_twin(model):
    """The seed's code (seeds/newllm.py) holding model's weights, in model's dtype and train/eval mode."""
    ref = SeedNewLLM(model.config).to(model.wte.weight.dtype)
    ref.load_state_dict(from_newllm(model.state_dict()))
    return ref.train(model.training)


def seed_grads(ref):
    """The gradients of the seed twin's parameters, by NewLLM's parameter names."""
    return to_newllm({n: p.grad for n, p in ref.named_parameters()})


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = NewLLM(NewLLMConfig(**{**TINY, **kw}))
    with torch.no_grad():  # O(1) activations instead of the seed's vanishing N(0, 0.02) init, so that the context
        for n, p in model.named_parameters():  # matters and every term of the math (biases, LayerNorm) is tested
            fan_in = p.size(1) if p.dim() == 2 and not n.startswith('wte') else 1
            p.copy_(torch.randn_like(p) * 1.5 / fan_in ** 0.5)
        model.ln_c.weight.mul_(10)  # some context entries reach the clamp at +-10
        model.lm_head.weight.mul_(0.2)  # logits O(1), so float32 rounding stays well under the 1e-5 tolerance
    return model.eval()


def test_param_count_is_the_seeds():
    """The seed's two configs (the formula itself is checked in test_models.py)."""
    assert NewLLM(NewLLMConfig()).get_num_params() == 2_739_432
    assert NewLLM(NewLLMConfig(n_context=512, n_layer=12)).get_num_params() == 4_840_936


def test_init_is_seed_init():
    torch.manual_seed(0)
    model = NewLLM(NewLLMConfig())
    for n, p in model.named_parameters():
        if n.startswith('ln_c'):
            assert torch.all(p == (1.0 if n.endswith('weight') else 0.0)), n
        elif n.endswith('bias'):
            assert torch.all(p == 0), n
        else:
            assert abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.002, n


def test_matches_seed_loop_logits_and_gradients():
    model = tiny_model()
    idx = torch.randint(0, 37, (3, 11))
    targets = torch.randint(0, 37, (3, 11))
    ref = seed_twin(model)
    fast, loss_fast = model(idx, targets)
    assert (model.forward_state(idx)[1].abs() == 10).any()  # the clamp is exercised
    slow, _ = ref(idx)
    assert (fast - slow).abs().max().item() < 1e-5
    loss_fast.backward()
    F.cross_entropy(slow.view(-1, 37), targets.view(-1)).backward()
    g_slow = seed_grads(ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_slow[n], rtol=1e-4, atol=1e-6, msg=n)


def test_dropout_matches_seed_loop_with_the_same_masks():
    model = tiny_model(dropout=0.3).train().double()  # float64: the comparison is exact up to rounding
    idx = torch.randint(0, 37, (3, 9))
    targets = torch.randint(0, 37, (3, 9))
    torch.manual_seed(5)
    fast, _ = model(idx)
    torch.manual_seed(5)  # the model draws all its masks at once, (L, T, B, H), right after the embedding
    masks = dropout_keep((3, 9, 3, 20), 0.3, 'cpu').double()
    assert 0.2 < 1 - masks.mean() < 0.4
    ref = seed_twin(model)
    slow, _ = ref(idx, masks=masks)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    F.cross_entropy(fast.view(-1, 37), targets.view(-1)).backward()  # in float64, unlike model's loss
    F.cross_entropy(slow.view(-1, 37), targets.view(-1)).backward()
    g_slow = seed_grads(ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_slow[n], rtol=1e-9, atol=1e-12, msg=n)


def test_backward_through_the_state_float64():
    """Gradients also flow into the initial context and out of the returned one (streaming training)."""
    model = tiny_model().double()
    idx = torch.randint(0, 37, (2, 10))
    c0 = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    w_logits, w_c = torch.randn(2, 10, 37, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    ref = seed_twin(model)
    grads = []
    for run, named_grads in ((model.forward_state, lambda: {n: p.grad for n, p in model.named_parameters()}),
                             (ref, lambda: seed_grads(ref))):
        c0.grad = None
        logits, c = run(idx, c0)
        ((logits * w_logits).sum() + (c * w_c).sum()).backward()
        grads.append(dict(named_grads(), c0=c0.grad.clone()))
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-9, atol=1e-12, msg=n)


def test_dropout_keep_rate():
    keep = dropout_keep((1000, 1000), 0.1, 'cpu')
    assert keep.dtype == torch.bool and abs(keep.float().mean().item() - 0.9) < 0.002
    assert abs(keep[:, 0::4].float().mean().item() - 0.9) < 0.004  # each of the four int16 of a draw
    assert abs(keep[:, 3::4].float().mean().item() - 0.9) < 0.004


def test_bf16_autocast_keeps_context_float32_and_close():
    model = tiny_model()
    idx = torch.randint(0, 37, (2, 10))
    ref, _ = model.forward_state(idx)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, c = model.forward_state(idx)
    assert c.dtype == torch.float32
    assert (logits.float() - ref).abs().max() < 0.1 * ref.abs().max()
