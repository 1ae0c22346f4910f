"""
Turn a dataset into flat uint16 token streams for train.py (nanoGPT's prepare.py, for three corpora and two tokenizers).

    python prepare.py DATASET [--tokenizer gpt2|word] [--vocab_size K] [--lowercase] [--vocab_from META]
                      [--line_format concat|bos_eos] [--min_line_words N] [--raw_dir DIR] [--out_dir DIR] [--num_proc P]

DATASET is wikitext2, wikitext103 or dailydialog. Output: DIR/{train,val,test}.bin (np.uint16, one stream per split)
and DIR/meta.json. Default DIR: data/<dataset>-gpt2, or data/<dataset>-word<K> for the word tokenizer (K = the
--vocab_size asked for, or the vocabulary size of --vocab_from); data/ sits beside this file. The folder name does not
record lowercasing or the line format: a folder that already holds a different setup is refused (pass --out_dir).

Sources
- Online (no --raw_dir), through `datasets`: Salesforce/wikitext (wikitext-2-raw-v1, wikitext-103-raw-v1); DailyDialog
  from the parquet repo OpenRL/daily_dialog (a copy of the original splits; column `dialog`), falling back to the
  parquet conversion of li2017dailydialog/daily_dialog (revision refs/convert/parquet). Empty WikiText rows ("")
  become " \\n", as in the raw files, so online and offline give identical streams.
- Offline, --raw_dir DIR: wiki.train.raw, wiki.valid.raw, wiki.test.raw (a file may be split into wiki.train.raw.part00,
  .part01, ... which are read in order as one file); DailyDialog: dialogues_{train,validation,test}.txt, either in DIR,
  in DIR/<split>/, or inside DIR/{train,validation,test}.zip (the corpus's own split archives).
  A missing split is reported and skipped; the other splits are written.

Line formats (--line_format, WikiText; each split is one stream in file order)
- concat (default): the split's text as it is, lines concatenated with no separator added. gpt2 keeps every newline,
  so decode(train.bin) == the raw file; word keeps only the words (whitespace is what it splits on). No eot token.
- bos_eos (word only): every line with at least --min_line_words words (default 1: every non-blank line) becomes
  `<bos> words <eos>`; other lines are dropped.
DailyDialog always uses `dialog`: a dialogue's turns (" __eou__" removed, stripped) joined by "\\n", then the end
token: gpt2 `t1\\nt2\\n...tn<|endoftext|>`; word `<bos> t1 <eos> t2 <eos> ... tn <eos>` (a word vocabulary has no
newline, so <eos> ends each turn and <bos> starts each dialogue).

Word tokenizer: whitespace split (str.split), lowercased with --lowercase; ids = special tokens, then the most frequent
train words (ties in first-seen order), K ids in all; unknown words -> <unk>. Specials: `<pad>`=0 `<unk>`=1 `<bos>`=2
`<eos>`=3 for bos_eos and dialog, `<unk>`=0 alone for concat. The counts cover the whole train text (every line),
whatever the line format keeps. --vocab_from PATH/meta.json reuses another dataset's word list (and its lowercasing).

The two seed setups (seeds/README.md), reproduced exactly:
- New-LLM:   python prepare.py wikitext2 --tokenizer word --vocab_size 1000 --lowercase --line_format bos_eos
             --min_line_words 5                                                          -> data/wikitext2-word1000
  (the seed skipped lines of fewer than 5 words; cut as the seed did, 64-token windows at stride 32, this stream
  gives its 51,026 train / 5,272 val sequences)
- ResNet-BK: python prepare.py wikitext103 --tokenizer word --vocab_size 30000          -> data/wikitext103-word30000

meta.json: dataset, tokenizer, vocab_size, lowercase, line_format, special_tokens, eot_token, pad_token, (bos_eos:
min_line_words; dailydialog: turn_separator), source, words (word only), and per split: tokens, bytes = UTF-8 bytes of
the source text that the stream encodes (for bos_eos: the kept lines with their newlines; for dialog: the turns joined
by "\\n"), words = its whitespace-split word count, unk_bytes = the bytes of the words mapped to <unk> (0 for gpt2).
Evaluation uses them for bits/byte and word-level perplexity, and to say how much of the text <unk> hides.

Memory: text is read in chunks of whole lines (~1 MB), tokenized by a pool of --num_proc processes with a bounded
number of chunks in flight, and appended to the output file as uint16; word counting streams the same way. gpt2 chunks
end only where the BPE pre-tokenizer has a boundary anyway (before a line that starts with " X", X printable, or with
"X" after a line ending in a printable byte), so the tokens equal those of tiktoken on the whole text.
Output is atomic: each split goes to <split>.bin.tmp, then the old meta.json is removed, the .bin files are renamed
into place, and meta.json is written (also via a temp file) last; an interrupted run leaves no partial file in place.
"""
import argparse
import collections
import glob
import json
import multiprocessing
import os
import re
import shlex
import sys
import time
import zipfile

import numpy as np

from cli import fail
from tokenizer import GPT2Tokenizer, WordTokenizer

ROOT = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "val", "test")
WIKITEXT_CONFIG = {"wikitext2": "wikitext-2-raw-v1", "wikitext103": "wikitext-103-raw-v1"}
WIKI_FILES = {"train": "wiki.train.raw", "val": "wiki.valid.raw", "test": "wiki.test.raw"}
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # our name -> HF / DailyDialog split name
DAILYDIALOG_HF = (("OpenRL/daily_dialog", None), ("li2017dailydialog/daily_dialog", "refs/convert/parquet"))
CHUNK_BYTES = 1 << 20  # text per tokenization task
MAX_CHUNK_BYTES = 64 << 20  # cut anyway if no safe line comes (never in WikiText: most lines start with " X")
DIALOGS_PER_CHUNK = 2000
DATASETS = ("wikitext2", "wikitext103", "dailydialog")
# the datasets the configs name -> the prepare.py arguments that make them (`python prepare.py NAME` runs them);
# train.py refuses a folder of that name made with other options
NAMED = {
    "wikitext2-gpt2": "wikitext2",
    "wikitext103-gpt2": "wikitext103",
    "dailydialog-gpt2": "dailydialog",
    "wikitext2-word1000": "wikitext2 --tokenizer word --vocab_size 1000 --lowercase --line_format bos_eos "
                          "--min_line_words 5",                                # the New-LLM seed's
    "wikitext2-word30000": "wikitext2 --tokenizer word --vocab_size 30000",
    "wikitext103-word30000": "wikitext103 --tokenizer word --vocab_size 30000",  # the ResNet-BK seed's
    "dailydialog-word1000": "dailydialog --tokenizer word --vocab_from data/wikitext2-word1000/meta.json",
}
MAX_VOCAB = 1 << 16  # ids must fit np.uint16
SPECIALS = {"bos_eos": ("<pad>", "<unk>", "<bos>", "<eos>"), "dialog": ("<pad>", "<unk>", "<bos>", "<eos>"),
            "concat": ("<unk>",)}

RAW_LAYOUT = {
    "wikitext": ("--raw_dir DIR with DIR holding:\n"
                 "  wiki.train.raw   (or wiki.train.raw.part00, wiki.train.raw.part01, ... read in order)\n"
                 "  wiki.valid.raw\n"
                 "  wiki.test.raw"),
    "dailydialog": ("--raw_dir DIR with DIR holding the split archives train.zip, validation.zip, test.zip\n"
                    "(or dialogues_train.txt, dialogues_validation.txt, dialogues_test.txt, directly or in\n"
                    "DIR/<split>/)"),
}
DOWNLOAD = {
    "wikitext": "download {config}.zip (the WikiText raw release; https://huggingface.co/datasets/Salesforce/wikitext\n"
                "has the same text as parquet), unzip it and pass",
    "dailydialog": "download ijcnlp_dailydialog.zip (http://yanran.li/dailydialog), unzip it and pass",
}


def die(msg):
    raise ValueError(msg)  # the command line prints it as one line (cli.fail)


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def first_line(e):
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0][:300] if s else ''}"


# ----------------------------------------------------------------------------------------------------------------------
# sources: each split -> (description, total bytes or None, factory of a chunk iterator)
# WikiText chunks are str (whole lines); DailyDialog chunks are lists of dialogues (lists of turns).

def _printable(c):
    return c != b"" and 0x21 <= c[0] <= 0x7e


def _is_chunk_start(prev, line):
    r"""True if a chunk may end after line `prev` and start at `line` (bytes) without changing GPT-2's tokens.

    GPT-2's pre-tokenizer splits a whitespace run R before a word with `\s+(?!\S)`: before " X" (X printable) it
    yields R without that last space, which is what R gives at the end of a chunk; before a bare "X" it yields
    R[:-1] and R[-1], which equals R alone only if R is one character (prev ends with a printable byte + newline)."""
    if line[:1] == b" ":
        return _printable(line[1:2])
    return _printable(line[:1]) and _printable(prev[-2:-1])


def wikitext_chunks(byte_lines):
    """Whole lines (bytes) -> decoded text chunks of ~CHUNK_BYTES, cut only at safe lines."""
    buf, size = [], 0
    for line in byte_lines:
        if size >= CHUNK_BYTES and (_is_chunk_start(buf[-1], line) or size >= MAX_CHUNK_BYTES):
            yield b"".join(buf).decode("utf-8")
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    if buf:
        yield b"".join(buf).decode("utf-8")


def file_lines(paths):
    """Lines (bytes, split on b"\\n" only) of the concatenation of `paths`, a line may continue across part files."""
    carry = b""
    for p in paths:
        with open(p, "rb") as f:
            for line in f:
                if carry:
                    line, carry = carry + line, b""
                if line.endswith(b"\n"):
                    yield line
                else:
                    carry = line
    if carry:
        yield carry


def hf_wikitext_lines(ds):
    """Rows of a Salesforce/wikitext split -> the raw file's lines (an empty row "" is the line " \\n" there)."""
    for batch in ds.iter(batch_size=10000):
        for t in batch["text"]:
            yield (t if t.endswith("\n") else (t or " ") + "\n").encode("utf-8")


def dialog_turns(turns):
    return [t.strip() for t in turns if t.strip()]


def dailydialog_chunks(dialogs):
    buf = []
    for d in dialogs:
        if d:
            buf.append(d)
        if len(buf) >= DIALOGS_PER_CHUNK:
            yield buf
            buf = []
    if buf:
        yield buf


def dailydialog_file_dialogs(path, member=None):
    """One dialogue per line, each turn followed by "__eou__" (the corpus's files; `member` of the zip at `path`)."""
    def dialogs(f):
        for line in f:
            yield dialog_turns(line.decode("utf-8").split("__eou__"))
    if member:
        with zipfile.ZipFile(path) as z, z.open(member) as f:
            yield from dialogs(f)
    else:
        with open(path, "rb") as f:
            yield from dialogs(f)


def hf_dailydialog_dialogs(ds):
    for batch in ds.iter(batch_size=1000):
        for d in batch["dialog"]:
            yield dialog_turns(d)


def find_raw_sources(dataset, raw_dir):
    if not os.path.isdir(raw_dir):
        die(f"--raw_dir {raw_dir} is not a directory")
    sources = {}
    for split in SPLITS:
        if dataset in WIKITEXT_CONFIG:
            name = WIKI_FILES[split]
            path = os.path.join(raw_dir, name)
            parts = [path] if os.path.isfile(path) else sorted(
                glob.glob(glob.escape(path) + ".part*"), key=lambda p: int(re.sub(r"\D", "", p[len(path):]) or 0))
            if not parts:
                warn(f"{split}: no {name} (or {name}.part00, ...) in {raw_dir}; split '{split}' skipped")
                continue
            desc = name + (f" ({len(parts)} parts)" if len(parts) > 1 else "")
            sources[split] = (desc, sum(os.path.getsize(p) for p in parts),
                              lambda parts=parts: wikitext_chunks(file_lines(parts)))
        else:
            s = HF_SPLITS[split]
            txt = f"dialogues_{s}.txt"
            for path in (os.path.join(raw_dir, txt), os.path.join(raw_dir, s, txt)):
                if os.path.isfile(path):
                    sources[split] = (path, os.path.getsize(path),
                                      lambda path=path: dailydialog_chunks(dailydialog_file_dialogs(path)))
                    break
            else:
                zpath = os.path.join(raw_dir, f"{s}.zip")
                if os.path.isfile(zpath):
                    with zipfile.ZipFile(zpath) as z:
                        members = [m for m in z.infolist() if m.filename.split("/")[-1] == txt]
                    if not members:
                        die(f"{zpath} holds no {txt}")
                    m = members[0]
                    sources[split] = (f"{zpath}:{m.filename}", m.file_size, lambda zpath=zpath, m=m.filename:
                                      dailydialog_chunks(dailydialog_file_dialogs(zpath, m)))
                else:
                    warn(f"{split}: no {txt}, {s}/{txt} or {s}.zip in {raw_dir}; split '{split}' skipped")
    if not sources:
        kind = "wikitext" if dataset in WIKITEXT_CONFIG else "dailydialog"
        die(f"no split of {dataset} found in {raw_dir}. Expected " + RAW_LAYOUT[kind])
    return sources


def load_dataset(*args, **kwargs):
    """datasets.load_dataset, imported lazily (it is slow to import); tests replace this function."""
    import datasets
    return datasets.load_dataset(*args, **kwargs)


def find_hf_sources(dataset):
    kind = "wikitext" if dataset in WIKITEXT_CONFIG else "dailydialog"
    if kind == "wikitext":
        attempts = (("Salesforce/wikitext", WIKITEXT_CONFIG[dataset], None),)
    else:
        attempts = tuple((repo, None, rev) for repo, rev in DAILYDIALOG_HF)
    errors = []
    for repo, config, revision in attempts:
        try:
            dd = load_dataset(repo, config, revision=revision)
            break
        except Exception as e:  # no network, hub offline mode, repo gone: all end in the same advice
            errors.append(f"{repo}{'@' + revision if revision else ''}: {first_line(e)}")
    else:
        die(f"could not load {dataset} with `datasets` ({'; '.join(errors)}).\nWithout network, "
            + DOWNLOAD[kind].format(config=WIKITEXT_CONFIG.get(dataset, "")) + "\n" + RAW_LAYOUT[kind])
    sources = {}
    for split in SPLITS:
        hf_split = HF_SPLITS[split]
        if hf_split not in dd:
            warn(f"{split}: {repo} has no split '{hf_split}'; split '{split}' skipped")
            continue
        ds = dd[hf_split]
        desc = f"{repo} {config or ''} {hf_split}".replace("  ", " ")
        if kind == "wikitext":
            sources[split] = (desc, None, lambda ds=ds: wikitext_chunks(hf_wikitext_lines(ds)))
        else:
            if "dialog" not in ds.column_names:
                die(f"{repo} has no 'dialog' column (columns: {ds.column_names})")
            sources[split] = (desc, None, lambda ds=ds: dailydialog_chunks(hf_dailydialog_dialogs(ds)))
    return sources


# ----------------------------------------------------------------------------------------------------------------------
# tokenization workers (module globals so forked pool processes inherit the tokenizer instead of rebuilding it)

_TOK = None  # GPT2Tokenizer | WordTokenizer
_FMT = None  # (line_format, min_line_words)


def _set_worker_state(tok, fmt):
    global _TOK, _FMT
    _TOK, _FMT = tok, fmt


def count_words(chunk, lowercase):
    """Counter of the words of a chunk, in first-seen order."""
    if isinstance(chunk, str):
        return collections.Counter((chunk.lower() if lowercase else chunk).split())
    c = collections.Counter()
    for d in chunk:
        for t in d:
            c.update((t.lower() if lowercase else t).split())
    return c


def unknown_bytes(tok, words):
    """UTF-8 bytes of the words a word vocabulary maps to <unk> (what a word model never has to spell out)."""
    stoi = tok.stoi
    return sum(len(w.encode("utf-8")) for w in words if w not in stoi)


def encode_chunk(chunk):
    """One chunk -> (uint16 token array, source bytes encoded, source words encoded, bytes of <unk> words)."""
    tok, (line_format, min_words) = _TOK, _FMT
    gpt2 = isinstance(tok, GPT2Tokenizer)
    unk = 0
    if line_format == "concat":
        ids = tok.encode_ordinary(chunk) if gpt2 else tok.encode(chunk)
        nbytes, nwords = len(chunk.encode("utf-8")), len(chunk.split())
        unk = 0 if gpt2 else unknown_bytes(tok, tok.split(chunk))
    elif line_format == "bos_eos":
        ids, nbytes, nwords = [], 0, 0
        lines = chunk.split("\n")
        for i, line in enumerate(lines):
            words = tok.split(line)
            if len(words) < min_words:
                continue
            ids.append(tok.bos_token)
            ids.extend(tok.encode_words(words))
            ids.append(tok.eot_token)
            nbytes += len(line.encode("utf-8")) + (i < len(lines) - 1)  # + its "\n"
            nwords += len(words)
            unk += unknown_bytes(tok, words)
    else:  # dialog
        ids, nbytes, nwords = [], 0, 0
        for turns in chunk:
            text = "\n".join(turns)
            if gpt2:
                ids.extend(tok.encode_ordinary(text))
                ids.append(tok.eot_token)
            else:
                ids.append(tok.bos_token)
                for t in turns:
                    ids.extend(tok.encode(t))
                    ids.append(tok.eot_token)
                    unk += unknown_bytes(tok, tok.split(t))
            nbytes += len(text.encode("utf-8"))
            nwords += len(text.split())
    return np.asarray(ids, dtype=np.uint16), nbytes, nwords, unk


def ordered_map(fn, items, num_proc, args=()):
    """fn(item, *args) for each item, results in order; a pool keeps at most 2*num_proc tasks in flight."""
    if num_proc <= 1:
        for it in items:
            yield fn(it, *args)
        return
    # fork shares the tokenizer as is; under spawn (macOS, Windows) the initializer rebuilds it in each process
    with multiprocessing.Pool(num_proc, _set_worker_state, (_TOK, _FMT)) as pool:
        pending = collections.deque()
        for it in items:
            pending.append(pool.apply_async(fn, (it, *args)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)


def chunk_size(chunk):
    return len(chunk) if isinstance(chunk, str) else sum(len(t) + 1 for d in chunk for t in d)


def tracked(chunks, bar):
    for c in chunks:
        bar.update(chunk_size(c))
        yield c


def build_vocab(source, lowercase, vocab_size, specials, num_proc):
    """specials + the vocab_size - len(specials) most frequent words of the train source (ties: first seen first)."""
    desc, total, make_chunks = source
    counter = collections.Counter()
    with progress(total, "count train") as bar:
        for c in ordered_map(count_words, tracked(make_chunks(), bar), num_proc, (lowercase,)):
            counter.update(c)  # chunks merge in order, so insertion order stays first-seen order
    for s in specials:
        counter.pop(s, None)  # a literal "<unk>" in the text encodes as the special
    top = sorted(counter.items(), key=lambda kv: -kv[1])[:vocab_size - len(specials)]  # stable sort
    return list(specials) + [w for w, _ in top], len(counter)


# ----------------------------------------------------------------------------------------------------------------------

def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in NAMED:  # a dataset name of the table: its arguments, then any the user adds
        argv = shlex.split(NAMED[argv[0]]) + argv[1:]
    p = argparse.ArgumentParser(
        description="Tokenize WikiText-2/103 or DailyDialog into uint16 token streams + meta.json "
                    "(details: the module docstring).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="seed setups:\n"
               "  New-LLM:   %(prog)s wikitext2 --tokenizer word --vocab_size 1000 --lowercase \\\n"
               "                 --line_format bos_eos --min_line_words 5\n"
               "  ResNet-BK: %(prog)s wikitext103 --tokenizer word --vocab_size 30000")
    p.add_argument("dataset", choices=DATASETS, help=f"or a name of NAMED: {', '.join(NAMED)}")
    p.add_argument("--tokenizer", choices=["gpt2", "word"], default="gpt2")
    p.add_argument("--vocab_size", type=int, help="word: number of ids, special tokens included")
    p.add_argument("--lowercase", action="store_true", help="word: lowercase the text before splitting")
    p.add_argument("--vocab_from", metavar="META", help="word: reuse the vocabulary of another dataset's meta.json")
    p.add_argument("--line_format", choices=["concat", "bos_eos"],
                   help="WikiText: concat (default; the text as is) or bos_eos (word only: each line as "
                        "<bos> words <eos>)")
    p.add_argument("--min_line_words", type=int, help="bos_eos: drop lines with fewer words (default 1)")
    p.add_argument("--raw_dir", help="read local raw files instead of downloading with `datasets`")
    p.add_argument("--out_dir", help="output folder (default data/<dataset>-gpt2 or data/<dataset>-word<K>)")
    p.add_argument("--num_proc", type=int, default=min(8, os.cpu_count() or 1), help="tokenizer processes")
    args = p.parse_args(argv)

    word = args.tokenizer == "word"
    for flag in ("vocab_size", "vocab_from"):
        if getattr(args, flag) is not None and not word:
            die(f"--{flag} needs --tokenizer word")
    if args.lowercase and not word:
        die("--lowercase needs --tokenizer word")
    if word and (args.vocab_size is None) == (args.vocab_from is None):
        die("--tokenizer word needs exactly one of --vocab_size K or --vocab_from PATH/meta.json")
    if args.vocab_from and args.lowercase:
        die("--lowercase comes from the --vocab_from meta.json; drop the flag")
    if args.vocab_size is not None and args.vocab_size > MAX_VOCAB:
        die(f"--vocab_size {args.vocab_size} does not fit the uint16 token files (at most {MAX_VOCAB} ids)")
    if args.dataset == "dailydialog":
        if args.line_format or args.min_line_words is not None:
            die("dailydialog has one format (turns joined by a newline, an end token per dialogue); "
                "--line_format/--min_line_words are for WikiText")
        args.line_format = "dialog"
    else:
        args.line_format = args.line_format or "concat"
        if args.line_format == "bos_eos" and not word:
            die("--line_format bos_eos needs --tokenizer word (gpt2 has no <bos>)")
        if args.min_line_words is not None and args.line_format != "bos_eos":
            die("--min_line_words needs --line_format bos_eos")
        if args.min_line_words is not None and args.min_line_words < 1:
            die("--min_line_words must be >= 1")
    if args.num_proc < 1:
        die("--num_proc must be >= 1")
    return args


def load_vocab_meta(path, line_format):
    try:
        with open(path) as f:
            src = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        die(f"cannot read --vocab_from {path}: {first_line(e)}")
    if src.get("tokenizer") != "word" or "words" not in src:
        die(f"--vocab_from {path} is not a word-tokenizer meta.json")
    if len(src["words"]) > MAX_VOCAB:
        die(f"--vocab_from {path} has {len(src['words'])} words: does not fit the uint16 token files")
    missing = [s for s in SPECIALS[line_format] if s not in src["special_tokens"] and s != "<pad>"]
    if missing:
        die(f"--vocab_from {path} has no {', '.join(missing)}, which line format '{line_format}' needs")
    return src


def setup_of(args):
    """-> (the options that shape the data, recorded in meta.json; the default folder name under data/)."""
    if args.tokenizer == "word" and args.vocab_from:
        vsrc = load_vocab_meta(args.vocab_from, args.line_format)
        lowercase, vocab_k = bool(vsrc.get("lowercase", False)), len(vsrc["words"])
    else:
        lowercase, vocab_k = args.lowercase, args.vocab_size
    setup = {"dataset": args.dataset, "tokenizer": args.tokenizer, "lowercase": lowercase,
             "line_format": args.line_format}
    if args.line_format == "bos_eos":
        setup["min_line_words"] = args.min_line_words or 1
    name = f"{args.dataset}-gpt2" if args.tokenizer == "gpt2" else f"{args.dataset}-word{vocab_k}"
    return setup, name


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()

    # the tokenizer's settings first: bad input fails before any reading or writing
    setup, name = setup_of(args)
    lowercase = setup["lowercase"]
    vsrc = load_vocab_meta(args.vocab_from, args.line_format) if args.vocab_from else None
    out_dir = args.out_dir or os.path.join(ROOT, "data", name)
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError):
            old = {}
        differs = {k: old.get(k) for k in setup if old.get(k) != setup[k]}
        if differs:
            die(f"{out_dir} already holds a different setup ({', '.join(f'{k}={v!r}' for k, v in differs.items())});"
                f" pass another --out_dir or delete that folder")
    gpt2 = GPT2Tokenizer() if args.tokenizer == "gpt2" else None

    sources = find_raw_sources(args.dataset, args.raw_dir) if args.raw_dir else find_hf_sources(args.dataset)
    print(f"{args.dataset} ({'raw_dir ' + args.raw_dir if args.raw_dir else 'datasets'}) -> {out_dir}")

    if gpt2:
        tok = gpt2
    elif args.vocab_from:
        tok = WordTokenizer(vsrc["words"], vsrc["special_tokens"], lowercase)
    else:
        if "train" not in sources:
            die("the word vocabulary is counted on the train split, which is missing (or pass --vocab_from)")
        t0 = time.time()
        words, distinct = build_vocab(sources["train"], lowercase, args.vocab_size, SPECIALS[args.line_format],
                                      args.num_proc)
        if len(words) < args.vocab_size:
            warn(f"train has only {distinct} distinct words: vocabulary of {len(words)}, not {args.vocab_size}")
        tok = WordTokenizer(words, {s: i for i, s in enumerate(SPECIALS[args.line_format])}, lowercase)
        print(f"vocabulary: {len(words)} ids ({distinct:,} distinct train words) in {time.time() - t0:.1f}s")
    if args.line_format in ("bos_eos", "dialog") and isinstance(tok, WordTokenizer) and tok.bos_token is None:
        die("this line format needs <bos> and <eos> in the vocabulary")

    os.makedirs(out_dir, exist_ok=True)
    _set_worker_state(tok, (args.line_format, args.min_line_words or 1))
    tmp_files = []
    try:
        stats = {}
        for split, (desc, total, make_chunks) in sources.items():
            t0 = time.time()
            tmp = os.path.join(out_dir, f"{split}.bin.tmp")
            tmp_files.append(tmp)
            n_tok = n_bytes = n_words = n_unk = 0
            with open(tmp, "wb") as f, progress(total, split) as bar:
                for ids, nb, nw, nu in ordered_map(encode_chunk, tracked(make_chunks(), bar), args.num_proc):
                    f.write(ids.tobytes())
                    n_tok, n_bytes, n_words, n_unk = n_tok + len(ids), n_bytes + nb, n_words + nw, n_unk + nu
            stats[split] = {"tokens": n_tok, "bytes": n_bytes, "words": n_words, "unk_bytes": n_unk}
            print(f"{split}: {desc}: {n_tok:,} tokens, {n_bytes:,} bytes, {n_words:,} words ({time.time() - t0:.1f}s)")
        # swap in: without meta.json the folder is visibly incomplete, so new .bin never pair with an old meta
        if os.path.exists(meta_path):
            os.remove(meta_path)
        for split in SPLITS:
            final = os.path.join(out_dir, f"{split}.bin")
            if split in stats:
                os.replace(os.path.join(out_dir, f"{split}.bin.tmp"), final)
            elif os.path.exists(final):
                os.remove(final)  # a stale split from an earlier run would not match this meta.json
        meta = dict(setup)
        meta.update({"vocab_size": tok.vocab_size, "special_tokens": tok.special_tokens,
                     "eot_token": tok.eot_token, "pad_token": None if gpt2 else tok.pad_token})
        if args.dataset == "dailydialog":
            meta["turn_separator"] = "\n" if gpt2 else "<eos>"
        meta["source"] = f"raw_dir {os.path.abspath(args.raw_dir)}" if args.raw_dir else "datasets"
        if args.vocab_from:
            meta["vocab_from"] = os.path.abspath(args.vocab_from)
        meta["splits"] = stats
        if not gpt2:
            meta["words"] = tok.words
        tmp = meta_path + ".tmp"
        tmp_files.append(tmp)
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
        os.replace(tmp, meta_path)
    finally:
        for tmp in tmp_files:
            if os.path.exists(tmp):
                os.remove(tmp)
    print(f"wrote {out_dir} ({', '.join(stats)}; vocab_size {tok.vocab_size}) in {time.time() - t_start:.1f}s")
    return out_dir


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        fail(e)
