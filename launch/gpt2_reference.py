#!/usr/bin/env python3
"""Expected GPT-2 token ids from tiktoken, for the Swift tokenizer's tests and benchmark.

  python3 launch/gpt2_reference.py --ranks data/gpt2/gpt2.tiktoken --out CASES.json \
      [--corpus FILE --sample-bytes N ...]

Builds GPT-2's encoding offline from the same ranks file (no download: tiktoken is given the
mergeable ranks, GPT-2's pattern and <|endoftext|> = 50256) and writes, per case, the UTF-8 bytes
(base64) and tiktoken's `encode_ordinary` ids. Cases: the first N bytes of each corpus file (cut
at a line end), and hostile text (invalid UTF-8, whitespace runs, emoji, combining marks, numbers,
contractions). Invalid UTF-8 is decoded with U+FFFD replacement here, as Swift's String does.
Needs `pip install tiktoken`.
"""
import argparse, base64, json, sys

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def load_encoding(path):
    import tiktoken
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            if n == 50256:
                break
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def hostile_cases():
    cases = {
        "invalid-utf8": b"ok \xff\xfe bad \xc3 trunc \xe2\x82 mid \xed\xa0\x80 surrogate "
                        b"\xf4\x90\x80\x80 end\xc3",
        "whitespace-runs": (" " * 300 + "word" + "\t\t \n\n\n  x" + " \r\n" * 40 + "   \u00a0\u2003 y"
                            + " " * 50).encode(),
        "spaces-only": (" " * 1000).encode(),
        "newlines-then-text": ("\n" * 7 + "a\n \n  b  ").encode(),
        "emoji": "I ❤️ 🦀s! 👩‍👩‍👧‍👦 family, 🇫🇷 flag, 🧑🏽‍💻 coder 🤖🤖🤖".encode(),
        "combining": "e\u0301te\u0301 cafe\u0301 Z\u0335\u0321a\u0336l\u0337g\u0338o n\u0303 "
                     "\u0301alone".encode(),
        "numbers": "1 12 123 1234 3.14159 1,000,000 ½ ² ٣٤٥ ௧௨ Ⅻ 0x1F 2024-01-02 -7e-3".encode(),
        "contractions": "I'm you're we've they'll she'd it's don't 'S 'LL O'Neil ''' 'x rock'n'roll ' s".encode(),
        "mixed-scripts": "Привет мир 你好世界 こんにちは 안녕하세요 مرحبا שלום Γειά σου ไทย".encode(),
        "punctuation": "!!! ??? ... --- *** ((( ))) @@@ ### $$$ %%% ^^^ &&& ~~~ ``` \\\\ // <|endoftext|>".encode(),
        "control": "a\x00b\x01c\x7fd\x1be[0m\x0bf\x0cg\u2028h\u2029i\u0085j".encode(),
    }
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus", action="append", default=[])
    ap.add_argument("--sample-bytes", type=int, default=300_000)
    a = ap.parse_args()
    enc = load_encoding(a.ranks)
    out = []
    for path in a.corpus:
        with open(path, "rb") as f:
            data = f.read(a.sample_bytes)
        data = data[: data.rfind(b"\n") + 1] or data
        out.append({"name": path, "bytes": base64.b64encode(data).decode(),
                    "ids": enc.encode_ordinary(data.decode("utf-8", errors="replace"))})
    for name, data in hostile_cases().items():
        out.append({"name": name, "bytes": base64.b64encode(data).decode(),
                    "ids": enc.encode_ordinary(data.decode("utf-8", errors="replace"))})
    with open(a.out, "w") as f:
        json.dump({"cases": out}, f)
    print(f"gpt2_reference: {len(out)} cases -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
