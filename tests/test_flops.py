"""flops.py: analytic matmul FLOPs equal torch's FlopCounterMode on real steps; the seed's table; the command line."""
import json
import re

import numpy as np
import pytest
import torch

import checkpoint as ckpt_io
import config
import flops
from helpers import ROOT, make_dataset, run

SEED_TABLE = {'forward': 8_143_880_192, 'backward': 16_284_008_448, 'optimizer': 62_191_800,
              'per_step': 24_490_080_440}
SEED_ROWS = {'lm_head': 7_864_320_000, 'embedding': 131_072, 'final norm': 655_360}
SEED_LAYER = 69_693_440

TINY = {
    'gpt': dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0),
    'gpt dropout': dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1, bias=False),
    'newllm': dict(vocab_size=50, n_embd=8, n_hidden=16, n_context=8, n_layer=3),
    'resnetbk': dict(vocab_size=50, block_size=16, n_embd=8, n_layer=2, n_experts=4, top_k=2),
    'resnetbk all flags': dict(vocab_size=50, block_size=16, n_embd=8, n_layer=2, n_experts=3, top_k=1,
                               use_act=True, use_multi_scale=True, use_sparse_bk=True, router='seed'),
    'resnetbk seed': dict(vocab_size=50, block_size=16, n_embd=8, n_layer=2, bk_causal=False, bk_grad='seed'),
    'gdn': dict(vocab_size=50, n_embd=16, n_layer=2, n_head=2, head_dim=8, mlp_hidden=24, chunk_size=4),
}


@pytest.mark.parametrize('name', TINY)
def test_matmul_flops_equal_flop_counter(name):
    """Forward and backward matmul/SDPA/conv FLOPs of a real training step, exactly; the optimizer shows none."""
    model_type = name.split()[0]
    torch.manual_seed(0)
    model = ckpt_io.build_model(model_type, TINY[name])
    B, T = 3, 13  # odd T: multi-scale pairs with a leftover position
    a = flops.step_flops(model_type, model.config, B, T, device_type='cpu', model=model)
    m = flops.measure_step(model, B, T, 50, 'cpu')
    assert a['forward_matmul'] + a['backward_matmul'] == m['forward'] + m['backward'] and m['optimizer'] == 0
    # the fused lm_head + loss (linear_ce.py) forms the head's gradients in the forward: 4 M D V move there
    head = 4 * B * T * model.config.vocab_size * model.lm_head.weight.shape[1]
    assert (a['forward_matmul'] + head, a['backward_matmul'] - head) == (m['forward'], m['backward'])
    assert m['forward'] > 0 and a['forward'] > a['forward_matmul']  # the analytic-only part is there too


def test_attention_backward_kernels():
    """The fused SDPA backward recomputes q k^T (2.5x the forward's two matmuls), the math fallback does not (2x)."""
    cfg = ckpt_io.model_classes('gpt')[0](**TINY['gpt dropout'])
    fused = {r.name: r for r in flops.breakdown('gpt', cfg, 2, 8, device_type='cuda')}
    math = {r.name: r for r in flops.breakdown('gpt', cfg, 2, 8, device_type='cpu')}
    s = 'attention scores q k^T, scale, mask, softmax, dropout'
    assert fused[s].bwd_mm == 3 * fused[s].fwd_mm and math[s].bwd_mm == 2 * math[s].fwd_mm


def test_seed_table_exactly():
    s = flops.step_flops('resnetbk', dict(vocab_size=30000, block_size=128, n_embd=64, n_layer=4, n_experts=4,
                                          top_k=1), 16, 128, optimizer='adamw', convention='seed')
    assert {k: s[k] for k in SEED_TABLE} == SEED_TABLE
    assert s['n_params'] == 4_146_120
    groups = {}
    for r in s['rows']:
        groups[r.group] = groups.get(r.group, 0) + r.fwd_mm + r.fwd_other
    assert {k: groups[k] for k in SEED_ROWS} == SEED_ROWS
    assert [groups[f'layer {i}'] for i in range(4)] == [SEED_LAYER] * 4


def test_seed_table_from_the_command_line():
    """config/wt103_resnetbk.py (or its settings, where the file is not there yet) at batch 16, --convention seed."""
    cfg = ['config/wt103_resnetbk.py'] if (ROOT / 'config' / 'wt103_resnetbk.py').is_file() else \
        ['--model_type=resnetbk', '--dataset=wikitext103-word30000', '--block_size=128']
    p = run('flops.py', *cfg, '--batch_size', '16', '--convention', 'seed')
    numbers = {line.split()[0]: line.split()[-1] for line in p.stdout.splitlines() if line.strip()}
    assert numbers['forward'] == f"{SEED_TABLE['forward']:,}" and numbers['backward'] == f"{SEED_TABLE['backward']:,}"
    assert numbers['optimizer'] == f"{SEED_TABLE['optimizer']:,}"
    assert re.search(r'^per step\s+24,490,080,440$', p.stdout, re.M)
    assert re.search(r'^lm_head: lm_head 2TDV\s+7,864,320,000\s', p.stdout, re.M)
    assert re.search(r'^layer 3\s+69,693,440\s', p.stdout, re.M)


def test_optimizer_and_totals():
    model = ckpt_io.build_model('gpt', TINY['gpt'])
    P = sum(p.numel() for p in model.parameters())
    decayed = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    s = flops.step_flops('gpt', model.config, 2, 8, accum_steps=3, optimizer='adamw', grad_clip=True, model=model)
    assert s['optimizer'] == 13 * P + decayed + 3 * P
    assert s['per_step'] == s['forward'] + s['backward'] + s['optimizer'] and s['tokens'] == 3 * 2 * 8
    one = flops.step_flops('gpt', model.config, 2, 8, optimizer='adam', grad_clip=False, model=model)
    assert s['forward'] == 3 * one['forward'] and one['optimizer'] == 13 * P
    assert sum(s['params'].values()) == P and s['estimate_6nd'] == 6 * P * 48


def test_cli_table_check_and_vocab_from_meta(tmp_path):
    data = make_dataset(tmp_path / 'tiny', vocab_size=48)
    p = run('flops.py', '--model_type=newllm', f'--dataset={data}', '--n_embd=8', '--n_hidden=16', '--n_context=8',
            '--n_layer=2', '--block_size', '12', '--batch_size=2', '--device=cpu', '--max_iters=0', '--max_epochs=2',
            '--check')
    out = p.stdout
    assert f"vocab 48 ({data}/meta.json)" in out
    for row in ('embedding: wte lookup', 'layer 1', 'layer 2', 'context heads', 'context LayerNorm', 'lm_head',
                'per step', 'per token', '6*N*D estimate', 'parameters by component'):
        assert row in out, row
    per_epoch = -(-((20000 - 1) // 12) // 2)
    assert f"whole run: {2 * per_epoch:,} iterations (max_epochs=2 x {per_epoch:,} per epoch)" in out
    assert len(re.findall(r'^(forward|backward|forward \+ backward|optimizer) .* equal$', out, re.M)) == 4
    assert 'analytic only' in out


def test_seed_lines_iterations(tmp_path):
    """Iterations per epoch of batch_mode='seed_lines' follow train.py's window rule (checked by a plain loop)."""
    data = make_dataset(tmp_path / 'lines', lines=True)
    meta = json.loads((data / 'meta.json').read_text())
    arr = np.fromfile(data / 'train.bin', dtype=np.uint16)
    L = 16 + 1
    starts = [i for i, t in enumerate(arr) if t == 2]
    windows = 0
    for s, e in zip(starts, starts[1:] + [len(arr)]):
        windows += 1 if e - s <= L else len(range(s, e - L + 1, L // 2))
    cfg = config.load(['--batch_mode=seed_lines', '--block_size=16', '--batch_size=8', '--max_epochs=3',
                       '--max_iters=0'])
    per_epoch = -(-windows // 8)
    assert flops.run_iterations(cfg, str(data), meta) == (3 * per_epoch, f"max_epochs=3 x {per_epoch:,} per epoch")
    cfg.settings['max_iters'] = 5
    assert flops.run_iterations(cfg, str(data), meta) == (5, "max_iters=5")


@pytest.mark.parametrize('args, message', [
    (['--model_type=gpt', '--convention=seed'], 'error: the seed convention exists for resnetbk only, not gpt'),
    (['--model_type=resnetbk', '--convention', 'rough'], "error: convention must be 'exact' or 'seed', not 'rough'"),
    (['--model_type=gpt', '--n_hidden=3'], "error: 'n_hidden' is not a field of gpt's config"),
    (['--model_type=resnetbk', '--convention=seed', '--use_act=True'], "error: the seed convention covers the seed's"),
])
def test_bad_input_is_one_line_error(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        flops.main(args + ['--dataset=none'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count('\n') == 1


def test_train_reports_flops_and_mfu(tmp_path):
    """train.py: MFU in the progress line = model FLOPs per iteration / (seconds per iteration x the configured peak),
    and the FLOPs fields of results.json."""
    data = make_dataset(tmp_path / 'tiny')
    p = run('train.py', f'--dataset={data}', '--model_type=gpt', '--n_layer=1', '--n_head=2', '--n_embd=16',
            '--block_size=8', '--batch_size=2', '--gradient_accumulation_steps=2', '--max_iters=2', '--log_interval=1',
            '--eval_iters=1', '--device=cpu', '--dtype=float32', '--peak_flops=1e9', f'--out_dir={tmp_path}/out')
    assert 'MFU against 1e+09 FLOP/s per device (peak_flops from the config)' in p.stdout
    r = json.loads((tmp_path / 'out' / 'results.json').read_text())
    want = flops.step_flops('gpt', r['model_args'], 2, 8, accum_steps=2, optimizer='adamw', grad_clip=True,
                            device_type='cpu')
    assert (r['forward_flops'], r['backward_flops'], r['optimizer_flops'], r['total_flops_per_step']) == \
        (want['forward'], want['backward'], want['optimizer'], want['per_step'])
    assert r['total_training_flops'] == 2 * want['per_step'] and r['peak_flops'] == 1e9
    lines = re.findall(r'^iter \d .*\| ([\d.]+) ms/iter .*\| MFU ([\d.]+)%.* \(\+ optimizer ([\d.]+)%\)', p.stdout,
                       re.M)
    assert len(lines) == 2
    model_flops = want['forward'] + want['backward']  # MFU counts the model's FLOPs; the optimizer's beside it
    for ms, mfu, opt in lines:  # the printed figures follow from the printed time (rounded to 0.1 ms and 0.1%)
        seconds = (float(ms) + 0.05) * 1e-3, (float(ms) - 0.05) * 1e-3
        for flops_, shown in ((model_flops, mfu), (want['optimizer'], opt)):
            assert 100 * flops_ / (seconds[0] * 1e9) - 0.051 <= float(shown) <= 100 * flops_ / (seconds[1] * 1e9) + 0.051
