#!/usr/bin/env python3
"""Convert a MediaWiki XML export (.xml or .xml.bz2) into the WikiText-103 file layout.

    python3 launch/wiki2wikitext.py IN.xml.bz2 OUTDIR [--valid-articles N] [--test-articles N]
                                    [--seed S] [--min-words W]

Writes OUTDIR/wiki.train.tokens, OUTDIR/wiki.valid.tokens and OUTDIR/wiki.test.tokens:

     = Article title =
     (blank line: a single space)
     first paragraph , tokenised like WikiText .
     next paragraph of the same section .
     (blank line)
     = = Section = =
     (blank line)
     ...

Every line starts and ends with a space, as in the WikiText files; consecutive paragraphs of one
section follow each other directly and blank lines (" ") surround titles and headings. Tokens are
separated by single spaces (Moses-style: punctuation split off, "it 's", "don 't"); hyphens between
word characters become " @-@ ", commas and points inside numbers " @,@ " and " @.@ ". Case is kept
and no <unk> is inserted (a tokenizer does that from counts).

Articles are assigned whole to one split: they are ranked by sha256("<seed>:<title>") and the first
--valid-articles go to valid, the next --test-articles to test, the rest to train (each file keeps
the order of the export). Redirects, non-article namespaces, disambiguation pages and stubs with
fewer than --min-words words are skipped.

Standard library only. Written for this project from the MediaWiki markup documentation.
"""

import argparse
import bz2
import gzip
import hashlib
import html
import os
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET

# --------------------------------------------------------------------------------------------
# Reading the export
# --------------------------------------------------------------------------------------------


def local_name(tag):
    return tag.rsplit("}", 1)[-1]


def open_any(path):
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_pages(path):
    """Yield dicts {title, ns, redirect, text} for every <page>, namespace-agnostic."""
    with open_any(path) as f:
        for _event, elem in ET.iterparse(f, events=("end",)):
            if local_name(elem.tag) != "page":
                continue
            page = {"title": "", "ns": "0", "redirect": False, "text": ""}
            for child in elem:
                name = local_name(child.tag)
                if name == "title":
                    page["title"] = (child.text or "").strip()
                elif name == "ns":
                    page["ns"] = (child.text or "0").strip()
                elif name == "redirect":
                    page["redirect"] = True
                elif name == "revision":
                    for part in child:
                        if local_name(part.tag) == "text":
                            page["text"] = part.text or ""
            elem.clear()
            yield page


# --------------------------------------------------------------------------------------------
# Balanced-delimiter helpers
# --------------------------------------------------------------------------------------------


def find_closing(s, start, open_tok, close_tok):
    """s[start:] begins with open_tok; return the index just past its matching close_tok, or -1."""
    depth = 0
    i = start
    n = len(s)
    lo, lc = len(open_tok), len(close_tok)
    while i < n:
        if s.startswith(open_tok, i):
            depth += 1
            i += lo
        elif s.startswith(close_tok, i):
            depth -= 1
            i += lc
            if depth == 0:
                return i
        else:
            # jump to the next candidate
            a = s.find(open_tok, i)
            b = s.find(close_tok, i)
            if a < 0 and b < 0:
                return -1
            i = min(x for x in (a, b) if x >= 0)
    return -1


def split_args(inner):
    """Split template/link contents on '|' that are not inside nested {{ }} or [[ ]]."""
    parts, depth_t, depth_l, cur, i, n = [], 0, 0, [], 0, len(inner)
    while i < n:
        two = inner[i:i + 2]
        if two == "{{":
            depth_t += 1
            cur.append(two)
            i += 2
            continue
        if two == "}}" and depth_t > 0:
            depth_t -= 1
            cur.append(two)
            i += 2
            continue
        if two == "[[":
            depth_l += 1
            cur.append(two)
            i += 2
            continue
        if two == "]]" and depth_l > 0:
            depth_l -= 1
            cur.append(two)
            i += 2
            continue
        ch = inner[i]
        if ch == "|" and depth_t == 0 and depth_l == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


# --------------------------------------------------------------------------------------------
# Templates {{...}}
# --------------------------------------------------------------------------------------------

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

# templates whose output is simply one of their positional arguments (1-based)
SHOW_ARG = {
    "nowrap": 1, "nobr": 1, "small": 1, "smaller": 1, "big": 1, "larger": 1, "vanchor": 1,
    "anchor": 0, "center": 1, "centre": 1, "em": 1, "strong": 1, "var": 1, "mvar": 1,
    "math": 1, "tmath": 0, "abbr": 1, "abbrlink": 1, "not a typo": 1, "proper name": 1,
    "sic": -1, "unicode": 1, "polytonic": 1, "script": 2, "lang": 2, "transl": -1,
    "transliteration": -1, "ill": 1, "interlanguage link": 1, "interlanguage link multi": 1,
    "flag": 1, "flagcountry": 1, "flagu": 1, "flag country": 1, "keypress": 1, "overline": 1,
    "underline": 1, "smallcaps": 1, "sc": 1, "highlight": 1, "serif": 1, "wikt-lang": 2,
    "linktext": 0, "visible anchor": 1, "lang-rtl": 2, "nihongo2": 1, "quote": 1,
    "cquote": 1, "quotation": 1, "blockquote": 1, "bq": 1, "talkquote": 1, "poem quote": 1,
    "pull quote": 1, "rquote": 2, "ship": 0, "hms": 0, "uss": 0, "no wrap": 1,
    "noitalic": 1, "nowrap begin": 0, "large": 1, "resize": -1, "font": 1, "color": 2,
    "colour": 2, "hidden": 0, "r": 0, "gaps": 0, "sortname": 0, "mono": 1, "code": 1,
    "angbr": 1, "ipa": 0, "dfn": 1, "term": 1, "gloss": 1, "qi": 1,
}

LITERAL = {
    "ndash": "–", "mdash": "—", "snd": " – ", "spaced ndash": " – ", "spaced en dash": " – ",
    "spnd": " – ", "sndash": " – ", "dash": " – ", "'": "'", "'s": "'s", "\"'": "\"'",
    "'\"": "'\"", "nbsp": " ", "thinsp": " ", "okina": "ʻ", "=": "=", "shy": "", "zwsp": "",
    "-": "", "`": "`", "colon": ":", "semicolon": ";", "!": "", "·": " ", "dot": " ",
    "middot": " ", "bull": " ", "•": " ", "clear": "", "-?": "", "sp": " ", "en dash": "–",
    "em dash": "—",
}

def template_name(raw):
    name = raw.strip().replace("_", " ")
    name = re.sub(r"\s+", " ", name)
    if name.lower().startswith("template:"):
        name = name[9:]
    return name.strip()


def positional(args):
    """Positional arguments (after the name), expanded; named 'k=v' args are skipped."""
    out = []
    for a in args[1:]:
        head = a.split("{{", 1)[0].split("[[", 1)[0]
        if "=" in head and re.match(r"^\s*[\w \-]+\s*=", head):
            continue
        out.append(a)
    return out


def named(args, key):
    for a in args[1:]:
        m = re.match(r"^\s*([\w \-]+?)\s*=(.*)$", a, re.S)
        if m and m.group(1).lower() == key:
            return m.group(2)
    return None


def fmt_date(pos):
    """y|m|d -> 'Month d, y' (as rendered with mdy); tolerant of partial dates."""
    vals = [p.strip() for p in pos if p.strip()]
    if not vals:
        return ""
    y = vals[0]
    if len(vals) >= 3 and vals[1].isdigit() and vals[2].isdigit() and 1 <= int(vals[1]) <= 12:
        return "%s %d, %s" % (MONTHS[int(vals[1]) - 1], int(vals[2]), y)
    if len(vals) >= 2 and vals[1].isdigit() and 1 <= int(vals[1]) <= 12:
        return "%s %s" % (MONTHS[int(vals[1]) - 1], y)
    return y


UNIT_NAMES = {
    "km2": "km²", "m2": "m²", "sqmi": "sq mi", "sqkm": "km²", "sqft": "sq ft", "acre": "acres",
    "ha": "ha", "ft2": "sq ft", "mi2": "sq mi", "km3": "km³", "m3": "m³", "cuft": "cu ft",
    "cum": "m³", "c": "°C", "f": "°F", "k": "K", "°c": "°C", "°f": "°F", "kmh": "km/h",
    "km/h": "km/h", "mph": "mph", "kn": "kn", "lb": "lb", "kg": "kg", "t": "t", "st": "st",
    "long ton": "long tons", "short ton": "short tons", "mi": "mi", "km": "km", "m": "m",
    "ft": "ft", "in": "in", "cm": "cm", "mm": "mm", "nmi": "nmi", "yd": "yd", "au": "AU",
    "ly": "ly", "pc": "pc", "l": "L", "usgal": "US gal", "impgal": "imp gal", "ml": "mL",
    "oz": "oz", "g": "g", "mg": "mg", "kw": "kW", "hp": "hp", "kj": "kJ", "j": "J",
    "ev": "eV", "kev": "keV", "mev": "MeV", "gev": "GeV", "pa": "Pa", "kpa": "kPa",
    "psi": "psi", "bar": "bar", "atm": "atm", "ftlb": "ft·lb", "nm": "N·m", "w": "W",
    "ft/s": "ft/s", "m/s": "m/s", "km/s": "km/s", "mi/s": "mi/s", "g/cm3": "g/cm³",
    "kg/m3": "kg/m³", "lb/cuft": "lb/cu ft", "e6acre": "million acres", "e6km2": "million km²",
    "e6sqmi": "million sq mi", "e3km2": "thousand km²", "e6mi": "million mi",
    "e6km": "million km", "e9km": "billion km", "e3ft": "thousand ft", "e6t": "million t",
    "e3acre": "thousand acres", "e3sqmi": "thousand sq mi", "e6m3": "million m³",
    "ftin": "ft", "mtoft": "m", "kgal": "thousand gallons", "usbbl": "barrels", "bbl": "barrels",
}

RANGE_WORDS = {"-": "–", "–": "–", "to": " to ", "and": " and ", "or": " or ", "x": " × ",
               "by": " by ", "+": " + ", "to(-)": " to ", "&": " & ", "and(-)": " and ",
               "+/-": " ± ", "×": " × ", "~": "–"}


def render_convert(pos):
    p = [a.strip() for a in pos]
    if not p or not p[0]:
        return ""
    out = fmt_number(p[0])  # convert prints thousands separators
    i = 1
    while i + 1 < len(p) and p[i].lower() in RANGE_WORDS:
        out += RANGE_WORDS[p[i].lower()] + fmt_number(p[i + 1])
        i += 2
    unit = p[i] if i < len(p) else ""
    # convert|5|ft|6|in  -> 5 ft 6 in
    if i + 2 < len(p) and re.match(r"^[\d.,]+$", p[i + 1] or "") and p[i + 2].isalpha():
        u2 = UNIT_NAMES.get(p[i + 2].lower(), p[i + 2])
        return "%s %s %s %s" % (out, UNIT_NAMES.get(unit.lower(), unit), p[i + 1], u2)
    if not unit:
        return out
    return "%s %s" % (out, UNIT_NAMES.get(unit.lower(), unit))


def fmt_number(s):
    s = s.strip()
    m = re.match(r"^(-?)(\d+)(\.\d+)?$", s)
    if not m:
        return s
    return m.group(1) + "{:,}".format(int(m.group(2))) + (m.group(3) or "")


def render_template(inner):
    """Text a template is rendered to (approximately); most templates render to nothing."""
    args = split_args(inner)
    raw_name = args[0]
    name = template_name(raw_name)
    lname = name.lower()
    if not lname or lname.startswith("#"):
        return ""
    if ":" in lname:
        fn, _, rest = name.partition(":")
        fnl = fn.strip().lower()
        if fnl == "formatnum":
            return fmt_number(expand_templates(rest))
        if fnl in ("lc", "lcfirst"):
            return expand_templates(rest).lower()
        if fnl in ("uc", "ucfirst"):
            return expand_templates(rest).upper()
        return ""
    if lname in LITERAL:
        return LITERAL[lname]
    pos = [expand_templates(a) for a in positional(args)]

    def arg(k):
        return pos[k - 1] if 0 < k <= len(pos) else ""

    if lname in ("convert", "cvt", "convert/flip"):
        return render_convert(pos)
    if lname in ("nihongo", "nihongo3", "nihongo foot"):
        extra = ", ".join(x.strip() for x in pos[1:3] if x.strip())
        return arg(1) + (" (Japanese: %s)" % extra if extra else "")
    if lname in ("as of",):
        lead = "as of" if (named(args, "lc") or "").strip() else "As of"
        alt = named(args, "alt")
        if alt:
            return expand_templates(alt)
        return "%s %s" % (lead, fmt_date(pos))
    if lname in ("birth date", "death date", "birth date and age", "death date and age",
                 "start date", "end date", "start date and age", "dts", "date", "film date",
                 "birth-date", "death-date", "bda", "dda", "start and end dates"):
        return fmt_date(pos[:3])
    if lname in ("birth year and age", "death year and age"):
        return arg(1)
    if lname in ("circa", "c.", "ca.", "ca"):
        return ("c. " + arg(1)).strip()
    if lname in ("fl.", "floruit"):
        return ("fl. " + arg(1)).strip()
    if lname in ("bc", "bce", "ad", "ce"):
        return "%s %s" % (arg(1), name.upper()) if lname in ("bc", "bce") else "%s %s" % (name.upper(), arg(1))
    if lname in ("us$", "usd"):
        return "US$" + arg(1)
    if lname in ("chem", "chem2", "ce"):
        return "".join(x.strip() for x in pos)
    if lname in ("frac", "sfrac", "fraction"):
        p = [x.strip() for x in pos]
        if len(p) == 3:
            return "%s %s/%s" % tuple(p)
        if len(p) == 2:
            return "%s/%s" % tuple(p)
        if len(p) == 1:
            return "1/%s" % p[0]
        return ""
    if lname in ("sortname",):
        return (arg(1) + " " + arg(2)).strip()
    if lname in ("linktext", "r", "gaps"):
        return " ".join(x.strip() for x in pos) if lname == "gaps" else "".join(pos)
    if lname in ("angbr",):
        return "⟨" + arg(1) + "⟩"
    if lname in ("quote", "cquote", "quotation", "blockquote", "bq", "talkquote", "poem quote",
                 "pull quote"):
        t = named(args, "text") or named(args, "quote") or arg(1)
        return "\n\n" + expand_templates(t) + "\n\n"
    if lname in ("ship", "hms", "uss"):
        return " ".join(x.strip() for x in pos[:2])
    if lname in SHOW_ARG:
        k = SHOW_ARG[lname]
        if k == 0:
            return ""
        if k == -1:
            return pos[-1] if pos else ""
        return arg(k)
    if lname.startswith("lang-"):
        return arg(1)
    return ""


def expand_templates(s):
    if "{{" not in s:
        return s
    out = []
    i = 0
    while True:
        j = s.find("{{", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        end = find_closing(s, j, "{{", "}}")
        if end < 0:  # unbalanced: drop the stray braces and carry on
            i = j + 2
            continue
        out.append(render_template(s[j + 2:end - 2]))
        i = end
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Tables {| ... |}
# --------------------------------------------------------------------------------------------

TABLE_TOK = re.compile(r"(?m)^[ \t:]*(\{\||\|\})")


def remove_tables(s):
    out, i, depth, start = [], 0, 0, 0
    for m in TABLE_TOK.finditer(s):
        tok = m.group(1)
        if tok == "{|":
            if depth == 0:
                out.append(s[i:m.start()])
                start = m.start()
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                eol = s.find("\n", m.end())
                i = len(s) if eol < 0 else eol
    if depth > 0:
        # unclosed table: drop only lines that look like table rows
        tail = s[start:]
        tail = "\n".join(ln for ln in tail.split("\n")
                         if not re.match(r"^\s*(\{\||\|\}|\||!)", ln))
        out.append(tail)
    else:
        out.append(s[i:])
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Links [[...]] and [http ...]
# --------------------------------------------------------------------------------------------

DROP_NAMESPACES = {"file", "image", "category", "media", "template", "help", "special",
                   "user", "wikipedia", "wp", "portal", "book", "draft", "module", "talk",
                   "mediawiki", "timedtext", "user talk", "template talk", "category talk",
                   "file talk"}
KEEP_INTERWIKI = {"wikt", "wiktionary", "w", "s", "wikisource", "q", "wikiquote", "b",
                  "wikibooks", "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage",
                  "species", "wikispecies", "commons", "c", "meta", "m", "mw", "d", "wikidata",
                  "oldwikisource", "iarchive", "google", "imdbtitle", "imdbname"}
LANG_PREFIX = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple)$")


def render_link(inner):
    parts = split_args(inner)
    target = parts[0].strip()
    leading_colon = target.startswith(":")
    t = target.lstrip(":").strip()
    if ":" in t:
        prefix = t.split(":", 1)[0].strip()
        pl = prefix.lower()
        if not leading_colon and pl in ("file", "image", "category", "media"):
            return ""
        if not leading_colon and LANG_PREFIX.match(prefix) and pl not in KEEP_INTERWIKI:
            return ""  # interlanguage link
    if len(parts) > 1:
        label = "|".join(parts[1:]).strip()
        if not label:  # pipe trick: [[Foo (bar)|]] -> Foo
            label = re.sub(r"\s*\(.*?\)\s*$", "", t.split(":", 1)[-1])
        return convert_links(label)
    shown = t.replace("_", " ")
    if shown.startswith("#"):
        shown = shown[1:]
    return shown.replace("#", " ")


def convert_links(s):
    if "[[" not in s:
        return s
    out, i = [], 0
    while True:
        j = s.find("[[", i)
        if j < 0:
            out.append(s[i:])
            break
        out.append(s[i:j])
        end = find_closing(s, j, "[[", "]]")
        if end < 0:
            i = j + 2
            continue
        out.append(render_link(s[j + 2:end - 2]))
        i = end
    return "".join(out)


EXT_LINK = re.compile(r"\[(?:https?:|ftp:|//|mailto:|irc:|news:)[^\s\]]*(?:\s+([^\]\n]*))?\]",
                      re.I)
BARE_URL = re.compile(r"(?:https?|ftp)://[^\s<>\]\[|]+", re.I)

# --------------------------------------------------------------------------------------------
# Tags, comments, formatting
# --------------------------------------------------------------------------------------------

COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
DROP_TAGS = ("ref", "references", "math", "chem", "ce", "gallery", "timeline", "imagemap",
             "score", "graph", "hiero", "syntaxhighlight", "source", "templatedata", "mapframe",
             "maplink", "includeonly", "noinclude", "categorytree", "inputbox", "pre")
DROP_TAG_RE = re.compile(
    r"<(%s)(?:\s[^>]*)?(?<!/)>.*?</\1\s*>" % "|".join(DROP_TAGS), re.I | re.S)
SELF_CLOSING_RE = re.compile(r"<(%s)(?:\s[^>]*)?/>" % "|".join(DROP_TAGS), re.I)
UNCLOSED_REF = re.compile(r"<ref(?:\s[^>]*)?>[^<]*(?=\n\n|$)", re.I)
BR_RE = re.compile(r"<br\s*/?>|</br>", re.I)
ANY_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
MAGIC = re.compile(r"__[A-Z]+__")
BOLD_ITALIC = re.compile(r"'{2,}")


def quotes(m):
    n = len(m.group(0))
    return "'" if n in (4, 6) else ""  # '''' = apostrophe + bold


def strip_markup(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = COMMENT.sub("", text)
    text = re.sub(r"<nowiki\s*/>", "", text, flags=re.I)
    for _ in range(2):  # tags nested inside others of the drop list
        text = DROP_TAG_RE.sub("", text)
    text = SELF_CLOSING_RE.sub("", text)
    text = UNCLOSED_REF.sub("", text)
    text = expand_templates(text)
    text = remove_tables(text)
    text = convert_links(text)
    text = EXT_LINK.sub(lambda m: m.group(1) or "", text)
    text = BARE_URL.sub("", text)
    text = MAGIC.sub("", text)
    text = BOLD_ITALIC.sub(quotes, text)
    text = BR_RE.sub(" ", text)
    text = ANY_TAG.sub("", text)
    text = html.unescape(html.unescape(text))  # some pages double-escape (&amp;nbsp;)
    text = text.replace("\u00a0", " ").replace("\u2009", " ").replace("\u202f", " ")
    text = re.sub("[\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad]", "", text)
    return text


# --------------------------------------------------------------------------------------------
# Structure: headings / paragraphs
# --------------------------------------------------------------------------------------------

HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")
LIST_ITEM = re.compile(r"^[*#:;]+\s*")
DROP_SECTIONS = {
    "references", "external links", "see also", "notes", "further reading", "bibliography",
    "sources", "citations", "footnotes", "notes and references", "references and notes",
    "works cited", "cited works", "literature", "gallery", "primary sources",
    "secondary sources", "external sources", "online sources", "general references",
    "specific references", "cited sources", "links", "related articles", "reference",
    "external link", "notes and citations", "citations and notes", "sources and references",
    "references and further reading", "further reading and external links", "explanatory notes",
    "general sources", "endnotes", "other reading", "additional reading", "selected bibliography",
    "notes and sources", "sources cited", "images", "related pages", "other websites",
    "bibliography and further reading", "see also and references",
}


def tidy(s):
    """Collapse whitespace and clean the debris that removed templates leave behind."""
    s = re.sub(r"\s+", " ", s)
    for _ in range(3):
        s = re.sub(r"\(\s*[,;:–—/-]*\s*\)", "", s)          # ( ) left by pronunciations
        s = re.sub(r"\(\s*[,;:]\s*", "(", s)
        s = re.sub(r"\s*[,;:]\s*\)", ")", s)
        s = re.sub(r"\[\s*\]", "", s)
    s = re.sub(r"\s+([,.;:])(?=\s|$)", r"\1", s)              # "word ," -> "word,"
    s = re.sub(r",\s*(,\s*)+", ", ", s)
    s = re.sub(r"^[\s,;:.]+", "", s)
    s = re.sub(r"\s+", " ", s)
    return s.strip()


def has_words(s):
    return sum(ch.isalpha() for ch in s) >= 2


def structure(title, text):
    """Return a list of ('h', level, text) and ('p', text) items for one article."""
    items = [("h", 1, title)]
    para = []

    def flush():
        if para:
            t = tidy(" ".join(para))
            if has_words(t):
                items.append(("p", t))
            para.clear()

    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            flush()
            continue
        m = HEADING.match(line)
        if m and len(m.group(1)) >= 2:
            flush()
            h = tidy(m.group(2).replace("=", ""))
            if h:
                items.append(("h", len(m.group(1)), h))
            continue
        if re.match(r"^(\{\||\|\}|\|-|\||!)", line) or re.match(r"^-{4,}$", line):
            flush()  # stray table rows, horizontal rules
            continue
        if LIST_ITEM.match(line):
            flush()
            item = LIST_ITEM.sub("", line)
            if ";" == line[0] and ":" in item:  # ;term : definition
                item = item.replace(" : ", ": ", 1)
            para.append(item)
            flush()
            continue
        para.append(line)
    flush()

    # drop reference-like sections (with their subsections)
    kept, skip_level = [], None
    for it in items:
        if it[0] == "h":
            if skip_level is not None and it[1] > skip_level:
                continue
            skip_level = None
            if it[1] > 1 and it[2].lower().strip(" .:") in DROP_SECTIONS:
                skip_level = it[1]
                continue
        elif skip_level is not None:
            continue
        kept.append(it)

    # drop headings that head no text (nothing before the next heading of the same/higher level)
    out = []
    for idx, it in enumerate(kept):
        if it[0] == "h" and it[1] > 1:
            has_content = False
            for nxt in kept[idx + 1:]:
                if nxt[0] == "p":
                    has_content = True
                    break
                if nxt[1] <= it[1]:
                    break
            if not has_content:
                continue
        out.append(it)
    return out


# --------------------------------------------------------------------------------------------
# WikiText (Moses-like) tokenisation
# --------------------------------------------------------------------------------------------

# Abbreviations whose final period is not split off. Mapped to 2: only before a number.
NONBREAKING = {p: 1 for p in (
    "Adj Adm Adv Asst Bart Bldg Brig Bros Capt Cmdr Col Comdr Con Corp Cpl DR Dr Drs Ens Gen "
    "Gov Hon Hr Hosp Insp Lt MM MR MRS MS Maj Messrs Mlle Mme Mr Mrs Ms Msgr Op Ord Pfc Ph "
    "Prof Pvt Rep Reps Res Rev Rt Sen Sens Sfc Sgt Sr St Supt Surg Jr Mt Ft Ave Blvd Co Inc "
    "Ltd vs v i.e e.g etc al cf ca c Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "fl approx est viz").split()}
NONBREAKING.update({c: 1 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
NONBREAKING.update({p: 2 for p in ("No", "Nos", "Art", "Nr", "pp", "p", "vol", "Vol", "ch",
                                   "Ch", "fig", "Fig")})

SPECIAL = re.compile(r"[^\w\s.'`,\-]|_")
ALPHA = r"[^\W\d_]"
NOT_ALPHA = r"[\W\d_]"


def _pad(m):
    ch = m.group(0)
    if unicodedata.category(ch)[0] == "M":  # combining marks belong to their letter
        return ch
    return " " + ch + " "


def wt_tokenize(text):
    t = " " + re.sub(r"\s+", " ", text) + " "
    t = re.sub(r"[\x00-\x1f]", " ", t)
    t = re.sub(r"\.{2,}", lambda m: " " + m.group(0) + " ", t)
    t = SPECIAL.sub(_pad, t)
    # commas, unless between digits
    t = re.sub(r"(\D),", r"\1 , ", t)
    t = re.sub(r",(\D)", r" , \1", t)
    # apostrophes (English conventions: "it 's", "don 't", "dogs '")
    t = re.sub(r"(%s)'(%s)" % (NOT_ALPHA, NOT_ALPHA), r"\1 ' \2", t)
    t = re.sub(r"([\W_])'(%s)" % ALPHA, r"\1 ' \2", t)
    t = re.sub(r"(%s)'(%s)" % (ALPHA, NOT_ALPHA), r"\1 ' \2", t)
    t = re.sub(r"(%s)'(%s)" % (ALPHA, ALPHA), r"\1 '\2", t)
    t = re.sub(r"(\d)'(s)\b", r"\1 '\2", t)
    words = t.split()
    out = []
    for i, w in enumerate(words):
        if len(w) > 1 and w.endswith(".") and not re.match(r"^\.+$", w):
            pre = w[:-1]
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if ("." in pre and re.search(ALPHA, pre)) or NONBREAKING.get(pre) == 1 \
                    or (nxt and nxt[0].islower()):
                pass
            elif NONBREAKING.get(pre) == 2 and nxt[:1].isdigit():
                pass
            else:
                w = pre + " ."
        out.append(w)
    t = " ".join(out)
    # WikiText's number / hyphen escapes
    t = re.sub(r"(?<=[^\W_])-(?=[^\W_])", " @-@ ", t)
    t = re.sub(r"(?<=\d),(?=\d)", " @,@ ", t)
    t = re.sub(r"(?<=\d)\.(?=\d)", " @.@ ", t)
    return re.sub(r"\s+", " ", t).strip()


# --------------------------------------------------------------------------------------------
# Articles -> files
# --------------------------------------------------------------------------------------------

DISAMBIG = re.compile(
    r"\{\{\s*(?:disambig\w*|disambiguation|dab|hndis|geodis|numberdis|letter-numbercombdis|"
    r"set index|sia|surname|given name|\w+ disambiguation)\s*(?:\||\}\})", re.I)


def render_article(title, text):
    lines = []
    for it in structure(title, strip_markup(text)):
        if it[0] == "h":
            bar = " ".join(["="] * it[1])
            if lines and lines[-1] != " ":
                lines.append(" ")
            if not lines:
                lines.append(" ")
            lines.append(" %s %s %s " % (bar, wt_tokenize(it[2]), bar))
            lines.append(" ")
        else:
            lines.append(" %s " % wt_tokenize(it[1]))
    return lines


def count_words(lines):
    return sum(len(ln.split()) for ln in lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="MediaWiki XML export (.xml, .xml.bz2 or .xml.gz)")
    ap.add_argument("outdir")
    ap.add_argument("--valid-articles", type=int, default=None,
                    help="articles for valid (default: max(4, round(5%%)))")
    ap.add_argument("--test-articles", type=int, default=None,
                    help="articles for test (default: max(4, round(5%%)))")
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--min-words", type=int, default=150,
                    help="skip articles with fewer words once converted (default 150)")
    a = ap.parse_args(argv)

    articles, skipped = [], {"redirect": 0, "namespace": 0, "disambiguation": 0, "short": 0}
    for page in iter_pages(a.input):
        text = page["text"]
        if page["ns"] != "0":
            skipped["namespace"] += 1
            continue
        if page["redirect"] or re.match(r"^\s*#redirect", text, re.I):
            skipped["redirect"] += 1
            continue
        if page["title"].endswith("(disambiguation)") or DISAMBIG.search(text):
            skipped["disambiguation"] += 1
            continue
        lines = render_article(page["title"], text)
        if count_words(lines) - len(page["title"].split()) < a.min_words:
            skipped["short"] += 1
            continue
        articles.append((page["title"], lines))

    n = len(articles)
    if n < 3:
        sys.exit("wiki2wikitext: only %d usable articles in %s" % (n, a.input))
    default = max(4, round(0.05 * n))
    n_valid = default if a.valid_articles is None else a.valid_articles
    n_test = default if a.test_articles is None else a.test_articles
    if n_valid + n_test >= n:
        sys.exit("wiki2wikitext: %d valid + %d test articles leave no training articles (%d)"
                 % (n_valid, n_test, n))

    def rank(idx):
        return hashlib.sha256(("%d:%s" % (a.seed, articles[idx][0])).encode()).hexdigest()

    order = sorted(range(n), key=rank)
    split_of = {}
    for k, idx in enumerate(order):
        split_of[idx] = "valid" if k < n_valid else "test" if k < n_valid + n_test else "train"

    os.makedirs(a.outdir, exist_ok=True)
    print("wiki2wikitext: %d articles kept; skipped %s" % (
        n, ", ".join("%d %s" % (v, k) for k, v in skipped.items())))
    for split in ("train", "valid", "test"):
        chosen = [articles[i] for i in range(n) if split_of[i] == split]
        path = os.path.join(a.outdir, "wiki.%s.tokens" % split)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for _title, lines in chosen:
                for ln in lines:
                    f.write(ln + "\n")
        os.replace(tmp, path)
        all_lines = [ln for _t, ls in chosen for ln in ls]
        chars = sum(len(ln) + 1 for ln in all_lines)
        print("  %-5s %4d articles %7d lines %9d words %10d chars  %s" % (
            split, len(chosen), len(all_lines), count_words(all_lines), chars, path))
        if split != "train":
            print("        " + "; ".join(t for t, _ in chosen))


if __name__ == "__main__":
    main()
