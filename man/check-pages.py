#!/usr/bin/env python3
"""check-pages.py - the man pages cover core/uringbuf.h, and agree with it.

For every function the header exports (UB_EXTERN):
  - man3/NAME.3 exists; if it is a `.so` link, its target exists and the
    target's NAME section lists NAME (so `man NAME` shows a page about it);
  - the page's SYNOPSIS carries the header's prototype, token for token;
  - errors agree: every -EXXX in the header comment of the function is an
    ERRORS entry (.TP/.TQ + .B EXXX) of its page, and every ERRORS entry of a
    page is named in the header comment of some function on that page.
And: the pages on disk, the header's functions and the pages Makefile.am
installs (UB_MAN_PAGES, from `make check`) are the same sets.

Run by `make check` in man/ (srcdir, top_srcdir from the environment), or
by hand: python3 man/check-pages.py from the top of the source tree.
Exit 0 when all agree, 1 with one line per disagreement.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("srcdir", HERE)
TOP = os.environ.get("top_srcdir", os.path.join(SRCDIR, ".."))
HEADER = os.path.join(TOP, "core", "uringbuf.h")
ERR_RE = re.compile(r"-(E[A-Z0-9]+)\b")

problems = []


def problem(msg):
    problems.append(msg)


def norm(proto):
    """A prototype with whitespace normalized: one space between words, none
    around punctuation."""
    proto = re.sub(r"\s+", " ", proto).strip()
    proto = re.sub(r"\s*([*(),;])\s*", r"\1", proto)
    return proto


def parse_header(path):
    """{name: (prototype, set of errors in its comments)} in header order."""
    funcs = {}
    lines = open(path, encoding="utf-8").read().split("\n")
    comment = None  # the comment block that applies to the next declarations
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("/*"):
            text = [line]
            while "*/" not in lines[i]:
                i += 1
                text.append(lines[i])
            comment = "\n".join(text)
        elif stripped.startswith("UB_EXTERN"):
            decl = [line]
            while ";" not in lines[i]:
                i += 1
                decl.append(lines[i])
            joined = "\n".join(decl)
            body, _, trailing = joined.partition(";")
            m = re.search(r"(\w+)\s*\(", body)
            if not m:
                problem("%s: cannot parse %r" % (path, joined))
            else:
                errs = set(ERR_RE.findall(comment or ""))
                errs |= set(ERR_RE.findall(trailing))
                proto = body.replace("UB_EXTERN", "", 1) + ";"
                funcs[m.group(1)] = (norm(proto), errs)
        else:
            # A blank line or any other code ends what a comment applies to.
            comment = None
        i += 1
    return funcs


def roff_args(rest):
    """The arguments of a roff request line, as the macro sees them."""
    args, cur, quoted, had = [], "", False, False
    for ch in rest:
        if quoted:
            if ch == '"':
                quoted = False
            else:
                cur += ch
        elif ch == '"':
            quoted, had = True, True
        elif ch in " \t":
            if cur or had:
                args.append(cur)
            cur, had = "", False
        else:
            cur += ch
    if cur or had:
        args.append(cur)
    return args


def unescape(s):
    return s.replace("\\-", "-").replace("\\(dq", '"').replace("\\e", "\\")


def read_page(path):
    """(names in NAME, synopsis text, ERRORS entries) of a page."""
    text = open(path, encoding="utf-8").read()
    sections, cur = {}, None
    for line in text.split("\n"):
        if line.startswith(".SH "):
            cur = line[4:].strip().strip('"')
            sections[cur] = []
        elif cur:
            sections[cur].append(line)
    names = []
    for line in sections.get("NAME", []):
        head = line.split("\\-")[0]
        names += [n.strip() for n in head.split(",") if n.strip()]
    synopsis = []
    for line in sections.get("SYNOPSIS", []):
        if line.startswith(".BI "):  # prototypes; .B/.BR: includes, structs
            synopsis.append("".join(roff_args(line.split(None, 1)[1])))
    errors = set()
    prev = ""
    for line in sections.get("ERRORS", []):
        if prev in (".TP", ".TQ"):
            m = re.match(r"\.B (E[A-Z0-9]+)\s*$", line)
            if m:
                errors.add(m.group(1))
            else:
                problem("%s: ERRORS entry %r is not `.B EXXX`" % (path, line))
        prev = line.strip()
    return names, unescape(" ".join(synopsis)), errors


def page_of(name):
    """Path of the page `man NAME` shows (following one .so), or None."""
    path = os.path.join(SRCDIR, "man3", name + ".3")
    if not os.path.exists(path):
        problem("%s: no page man3/%s.3" % (name, name))
        return None
    first = open(path, encoding="utf-8").readline().strip()
    if first.startswith(".so "):
        target = os.path.join(SRCDIR, first[4:].strip())
        if not os.path.exists(target):
            problem("man3/%s.3: .so target %s missing" % (name, first[4:]))
            return None
        return target
    return path


def main():
    funcs = parse_header(HEADER)
    if len(funcs) < 10:
        problem("%s: only %d UB_EXTERN functions found" % (HEADER, len(funcs)))
    pages = {}  # page path -> [function names it documents]
    for name in funcs:
        page = page_of(name)
        if page:
            pages.setdefault(page, []).append(name)
    for page, names in sorted(pages.items()):
        rel = os.path.relpath(page, SRCDIR)
        listed, synopsis, errors = read_page(page)
        protos = set(norm(p + ";") for p in synopsis.split(";") if "(" in p)
        allowed = set()
        for name in names:
            proto, herrs = funcs[name]
            allowed |= herrs
            if name not in listed:
                problem("%s: NAME does not list %s" % (rel, name))
            if proto not in protos:
                problem("%s: SYNOPSIS lacks the header's prototype %s"
                        % (rel, proto))
            for e in sorted(herrs - errors):
                problem("%s: header says %s can fail with %s; ERRORS does "
                        "not list it" % (rel, name, e))
        for e in sorted(errors - allowed):
            problem("%s: ERRORS lists %s, which the header comments of %s "
                    "do not name" % (rel, e, ", ".join(names)))
        for n in listed:
            if n not in names:
                problem("%s: NAME lists %s, which is not an exported function "
                        "that resolves to this page" % (rel, n))
    # Pages on disk, functions, and what Makefile.am installs.
    on_disk = set()
    for sub in ("man3", "man7"):
        for f in os.listdir(os.path.join(SRCDIR, sub)):
            on_disk.add(sub + "/" + f)
    expected = set("man3/%s.3" % n for n in funcs) | {"man7/uringbuf.7"}
    for f in sorted(on_disk - expected):
        problem("%s: no exported function of that name (stale page?)" % f)
    installed = os.environ.get("UB_MAN_PAGES")
    if installed is not None:
        installed = set(installed.split())
        for f in sorted(on_disk - installed):
            problem("%s: not in man/Makefile.am's page list" % f)
        for f in sorted(installed - on_disk):
            problem("%s: in man/Makefile.am but missing" % f)
    for p in problems:
        print("check-pages: " + p)
    print("check-pages: %d functions, %d pages, %d problems"
          % (len(funcs), len(pages), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
