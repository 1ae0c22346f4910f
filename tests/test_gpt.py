"""GPT baseline: parameter count, causality, the KV cache against full recomputation, a tiny corpus overfit."""
import torch

from model_gpt import GPT, GPTConfig


def tiny(bias=True, block_size=16, dropout=0.0):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=dropout,
                         bias=bias)).eval()


def test_num_params_formula():
    V, N, C, L = 50, 16, 16, 2
    assert tiny(bias=True).get_num_params() == V * C + N * C + L * (12 * C * C + 13 * C) + 2 * C
    assert tiny(bias=False).get_num_params() == V * C + N * C + L * (12 * C * C + 2 * C) + C


def test_causality():
    model = tiny()
    idx = torch.randint(0, 50, (2, 16))
    j = 9
    changed = idx.clone()
    changed[:, j] = (changed[:, j] + 1) % 50
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :j], b[:, :j])
    assert not torch.allclose(a[:, j], b[:, j])


def test_forward_state_chunks_equal_full_forward():
    model = tiny()
    idx = torch.randint(0, 50, (3, 16))
    full, _ = model(idx)
    l1, s = model.forward_state(idx[:, :5])
    l2, s = model.forward_state(idx[:, 5:6], s)
    l3, s = model.forward_state(idx[:, 6:], s)
    torch.testing.assert_close(torch.cat([l1, l2, l3], 1), full, rtol=1e-5, atol=1e-5)


def test_sliding_window_past_block_size():
    model = tiny(block_size=8)
    idx = torch.randint(0, 50, (2, 12))
    _, s = model.forward_state(idx[:, :8])
    logits, s = model.forward_state(idx[:, 8:9], s)  # 9 tokens: the window drops the first
    ref, _ = model(idx[:, 1:9])
    torch.testing.assert_close(logits[:, -1], ref[:, -1], rtol=1e-5, atol=1e-5)
    assert s['tokens'].shape == (2, 8)


def test_kv_cache_greedy_generation_equals_recomputation():
    model = tiny()
    prompt = torch.randint(0, 50, (2, 4))
    out = model.generate(prompt, 10, temperature=0.0)
    ref = prompt
    for _ in range(10):  # no cache: the whole prefix every step
        logits, _ = model(ref)
        ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


def test_overfits_a_tiny_corpus():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    data = torch.arange(17).remainder(20)[None].repeat(4, 1).contiguous()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(data[:, :-1], data[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_ignore_index_and_crop_block_size():
    model = tiny()
    idx = torch.randint(0, 50, (1, 16))
    targets = idx.clone()
    targets[:, 8:] = -1
    logits, loss = model(idx, targets)
    ref = torch.nn.functional.cross_entropy(logits[0, :8], targets[0, :8])
    torch.testing.assert_close(loss, ref)
    model.crop_block_size(8)
    assert model(idx[:, :8])[0].shape == (1, 8, 50)
