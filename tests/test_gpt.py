"""GPT: the sliding window past block_size, a tiny corpus overfit, ignore_index and crop_block_size (the interface
shared by every model, causality, the KV cache against recomputation, the parameter count, is in test_models.py)."""
import torch

from model_gpt import GPT, GPTConfig


def tiny(block_size=16):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_sliding_window_past_block_size():
    model = tiny(block_size=8)
    idx = torch.randint(0, 50, (2, 12))
    _, s = model.forward_state(idx[:, :8])
    logits, s = model.forward_state(idx[:, 8:9], s)  # 9 tokens: the window drops the first
    ref, _ = model(idx[:, 1:9])
    torch.testing.assert_close(logits[:, -1], ref[:, -1], rtol=1e-5, atol=1e-5)
    assert s['tokens'].shape == (2, 8)


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
