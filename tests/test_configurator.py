"""configurator.py: --help with the comments of the defaults block, one-line errors (closest key, type, config file)."""
import dataclasses


import configurator
from helpers import run

SCRIPT = '''\
import sys
# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 250        # iterations between evaluations
# optimizer
learning_rate = 6e-4
grad_clip = 1.0            # clip the global gradient norm at this value;
                           # 0 = off
# the run's seed, described above a lone assignment
seed = 1337

seed = 7                   # a later assignment: not the default's comment
'''
DEFAULTS = {'out_dir': 'out', 'eval_interval': 250, 'learning_rate': 6e-4, 'grad_clip': 1.0, 'seed': 1337}


@dataclasses.dataclass
class TinyConfig:
    n_layer: int = 4
    n_hidden: int = 512    # H, width of the MLP
    dropout: float = 0.1


def parse(argv, capsys, script=None, **kw):
    """-> (exit code or None, stdout, stderr, overrides)."""
    code, out = None, None
    try:
        out = configurator.parse_args(argv, DEFAULTS, {'n_hidden': int, 'dropout': float}, script=script, **kw)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def line_of(text, key):
    return next(line for line in text.splitlines() if line.split() and line.split()[0] == key)


def test_source_comments():
    notes = configurator.source_comments(SCRIPT)
    assert notes['eval_interval'] == ('iterations between evaluations', 'I/O')
    assert notes['out_dir'] == ('', 'I/O')  # "# I/O" heads a run of assignments: a section, not out_dir's comment
    assert notes['learning_rate'] == ('', 'optimizer')
    assert notes['grad_clip'][0] == 'clip the global gradient norm at this value; 0 = off'  # continued below
    assert notes['seed'][0] == "the run's seed, described above a lone assignment"  # the first assignment wins


def test_help_lists_every_key_with_default_and_comment(tmp_path, capsys):
    script = tmp_path / 'train_like.py'
    script.write_text(SCRIPT)
    code, out, err, _ = parse(['--lr=1', '--help'], capsys, script=str(script), model_configs={'tiny': TinyConfig})
    assert code == 0 and not err  # --help wins over anything else on the line
    for key, value in DEFAULTS.items():
        assert repr(value) in line_of(out, key)
    assert 'iterations between evaluations' in line_of(out, 'eval_interval')
    assert 'clip the global gradient norm at this value; 0 = off' in line_of(out, 'grad_clip')
    assert "the run's seed" in line_of(out, 'seed')
    assert '[optimizer]' in out and out.index('[optimizer]') < out.index('learning_rate')
    # model fields: those in extra_types, with the dataclass default and trailing comment
    assert "model fields (tiny config dataclass TinyConfig" in out
    assert '512' in line_of(out, 'n_hidden') and 'H, width of the MLP' in line_of(out, 'n_hidden')
    assert '0.1' in line_of(out, 'dropout') and 'n_layer' not in out
    # the columns line up: every comment of the script's keys starts in the same column
    cols = {line_of(out, k).index(c) for k, c in [('eval_interval', 'iterations between'),
                                                    ('grad_clip', 'clip the global'), ('seed', "the run's")]}
    assert len(cols) == 1


def test_help_without_script_lists_keys_and_types(capsys):
    code, out, err, _ = parse(['-h'], capsys)
    assert code == 0 and "'out'" in line_of(out, 'out_dir') and 'int' in line_of(out, 'n_hidden')


def test_unknown_key_suggests_the_closest(capsys):
    code, out, err, _ = parse(['--learning_rat=3e-4'], capsys)
    assert code == 2 and err.count('\n') == 1
    assert err.startswith("error: unknown config key 'learning_rat' (--learning_rat=3e-4); did you mean "
                          "'learning_rate'?")
    assert 'eval_interval' not in err  # no list of every key
    code, out, err, _ = parse(['--zzz=1'], capsys)
    assert code == 2 and '--help lists every key' in err and err.count('\n') == 1


def test_type_error_names_key_type_and_value(tmp_path, capsys):
    code, out, err, _ = parse(['--eval_interval=often'], capsys)
    assert code == 2 and err == "error: config key 'eval_interval' expects int, got 'often' (--eval_interval=often)\n"
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("n_hidden = 2.5\n")
    code, out, err, _ = parse([str(cfg)], capsys)
    assert code == 2 and "'n_hidden' expects int, got 2.5" in err and str(cfg) in err
    code, out, err, got = parse(['--learning_rate=1', '--n_hidden=8'], capsys)
    assert code is None and got == {'learning_rate': 1.0, 'n_hidden': 8}


def test_missing_config_file_is_one_line(capsys):
    code, out, err, _ = parse(['/no/such/config.py'], capsys)
    assert code == 2 and err == "error: cannot read config file /no/such/config.py: No such file or directory\n"
    # and from the command line, with no traceback and no list of keys
    p = run('train.py', '/no/such/config.py', check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        'error: cannot read config file /no/such/config.py: No such file or directory']


def test_train_help():
    # the descriptions depend on train.py passing script=__file__ to configurator.parse_args
    p = run('train.py', '--help', check=False)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    assert '0.0006' in line_of(p.stdout, 'learning_rate') and '[optimizer]' in p.stdout
    assert "'auto'" in line_of(p.stdout, 'dtype') and 'float16' in line_of(p.stdout, 'dtype')
    assert 'n_hidden' in p.stdout and 'n_experts' in p.stdout
