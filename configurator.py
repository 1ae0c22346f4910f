"""
Configuration for the scripts, nanoGPT style: defaults are a script's globals, then each Python config file named on
the command line is executed, then `--key=value` overrides are applied, in the order given:

    python train.py config/wt2_gpt.py --batch_size=32 --compile=False

Unlike nanoGPT's exec-based configurator, a key that the script does not know, or a value whose type differs from
the default's, is an error that lists the valid keys (exit code 2, no traceback). Values are Python literals
(`--lr=3e-4`, `--bias=False`, `--grad_clip_schedule=[(0,0.5),(10,1.0)]`); anything else is taken as a string.
"""
import ast
import sys
import types


def _fail(msg, valid):
    print(f"error: {msg}\nvalid keys: {', '.join(sorted(valid))}", file=sys.stderr)
    sys.exit(2)


def _type_ok(value, expected):
    """Does value fit the type of the default (or the annotation `expected`, a type or a tuple of types)?"""
    if value is None or expected is None:
        return True
    if not isinstance(expected, tuple):
        expected = (expected,)
    if isinstance(value, bool):  # bool is an int subclass; only accept it where a bool is expected
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    if isinstance(value, (list, tuple)) and (list in expected or tuple in expected):
        return True
    return isinstance(value, expected)


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string, e.g. --device=cuda


def parse_args(argv, defaults, extra_types=None):
    """
    argv: the command line after the script name. defaults: {key: default value} of the script's globals.
    extra_types: {key: expected type or None} of further valid keys that have no script default (model config
    fields). Returns {key: value} for every key that a config file or override set.
    """
    extra_types = extra_types or {}
    valid = set(defaults) | set(extra_types)

    def expected_type(key):
        if key in defaults and defaults[key] is not None:
            return type(defaults[key])
        return extra_types.get(key)

    def check(key, value, where):
        if key not in valid:
            _fail(f"unknown config key '{key}' ({where})", valid)
        t = expected_type(key)
        if not _type_ok(value, t):
            tname = t.__name__ if isinstance(t, type) else ' or '.join(x.__name__ for x in t)
            _fail(f"config key '{key}' expects {tname}, got {value!r} ({where})", valid)
        if isinstance(t, type) and t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return value

    overrides = {}
    for arg in argv:
        if not arg.startswith('--'):
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                _fail(f"cannot read config file {arg}: {e.strerror}", valid)
            namespace = {}
            try:
                exec(compile(source, arg, 'exec'), namespace)
            except Exception as e:  # a config file is user code: report its error in one line
                _fail(f"config file {arg} failed: {type(e).__name__}: {e}", valid)
            for key, value in namespace.items():
                if key.startswith('_') or isinstance(value, types.ModuleType):
                    continue
                overrides[key] = check(key, value, arg)
        else:
            key, sep, text = arg[2:].partition('=')
            if not sep:
                _fail(f"override '{arg}' must look like --key=value", valid)
            overrides[key] = check(key, _parse_value(text), arg)
    return overrides
