"""train.py end to end on a tiny dataset: config errors, exact resume, corrupt checkpoints, DDP, seed windows, outputs."""
import json
import os
import shutil

import pytest
import torch

from helpers import make_dataset, run, train_losses

TINY_GPT = ['--model_type=gpt', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
            '--log_interval=1', '--eval_iters=2', '--compile=False', '--device=cpu']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data') / 'tiny')


def test_unknown_key_is_exit_2_with_valid_keys(data):
    p = run('train.py', f'--dataset={data}', '--not_a_key=3', check=False)
    assert p.returncode == 2
    assert "unknown config key 'not_a_key'" in p.stderr and 'valid keys:' in p.stderr and 'n_hidden' in p.stderr
    assert 'Traceback' not in p.stderr


def test_wrong_type_is_exit_2(data, tmp_path):
    p = run('train.py', f'--dataset={data}', '--batch_size=big', check=False)
    assert p.returncode == 2 and "'batch_size' expects int" in p.stderr and 'Traceback' not in p.stderr
    cfg = tmp_path / 'bad.py'
    cfg.write_text("learning_rate = 'fast'\n")
    p = run('train.py', str(cfg), check=False)
    assert p.returncode == 2 and "'learning_rate' expects float" in p.stderr


def test_field_of_another_model_is_an_error(data):
    p = run('train.py', f'--dataset={data}', '--model_type=gpt', '--n_hidden=64', check=False)
    assert p.returncode != 0 and "'n_hidden' is not a field of gpt's config" in p.stderr


def test_missing_dataset_names_the_prepare_command(tmp_path):
    for name, text in (('wikitext2-word1000', 'python prepare.py wikitext2 --tokenizer word --vocab_size 1000`'),
                       ('dailydialog-gpt2', 'python prepare.py dailydialog`'),
                       ('nosuchdata', 'prepare.py writes data/<wikitext2|wikitext103|dailydialog>-<gpt2|word<K>>')):
        p = run('train.py', f'--dataset={tmp_path}/{name}', check=False)
        assert p.returncode != 0 and text in p.stderr and 'Traceback' not in p.stderr


def test_resume_is_exact(data, tmp_path):
    """2N iterations in one go == N, stop, resume, N more: the same losses and the same final weights."""
    common = TINY_GPT + [f'--dataset={data}', '--dropout=0.1', '--eval_interval=4', '--lr_decay_iters=8',
                         '--warmup_iters=2', '--learning_rate=1e-2']
    a = run('train.py', *common, f'--out_dir={tmp_path}/a', '--max_iters=8')
    run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=4')
    b = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=8', '--init_from=resume')
    assert train_losses(a.stdout)[4:] == train_losses(b.stdout)
    wa = torch.load(tmp_path / 'a' / 'ckpt.pt', weights_only=True)['model']
    wb = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = json.loads((tmp_path / 'a' / 'history.json').read_text())
    hb = json.loads((tmp_path / 'b' / 'history.json').read_text())
    assert [h['val_loss'] for h in ha] == [h['val_loss'] for h in hb]


def test_corrupt_checkpoint_is_a_clear_error_and_best_survives(data, tmp_path):
    out = tmp_path / 'run'
    run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={out}', '--max_iters=4', '--eval_interval=2')
    best_before = (out / 'best.pt').read_bytes()
    data_bytes = (out / 'ckpt.pt').read_bytes()
    (out / 'ckpt.pt').write_bytes(data_bytes[:len(data_bytes) // 2])  # truncated, as after a crash mid-copy
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={out}', '--max_iters=8', '--init_from=resume',
            check=False)
    assert p.returncode != 0 and 'unreadable (truncated or corrupt?)' in p.stderr and 'Traceback' not in p.stderr
    assert (out / 'best.pt').read_bytes() == best_before
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]


def test_outputs_history_curves_results(data, tmp_path):
    out = tmp_path / 'run'
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=3')
    history = json.loads((out / 'history.json').read_text())
    logged = [float(line.split('val loss ')[1].split(',')[0]) for line in p.stdout.splitlines()
              if line.startswith('eval iter')]
    assert [round(h['val_loss'], 4) for h in history] == logged and [h['iter'] for h in history] == [3, 6]
    assert (out / 'curves.png').read_bytes()[:4] == b'\x89PNG'
    results = json.loads((out / 'results.json').read_text())
    for key in ('model_name', 'dataset_name', 'final_loss', 'final_perplexity', 'best_perplexity', 'training_time',
                'total_tokens', 'vocab_size', 'peak_memory_mb', 'model_size_mb', 'epoch_losses',
                'epoch_perplexities', 'epoch_times', 'config'):
        assert key in results, key
    assert results['total_tokens'] == 6 * 4 * 16
    assert results['final_eval_of_best']['val']['tokens'] == 3000 - 1
    # curves.py: several runs against time and FLOPs; a folder without a finished run is a one-line error
    run('curves.py', out, out, '--png', tmp_path / 'cmp.png')
    assert (tmp_path / 'cmp.png').read_bytes()[:4] == b'\x89PNG'
    p = run('curves.py', out, tmp_path / 'nothing', '--png', tmp_path / 'bad.png', check=False)
    assert p.returncode != 0 and 'nothing/history.json not found' in p.stderr and 'Traceback' not in p.stderr
    assert not (tmp_path / 'bad.png').exists()


def test_early_stopping_and_epochs(data, tmp_path):
    # learning rate 0: the val loss never improves, so patience 2 stops after the 3rd evaluation
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}', '--max_iters=100',
            '--eval_interval=2', '--learning_rate=0.0', '--min_lr=0.0', '--patience=2')
    assert 'early stopping: no improvement in 2 evaluations' in p.stdout
    assert json.loads((tmp_path / 'results.json').read_text())['iterations'] == 6
    # max_epochs: 19999 // 16 = 1249 windows per epoch, / (4 * 2 accumulation) -> 157 iterations per epoch
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}/e', '--max_iters=0',
            '--max_epochs=1', '--gradient_accumulation_steps=2', '--eval_interval=0', '--n_layer=1')
    assert '157 iterations per epoch' in p.stdout and 'reached max_epochs (157 iterations)' in p.stdout


def test_seed_lines_windows(tmp_path):
    data = make_dataset(tmp_path / 'lines', lines=True)
    import numpy as np
    arr = np.fromfile(data / 'train.bin', dtype=np.uint16)
    bos, eos = np.flatnonzero(arr == 2), np.flatnonzero(arr == 3) + 1
    expected = sum(1 if e - s <= 17 else len(range(s, e - 17 + 1, 8)) for s, e in zip(bos, eos))
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}/o', '--batch_mode=seed_lines',
            '--max_iters=2', '--eval_interval=2', '--eval_full=True')
    assert f'seed_lines: {expected:,} train windows' in p.stdout


def test_finetune_init_from_checks_vocab_and_loads_weights(data, tmp_path):
    run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}/pre', '--max_iters=4', '--eval_interval=4')
    other = make_dataset(tmp_path / 'other', vocab_size=40)
    p = run('train.py', *TINY_GPT, f'--dataset={other}', f'--out_dir={tmp_path}/ft',
            f'--init_from={tmp_path}/pre/best.pt', '--max_iters=2', check=False)
    assert p.returncode != 0 and 'vocabulary mismatch' in p.stderr
    p = run('train.py', *TINY_GPT[:-3], '--n_embd=64', f'--dataset={data}', f'--out_dir={tmp_path}/ft',
            f'--init_from={tmp_path}/pre/best.pt', '--max_iters=2', check=False)
    assert p.returncode != 0 and 'n_embd=64 vs 32' in p.stderr
    # loaded weights give the checkpoint's loss at step 0
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}/ft', '--learning_rate=0.0',
            f'--init_from={tmp_path}/pre/best.pt', '--max_iters=1', '--eval_interval=1', '--min_lr=0.0')
    pre = json.loads((tmp_path / 'pre' / 'history.json').read_text())[-1]
    ft = json.loads((tmp_path / 'ft' / 'history.json').read_text())[0]
    assert ft['val_loss'] == pytest.approx(pre['val_loss'], abs=1e-6)


@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun not installed')
def test_ddp_two_cpu_processes_match_one(data, tmp_path):
    import subprocess, sys
    from helpers import ROOT
    args = TINY_GPT + [f'--dataset={data}', '--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=2']
    one = run('train.py', *args, f'--out_dir={tmp_path}/one')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(ROOT / 'train.py'), *args, f'--out_dir={tmp_path}/two'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert train_losses(two.stdout) == pytest.approx(train_losses(one.stdout), abs=2e-4)
    wa = torch.load(tmp_path / 'one' / 'ckpt.pt', weights_only=True)['model']
    wb = torch.load(tmp_path / 'two' / 'ckpt.pt', weights_only=True)['model']
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
