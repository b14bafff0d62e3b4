#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""doc/mkman.py - section-3 man pages from volley's public headers.

The headers are the specification (include/volley/*.h), so the manual is
made from them rather than written twice: one page per exported function
and per function-like vl_ macro, as libcurl has, with NAME, SYNOPSIS, DESCRIPTION (the comment above the
declaration), RETURN VALUE (the comment's "Returns ..." sentences) and SEE
ALSO (the functions documented by the same comment and those it names).

A comment documents the VL_EXPORT declarations that follow it in the same
block of lines (up to the next blank line); a declaration with no comment
in its block gets a page that says so, so that no exported function is left
without one.

Usage:
  doc/mkman.py --out DIR [--version V] HEADER...   write DIR/NAME.3 pages
  doc/mkman.py --list HEADER...                    print the page names

--out empties DIR of stale *.3 pages first, so a function removed from a
header loses its page. Only the Python standard library is used.
"""

import argparse
import os
import re
import sys

EXPORT = "VL_EXPORT"
NAME_RE = re.compile(r"\b(vl_[A-Za-z0-9_]+)\s*\(")
# A function-like macro of the API, such as vl_redis_options_init(o), gets a
# page like a function.
MACRO_RE = re.compile(r"#\s*define\s+vl_[A-Za-z0-9_]+\(")
# A section title inside a comment: "---- Errors ----", "==== Replies ====".
SECTION_RE = re.compile(r"^[-=]{3,}\s*(.*?)\s*[-=]*$")
MENTION_RE = re.compile(r"\b(vl_[a-z0-9_]+)\b")
# A sentence ends at ., ! or ? followed by space and something that can begin
# a sentence; "e.g. " is followed by lower case or a quote and stays whole.
SENTENCE_RE = re.compile(r"(?<=[^.][.!?])\s+(?=[A-Z`(\"]|vl_)")
# The sentences that state the return value: "Returns ...", "Return VL_OK
# ...", "Both return ...".
RETURNS_RE = re.compile(r"((Both|Each|All) )?[Rr]eturns?\b")


class Decl:
    def __init__(self, name, proto, header, comment, group):
        self.name = name
        self.proto = proto
        self.header = header
        self.comment = comment  # list of comment lines, or None
        self.group = group  # names documented by the same comment


def comment_lines(block):
    """The text lines of one /* ... */ comment, with the markers removed."""
    text = block.strip()
    text = text[2:] if text.startswith("/*") else text
    text = text[:-2] if text.endswith("*/") else text
    out = []
    for line in text.split("\n"):
        line = line.rstrip()
        stripped = line.lstrip()
        if stripped.startswith("*"):
            stripped = stripped[1:]
            if stripped.startswith(" "):
                stripped = stripped[1:]
            line = stripped
        else:
            line = line.strip()
        out.append(line)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def strip_section(lines):
    """A comment that opens a section ("---- Work on a thread ----") also
    documents what follows; its title line is not part of that text."""
    if lines and SECTION_RE.match(lines[0].strip()):
        lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    return lines or None


def parse_header(path):
    """Every exported declaration of one header, with its comment."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    decls = []
    # Walk the file as a sequence of comments, code lines and blank lines.
    pos = 0
    items = []  # ("comment", text) | ("code", text) | ("blank", "")
    lines = src.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            items.append(("blank", ""))
            i += 1
        elif s.startswith("/*"):
            buf = [line]
            while "*/" not in lines[i] and i + 1 < len(lines):
                i += 1
                buf.append(lines[i])
            items.append(("comment", "\n".join(buf)))
            i += 1
        elif MACRO_RE.match(s):
            buf = [line]
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                buf.append(lines[i])
            items.append(("decl", " ".join(x.strip().rstrip("\\") for x in buf)))
            i += 1
        elif s.startswith(EXPORT):
            buf = [line]
            while ";" not in lines[i] and i + 1 < len(lines):
                i += 1
                buf.append(lines[i])
            items.append(("decl", " ".join(x.strip() for x in buf)))
            i += 1
        else:
            items.append(("code", line))
            i += 1
    del pos

    # Blocks are runs of items between blank lines.
    block = []
    blocks = []
    for it in items + [("blank", "")]:
        if it[0] == "blank":
            if block:
                blocks.append(block)
            block = []
        else:
            block.append(it)
    # A comment above a struct with no declaration of its own documents the
    # declarations of the next block (the allocator struct and its setter).
    carried = None
    for blk in blocks:
        groups = []  # (comment, [decl texts])
        for kind, text in blk:
            if kind == "comment":
                groups.append((strip_section(comment_lines(text)), []))
            elif kind == "decl":
                if not groups:
                    groups.append((carried, []))
                groups[-1][1].append(text)
        has_decl = any(kind == "decl" for kind, _ in blk)
        carried = groups[-1][0] if groups and not has_decl else None
        for comment, texts in groups:
            names = []
            for text in texts:
                m = NAME_RE.search(text)
                if m:
                    names.append(m.group(1))
            for text in texts:
                m = NAME_RE.search(text)
                if not m:
                    continue
                proto = text[len(EXPORT):].strip() if text.startswith(EXPORT) else text
                proto = re.sub(r"\s+", " ", proto)
                proto = re.sub(r"\(\s+", "(", proto)
                d = Decl(m.group(1), proto, path, comment, names)
                # The declarations of the whole group: a macro's page shows
                # the structs its function takes.
                d.group_text = " ".join(t[t.find("(") :] for t in texts)
                decls.append(d)
    return decls


STRUCT_RE = re.compile(r"^typedef struct (vl_[a-z0-9_]+) \{.*?^\} \1;", re.S | re.M)
CALLBACK_RE = re.compile(r"^typedef [^;{}]*\(\*(vl_[a-z0-9_]+)\)\([^;]*\);", re.S | re.M)


def public_types(paths):
    """The full definitions of the public (not opaque) structs and of the
    callback types, by name."""
    found = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            src = f.read()
        for m in list(STRUCT_RE.finditer(src)) + list(CALLBACK_RE.finditer(src)):
            found[m.group(1)] = re.sub(r"\n\s+", "\n    ", m.group(0)) if m.re is CALLBACK_RE \
                else m.group(0)
    return found


def roff_escape(text):
    text = text.replace("\\", "\\e")
    text = text.replace("-", "\\-")
    return text


def inline(text):
    """Roff for one line of running text: `code` in bold, vl_ names bold."""
    text = roff_escape(text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fP", text)
    text = re.sub(r"(?<![A-Za-z0-9_\\])(vl_[a-z0-9_]+)(\(\))?", r"\\fB\1\\fP\2", text)
    return text


def line_out(text):
    """A line safe to start a roff input line."""
    if text.startswith(".") or text.startswith("'"):
        return "\\&" + text
    return text


ITEM_RE = re.compile(r"^(-|\d+\.)\s+")


def paragraphs(lines):
    """Splits comment lines into ("text", str), ("item", (mark, str)) and
    ("literal", [lines]). A line indented by two or more that starts a block
    is literal (an example, a table); "- " and "N. " start list items, whose
    indented continuation lines belong to them."""
    paras = []
    text = []
    mark = [None]
    literal = []
    base = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)

    def flush_text():
        if text:
            body = " ".join(t.strip() for t in text)
            paras.append(("item", (mark[0], body)) if mark[0] else ("text", body))
            text.clear()
        mark[0] = None

    def flush_literal():
        if literal:
            paras.append(("literal", list(literal)))
            literal.clear()

    for l in lines:
        if not l.strip():
            flush_text()
            flush_literal()
            continue
        indent = len(l) - len(l.lstrip()) - base
        m = ITEM_RE.match(l.strip())
        if m and indent >= 1:
            flush_text()
            flush_literal()
            mark[0] = m.group(1)
            text.append(l.strip()[m.end():])
        elif mark[0] and indent < 1:
            flush_text()
            text.append(l)
        elif indent >= 2 and not text:
            literal.append(l[base + 2 :])
        else:
            flush_literal()
            text.append(l)
    flush_text()
    flush_literal()
    return paras


def roff_paras(paras):
    """Roff for the output of paragraphs()."""
    out = []
    for kind, body in paras:
        if out and out[-1] != ".PP" and kind != "item":
            out.append(".PP")
        if kind == "text":
            out.append(line_out(inline(body)))
        elif kind == "item":
            m, text = body
            out.append(".IP %s 4" % ("\\(bu" if m == "-" else m))
            out.append(line_out(inline(text)))
            continue
        else:
            out.append(".RS")
            out.append(".nf")
            out.extend(line_out(roff_escape(x)) for x in body)
            out.append(".fi")
            out.append(".RE")
        out.append(".PP")
    return out


def split_returns(paras):
    """Moves the sentences that begin "Returns"/"Return" to their own list."""
    desc = []
    returns = []
    for kind, body in paras:
        if kind != "text":
            desc.append((kind, body))
            continue
        keep = []
        for sentence in SENTENCE_RE.split(body):
            if RETURNS_RE.match(sentence):
                returns.append(sentence)
            else:
                keep.append(sentence)
        if keep:
            desc.append(("text", " ".join(keep)))
    return desc, returns


def render(d, exported, structs, version):
    """The roff source of d's page."""
    out = page_head("volley/" + os.path.basename(d.header))
    title = d.name.upper()
    out.append('.TH %s 3 "" "volley %s" "volley manual"' % (roff_escape(title), version))
    header = os.path.basename(d.header)
    desc_line = ""
    if d.comment:
        first = " ".join(x.strip() for x in d.comment if x.strip())
        desc_line = SENTENCE_RE.split(first)[0].rstrip(".").replace("`", "")
        if len(desc_line) > 70:
            desc_line = desc_line[:67].rsplit(" ", 1)[0] + " ..."
    out.append(".SH NAME")
    out.append(line_out("%s \\- %s" % (roff_escape(d.name), roff_escape(desc_line or "see the header " + header))))
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    out.append("\\fB#include <volley.h>\\fP")
    out.append("")
    # A struct or callback type the function is given is part of its
    # synopsis, as the options and stats structs are what their _init and
    # _new calls are for.
    args = d.group_text
    for name, text in structs.items():
        if re.search(r"\b%s\b" % name, args):
            out.extend(line_out(roff_escape(l)) for l in text.split("\n"))
            out.append("")
    out.append(line_out(roff_escape(d.proto)))
    out.append(".fi")
    out.append(".PP")
    out.append("Link with \\fI\\-lvolley\\fP (\\fBpkg\\-config \\-\\-cflags \\-\\-libs volley\\fP).")
    out.append(".SH DESCRIPTION")
    returns = []
    if d.comment:
        desc, returns = split_returns(paragraphs(d.comment))
        if len(d.group) > 1:
            out.append(line_out(inline("This text documents %s together." % ", ".join(d.group))))
            out.append(".PP")
        out.extend(roff_paras(desc))
        if out[-1] == ".PP":
            out.pop()
    else:
        out.append(line_out(inline("%s has no comment of its own in volley/%s; "
                                   "see the comments around it there." % (d.name, header))))
    out.append(".PP")
    out.append(line_out(inline("Declared in volley/%s; see %s(3) for the rules that hold for all of it."
                               % (header, overview_name(d.header)))))
    if returns:
        out.append(".SH RETURN VALUE")
        out.append(line_out(inline(" ".join(returns))))
    see = []
    for name in d.group:
        if name != d.name and name not in see:
            see.append(name)
    if d.comment:
        for name in MENTION_RE.findall(" ".join(d.comment)):
            if name != d.name and name in exported and name not in see:
                see.append(name)
    out.append(".SH SEE ALSO")
    refs = ["\\fB%s\\fP(3)" % roff_escape(n) for n in see]
    refs += ["\\fB%s\\fP(3)" % overview_name(d.header), "\\fBvolley\\fP(1)"]
    out.append(",\n".join(refs))
    return "\n".join(out) + "\n"


def overview_name(header):
    """The page about a whole header: volley-redis for volley/redis.h, and
    libvolley for the umbrella volley.h (volley(1) is the CLI)."""
    base = os.path.basename(header)[:-2]
    return "libvolley" if base == "volley" else "volley-" + base


def top_comment(path):
    """The comment a header opens with, as comment lines."""
    with open(path, encoding="utf-8") as f:
        src = f.read().lstrip()
    # The licence line comes first; the description is the comment after it.
    while src.startswith("/*") and "SPDX-License-Identifier" in src[: src.index("*/")]:
        src = src[src.index("*/") + 2 :].lstrip()
    if not src.startswith("/*"):
        return []
    return comment_lines(src[: src.index("*/") + 2])


def page_head(source):
    """The first lines of every page: its licence and where it came from."""
    return ['.\\" SPDX-License-Identifier: BSD-3-Clause',
            '.\\" Made by doc/mkman.py from include/%s: edit the header, not this page.' % source]



def render_overview(header, decls, overviews, version):
    """The roff source of a header's page: its opening comment, with its
    "---- Title ----" lines as subsections, and the list of its functions."""
    name = overview_name(header)
    lines = top_comment(header)
    src = os.path.basename(header)
    out = page_head(src if src == "volley.h" else "volley/" + src)
    out += ['.TH %s 3 "" "volley %s" "volley manual"' % (roff_escape(name.upper()), version)]
    first = lines[0] if lines else ""
    head_lines = []  # the first paragraph: "volley/x.h - what it is"
    for l in lines:
        if not l.strip():
            break
        head_lines.append(l.strip())
    head = " ".join(head_lines)
    summary = head.split(" - ", 1)[1] if " - " in head else head
    out.append(".SH NAME")
    out.append(line_out("%s \\- %s" % (roff_escape(name), roff_escape(summary.rstrip(".")))))
    out.append(".SH SYNOPSIS")
    out.append(".nf")
    out.append("\\fB#include <volley.h>\\fP")
    out.append(".fi")
    out.append(".SH DESCRIPTION")
    body = lines[len(head_lines) :] if " - " in first else lines
    chunks = [[]]
    titles = [None]
    for l in body:
        m = SECTION_RE.match(l.strip())
        if m and m.group(1):
            titles.append(m.group(1))
            chunks.append([])
        else:
            chunks[-1].append(l)
    for title, chunk in zip(titles, chunks):
        if title:
            out.append(".SS " + roff_escape(title))
        out.extend(roff_paras(paragraphs(chunk)))
    mine = [d.name for d in decls if d.header == header]
    if mine:
        out.append(".SH FUNCTIONS")
        out.append(".nf")
        out.extend("\\fB%s\\fP(3)" % roff_escape(n) for n in mine)
        out.append(".fi")
    elif out[-1] == ".PP":
        out.pop()
    others = [o for o in overviews if o != name]
    out.append(".SH SEE ALSO")
    out.append(",\n".join(["\\fB%s\\fP(3)" % roff_escape(o) for o in others] + ["\\fBvolley\\fP(1)"]))
    return "\n".join(out) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(description="man pages from the public headers")
    ap.add_argument("--out", help="directory for the NAME.3 pages")
    ap.add_argument("--list", action="store_true", help="print the page file names")
    ap.add_argument("--version", default="", help="version for the page footer")
    ap.add_argument("headers", nargs="+")
    args = ap.parse_args(argv)
    decls = []
    for h in args.headers:
        decls.extend(parse_header(h))
    seen = {}
    for d in decls:
        if d.name in seen:
            sys.stderr.write("mkman: %s declared twice (%s, %s)\n" % (d.name, seen[d.name], d.header))
            return 1
        seen[d.name] = d.header
    overviews = [overview_name(h) for h in args.headers]
    if args.list:
        for name in overviews + [d.name for d in decls]:
            print(name + ".3")
        return 0
    if not args.out:
        ap.error("--out or --list is required")
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(".3"):
            os.remove(os.path.join(args.out, f))
    exported = set(seen)
    structs = public_types(args.headers)
    for d in decls:
        with open(os.path.join(args.out, d.name + ".3"), "w", encoding="utf-8") as f:
            f.write(render(d, exported, structs, args.version))
    for h in args.headers:
        with open(os.path.join(args.out, overview_name(h) + ".3"), "w", encoding="utf-8") as f:
            f.write(render_overview(h, decls, overviews, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
