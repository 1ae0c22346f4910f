"""train.py end to end on a tiny dataset: config errors, exact resume, corrupt checkpoints, DDP, seed windows, outputs."""
import json
import os
import shutil

import pytest
import torch

from helpers import make_dataset, run, train_losses

TINY_GPT = ['--model_type=gpt', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
            '--log_interval=1', '--eval_iters=2', '--compile=False', '--device=cpu', '--dtype=float32']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data') / 'tiny')


def test_unknown_key_is_exit_2_with_a_suggestion(data):
    p = run('train.py', f'--dataset={data}', '--learning_rat=3', check=False)
    assert p.returncode == 2
    assert "unknown config key 'learning_rat'" in p.stderr and "did you mean 'learning_rate'" in p.stderr
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


def test_missing_dataset_prints_the_prepare_command_of_its_name(tmp_path):
    p = run('train.py', 'config/wt2_newllm.py', '--dataset=nosuchdata-x', check=False)
    assert p.returncode == 2 and 'prepare.py writes data/<name> for the names wikitext2-gpt2' in p.stderr
    p = run('train.py', 'config/smoke.py', f'--dataset={tmp_path}/wikitext2-gpt2', check=False)
    assert p.returncode == 2 and 'make it with `python prepare.py wikitext2-gpt2` (that is, `python prepare.py ' \
        'wikitext2`; offline: add --raw_dir DIR' in p.stderr
    # a name of prepare.NAMED: its command makes exactly the data the config expects
    import prepare
    p = run('train.py', 'config/wt2_newllm.py', f'--dataset={tmp_path}/wikitext2-word1000', check=False)
    assert p.returncode == 2 and f"`python prepare.py {prepare.NAMED['wikitext2-word1000']}`" in p.stderr
    assert '--lowercase --line_format bos_eos --min_line_words 5' in prepare.NAMED['wikitext2-word1000']
    assert not (tmp_path / 'wikitext2-word1000').exists() and 'Traceback' not in p.stderr


def test_data_prepared_with_other_options_is_refused(tmp_path):
    """meta.json records prepare.py's options; a config that expects others refuses the data in one line."""
    import prepare
    raw = tmp_path / 'raw'
    raw.mkdir()
    text = ''.join(f' = Title {i} =\n\n The Cat sat on the mat number {i % 7} today .\n' for i in range(300))
    for name in ('wiki.train.raw', 'wiki.valid.raw'):
        (raw / name).write_text(text)
    out = tmp_path / 'wikitext2-word1000'
    prepare.main(['wikitext2', '--tokenizer', 'word', '--vocab_size', '1000', '--raw_dir', str(raw), '--out_dir',
                  str(out), '--num_proc', '1'])    # the hint of the old code: case-sensitive, concatenated
    p = run('train.py', 'config/wt2_newllm.py', f'--dataset={out}', '--device=cpu', '--max_time=1', check=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "was prepared with lowercase=False, line_format='concat', min_line_words=None but this run expects " \
           "lowercase=True, line_format='bos_eos', min_line_words=5" in p.stderr


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
    assert results['machine']['cpu'] and isinstance(results['machine']['avx512_bf16'], bool)
    assert results['date'].startswith('20') and results['date'].endswith(' UTC')
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
    assert p.returncode == 2 and "has another shape: n_embd=64 vs the checkpoint's 32" in p.stderr
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


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing created or changed

BAD_INPUT = [
    (['--data_limit=10'], "the train split has 10 tokens (data_limit), fewer than block_size + 1 = 17"),
    (['--grad_clip_schedule=[(1, 0.5)]'], "grad_clip_schedule must start at epoch 0"),
    (['--grad_clip_schedule=[0.5]'], "grad_clip_schedule must be a list of (from_epoch, clip) pairs"),
    (['--device=cuda'] if not torch.cuda.is_available() else ['--device=cuda:99'], "is not available"),
    (['--device=gpu'], "unknown device 'gpu'"),
    (['--dtype=half'], "dtype must be auto, float32, bfloat16 or float16, not 'half'"),
    (['--batch_size=0'], "batch_size must be >= 1, not 0"),
    (['--learning_rate=-1'], "learning_rate must be >= 0"),
    (['--max_iters=0'], "set max_iters, max_epochs or max_time"),
    (['--batch_mode=lines'], "batch_mode must be 'random' or 'seed_lines', not 'lines'"),
    (['--batch_mode=seed_lines', '--dataset={nobos}'], "no <bos> line windows in the train split"),
    (['--optimizer=sgd'], "optimizer must be 'adamw', 'adam' or 'muon', not 'sgd'"),
    (['--model_type=rnn'], "unknown model_type 'rnn'"),
    (['--init_from=nowhere.pt'], "init_from='nowhere.pt': no such checkpoint"),
    (['--init_from=resume'], "ckpt.pt does not exist: give the run's config file or --out_dir (or start with "
                              "init_from='scratch')"),
    (['--dataset=/nowhere/tiny'], "dataset '/nowhere/tiny' not found"),
    (['--n_layer=x'], "'n_layer' expects int"),
    (['--n_embd=31'], "gpt: "),  # not a multiple of n_head: the model's own check
]


@pytest.mark.parametrize('args, message', BAD_INPUT, ids=[a[0][0].split('=')[0] + str(i) for i, a in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(data, tmp_path, args, message):
    nobos = make_dataset(tmp_path / 'nobos')  # no <bos> segments: a plain stream
    (nobos / 'train.bin').write_bytes(bytes(2 * 1000))
    out = tmp_path / 'out'
    args = [a.replace('{nobos}', str(nobos)) for a in args]
    p = run('train.py', *TINY_GPT[:4], '--n_head=2', '--block_size=16', '--batch_size=4', '--dtype=float32',
            f'--dataset={data}', f'--out_dir={out}', '--max_iters=2', *args, check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], p.stderr
    assert 'Traceback' not in p.stderr and not out.exists()


def test_scratch_run_refuses_an_existing_run_unless_overwrite(data, tmp_path):
    out = tmp_path / 'run'
    common = TINY_GPT + [f'--dataset={data}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', '--snapshot_every_epochs=0')
    (out / 'ckpt_epoch9.pt').write_bytes(b'old snapshot')
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    p = run('train.py', *common, '--max_iters=4', check=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr
    assert f"error: {out} already holds a run (ckpt.pt, best.pt, history.json, results.json, curves.png); " \
           "continue it with --init_from=resume, write to another --out_dir, or replace it with --overwrite=True" \
           in p.stderr
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    run('train.py', *common, '--max_iters=4', '--overwrite=True')
    assert not (out / 'ckpt_epoch9.pt').exists()  # every file of the old run goes
    assert [h['iter'] for h in json.loads((out / 'history.json').read_text())] == [2, 4]


# ---------------------------------------------------------------------------------------------------------------
# exact resume, whatever the model and wherever the stop

RESUME_CASES = {
    'gpt-random': ['--model_type=gpt', '--n_layer=2', '--n_head=2', '--n_embd=32', '--dropout=0.1'],
    'newllm-seed_lines': ['--model_type=newllm', '--n_embd=16', '--n_context=16', '--n_hidden=32', '--n_layer=2',
                          '--dropout=0.1', '--batch_mode=seed_lines'],
    'resnetbk-random': ['--model_type=resnetbk', '--n_embd=16', '--n_layer=2', '--n_experts=2', '--dropout=0.1',
                        '--use_sparse_bk=True'],
    'lstm-muon': ['--model_type=lstm', '--n_embd=16', '--n_hidden=16', '--n_layer=2', '--dropout=0.1',
                  '--optimizer=muon'],
}


def state_of(path):
    ck = torch.load(path, weights_only=True)
    return ck['model'], [o['state'] for o in ck['optimizer']], ck['history']


def assert_same_state(a, b):
    (wa, oa, ha), (wb, ob, hb) = a, b
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(oa) == len(ob)
    for sa, sb in zip(oa, ob):  # each optimizer's per-parameter state
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])
    drop_time = lambda h: [{k: v for k, v in e.items() if k not in ('seconds', 'wall_seconds')} for e in h]  # wall time differs
    assert drop_time(ha) == drop_time(hb)


@pytest.mark.parametrize('case', RESUME_CASES)
def test_resume_is_exact_off_the_eval_grid(case, tmp_path):
    """9 iterations in one go == 5 (a stop between evaluations at 3 and 6), resume, 4 more: weights, optimizer
    state, history, best.pt and every logged loss bit for bit."""
    lines = 'seed_lines' in case
    data = make_dataset(tmp_path / 'd', lines=lines)
    common = RESUME_CASES[case] + ['--block_size=16', '--batch_size=4', '--log_interval=1', '--eval_iters=2',
                                   '--device=cpu', '--dtype=float32', f'--dataset={data}', '--eval_interval=3',
                                   '--warmup_iters=2', '--learning_rate=1e-2', '--lr_decay_iters=9']
    a = run('train.py', *common, f'--out_dir={tmp_path}/a', '--max_iters=9')
    first = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=5')
    assert 'last weights (iter 5, off the evaluation grid)' in first.stdout
    b = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=9', '--init_from=resume')
    assert train_losses(a.stdout) == train_losses(first.stdout) + train_losses(b.stdout)
    assert_same_state(state_of(tmp_path / 'a' / 'ckpt.pt'), state_of(tmp_path / 'b' / 'ckpt.pt'))
    assert_same_state(state_of(tmp_path / 'a' / 'best.pt'), state_of(tmp_path / 'b' / 'best.pt'))
    va, vb = ([h['val_loss'] for h in json.loads((tmp_path / r / 'history.json').read_text())] for r in 'ab')
    assert len(va) == 3 and va == vb


def test_sigterm_saves_ckpt_and_resume_is_exact(data, tmp_path):
    import signal, subprocess, sys
    from helpers import ROOT
    common = TINY_GPT + [f'--dataset={data}', '--dropout=0.1', '--eval_interval=50', '--lr_decay_iters=60']
    a = run('train.py', *common, f'--out_dir={tmp_path}/a', '--max_iters=60')
    p = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *common, f'--out_dir={tmp_path}/b',
                          '--max_iters=60'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    for line in p.stdout:  # wait until it trains
        if line.startswith('iter 5 '):
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert 'SIGTERM: ckpt.pt saved, resume with --init_from=resume' in out
    stopped = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['iter_num']
    assert 5 <= stopped < 60 and not (tmp_path / 'b' / 'results.json').exists()
    b = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=60', '--init_from=resume')
    assert train_losses(a.stdout)[stopped:] == train_losses(b.stdout)
    assert_same_state(state_of(tmp_path / 'a' / 'ckpt.pt'), state_of(tmp_path / 'b' / 'ckpt.pt'))


def test_kill_9_leaves_every_checkpoint_loadable(data, tmp_path):
    import subprocess, sys, time
    from helpers import ROOT
    out = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *TINY_GPT, f'--dataset={data}', f'--out_dir={out}',
                          '--max_iters=100000', '--eval_interval=1', '--eval_iters=1'], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.time() + 120
    while not (out / 'best.pt').exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)   # checkpoints are being written at every iteration: the kill lands on one, or between two
    p.kill()
    p.wait()
    for name in ('ckpt.pt', 'best.pt'):
        ck = torch.load(out / name, weights_only=True)
        assert ck['iter_num'] >= 1
    run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={out}', '--init_from=resume',
        f"--max_iters={torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] + 1}", '--eval_interval=1',
        '--eval_iters=1')


# ---------------------------------------------------------------------------------------------------------------
# options that do what they say

def test_lr_decays_over_max_time(data, tmp_path):
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}', '--max_iters=0', '--max_time=3',
            '--warmup_iters=1', '--learning_rate=1e-2', '--min_lr=1e-4', '--eval_interval=0', '--max_epochs=0')
    lrs = [float(line.split('| lr ')[1].split()[0]) for line in p.stdout.splitlines() if line.startswith('iter ')]
    assert lrs[1] == pytest.approx(1e-2, rel=0.05) and lrs[-1] < 0.5e-2   # cosine over the 3 s
    assert all(x >= y for x, y in zip(lrs[1:], lrs[2:]))


def test_snapshots_at_epoch_boundaries_without_evaluations(data, tmp_path):
    # 19999 // 16 = 1249 windows per epoch / (4 * 100 accumulation) -> 4 iterations per epoch
    run('train.py', *TINY_GPT, '--n_layer=1', f'--dataset={data}', f'--out_dir={tmp_path}',
        '--gradient_accumulation_steps=100', '--max_iters=0', '--max_epochs=3', '--eval_interval=5',
        '--snapshot_every_epochs=2')
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith('ckpt_epoch')) == ['ckpt_epoch2.pt']
    assert torch.load(tmp_path / 'ckpt_epoch2.pt', weights_only=True)['iter_num'] == 8


def test_resume_applies_shape_preserving_overrides(data, tmp_path):
    common = TINY_GPT + [f'--dataset={data}', f'--out_dir={tmp_path}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', '--dropout=0.0')
    p = run('train.py', *common, '--max_iters=4', '--dropout=0.2', '--init_from=resume')
    assert "dropout = 0.2 (the checkpoint had 0.0)" in p.stdout
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['model_args']['dropout'] == 0.2
    p = run('train.py', *common, '--max_iters=6', '--n_layer=3', '--init_from=resume', check=False)
    assert p.returncode == 2 and "has another shape: n_layer=3 vs the checkpoint's 2" in p.stderr


def test_resnetbk_logs_cross_entropy_beside_its_auxiliary_terms(data, tmp_path):
    p = run('train.py', '--model_type=resnetbk', '--n_embd=16', '--n_layer=1', '--n_experts=2', '--block_size=16',
            '--batch_size=4', '--log_interval=1', '--eval_iters=2', '--device=cpu', '--dtype=float32',
            f'--dataset={data}', f'--out_dir={tmp_path}', '--max_iters=2', '--eval_interval=2')
    assert '(+ aux ' in p.stdout
    res = json.loads((tmp_path / 'results.json').read_text())
    assert 'auxiliary terms excluded' in res['perplexity_unit']


@pytest.mark.skipif(shutil.which('torchrun') is None, reason='torchrun not installed')
def test_ddp_resume_restores_every_ranks_rng(data, tmp_path):
    """2 Gloo processes with dropout: 6 iterations == 3, resume, 3 (each rank draws its own masks)."""
    import subprocess, sys
    from helpers import ROOT
    args = TINY_GPT + [f'--dataset={data}', '--dropout=0.3', '--eval_interval=3', '--gradient_accumulation_steps=2',
                       '--lr_decay_iters=6']
    env = dict(os.environ, OMP_NUM_THREADS='1')

    def torchrun(*extra):
        p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                            str(ROOT / 'train.py'), *args, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return p
    a = torchrun(f'--out_dir={tmp_path}/a', '--max_iters=6')
    b1 = torchrun(f'--out_dir={tmp_path}/b', '--max_iters=3')
    b2 = torchrun(f'--out_dir={tmp_path}/b', '--max_iters=6', '--init_from=resume')
    assert train_losses(a.stdout) == train_losses(b1.stdout) + train_losses(b2.stdout)
    assert len(torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['rng']) == 2
    assert_same_state(state_of(tmp_path / 'a' / 'ckpt.pt'), state_of(tmp_path / 'b' / 'ckpt.pt'))


def test_resume_without_evaluations_leaves_no_stale_best(data, tmp_path):
    """Stop at 4 and resume to 8 with no evaluation on the way (eval_interval beyond the run): best.pt, the final
    report and results.json are the straight run's, not the first stop's weights; the log says where it resumed."""
    common = TINY_GPT + [f'--dataset={data}', '--eval_interval=100', '--learning_rate=1e-2', '--lr_decay_iters=8',
                         '--warmup_iters=2']
    run('train.py', *common, f'--out_dir={tmp_path}/a', '--max_iters=8')
    run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=4')
    p = run('train.py', *common, f'--out_dir={tmp_path}/b', '--max_iters=8', '--init_from=resume')
    assert f"resumed from {tmp_path}/b/ckpt.pt at iter 4" in p.stdout
    wa, wb = (torch.load(tmp_path / r / 'best.pt', weights_only=True) for r in 'ab')
    assert wb['iter_num'] == 8 and all(torch.equal(wa['model'][k], wb['model'][k]) for k in wa['model'])
    ra, rb = (json.loads((tmp_path / r / 'results.json').read_text()) for r in 'ab')
    assert rb['final_eval_of_best']['val']['loss'] == ra['final_eval_of_best']['val']['loss']
    assert rb['best_perplexity'] == ra['best_perplexity'] < float('inf')


def test_integral_floats_are_accepted_for_integers(data, tmp_path):
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}', '--max_iters=2e0', '--eval_interval=2')
    assert 'reached max_iters (2 iterations)' in p.stdout
    p = run('train.py', *TINY_GPT, f'--dataset={data}', f'--out_dir={tmp_path}/x', '--max_iters=2.5', check=False)
    assert p.returncode == 2 and "'max_iters' expects int, got 2.5" in p.stderr


def test_run_state_best_patience_epochs_and_eta():
    """The rules train.py's loop leans on, without a run: min_delta and patience (TrainState.record_eval), the epoch
    means (record_step skips a non-finite step's loss), and the ETA's count of iterations and evaluations left."""
    import checkpoint as ckpt_io
    import records
    s = ckpt_io.TrainState()
    assert s.record_eval(3.0, 0.01) and s.best_val_loss == 3.0 and s.evals_since_best == 0
    assert not s.record_eval(2.995, 0.01) and s.best_val_loss == 3.0 and s.evals_since_best == 1  # within min_delta
    assert s.record_eval(2.5, 0.01) and s.evals_since_best == 0
    for loss in (4.0, None, 2.0):
        s.iter_num += 1
        s.train_seconds += 1.0
        ended = s.record_step(loss, iters_per_epoch=3)
    assert ended and s.epoch_log == [{'epoch': 1, 'train_loss': 3.0, 'seconds': 3.0}]
    assert s.epoch_running == [0.0, 0, 3.0]
    clock = records.Clock(total_iters=100, max_time=0, eval_interval=30, iters_per_epoch=50, final_eval_iters=2)
    clock.step(0.6)
    clock.eval_seconds = 6.0
    # at iter 40: 60 iterations and the evaluations at 60 and 90 left, then the final evaluation (2 iterations' worth)
    assert abs(clock.eta_minutes(40, 24.0) - ((60 + 2) * 0.6 + 2 * 6.0) / 60) < 1e-12
    # bounded by max_time: (60 s - 24 s) / 0.6 s = 60 iterations left; evaluations every epoch: at 50 and 100
    clock = records.Clock(total_iters=0, max_time=60, eval_interval=0, iters_per_epoch=50, final_eval_iters=0)
    clock.step(0.6)
    assert abs(clock.eta_minutes(40, 24.0) - (60 * 0.6 + 2 * 0.0) / 60) < 1e-12
