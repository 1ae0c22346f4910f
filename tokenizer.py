"""
Tokenizers for the token files that prepare.py writes: `load_tokenizer(meta)` rebuilds the one a dataset was made with.

- gpt2: tiktoken's "gpt2" BPE, 50257 ids, `<|endoftext|>` = 50256. Lossless: decode(encode(s)) == s.
- word: whitespace split (str.split), optional lowercasing, a fixed id -> word list stored in meta.json["words"]
  whose first entries are special tokens (e.g. `<pad>`=0 `<unk>`=1 `<bos>`=2 `<eos>`=3, or `<unk>`=0 alone).
  Words not in the list map to `<unk>`. Lossy by design (whitespace and case are gone); decode joins words with
  single spaces, shows `<eos>` as a line break, drops `<bos>`/`<pad>`, and shows `<unk>` as "<unk>".

Both expose .encode(str) -> list[int], .decode(list[int]) -> str, .eot_token (int | None) and .vocab_size.
"""
import os


class GPT2Tokenizer:
    """tiktoken "gpt2". Offline, tiktoken reads its BPE files from TIKTOKEN_CACHE_DIR (../shared/data/README.md)."""

    def __init__(self):
        import tiktoken
        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # network error while fetching the BPE files, or a broken cache
            cache = os.environ.get('TIKTOKEN_CACHE_DIR')
            beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), '.tiktoken_cache')
            if cache:
                where = f"TIKTOKEN_CACHE_DIR is {cache}"
            elif os.path.isdir(beside):
                where = f"TIKTOKEN_CACHE_DIR is not set; {beside} exists: export TIKTOKEN_CACHE_DIR={beside}"
            else:
                where = "TIKTOKEN_CACHE_DIR is not set"
            raise ValueError(
                f"tiktoken could not load the gpt2 BPE files ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                f"{where}. Offline, that folder holds vocab.bpe as 6d1cbeee0f20b3d9449abfede4726ed8212e3aee and "
                "encoder.json as 6c7ea1a7e38e3a7f062df639a5b80947f075ffe6 (README: Data)") from None
        self.eot_token = self.enc.eot_token  # 50256 = <|endoftext|>
        self.vocab_size = self.enc.n_vocab  # 50257
        self.special_tokens = {"<|endoftext|>": self.eot_token}

    def __reduce__(self):  # pickles as "build it again" (tiktoken's Encoding is rebuilt from its cache)
        return GPT2Tokenizer, ()

    def encode(self, text):
        """Text -> ids; a literal "<|endoftext|>" in the text becomes the eot token (as in the token files)."""
        return self.enc.encode(text, allowed_special={"<|endoftext|>"})

    def encode_ordinary(self, text):
        """Text -> ids with no special-token parsing (what prepare.py uses for source text)."""
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids])


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary `words` (id -> word, specials first)."""

    def __init__(self, words, special_tokens, lowercase=False):
        self.words = list(words)
        self.special_tokens = dict(special_tokens)  # name -> id, e.g. {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
        self.lowercase = bool(lowercase)
        self.vocab_size = len(self.words)
        self.stoi = {w: i for i, w in enumerate(self.words)}
        self.unk_token = self.special_tokens["<unk>"]
        self.bos_token = self.special_tokens.get("<bos>")
        self.eot_token = self.special_tokens.get("<eos>")  # None when the vocabulary has no <eos> (concat format)
        self.pad_token = self.special_tokens.get("<pad>")

    def split(self, text):
        """The words of a text: lowercased if this vocabulary is, then str.split() (any whitespace run)."""
        return (text.lower() if self.lowercase else text).split()

    def encode_words(self, words):
        get, unk = self.stoi.get, self.unk_token
        return [get(w, unk) for w in words]

    def encode(self, text):
        """Text -> ids of its words (no <bos>/<eos> added: the caller decides the line format)."""
        return self.encode_words(self.split(text))

    def decode(self, ids):
        """Ids -> words joined by spaces; <eos> ends a line, <bos>/<pad> are not shown."""
        out, at_line_start = [], True
        for i in ids:
            i = int(i)
            if i == self.eot_token:
                out.append("\n")
                at_line_start = True
            elif i == self.bos_token or i == self.pad_token:
                continue
            else:
                w = self.words[i] if 0 <= i < len(self.words) else "<unk>"
                out.append(w if at_line_start else " " + w)
                at_line_start = False
        return "".join(out)


def load_tokenizer(meta):
    """The tokenizer a dataset folder was prepared with, from its meta.json dict."""
    if meta["tokenizer"] == "gpt2":
        return GPT2Tokenizer()
    if meta["tokenizer"] == "word":
        return WordTokenizer(meta["words"], meta["special_tokens"], meta.get("lowercase", False))
    raise ValueError(f"unknown tokenizer {meta['tokenizer']!r} in meta.json (expected 'gpt2' or 'word')")
