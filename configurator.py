"""
Configuration for the scripts, nanoGPT style: defaults are a script's globals, then each Python config file named on
the command line is executed, then `--key=value` overrides are applied, in the order given:

    python train.py config/wt2_gpt.py --batch_size=32 --compile=False
    python train.py --help        # every key with its default and the comment beside it in the script

Unlike nanoGPT's exec-based configurator, a key that the script does not know (the closest valid key is suggested), or
a value whose type differs from the default's, is a one-line error (exit code 2, no traceback). Values are Python
literals (`--lr=3e-4`, `--bias=False`, `--grad_clip_schedule=[(0,0.5),(10,1.0)]`); anything else is a string.
"""
import ast
import difflib
import inspect
import io
import os
import sys
import textwrap
import tokenize
import types

from cli import fail


def _prog():
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'the script'


def script_defaults(path, end='config_keys'):
    """The defaults block of a script (its module-level `name = literal` lines up to `end = ...`), read from its
    source without running it: {name: value}, None for a value that is not a literal."""
    out = {}
    with open(path) as f:
        body = ast.parse(f.read()).body
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == end:
                break
            try:
                out[name] = ast.literal_eval(node.value)
            except ValueError:
                out[name] = None
    return out


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


def _tname(t):
    if t is None:
        return 'any'
    if isinstance(t, tuple):
        return ' or '.join(_tname(x) for x in t)
    return getattr(t, '__name__', str(t))


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string, e.g. --device=cuda


# -----------------------------------------------------------------------------
# --help: the comments beside the assignments in the source

def source_comments(source, class_name=None):
    """
    -> {name: (comment, section)} for the assignments at module level of `source` (or in the body of class
    `class_name`). comment: the trailing `# ...` of the assignment, continued by comment-only lines below it that
    start in the same column; or, without one, a comment block directly above a lone assignment. section: the last
    comment-only line above a run of assignments (train.py's `# optimizer`), the heading it is listed under.
    """
    comments, alone = {}, set()  # line -> (column, text); lines holding only a comment
    try:
        for t in tokenize.generate_tokens(io.StringIO(source).readline):
            if t.type == tokenize.COMMENT:
                comments[t.start[0]] = (t.start[1], t.string.lstrip('#').strip())
                if not t.line[:t.start[1]].strip():
                    alone.add(t.start[0])
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError):
        return {}
    body = tree.body
    if class_name is not None:
        body = next((n.body for n in body if isinstance(n, ast.ClassDef) and n.name == class_name), [])
    nodes = [n for n in body if isinstance(n, (ast.Assign, ast.AnnAssign))]
    starts = {n.lineno for n in nodes}
    out, section, used = {}, None, set()  # used: comment lines continuing a trailing comment
    for n in nodes:
        targets = n.targets if isinstance(n, ast.Assign) else [n.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        trailing = [comments[i] for i in range(n.lineno, n.end_lineno + 1) if i in comments and i not in alone]
        above, i = [], n.lineno - 1
        while i in alone and i not in used:
            text = comments[i][1]
            if text.strip('-=# '):  # skip ruler lines like `# -----`
                above.insert(0, text)
            i -= 1
        comment = ''
        if trailing:
            col = trailing[-1][0]
            parts, j = [c[1] for c in trailing], n.end_lineno + 1
            while j in alone and comments[j][0] == col and j not in starts:
                parts.append(comments[j][1])
                used.add(j)
                j += 1
            comment = ' '.join(parts)
        if above:
            lone = n.end_lineno + 1 not in starts  # a comment above one assignment describes it
            if not trailing and lone:
                comment = ' '.join(above)
            else:
                section = above[-1]
        for name in names:  # the first assignment is the default (train.py later reassigns dtype)
            out.setdefault(name, (comment, section))
    return out


def _read_comments(script):
    try:
        with open(script, encoding='utf-8') as f:
            return source_comments(f.read())
    except (OSError, ValueError):
        return {}  # help still lists every key, without descriptions


def _class_comments(cls):
    try:
        return source_comments(textwrap.dedent(inspect.getsource(cls)), cls.__name__)
    except (OSError, TypeError):
        return {}


def _rows(rows, indent='  ', w1=None):
    """rows: [(name, value, comment)] -> aligned lines (values padded to w1, at most 24 by default)."""
    w0 = max(len(r[0]) for r in rows)
    w1 = w1 or min(max(len(r[1]) for r in rows), 24)
    return [(f"{indent}{a:<{w0}}  {b:<{w1}}  {c}" if c else f"{indent}{a:<{w0}}  {b}").rstrip() for a, b, c in rows]


def help_text(defaults, extra_types=None, script=None, model_configs=None):
    """The --help listing: the script's keys with default and comment, grouped under the script's section comments,
    then the model config fields (of each dataclass in model_configs {model_type: class}, or by name and type)."""
    extra_types = extra_types or {}
    notes = _read_comments(script) if script else {}
    lines = [f"usage: python {_prog()} [config.py ...] [--key=value ...]", '',
             f"settings of {os.path.basename(script) if script else _prog()} (key, default, description):"]
    groups = []
    for key, value in defaults.items():
        comment, section = notes.get(key, ('', None))
        if not groups or groups[-1][0] != section:
            groups.append((section, []))
        groups[-1][1].append((key, repr(value), comment))
    width = max(len(k) for k in defaults) if defaults else 0  # one alignment across the sections
    w1 = min(max((len(repr(v)) for v in defaults.values()), default=1), 24)
    for section, rows in groups:
        if section:
            lines.append(f"  [{section}]")
        lines += _rows([(k.ljust(width), v, c) for k, v, c in rows], '    ' if section else '  ', w1)
    if model_configs:
        for model_type, cls in model_configs.items():
            fields, notes = getattr(cls, '__dataclass_fields__', {}), _class_comments(cls)
            rows = [(k, repr(f.default), notes.get(k, ('', None))[0])
                    for k, f in fields.items() if k in extra_types]
            if rows:
                lines += ['', f"model fields ({model_type} config dataclass {cls.__name__}, "
                              f"valid with model_type='{model_type}'):"] + _rows(rows)
    elif extra_types:
        lines += ['', "model fields (the model_type's config dataclass; each is valid only for its model):"]
        lines += _rows([(k, _tname(t), '') for k, t in sorted(extra_types.items())])
    return '\n'.join(lines)


# -----------------------------------------------------------------------------

def parse_args(argv, defaults, extra_types=None, script=None, model_configs=None):
    """
    argv: the command line after the script name. defaults: {key: default value} of the script's globals.
    extra_types: {key: expected type or None} of further valid keys that have no script default (model config
    fields). script: the path of the source holding the defaults, whose comments --help shows (optional).
    model_configs: {model_type: config dataclass}, for --help to list each model's fields with default and comment.
    Returns {key: value} for every key that a config file or override set; -h/--help prints the keys and exits 0.
    """
    extra_types = extra_types or {}
    valid = set(defaults) | set(extra_types)
    if '-h' in argv or '--help' in argv:
        print(help_text(defaults, extra_types, script, model_configs))
        sys.exit(0)

    def expected_type(key):
        if defaults.get(key) == 'auto':        # an 'auto' default also takes an explicit choice: compile=True
            return (str, bool)
        if key in defaults and defaults[key] is not None:
            return type(defaults[key])
        return extra_types.get(key)

    def check(key, value, where):
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"(python {_prog()} --help lists every key)"
            fail(f"unknown config key '{key}' ({where}); {hint}")
        t = expected_type(key)
        if t is int and isinstance(value, float) and value.is_integer():  # --max_iters=1e3
            value = int(value)
        if not _type_ok(value, t):
            fail(f"config key '{key}' expects {_tname(t)}, got {value!r} ({where})")
        if isinstance(t, type) and t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return value

    overrides = {}
    for arg in argv:
        if not arg.startswith('--'):
            try:
                with open(arg, encoding='utf-8') as f:
                    source = f.read()
            except OSError as e:
                fail(f"cannot read config file {arg}: {e.strerror}")
            except ValueError as e:  # not UTF-8 text
                fail(f"cannot read config file {arg}: {e}")
            namespace = {}
            try:
                exec(compile(source, arg, 'exec'), namespace)
            except Exception as e:  # a config file is user code: report its error in one line
                msg = ' '.join(str(e).split())
                fail(f"config file {arg} failed: {type(e).__name__}: {msg}")
            for key, value in namespace.items():
                if key.startswith('_') or isinstance(value, types.ModuleType):
                    continue
                overrides[key] = check(key, value, arg)
        else:
            key, sep, text = arg[2:].partition('=')
            if not sep:
                fail(f"override '{arg}' must look like --key=value")
            overrides[key] = check(key, _parse_value(text), arg)
    return overrides
