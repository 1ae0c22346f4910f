"""optim.py: which parameters each optimizer gets, Muon's FLOPs against torch's counter, and Muon learning."""
import pytest
import torch

import checkpoint as ckpt_io
import optim

SMALL = list(ckpt_io.MODELS)  # each at its config class's TINY size


def model_of(model_type, vocab=40, **size):
    torch.manual_seed(0)
    cfg_cls, _ = ckpt_io.model_classes(model_type)
    fields = {f for f in cfg_cls.__dataclass_fields__}
    return ckpt_io.build_model(model_type, {k: v for k, v in dict(cfg_cls.TINY, block_size=16, dropout=0.0,
                                                                  vocab_size=vocab, **size).items() if k in fields})


@pytest.mark.parametrize('model_type', SMALL)
@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_every_parameter_in_exactly_one_optimizer(model_type, name):
    model = model_of(model_type)
    opts = optim.build(model, name, 1e-3, 0.1, (0.9, 0.95))
    seen = [id(p) for o in opts for g in o.param_groups for p in g['params']]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(set(seen)) == len(seen)
    if name == 'muon':
        muon, adamw = opts
        assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
        names = {id(p): n for n, p in model.named_parameters()}
        in_muon = [names[id(p)] for p in muon.param_groups[0]['params']]
        assert in_muon and all(p.dim() == 2 for p in muon.param_groups[0]['params'])
        assert not [n for n in in_muon if 'lm_head' in n or 'wte' in n or 'wpe' in n]
        assert all(p.dim() < 2 or names[id(p)].split('.')[-2] in ('lm_head', 'wte', 'wpe')
                   for g in adamw.param_groups for p in g['params'])


def test_unknown_optimizer_is_a_value_error():
    with pytest.raises(ValueError, match="optimizer must be 'adamw', 'adam' or 'muon', not 'sgd'"):
        optim.build(model_of('gpt'), 'sgd', 1e-3, 0.1, (0.9, 0.95))


def test_muon_overfits_a_tiny_batch():
    model = model_of('newllm', n_embd=16, n_context=16, n_hidden=32, n_layer=2)  # room to memorise the batch
    opts = optim.build(model, 'muon', 1e-2, 0.0, (0.9, 0.95))
    x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(1))
    model.train()
    for step in range(150):
        _, loss = model(x[:, :-1], x[:, 1:])
        if step == 0:
            first = loss.item()
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad()
    assert first > 3.5 and loss.item() < 0.3 * first


def test_adamw_lr_ratio_scales_only_the_adamw_share_of_muon():
    model = model_of('newllm')
    muon, adamw = optim.build(model, 'muon', 1e-2, 0.0, (0.9, 0.95), adamw_lr_ratio=0.25)
    assert [g['lr'] for g in muon.param_groups] == [1e-2]
    assert all(g['lr'] == 2.5e-3 and g['lr_ratio'] == 0.25 for g in adamw.param_groups)
    with pytest.raises(ValueError, match="adamw_lr_ratio scales the AdamW share of optimizer='muon', not of "
                                         "optimizer='adamw'"):
        optim.build(model, 'adamw', 1e-2, 0.0, (0.9, 0.95), adamw_lr_ratio=0.5)
    with pytest.raises(ValueError, match="adamw_lr_ratio must be > 0, not 0"):
        optim.check('muon', 0)
