"""sample.py end to end: every model type, prompts, chat over piped stdin, and its errors; chat's turn logic
(state carried across turns, replies cut at the separator) in-process on tiny models built here."""
import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import sample
import generation
from helpers import ROOT, make_dataset, run
from model_newllm import NewLLM, NewLLMConfig
from tokenizer import load_tokenizer

MODELS = {
    'gpt': ['--n_layer=1', '--n_head=2', '--n_embd=16'],
    'newllm': ['--n_layer=2', '--n_embd=16', '--n_hidden=32', '--n_context=16'],
    'resnetbk': ['--n_layer=1', '--n_embd=16'],
}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('sample')
    data = make_dataset(root / 'data', lines=True)
    out = {}
    for model_type, args in MODELS.items():
        run('train.py', f'--model_type={model_type}', *args, f'--dataset={data}', f'--out_dir={root / model_type}',
            '--block_size=16', '--batch_size=4', '--max_iters=2', '--eval_interval=2', '--eval_iters=1')
        out[model_type] = root / model_type / 'best.pt'
    return out


@pytest.mark.parametrize('model_type', list(MODELS))
def test_prompt_generation(checkpoints, model_type):
    p = run('sample.py', f'--ckpt={checkpoints[model_type]}', '--prompt=w1 w4 w7', '--max_new_tokens=30',
            '--num_samples=2', '--seed=1')
    samples = p.stdout.split('-' * 40)
    assert len(samples) == 3 and all(s.strip().startswith('w1 w4 w7') for s in samples[:2])
    # greedy decoding is deterministic
    a = run('sample.py', f'--ckpt={checkpoints[model_type]}', '--prompt=w1', '--temperature=0', '--max_new_tokens=8')
    b = run('sample.py', f'--ckpt={checkpoints[model_type]}', '--prompt=w1', '--temperature=0', '--max_new_tokens=8',
            '--seed=7')
    assert a.stdout == b.stdout


@pytest.mark.parametrize('model_type', list(MODELS))
def test_chat_over_piped_stdin(checkpoints, model_type):
    p = subprocess.run([sys.executable, str(ROOT / 'sample.py'), f'--ckpt={checkpoints[model_type]}', '--chat',
                        '--max_new_tokens=12', '--temperature=0'], input='w1 w2 w3\n\nw5 w6\n', cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    # piped stdin is echoed, one reply per non-empty line, and the separator (<eos>, a line break) is not printed
    assert [line[:4] for line in lines] == ['you:', 'bot:', 'you:', 'bot:'], p.stdout
    assert lines[0] == 'you: w1 w2 w3' and lines[2] == 'you: w5 w6'


def test_errors(checkpoints, tmp_path):
    p = run('sample.py', f'--ckpt={tmp_path}/none.pt', check=False)
    assert p.returncode != 0 and 'does not exist' in p.stderr and 'Traceback' not in p.stderr
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    p = run('sample.py', f'--ckpt={bad}', check=False)
    assert p.returncode == 2 and 'is not a checkpoint' in p.stderr and 'Traceback' not in p.stderr
    history = tmp_path / 'history.json'  # a run's other files: not a checkpoint, and no advice to unpickle them
    history.write_text('[]')
    p = run('sample.py', f'--ckpt={history}', check=False)
    assert p.returncode == 2 and p.stderr.strip().endswith("is not a checkpoint (torch.save did not write it; train.py's "
                                                            "are <out_dir>/best.pt and ckpt.pt)")
    assert 'weights_only' not in p.stderr
    p = run('sample.py', f"--ckpt={checkpoints['gpt']}", '--prompt=FILE:/no/such/file', check=False)
    assert p.returncode != 0 and 'cannot read prompt file' in p.stderr
    # a bare file name: the checkpoint lives in the run's out_dir
    p = run('sample.py', '--ckpt=no_such_run_best.pt', check=False)
    assert p.returncode == 2 and "out_dir" in p.stderr and '--ckpt ' in p.stderr and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# -----------------------------------------------------------------------------
# chat() in-process: greedy decoding on tiny models, every generate call recorded

BOS, EOS = 2, 3  # make_dataset's <bos>, <eos> (the word vocabulary's turn separator)


@pytest.fixture(scope='module')
def word_meta(tmp_path_factory):
    return json.loads((make_dataset(tmp_path_factory.mktemp('chat'), n_train=100, n_val=100) / 'meta.json').read_text())


class Bigram(nn.Module):
    """The next token depends only on the last one (table[last] -> next); the state counts the tokens read."""

    def __init__(self, vocab_size, table):
        super().__init__()
        self.logits = torch.full((vocab_size, vocab_size), -1.0)
        for a, b in table.items():
            self.logits[a, b] = 1.0

    def forward_state(self, idx, state=None):
        return self.logits[idx], (state or 0) + idx.size(1)


def run_chat(model, meta, lines, monkeypatch, capsys, max_new_tokens=50):
    """-> (stdout lines, stderr, calls): calls = [(input ids, state in, reply ids)] of every generate."""
    calls, generate = [], generation.generate_with_state

    def spy(model, idx, *a, state=None, **kw):
        out, new_state = generate(model, idx, *a, state=state, **kw)
        calls.append((idx[0].tolist(), state, out[0, idx.size(1):].tolist()))
        return out, new_state

    args = SimpleNamespace(device='cpu', max_new_tokens=max_new_tokens, temperature=0.0, top_k=0)
    with monkeypatch.context() as m:
        m.setattr(generation, 'generate_with_state', spy)
        m.setattr(sys, 'stdin', io.StringIO(''.join(line + '\n' for line in lines)))
        sample.chat(model, load_tokenizer(meta), meta, args)
    out, err = capsys.readouterr()
    return out.splitlines(), err, calls


def test_chat_reply_stops_at_separator(word_meta, monkeypatch, capsys):
    w = {f'w{i}': 4 + i for i in range(20)}
    model = Bigram(word_meta['vocab_size'], {EOS: w['w10'], w['w10']: w['w11'], w['w11']: EOS, w['w12']: w['w13']})
    out, err, calls = run_chat(model, word_meta, ['w1 w2', 'w3'], monkeypatch, capsys)
    assert out == ['you: w1 w2', 'bot: w10 w11', 'you: w3', 'bot: w10 w11'] and not err
    # generation stopped at the separator (not at max_new_tokens), which is in the state but not printed
    assert calls[0] == ([BOS, w['w1'], w['w2'], EOS], None, [w['w10'], w['w11'], EOS])
    # the second turn continues the first: no <bos> again, and the state has read all 4 + 3 tokens
    assert calls[1] == ([w['w3'], EOS], 7, [w['w10'], w['w11'], EOS])
    # a reply cut by max_new_tokens is closed with the separator before the next user turn
    model = Bigram(word_meta['vocab_size'], {EOS: w['w12'], w['w12']: w['w13'], w['w13']: w['w12']})
    out, err, calls = run_chat(model, word_meta, ['w1', 'w2'], monkeypatch, capsys, max_new_tokens=3)
    assert out[1] == 'bot: w12 w13 w12' and calls[1][0] == [EOS, w['w2'], EOS]


def test_printer_shows_a_stop_token_up_to_the_separator(capsys):
    """gpt2 merges the separator into longer tokens (".\\n"): the text before it is part of the reply."""
    pieces = {0: 'Hi', 1: ' there', 2: '.\n', 3: '<|endoftext|>'}
    tok = SimpleNamespace(decode=lambda ids: ''.join(pieces[i] for i in ids))
    printer = sample.Printer(tok, [], stop={2, 3}, sep='\n')
    for i in (0, 1, 2):
        printer(torch.tensor([[i]]))
    assert capsys.readouterr().out == 'Hi there.' and printer.text == 'Hi there.'
    printer = sample.Printer(tok, [], stop={2, 3}, sep='\n')
    printer(torch.tensor([[3]]))
    assert capsys.readouterr().out == '' and printer.text == ''


def test_chat_empty_reply_is_reported_once(word_meta, monkeypatch, capsys):
    model = Bigram(word_meta['vocab_size'], {EOS: EOS})  # a model that never learned the turns: <eos> at once
    out, err, calls = run_chat(model, word_meta, ['w1', 'w2', 'w3'], monkeypatch, capsys)
    assert [line.rstrip() for line in out] == ['you: w1', 'bot:', 'you: w2', 'bot:', 'you: w3', 'bot:']
    assert err.count('ended its reply at once') == 1 and 'turn separator' in err
    assert all(reply == [EOS] for _, _, reply in calls)


def test_chat_carries_recurrent_state(word_meta, monkeypatch, capsys):
    """New-LLM: each turn continues the previous ones' state, exactly as one pass over the whole history would."""
    torch.manual_seed(2)
    model = NewLLM(NewLLMConfig(vocab_size=word_meta['vocab_size'], n_layer=2, n_embd=8, n_hidden=16, n_context=8,
                                dropout=0.0))
    with torch.no_grad():  # larger weights than the init's, so that greedy replies depend on the context
        for p in model.parameters():
            p.normal_(0, 0.7)
    turns = ['w1 w2 w3', 'w5 w6', 'w7', 'w9 w10']
    out, err, calls = run_chat(model, word_meta, turns, monkeypatch, capsys, max_new_tokens=6)
    assert len(calls) == 4 and calls[0][1] is None and all(torch.is_tensor(state) for _, state, _ in calls[1:])
    tok = load_tokenizer(word_meta)
    bot = [line[len('bot: '):] for line in out if line.startswith('bot:')]
    assert bot == [tok.decode([t for t in reply if t != EOS]).strip() for _, _, reply in calls]

    def greedy(ids, n=6):
        idx = torch.tensor([ids])
        return generation.generate(model, idx, n, temperature=0.0, stop_tokens={EOS, BOS})[0, len(ids):].tolist()

    history, differs = [], False
    for ids, _, reply in calls:
        if history and history[-1] not in (EOS, BOS):  # a reply cut by max_new_tokens is closed first
            assert ids[0] == EOS
        history += ids
        assert greedy(history) == reply  # the carried state = a direct recomputation over the whole history
        differs |= greedy([BOS] + [t for t in ids if t not in (BOS, EOS)] + [EOS]) != reply  # the turn alone
        history += reply
    assert differs  # some reply depends on the earlier turns
