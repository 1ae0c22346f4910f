"""prepare.py and tokenizer.py: tiny raw corpora written here, plus one slower test on the real WikiText-2 copy."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import prepare
from tokenizer import GPT2Tokenizer, WordTokenizer, load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# WikiText-shaped lines: headings, " \n" blank lines, and whitespace that GPT-2's pre-tokenizer treats specially
WIKI_TRAIN = (" \n = Valkyria Chronicles III = \n \n The the game was the first . The game ! \n"
              "  two leading spaces here \n\n\nno leading space , The end \n \n = = Gameplay = = \n"
              " Short line \n It is a game , it is THE game of the year 's best \n\t tab start \n"
              " é ü naïve café \n")
WIKI_VALID = " \n = Valid = \n The game is unknownword here . \n \n Two words \n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def load(out):
    meta = json.load(open(os.path.join(out, "meta.json")))
    bins = {s: np.fromfile(os.path.join(out, f"{s}.bin"), dtype=np.uint16) for s in meta["splits"]}
    return meta, bins


@pytest.fixture
def wiki_raw(tmp_path):
    """train split in 3 parts (the first cut mid-line), valid whole, no test file."""
    raw = tmp_path / "raw"
    cut1, cut2 = 10, WIKI_TRAIN.index(" Short")
    for i, part in enumerate((WIKI_TRAIN[:cut1], WIKI_TRAIN[cut1:cut2], WIKI_TRAIN[cut2:])):
        write(str(raw / f"wiki.train.raw.part0{i}"), part)
    write(str(raw / "wiki.valid.raw"), WIKI_VALID)
    return raw


def test_gpt2_round_trip_meta_counts_and_missing_split(wiki_raw, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare, "CHUNK_BYTES", 8)  # many chunks: their borders must not change the tokens
    out = prepare.main(["wikitext2", "--raw_dir", str(wiki_raw), "--out_dir", str(tmp_path / "o"), "--num_proc", "1"])
    err = capsys.readouterr().err
    assert "wiki.test.raw" in err and "skipped" in err  # the missing split is named
    meta, bins = load(out)
    enc = GPT2Tokenizer()
    assert set(bins) == {"train", "val"} and not os.path.exists(os.path.join(out, "test.bin"))
    for split, text in (("train", WIKI_TRAIN), ("val", WIKI_VALID)):
        assert bins[split].tolist() == enc.encode_ordinary(text)  # same as tiktoken on the whole text
        assert enc.decode(bins[split]) == text
        assert meta["splits"][split] == {"tokens": len(bins[split]), "bytes": len(text.encode("utf-8")),
                                         "words": len(text.split()), "unk_bytes": 0}
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257 and meta["eot_token"] == 50256
    assert meta["special_tokens"] == {"<|endoftext|>": 50256} and meta["pad_token"] is None
    assert meta["line_format"] == "concat" and meta["lowercase"] is False and "words" not in meta
    assert load_tokenizer(meta).decode(bins["val"]) == WIKI_VALID


def test_chunk_borders_never_change_gpt2_tokens(tmp_path, monkeypatch):
    """Whitespace-heavy text cut into 1-byte-target chunks, serial and with a 2-process pool."""
    rng = np.random.default_rng(0)
    pieces = [" ", "  ", "\n", " \n", "\t", "a", "The", " x", "'s", "1", ",", "é", "\n\n", " = "]
    text = "".join(rng.choice(pieces, size=3000)) + "\n"
    write(str(tmp_path / "raw" / "wiki.train.raw"), text)
    monkeypatch.setattr(prepare, "CHUNK_BYTES", 1)
    ref = GPT2Tokenizer().encode_ordinary(text)
    for n in ("1", "2"):
        out = prepare.main(["wikitext103", "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / n),
                            "--num_proc", n])
        assert load(out)[1]["train"].tolist() == ref


def test_word_newllm_setup_order_lowercase_specials_unk(wiki_raw, tmp_path):
    out = prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "12", "--lowercase", "--line_format",
                        "bos_eos", "--min_line_words", "3", "--raw_dir", str(wiki_raw),
                        "--out_dir", str(tmp_path / "o"), "--num_proc", "1"])
    meta, bins = load(out)
    # reference: counts over every train word, lowercased; most frequent first, ties in first-seen order
    counts = {}
    for w in WIKI_TRAIN.lower().split():
        counts[w] = counts.get(w, 0) + 1
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])][:8]
    assert meta["words"] == ["<pad>", "<unk>", "<bos>", "<eos>"] + top
    assert top[:5] == ["the", "=", "game", "leading", ","]  # 7x, 6x, 4x, then 2x words in first-seen order
    assert meta["special_tokens"] == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    assert (meta["eot_token"], meta["pad_token"], meta["vocab_size"]) == (3, 0, 12)
    assert meta["lowercase"] is True and meta["line_format"] == "bos_eos" and meta["min_line_words"] == 3
    stoi = {w: i for i, w in enumerate(meta["words"])}
    for split, text in (("train", WIKI_TRAIN), ("val", WIKI_VALID)):
        kept = [ln for ln in text.split("\n") if len(ln.split()) >= 3]
        expect = []
        for ln in kept:
            expect += [2] + [stoi.get(w, 1) for w in ln.lower().split()] + [3]
        assert bins[split].tolist() == expect
        assert meta["splits"][split] == {"tokens": len(expect), "bytes": sum(len(ln.encode()) + 1 for ln in kept),
                                         "words": sum(len(ln.split()) for ln in kept),
                                         "unk_bytes": sum(len(w.encode()) for ln in kept for w in ln.lower().split()
                                                          if w not in stoi)}
    # "Two words" (2 words) and the blank lines are dropped; 'unknownword' is <unk>
    assert bins["val"].tolist()[:6] == [2, stoi["="], 1, stoi["="], 3, 2]
    tok = load_tokenizer(meta)
    assert tok.decode([2, stoi["the"], 1, stoi["game"], 3, 2, stoi["="], 3, 0]) == "the <unk> game\n=\n"
    assert tok.encode("The GAME unknownword") == [stoi["the"], stoi["game"], 1] and tok.eot_token == 3


def test_word_resnetbk_setup_case_sensitive_concat(wiki_raw, tmp_path):
    out = prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "6", "--raw_dir", str(wiki_raw),
                        "--out_dir", str(tmp_path / "o"), "--num_proc", "1"])
    meta, bins = load(out)
    counts = {}
    for w in WIKI_TRAIN.split():
        counts[w] = counts.get(w, 0) + 1
    assert meta["words"] == ["<unk>"] + [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])][:5]
    assert meta["words"] == ["<unk>", "=", "game", "The", "the", "leading"]  # case kept: 'The' and 'the' differ
    assert meta["special_tokens"] == {"<unk>": 0} and meta["eot_token"] is None and meta["pad_token"] is None
    stoi = {w: i for i, w in enumerate(meta["words"])}
    assert bins["train"].tolist() == [stoi.get(w, 0) for w in WIKI_TRAIN.split()]  # no separators at all
    assert meta["splits"]["train"] == {"tokens": len(WIKI_TRAIN.split()), "bytes": len(WIKI_TRAIN.encode()),
                                       "words": len(WIKI_TRAIN.split()),
                                       "unk_bytes": sum(len(w.encode()) for w in WIKI_TRAIN.split() if w not in stoi)}


def make_dailydialog(raw):
    """train as the corpus's zip, validation as a plain file in DIR/validation/, no test."""
    train = ["Hello , Jim ! __eou__ How are you ? __eou__ Fine , thanks . __eou__\n",
             "The game is on . __eou__ Really ? __eou__\n", "  Bye now . __eou__ \n"]
    val = ["Hello the game ! __eou__ Unknownword here . __eou__\n"]
    os.makedirs(raw, exist_ok=True)
    with zipfile.ZipFile(os.path.join(raw, "train.zip"), "w") as z:
        z.writestr("train/dialogues_train.txt", "".join(train))
        z.writestr("train/dialogues_act_train.txt", "1 2 3\n")
    write(os.path.join(raw, "validation", "dialogues_validation.txt"), "".join(val))
    dialogs = lambda lines: [[t.strip() for t in ln.split("__eou__") if t.strip()] for ln in lines]
    return {"train": dialogs(train), "val": dialogs(val)}


def test_dailydialog_gpt2_from_zip(tmp_path, capsys):
    dialogs = make_dailydialog(str(tmp_path / "raw"))
    out = prepare.main(["dailydialog", "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "o"),
                        "--num_proc", "1"])
    assert "dialogues_test.txt" in capsys.readouterr().err
    meta, bins = load(out)
    enc = GPT2Tokenizer()
    for split in ("train", "val"):
        texts = ["\n".join(d) for d in dialogs[split]]
        expect = [t for text in texts for t in enc.encode_ordinary(text) + [50256]]
        assert bins[split].tolist() == expect
        assert meta["splits"][split] == {"tokens": len(expect), "bytes": sum(len(t.encode()) for t in texts),
                                         "words": sum(len(t.split()) for t in texts), "unk_bytes": 0}
    assert enc.decode(bins["train"]).startswith("Hello , Jim !\nHow are you ?\nFine , thanks .<|endoftext|>The game")
    assert meta["line_format"] == "dialog" and meta["turn_separator"] == "\n" and meta["eot_token"] == 50256


def test_vocab_from_keeps_ids_and_checks_specials(wiki_raw, tmp_path):
    wt = prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "12", "--lowercase", "--line_format",
                       "bos_eos", "--raw_dir", str(wiki_raw), "--out_dir", str(tmp_path / "wt"), "--num_proc", "1"])
    dialogs = make_dailydialog(str(tmp_path / "raw"))
    out = prepare.main(["dailydialog", "--tokenizer", "word", "--vocab_from", os.path.join(wt, "meta.json"),
                        "--raw_dir", str(tmp_path / "raw"), "--num_proc", "1", "--out_dir", str(tmp_path / "dd")])
    meta, bins = load(out)
    src = json.load(open(os.path.join(wt, "meta.json")))
    assert meta["words"] == src["words"] and meta["lowercase"] is True and meta["vocab_size"] == 12
    stoi = {w: i for i, w in enumerate(src["words"])}
    expect = []
    for d in dialogs["val"]:
        expect.append(2)
        for turn in d:
            expect += [stoi.get(w, 1) for w in turn.lower().split()] + [3]
    assert bins["val"].tolist() == expect  # <bos> turn <eos> turn <eos>
    assert meta["turn_separator"] == "<eos>" and meta["eot_token"] == 3
    assert load_tokenizer(meta).decode(bins["val"]) == "<unk> the game <unk>\n<unk> <unk> <unk>\n"
    # a vocabulary without <bos>/<eos> (concat setup) cannot write dialogues
    cc = prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "6", "--raw_dir", str(wiki_raw),
                       "--out_dir", str(tmp_path / "cc"), "--num_proc", "1"])
    with pytest.raises(ValueError, match="has no <bos>, <eos>"):
        prepare.main(["dailydialog", "--tokenizer", "word", "--vocab_from", os.path.join(cc, "meta.json"),
                      "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "x")])
    assert not os.path.exists(tmp_path / "x")


def test_uint16_overflow_refused_before_writing(wiki_raw, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(ValueError, match="does not fit the uint16"):
        prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "65537", "--raw_dir", str(wiki_raw),
                      "--out_dir", str(out)])
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"tokenizer": "word", "words": ["<unk>"] + [f"w{i}" for i in range(70000)],
                               "special_tokens": {"<unk>": 0}, "lowercase": False}))
    with pytest.raises(ValueError, match="does not fit the uint16"):
        prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_from", str(big), "--raw_dir", str(wiki_raw),
                      "--out_dir", str(out)])
    assert not out.exists()


def test_bad_flag_combinations(wiki_raw, tmp_path):
    base = ["--raw_dir", str(wiki_raw), "--out_dir", str(tmp_path / "o")]
    for argv, msg in ((["wikitext2", "--line_format", "bos_eos"], "needs --tokenizer word"),
                      (["wikitext2", "--tokenizer", "word"], "exactly one of --vocab_size"),
                      (["wikitext2", "--lowercase"], "--lowercase needs --tokenizer word"),
                      (["wikitext2", "--tokenizer", "word", "--vocab_size", "9", "--min_line_words", "5"],
                       "--min_line_words needs --line_format bos_eos"),
                      (["dailydialog", "--line_format", "concat"], "dailydialog has one format")):
        with pytest.raises(ValueError, match=msg):
            prepare.main(argv + base)
    # a folder holding another setup is not silently overwritten
    prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "9", "--num_proc", "1"] + base)
    with pytest.raises(ValueError, match="already holds a different setup .*lowercase=False"):
        prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "9", "--lowercase"] + base)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_run_leaves_old_output_intact(wiki_raw, tmp_path, monkeypatch, exc):
    out = str(tmp_path / "o")
    prepare.main(["wikitext2", "--raw_dir", str(wiki_raw), "--out_dir", out, "--num_proc", "1"])
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
    real, calls = prepare.encode_chunk, []

    def crash_in_val(chunk):  # dies in the second split, after train.bin.tmp was written
        calls.append(chunk)
        if "Valid" in chunk:
            raise exc("simulated crash")
        return real(chunk)

    monkeypatch.setattr(prepare, "encode_chunk", crash_in_val)
    with pytest.raises(exc, match="simulated crash"):
        prepare.main(["wikitext2", "--raw_dir", str(wiki_raw), "--out_dir", out, "--num_proc", "1"])
    assert calls[0] == WIKI_TRAIN and "Valid" in calls[-1]
    after = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
    assert after == before  # no .tmp left, the old bins and meta.json untouched


def fake_hub(tmp_path, rows):
    """A stand-in for the hub: the real datasets.load_dataset on local JSON files (one per split)."""
    import datasets
    files = {}
    for split, records in rows.items():
        path = tmp_path / f"hub_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        files[split] = str(path)
    calls = []

    def load_dataset(repo, config=None, revision=None):
        calls.append((repo, config, revision))
        return datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf_cache"))
    return load_dataset, calls


def test_datasets_path_matches_raw_files(wiki_raw, tmp_path, monkeypatch):
    rows = {split: [{"text": "" if ln == " \n" else ln} for ln in text.splitlines(keepends=True)]
            for split, text in (("train", WIKI_TRAIN), ("validation", WIKI_VALID))}  # HF rows: blank line = ""
    fake, calls = fake_hub(tmp_path, rows)
    monkeypatch.setattr(prepare, "load_dataset", fake)
    online = prepare.main(["wikitext2", "--out_dir", str(tmp_path / "on"), "--num_proc", "1"])
    offline = prepare.main(["wikitext2", "--raw_dir", str(wiki_raw), "--out_dir", str(tmp_path / "off"),
                            "--num_proc", "1"])
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", None)]
    (m_on, b_on), (m_off, b_off) = load(online), load(offline)
    assert m_on["splits"] == m_off["splits"] and all(np.array_equal(b_on[s], b_off[s]) for s in b_off)
    assert m_on["source"] == "datasets"


def test_datasets_path_dailydialog(tmp_path, monkeypatch):
    dialogs = make_dailydialog(str(tmp_path / "raw"))
    rows = {"train": [{"dialog": [t + " " for t in d], "act": [1] * len(d)} for d in dialogs["train"]],
            "validation": [{"dialog": d} for d in dialogs["val"]],
            "test": [{"dialog": ["Only one turn . "]}]}
    fake, calls = fake_hub(tmp_path, rows)
    monkeypatch.setattr(prepare, "load_dataset", fake)
    online = prepare.main(["dailydialog", "--out_dir", str(tmp_path / "on"), "--num_proc", "1"])
    offline = prepare.main(["dailydialog", "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(tmp_path / "off"),
                            "--num_proc", "1"])
    assert calls == [("OpenRL/daily_dialog", None, None)]
    (m_on, b_on), (m_off, b_off) = load(online), load(offline)
    assert all(np.array_equal(b_on[s], b_off[s]) for s in ("train", "val"))
    assert all(m_on["splits"][s] == m_off["splits"][s] for s in ("train", "val"))  # bytes and words counted alike
    assert m_on["source"] == "datasets" and m_off["source"].startswith("raw_dir ")
    assert GPT2Tokenizer().decode(b_on["test"]) == "Only one turn .<|endoftext|>"


def test_no_network_error_names_downloads_and_layout(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(prepare, "load_dataset", offline)
    with pytest.raises(ValueError) as e:
        prepare.main(["dailydialog", "--out_dir", str(tmp_path / "o")])
    msg = str(e.value)
    for s in ("OpenRL/daily_dialog", "li2017dailydialog/daily_dialog@refs/convert/parquet", "ConnectionError",
              "ijcnlp_dailydialog.zip", "--raw_dir", "train.zip", "validation.zip", "test.zip"):
        assert s in msg
    assert not (tmp_path / "o").exists()


def test_no_network_cli_exit_code_and_message(tmp_path):
    """The real `datasets` in offline mode with an empty cache, as a user would run it: no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepare.py"), "wikitext2", "--out_dir",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: could not load wikitext2 with `datasets`")
    for s in ("wikitext-2-raw-v1.zip", "--raw_dir", "wiki.train.raw.part00", "wiki.valid.raw", "wiki.test.raw"):
        assert s in r.stderr
    assert not (tmp_path / "o").exists()


def test_word_tokenizer_decode_and_gpt2_tokenizer():
    tok = WordTokenizer(["<pad>", "<unk>", "<bos>", "<eos>", "hello", "world"],
                        {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}, lowercase=True)
    assert tok.encode("Hello  WORLD\nfoo") == [4, 5, 1]
    assert tok.decode([2, 4, 5, 3, 2, 1, 3, 0, 0]) == "hello world\n<unk>\n"
    concat = WordTokenizer(["<unk>", "a"], {"<unk>": 0})
    assert concat.eot_token is None and concat.decode([1, 0, 1]) == "a <unk> a"
    g = load_tokenizer({"tokenizer": "gpt2"})
    assert g.encode("Hello world<|endoftext|>") == [15496, 995, 50256] and g.vocab_size == 50257
    assert g.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"


def seed_windows(stream, bos=2, eos=3, length=64, stride=32):
    """The New-LLM seed's sequences: one per <bos>..<eos> line if <= 64 tokens, else 64-windows at stride 32."""
    n, start = 0, None
    for i, t in enumerate(stream.tolist()):
        if t == bos:
            start = i
        elif t == eos:
            k = i + 1 - start
            n += 1 if k <= length else len(range(0, k - length + 1, stride))
    return n


def test_real_wikitext2(shared_data, tmp_path):
    """The real WikiText-2 (train in 5 parts): gpt2 byte-exact, and the New-LLM seed's 51,026 / 5,272 sequences."""
    raw = str(shared_data / "wikitext-2-raw")
    out = prepare.main(["wikitext2", "--raw_dir", raw, "--out_dir", str(tmp_path / "g"), "--num_proc", "2"])
    meta, bins = load(out)
    assert meta["splits"]["train"]["bytes"] == 10_940_747 and meta["splits"]["val"]["bytes"] == 1_146_846
    enc = GPT2Tokenizer()
    train_text, val_text = enc.decode(bins["train"]), enc.decode(bins["val"])
    assert train_text.count("\n") == 36_718 and val_text.count("\n") == 3_760
    assert len(train_text.encode()) == 10_940_747 and val_text.startswith(" \n = Homarus gammarus = \n")
    assert meta["splits"]["train"]["words"] == len(train_text.split())

    out = prepare.main(["wikitext2", "--tokenizer", "word", "--vocab_size", "1000", "--lowercase", "--line_format",
                        "bos_eos", "--min_line_words", "5", "--raw_dir", raw, "--out_dir", str(tmp_path / "n"),
                        "--num_proc", "2"])
    meta, bins = load(out)
    assert seed_windows(bins["train"]) == 51_026 and seed_windows(bins["val"]) == 5_272
    import data  # train.py's and eval.py's line windows give the seed's counts too
    assert len(data.line_windows(bins["train"], 64, 2)[0]) == 51_026
    assert len(data.line_windows(bins["val"], 64, 2)[0]) == 5_272
    assert meta["words"][:8] == ["<pad>", "<unk>", "<bos>", "<eos>", "the", ",", ".", "of"]
    assert meta["vocab_size"] == 1000
    # words seen 209 times straddle the vocabulary's edge: the first seen ('self', 'intended') are in
    assert meta["words"][-2:] == ["self", "intended"] and "room" not in meta["words"] and "teams" not in meta["words"]
