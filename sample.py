"""
Generate text from a checkpoint of any model, printing tokens as they come.

    python sample.py --ckpt out/best.pt --prompt "The meaning of life is" --max_new_tokens 200
    python sample.py --ckpt out/best.pt --prompt FILE:prompt.txt --num_samples 3 --temperature 0.8 --top_k 200
    python sample.py --ckpt out-dd/best.pt --chat          # a conversation, one turn per line (stdin may be piped)

The tokenizer (gpt2 or the word vocabulary) comes from the checkpoint's copy of the dataset's meta.json.
Chat mode: each user line is appended as a turn (text + the dataset's turn separator); the model replies until it
emits the separator or the end-of-text token. Recurrent models (New-LLM, causal ResNet-BK) carry their state from turn
to turn instead of re-reading the history; GPT keeps the last block_size tokens of the conversation. Piped stdin is
echoed (`you: ...`) so the transcript shows both sides; the separator itself is never printed.
"""
import argparse
import glob
import os
import sys

import torch

import checkpoint as ckpt_io
import hardware
import generation
from tokenizer import load_tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--ckpt', required=True, help='a checkpoint written by train.py (best.pt, ckpt.pt)')
    p.add_argument('--prompt', default='', help="prompt text, or FILE:path to read it from a file ('' = start of text)")
    p.add_argument('--max_new_tokens', type=int, default=200)
    p.add_argument('--temperature', type=float, default=0.8, help='0 = greedy')
    p.add_argument('--top_k', type=int, default=200, help='sample among the k most likely tokens; 0 = all')
    p.add_argument('--num_samples', type=int, default=1)
    p.add_argument('--seed', type=int, default=1337)
    p.add_argument('--device', default='auto', help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument('--dtype', default='auto', choices=['auto', 'float32', 'bfloat16', 'float16'],
                   help='autocast dtype; auto = bfloat16 where it is fast on this device, else float32 (hardware.py)')
    p.add_argument('--chat', action='store_true', help='conversation mode: one user turn per input line')
    args = p.parse_args(argv)
    if args.max_new_tokens < 0 or args.num_samples < 1 or args.temperature < 0 or args.top_k < 0:
        p.error('max_new_tokens and top_k must be >= 0, num_samples >= 1, temperature >= 0')
    return args


def start_tokens(tok):
    """What a sequence starts with when there is no prompt: end-of-text (gpt2) or <bos> (word vocabularies)."""
    bos = getattr(tok, 'bos_token', None)
    return [bos if bos is not None else tok.eot_token if tok.eot_token is not None else 0]


class Printer:
    """Prints the text of a growing token list as it grows (decoding the whole list keeps multi-byte BPE intact).
    stop, sep: in chat, a token of `stop` ends the reply; only its text before the separator `sep` is printed."""

    def __init__(self, tok, ids, stop=(), sep=None):
        self.tok, self.ids, self.shown = tok, list(ids), tok.decode(ids)
        self.stop, self.sep, self.start = stop, sep, len(self.shown)

    def __call__(self, idx_next):
        i = int(idx_next[0, 0])
        if i in self.stop:
            if self.sep is None:
                return
            text = self.tok.decode(self.ids + [i])
            new = text[len(self.shown):]  # e.g. ".\n" (gpt2 merges the separator into longer tokens)
            if self.sep in new and text.startswith(self.shown):
                sys.stdout.write(new[:new.index(self.sep)])
                sys.stdout.flush()
                self.shown += new[:new.index(self.sep)]
            return
        self.ids.append(i)
        text = self.tok.decode(self.ids)
        if not text.endswith('\ufffd'):  # wait for the rest of a multi-byte character
            sys.stdout.write(text[len(self.shown):])
            sys.stdout.flush()
            self.shown = text

    @property
    def text(self):
        return self.shown[self.start:]


EMPTY_REPLY = ("(the model ended its reply at once: this checkpoint has not learned the turn separator; "
               "chat is meant for DailyDialog fine-tuned checkpoints, README)")


def chat(model, tok, meta, args):
    """One user turn per stdin line; the model's reply ends at the turn separator or end-of-text."""
    if meta['tokenizer'] == 'gpt2':  # dialogue = t1 \n t2 \n ... tn <|endoftext|>
        sep = meta.get('turn_separator', '\n')
        turn_end, dialogue_end = tok.encode(sep), tok.eot_token
        # a reply ends at any token whose text holds the separator (BPE merges "\n" into longer tokens)
        stop = {i for i in range(tok.vocab_size) if sep in tok.enc.decode_single_token_bytes(i).decode('utf-8', 'replace')}
    else:  # word vocabularies have no newline: <bos> t1 <eos> t2 <eos> ... tn <eos>, the next dialogue at <bos>
        sep, turn_end, dialogue_end = None, [tok.eot_token], tok.bos_token
        stop = {tok.eot_token}
    stop.add(dialogue_end)

    state, history = None, start_tokens(tok)
    interactive, told = sys.stdin.isatty(), False
    ended = True  # did the last reply end with a stop token (else its turn is closed before the next user turn)
    while True:
        if interactive:
            print('> ', end='', flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip('\n')
        if not line.strip():
            continue
        if not interactive:  # a piped transcript shows both sides
            print(f'you: {line}', flush=True)
        ids = tok.encode(line) + turn_end
        if state is None:
            ids = history + ids
        elif not ended:  # the reply ran out of max_new_tokens before the separator
            ids = turn_end + ids
        idx = torch.tensor([ids], dtype=torch.long, device=args.device)
        print('bot: ', end='', flush=True)
        printer = Printer(tok, [], stop, sep)
        out, state = generation.generate_with_state(model, idx, args.max_new_tokens, args.temperature,
                                                  args.top_k or None, state=state, on_token=printer, stop_tokens=stop)
        reply = out[0, idx.size(1):].tolist()
        ended = bool(reply) and reply[-1] in stop
        if ended and reply[-1] == dialogue_end:  # the model ended the dialogue: start a new one
            state = None
        print(flush=True)
        if ended and not printer.text.strip() and not told:
            print(EMPTY_REPLY, file=sys.stderr, flush=True)
            told = True


def main():
    args = parse_args()
    try:
        args.device = hardware.resolve_device(args.device)
        choice = hardware.choose_dtype(args.dtype, args.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if choice.warning:
        print(choice.warning, file=sys.stderr)
    torch.manual_seed(args.seed)
    if not os.path.exists(args.ckpt) and not os.path.dirname(args.ckpt):
        # train.py writes best.pt/ckpt.pt into the run's out_dir, not the current folder
        found = sorted(glob.glob(os.path.join('*', args.ckpt)))
        hint = f"did you mean --ckpt {found[0]}?" if found else f"e.g. --ckpt out-smoke/{args.ckpt}"
        raise SystemExit(f"error: checkpoint {args.ckpt} does not exist here; it lives in the run's out_dir ({hint})")
    try:  # checkpoint.py and tokenizer.py raise one-line errors: a missing, corrupt or foreign file
        model, ckpt = ckpt_io.load_model(args.ckpt, args.device)
        meta = ckpt.get('meta')
        if not meta:
            raise ValueError(f"{args.ckpt} holds no tokenizer information (meta)")
        tok = load_tokenizer(meta)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    ctx = hardware.autocast(args.device, choice.dtype)
    # the header goes to stderr: stdout holds only the generated text
    trained = f"iter {ckpt['iter_num']:,}" if 'iter_num' in ckpt else 'no training record'
    print(f"{args.ckpt}: {ckpt['model_type']}, {model.get_num_params():,} parameters, {trained}, "
          f"{meta['tokenizer']} tokenizer (vocab {meta['vocab_size']}) | {args.device} {choice.dtype} | prompt "
          f"{args.prompt[:60]!r}", file=sys.stderr, flush=True)
    train = meta.get('splits', {}).get('train', {})
    if meta['tokenizer'] == 'word' and train.get('bytes'):  # prepare.py counts the text that <unk> replaces
        print(f"(a word vocabulary writes the words outside it as <unk>: {100 * train.get('unk_bytes', 0) / train['bytes']:.0f}% "
              f"of the train text's bytes here)", file=sys.stderr, flush=True)
    if args.chat:
        try:
            with ctx:
                return chat(model, tok, meta, args)
        except KeyboardInterrupt:  # Ctrl-C ends the conversation
            print()
            return
    prompt = args.prompt
    if prompt.startswith('FILE:'):
        try:
            with open(prompt[5:], encoding='utf-8') as f:
                prompt = f.read()
        except OSError as e:
            raise SystemExit(f"error: cannot read prompt file {prompt[5:]}: {e.strerror}")
    ids = tok.encode(prompt) if prompt else start_tokens(tok)
    if not ids:
        raise SystemExit("error: the prompt has no tokens in this vocabulary")
    idx = torch.tensor([ids], dtype=torch.long, device=args.device)
    for k in range(args.num_samples):
        sys.stdout.write(prompt)
        with ctx:
            generation.generate(model, idx, args.max_new_tokens, args.temperature, args.top_k or None,
                              on_token=Printer(tok, ids))
        print('\n' + '-' * 40, flush=True)


if __name__ == '__main__':
    try:
        main()
    except SystemExit as e:  # one-line errors (here and in checkpoint.py) exit 2, like argparse's
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
