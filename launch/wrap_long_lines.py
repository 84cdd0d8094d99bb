#!/usr/bin/env python3
"""Wraps what swift-format leaves over the column limit: `//` and `///` comment lines are
reflowed, and a plain string literal that runs past the limit is split at a space into
`"..." + "..."` on the next line (never inside an interpolation). Rewrites the files in place.
    python3 launch/wrap_long_lines.py [--max 120] FILE...
"""
import argparse
import re
import textwrap

COMMENT = re.compile(r"^(\s*)(///?)\s?(.*)$")


def wrap_comment(line, limit):
    m = COMMENT.match(line)
    indent, marker, text = m.groups()
    prefix = f"{indent}{marker} "
    return textwrap.wrap(text, width=limit - len(prefix), break_long_words=False,
                         break_on_hyphens=False, initial_indent=prefix, subsequent_indent=prefix) or [line]


def literal_spans(line):
    """(start, end) of each plain "..." literal on the line (end: index of the closing quote)."""
    spans, i = [], 0
    while i < len(line):
        if line.startswith("//", i):
            break
        if line[i] == '"' and not line.startswith('"""', i) and (i == 0 or line[i - 1] != "#"):
            j, depth = i + 1, 0
            while j < len(line):
                c = line[j]
                if c == "\\" and j + 1 < len(line) and line[j + 1] == "(":
                    depth += 1
                    j += 2
                    continue
                if depth and c == "(":
                    depth += 1
                elif depth and c == ")":
                    depth -= 1
                elif c == "\\":
                    j += 1
                elif c == '"' and depth == 0:
                    break
                j += 1
            spans.append((i, j))
            i = j + 1
        else:
            i += 1
    return spans


def split_point(line, start, end, limit):
    """A space inside the literal [start, end), outside interpolations, as far right as fits."""
    depth, best = 0, None
    j = start + 1
    while j < end:
        if line.startswith("\\(", j):
            depth += 1
            j += 2
            continue
        c = line[j]
        if depth and c == "(":
            depth += 1
        elif depth and c == ")":
            depth -= 1
        elif c == " " and depth == 0 and j + 1 <= limit - 2 and j > start + 10:
            best = j
        j += 1
    return best


def wrap_string(line, limit):
    for start, end in literal_spans(line):
        if end < limit:
            continue
        if line[:start].rstrip().endswith("help:") and not line[:start].rstrip().endswith("ArgumentHelp(help:"):
            # swift-argument-parser's help: takes a literal, or an ArgumentHelp built from a String.
            return wrap_string(line[:start] + "ArgumentHelp(" + line[start:end + 1] + ")" + line[end + 1:], limit)
        if line[end + 1:end + 2] in (".", "["):
            # "a" + "b".utf8 would apply .utf8 to "b" only: parenthesise the concatenation.
            return wrap_string(line[:start] + "(" + line[start:end + 1] + ")" + line[end + 1:], limit)
        cut = split_point(line, start, end, limit)
        if cut is None:
            return None
        indent = len(line) - len(line.lstrip()) + 4
        first = line[:cut + 1] + '"'
        rest = " " * indent + '+ "' + line[cut + 1:]
        out = [first]
        if len(rest) > limit:
            more = wrap_string(rest, limit)
            out += more if more else [rest]
        else:
            out.append(rest)
        return out
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=120)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    for f in args.files:
        lines = open(f).read().split("\n")
        out = []
        for line in lines:
            if len(line) <= args.max:
                out.append(line)
            elif COMMENT.match(line):
                out += wrap_comment(line, args.max)
            else:
                out += wrap_string(line, args.max) or [line]
        open(f, "w").write("\n".join(out))


if __name__ == "__main__":
    main()
