#!/usr/bin/env python3
"""Writes libem's manual pages (mdoc) from the comments of include/em.h.

    scripts/gen-man.py [HEADER] OUTDIR

writes OUTDIR/man3/NAME.3 for every EM_EXPORT function (functions declared
together under one comment share a page; the others are symbolic links
to it),
OUTDIR/man3/em_types.3 for the types and constants, and OUTDIR/man7/libem.7,
the overview. em.h stays the one place the API is written down: the pages
carry its comments as they are, so a page is only as right as its comment.
"""
import datetime
import os
import re
import subprocess
import sys

BANNER = re.compile(r"^/\*\s*-{4,}\s*(.*?)\s*\*/\s*$")
EXPORT = re.compile(r"^EM_EXPORT\b")


def comment_lines(text):
    """The lines of a /* ... */ comment without the delimiters and stars."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if i == 0:
            line = re.sub(r"^\s*/\*", "", line)
        if i == len(lines) - 1:
            line = re.sub(r"\*/\s*$", "", line)
        if i > 0:
            line = re.sub(r"^\s*\*( |$)", "", line)
        out.append(line.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def parse(header):
    """Returns (intro comment lines, sections); a section is
    {name, families, types}, a family {comment, decls}, a decl
    {name, ret, args, text}, a type {comment, code}."""
    with open(header) as f:
        src = f.read()
    lines = src.split("\n")
    intro = []
    sections = []
    section = None
    pending = None  # the comment just above, if nothing came between
    family = None  # the family the previous line's declaration joined
    i = 0
    while i < len(lines):
        line = lines[i]
        m = BANNER.match(line)
        if m:
            section = {"name": m.group(1), "families": [], "types": []}
            sections.append(section)
            pending = family = None
            i += 1
            continue
        if line.lstrip().startswith("/*"):
            j = i
            while "*/" not in lines[j]:
                j += 1
            text = "\n".join(lines[i : j + 1])
            if section is None and not intro:
                intro = comment_lines(text)
            else:
                pending = comment_lines(text)
            family = None
            i = j + 1
            continue
        if section is None:
            i += 1
            continue
        if EXPORT.match(line):
            j = i
            while ";" not in lines[j]:
                j += 1
            decl = parse_decl(" ".join(l.strip() for l in lines[i : j + 1]))
            if family is None:
                family = {"comment": pending or [], "decls": []}
                section["families"].append(family)
            family["decls"].append(decl)
            pending = None
            i = j + 1
            continue
        if re.match(r"^(typedef|enum|#define\s+EM_)", line):
            # a type or constant: the declaration as written, up to the end
            # of its braces (or its line), with the comment above it
            j = i
            depth = line.count("{") - line.count("}")
            while depth > 0 or not re.search(r"(;|\bEM_\w+\s+\S+)\s*(/\*.*\*/)?\s*$", lines[j]):
                j += 1
                depth += lines[j].count("{") - lines[j].count("}")
            types = section["types"]
            if pending is None and types and types[-1]["end"] == i - 1:
                # a run of declarations under one comment: one display
                types[-1]["code"] += lines[i : j + 1]
                types[-1]["end"] = j
            else:
                types.append({"comment": pending or [], "code": lines[i : j + 1], "end": j})
            pending = family = None
            i = j + 1
            continue
        if not line.strip():
            family = None
            if pending is not None and i + 1 < len(lines) and not lines[i + 1].strip():
                pending = None
        i += 1
    return intro, sections


def split_args(s):
    args, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += ch in "([" 
        depth -= ch in ")]"
        cur += ch
    if cur.strip():
        args.append(cur.strip())
    return args


def parse_decl(text):
    text = re.sub(r"\s+", " ", re.sub(r"^EM_EXPORT\s+", "", text)).strip()
    m = re.match(r"^(.*?)\b(em_\w+)\s*\((.*)\)\s*;$", text)
    if not m:
        sys.exit("gen-man: cannot parse declaration: " + text)
    ret, name, args = m.group(1).strip(), m.group(2), m.group(3)
    args = [re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", a)) for a in split_args(args)]
    return {"name": name, "ret": ret, "args": args,
            "text": "%s%s%s(%s);" % (ret, "" if ret.endswith("*") else " ", name, ", ".join(args))}


def esc(s):
    """Text for an mdoc text line."""
    s = s.replace("\\", "\\e")
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


ABBREV = re.compile(r"\b(e\.g|i\.e|etc|vs)\.(?= )")


def text_lines(lines):
    """Text lines of one paragraph, a sentence starting each line, as mdoc
    wants (it puts the space after a full stop only at a line's end)."""
    text = " ".join(l.strip() for l in lines).replace("\\", "\\e")
    text = ABBREV.sub(lambda m: m.group(0) + "\\&", text)
    out = []
    for t in re.split(r"(?<=[^ ][.!?])\s+", text):
        out.append("\\&" + t if t.startswith((".", "'")) else t)
    return out


def quote(s):
    return '"' + esc(s).replace('"', '\\(dq') + '"'


def prose(lines):
    """mdoc for comment text: paragraphs at blank lines; lines starting with
    "- " or "N." become list items; a short line ending without a full stop,
    alone in its paragraph, becomes a subsection heading."""
    out = []
    blocks, cur = [], []
    for l in lines + [""]:
        if l.strip():
            cur.append(l)
        elif cur:
            blocks.append(cur)
            cur = []
    for n, block in enumerate(blocks):
        items = []  # (kind, [lines]) with kind None for plain text
        for l in block:
            s = l.strip()
            m = re.match(r"^(-|\d+\.)\s+(.*)$", s)
            if m:
                items.append(("dash" if m.group(1) == "-" else "enum", [m.group(2)]))
            elif items and items[-1][0] and l.startswith(" "):
                items[-1][1].append(s)
            else:
                if items and items[-1][0] is None:
                    items[-1][1].append(s)
                else:
                    items.append((None, [s]))
        if len(items) == 1 and items[0][0] is None and len(items[0][1]) == 1 \
                and len(items[0][1][0]) < 40 and not items[0][1][0].endswith((".", ":")):
            out.append(".Ss " + esc(items[0][1][0]))
            continue
        if n > 0 and not out[-1].startswith(".Ss"):
            out.append(".Pp")
        k = 0
        while k < len(items):
            kind, text = items[k]
            if kind is None:
                out.extend(text_lines(text))
                k += 1
                continue
            out.append(".Bl -%s" % kind)
            while k < len(items) and items[k][0] == kind:
                out.append(".It")
                out.extend(text_lines(items[k][1]))
                k += 1
            out.append(".El")
    return out


def summary(comment, names):
    """The NAME section's one line: the comment's first clause."""
    text = " ".join(l.strip() for l in comment)
    if not text:
        return "the libem function " + ", ".join(names)
    text = re.sub(r"\(.*?\)\s*", "", text)  # asides make it too long
    m = re.match(r"^(.*?[^.]\.)(\s|$)", text)
    first = m.group(1)[:-1] if m else text
    if len(first) > 60:
        for sep in (";", ":", ","):
            if sep in first and first.index(sep) > 10:
                first = first[: first.index(sep)]
                break
    first = first.strip()
    if len(first) > 70:
        first = first[:70].rsplit(" ", 1)[0] + " ..."
    if len(first) > 1 and first[0].isupper() and first[1].islower():
        first = first[0].lower() + first[1:]
    return first.replace('"', "")


def page_date(header):
    """The date of the header's last commit, else of its modification, so
    that regenerated pages do not change unless the header did."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", header],
                             cwd=os.path.dirname(os.path.abspath(header)),
                             capture_output=True, text=True, check=True).stdout.strip()
        d = datetime.date.fromisoformat(out)
    except (OSError, ValueError, subprocess.CalledProcessError):
        d = datetime.date.fromtimestamp(os.path.getmtime(header))
    return "%s %d, %d" % (d.strftime("%B"), d.day, d.year)


# mandoc knows only the system's libraries by .Lb name
LIBRARY = [".Sh LIBRARY", "libem", ".Pq Fl lem"]


def xrefs(refs):
    out = []
    for n, (name, sec) in enumerate(refs):
        out.append(".Xr %s %s%s" % (name, sec, " ," if n < len(refs) - 1 else ""))
    return out


def head(title, sec, date):
    return [".\\\" Generated by scripts/gen-man.py from include/em.h; edit em.h.",
            ".Dd " + date, ".Dt %s %s" % (title.upper(), sec), ".Os libem"]


def function_page(fam, section, date):
    names = [d["name"] for d in fam["decls"]]
    out = head(names[0], 3, date)
    out += [".Sh NAME"]
    out += [".Nm %s%s" % (n, " ," if k < len(names) - 1 else "") for k, n in enumerate(names)]
    out += [".Nd " + esc(summary(fam["comment"], names))]
    out += LIBRARY
    out += [".Sh SYNOPSIS", ".In em.h"]
    for d in fam["decls"]:
        out.append(".Ft " + quote(d["ret"]))
        out.append(".Fn %s %s" % (d["name"], " ".join(quote(a) for a in d["args"])))
    out += [".Sh DESCRIPTION"]
    if fam["comment"]:
        out += prose(fam["comment"])
    else:
        out.append("em.h declares this function without a comment; see the other")
        out.append("functions of its section, below, and")
        out.append(".Xr em_types 3")
        out.append("for the types it uses.")
    own = set(names)
    refs = [(d["name"], 3) for f in section["families"] for d in f["decls"] if d["name"] not in own]
    refs = sorted(set(refs) | {("em_types", 3)}) + [("libem", 7)]
    out += [".Sh SEE ALSO"] + xrefs(refs)
    return out


def types_page(sections, date):
    out = head("em_types", 3, date)
    out += [".Sh NAME", ".Nm em_types", ".Nd types and constants of libem"]
    out += LIBRARY
    out += [".Sh SYNOPSIS", ".In em.h"]
    out += [".Sh DESCRIPTION",
            "The types and constants",
            ".In em.h",
            "declares, in its order, with their comments."]
    for s in sections:
        if not s["types"]:
            continue
        out.append(".Ss " + esc(s["name"]))
        for t in s["types"]:
            if t["comment"]:
                if not out[-1].startswith(".Ss"):
                    out.append(".Pp")
                out += prose(t["comment"])
            out += [".Bd -literal -offset indent"]
            out += [esc(l) if l.strip() else "" for l in t["code"]]
            out += [".Ed"]
    out += [".Sh SEE ALSO", ".Xr libem 7"]
    return out


def overview_page(intro, sections, date):
    out = head("libem", 7, date)
    out += [".Sh NAME", ".Nm libem", ".Nd event-driven networking library in C"]
    out += [".Sh SYNOPSIS", ".In em.h", ".Pp", "Link with", ".Fl lem ."]
    out += [".Sh DESCRIPTION"]
    body = intro[:]
    if body and body[0].startswith("libem:"):
        body = body[1:]
        while body and not body[0].strip():
            body.pop(0)
    out += prose(body)
    out += [".Sh FUNCTIONS", "The functions of", ".In em.h ,",
            "by its sections; each has a page of its own."]
    for s in sections:
        names = [d["name"] for f in s["families"] for d in f["decls"]]
        if not names:
            continue
        out += [".Ss " + esc(s["name"]), ".Bl -tag -width Ds -compact"]
        for f in s["families"]:
            line = summary(f["comment"], [d["name"] for d in f["decls"]])
            for d in f["decls"]:
                out += [".It Xr %s 3" % d["name"], esc(line)]
        out += [".El"]
    out += [".Pp", "Types and constants:", ".Xr em_types 3 ."]
    out += [".Sh SEE ALSO", ".Xr em_types 3"]
    return out


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) == 2:
        header, outdir = os.path.join(os.path.dirname(__file__), "..", "include", "em.h"), argv[1]
    elif len(argv) == 3:
        header, outdir = argv[1], argv[2]
    else:
        sys.exit("usage: gen-man.py [HEADER] OUTDIR")
    intro, sections = parse(header)
    date = page_date(header)
    man3, man7 = os.path.join(outdir, "man3"), os.path.join(outdir, "man7")
    for d, ext in ((man3, ".3"), (man7, ".7")):
        os.makedirs(d, exist_ok=True)
        # pages of functions since removed from em.h must not linger
        for f in os.listdir(d):
            if f.endswith(ext) or os.path.islink(os.path.join(d, f)):
                os.remove(os.path.join(d, f))
    seen = set()
    for s in sections:
        for fam in s["families"]:
            first = fam["decls"][0]["name"]
            for d in fam["decls"]:
                if d["name"] in seen:
                    sys.exit("gen-man: %s declared twice" % d["name"])
                seen.add(d["name"])
            write(os.path.join(man3, first + ".3"), function_page(fam, s, date))
            # links rather than .so pages, which mandoc calls fragile; the
            # install copies them as links
            for d in fam["decls"][1:]:
                os.symlink(first + ".3", os.path.join(man3, d["name"] + ".3"))
    write(os.path.join(man3, "em_types.3"), types_page(sections, date))
    write(os.path.join(man7, "libem.7"), overview_page(intro, sections, date))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
