"""Recorded runs: a chapter executed elsewhere (a GPU, in the colab profile), kept with its
outputs under ``book/recorded/``, shown by the book beside the chapter it came from.

    python tools/record.py add EXECUTED.ipynb --chapter book/chapters/01_lmaas.ipynb \\
        --device "NVIDIA H200" --commit 38160dd --date "2026-12-02 01:00 UTC" \\
        --profile colab --command "bash tools/gpu_check.sh lease ..."
    python tools/record.py sync          # after adding or after editing a chapter
    python tools/record.py sync --check  # exit status 1 if sync would change a file (the tests run it)

``add`` writes ``book/recorded/<chapter>.ipynb``: the executed notebook, with a first markdown
cell that states the device, commit, date, profile, command and a hash of the chapter's code
cells as they ran, then runs ``sync``. ``sync`` keeps four things consistent with what is in
``book/recorded/``: that first cell (it says *stale* when the chapter's code cells no longer
hash to the recorded value), the index page ``book/recorded/index.md``, the part "Recorded on a
GPU (colab profile)" at the end of ``_toc.yml``, and one line in each chapter (the line that
starts with ``**Recorded on a GPU.**``) linking the chapter to its recording, or saying there is
none. The recorded notebooks are never executed by the book build (``execute:
exclude_patterns`` in ``_config.yml``), and nbmake does not collect them (``norecursedirs``).

A recorded page sits in the same book as its chapter, so what the chapter defines for Sphinx
is renamed in the copy: figure, equation and section labels get the prefix ``rec-`` (with the
references to them), same-folder ``{doc}`` links point at the chapters, and the chapter's title
moves into the first cell. Outputs are kept small enough to come back from a GPU machine in
one file of at most 16 MiB with the others (the limits below); whatever is shortened is listed
in the first cell, never dropped silently.
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import io
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "recorded"  # book/recorded/
MARKER = "**Recorded on a GPU.**"  # the one line of each chapter that this tool writes
PART = "Recorded on a GPU (colab profile)"  # the part's caption in _toc.yml
PREFIX = "rec-"  # labels a recorded page defines: the chapter's own, renamed
META = "bbt_recorded"  # the notebook metadata key holding the provenance
# Limits: a GPU machine returns at most 8 files of at most 16 MiB each, so the eight chapters
# travel together (tools/gpu_check.py packs them into archives of at most 15 MiB).
TEXT_CHARS = 40_000  # one text output (stream, text/plain, text/html): head and tail kept
IMAGE_BYTES = 400_000  # one PNG, decoded: larger ones are re-encoded smaller
NOTEBOOK_BYTES = 6 * 2**20  # one recorded notebook as written

GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]+)`")
DOC_ROLE = re.compile(r"\{doc\}`([^`<]*<)?([^`>]+)(>?)`")
TITLE = re.compile(r"^# (.+)$", re.M)
TARGET = re.compile(r"^\(([A-Za-z0-9_-]+)\)=[ \t]*$", re.M)
TITLED = re.compile(r"^((?:\([A-Za-z0-9_-]+\)=[ \t]*\n)*)# .+$", re.M)  # targets, then the title
EQ_LABEL = re.compile(r"\$\$[ \t]*\(([A-Za-z0-9_-]+)\)[ \t]*$", re.M)
OPTION_LABEL = re.compile(r"^:(?:label|name):[ \t]*([A-Za-z0-9_-]+)[ \t]*$", re.M)


# --- hashes ----------------------------------------------------------------------------------

def code_hash(nb) -> str:
    """The chapter's code as it runs: every code cell's source, in order (12 hex digits)."""
    sources = [c.source.strip() for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256("\n\0\n".join(sources).encode()).hexdigest()[:12]


def package_hash(root: Path) -> str:
    """The package's Python files (paths and contents), for the record: 12 hex digits."""
    h = hashlib.sha256()
    for path in sorted((root / "bbt_mini").rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


# --- the chapters ----------------------------------------------------------------------------

def chapters(book: Path) -> list[Path]:
    """The chapters' notebooks (those with a MyST twin), in book order."""
    found = [p.with_suffix(".ipynb") for d in ("chapters", "appendix") for p in sorted((book / d).glob("*.md"))]
    return [p for p in found if p.exists()]


def chapter_doc(chapter: Path, book: Path) -> str:
    """The chapter as a Sphinx document name: 'chapters/01_lmaas'."""
    return chapter.with_suffix("").relative_to(book).as_posix()


def title_of(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (m := TITLE.search(cell.source)):
            return m.group(1).strip()
    return "untitled"


# --- outputs kept small ----------------------------------------------------------------------

def _collapse_redraws(text: str) -> str:
    """What a terminal shows of a progress bar: each line's text after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
                     for line in text.split("\n"))


def _cut(text: str, limit: int) -> tuple[str, int]:
    if len(text) <= limit:
        return text, 0
    head, tail = text[: limit // 2], text[-limit // 2:]
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n[... tools/record.py cut {cut:,} characters here to keep the recording small ...]\n{tail}", cut


def _shrink_png(data: str, limit: int) -> tuple[str, str] | None:
    """A base64 PNG re-encoded at a smaller size until it fits ``limit`` bytes: (data, note)."""
    raw = base64.b64decode(data)
    if len(raw) <= limit:
        return None
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    width, height = image.size
    scale, out = 1.0, raw
    while len(out) > limit and scale > 0.1:
        scale *= max(0.5, min(0.9, (limit / len(out)) ** 0.5))
        buffer = io.BytesIO()
        image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.LANCZOS).save(
            buffer, format="PNG", optimize=True)
        out = buffer.getvalue()
    note = (f"a {width}x{height} PNG of {len(raw) / 1e6:.2f} MB re-encoded at {scale:.0%} of its size "
            f"({len(out) / 1e6:.2f} MB)")
    return base64.b64encode(out).decode(), note


def shrink(nb, image_bytes: int = IMAGE_BYTES) -> list[str]:
    """Collapse progress-bar redraws, cut long text outputs, re-encode large PNGs; returns what changed."""
    notes, redraws = [], 0
    number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                collapsed = _collapse_redraws(out.text)
                redraws += len(out.text) - len(collapsed)
                out.text, cut = _cut(collapsed, TEXT_CHARS)
                if cut:
                    notes.append(f"code cell {number}: {cut:,} characters of its {out.name} cut from the middle")
            for mime, value in list(out.get("data", {}).items()):
                if mime == "image/png":
                    shrunk = _shrink_png(value, image_bytes)
                    if shrunk:
                        out.data[mime], note = shrunk
                        notes.append(f"code cell {number}: {note}")
                elif mime.startswith("text/") and isinstance(value, str):
                    out.data[mime], cut = _cut(value, TEXT_CHARS)
                    if cut:
                        notes.append(f"code cell {number}: {cut:,} characters of its {mime} output cut from the middle")
            if out.output_type == "error" and len("\n".join(out.traceback)) > TEXT_CHARS:
                text, cut = _cut("\n".join(out.traceback), TEXT_CHARS)
                out.traceback = text.split("\n")
                notes.append(f"code cell {number}: {cut:,} characters of its traceback cut from the middle")
    if redraws:
        notes.insert(0, f"progress-bar redraws collapsed to the last state of each line ({redraws:,} characters)")
    return notes


# --- the chapter's names, renamed for its copy -----------------------------------------------

def relabel(nb, source_dir: str) -> None:
    """Rename the labels ``nb`` defines (PREFIX) and their references; point same-folder
    ``{doc}`` links (relative to ``source_dir``, e.g. 'chapters') at the chapters."""
    labels = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for pattern in (TARGET, EQ_LABEL, OPTION_LABEL):
                labels.update(pattern.findall(cell.source))
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if figure.get("name"):
            labels.add(figure["name"])
            figure["name"] = PREFIX + figure["name"]
    if labels:
        word = re.compile(r"(?<![\w-])(" + "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
                          + r")(?![\w-])")
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        text = cell.source
        if labels:
            # Only inside roles, label lines and targets, never in prose or code.
            text = re.sub(r"\{(?:numref|eq|ref|math:numref)\}`[^`]*`|\]\(#[^)]*\)",
                          lambda m: word.sub(lambda w: PREFIX + w.group(1), m.group(0)), text)
            for pattern in (TARGET, EQ_LABEL, OPTION_LABEL):
                text = pattern.sub(lambda m: m.group(0).replace(m.group(1), PREFIX + m.group(1)), text)

        def doc(m):
            target = m.group(2).strip()
            if target.startswith("/"):
                return m.group(0)
            new = posixpath.relpath(posixpath.normpath(posixpath.join(source_dir, target)), FOLDER)
            return "{doc}`" + (m.group(1) or "") + new + m.group(3) + "`"

        cell.source = DOC_ROLE.sub(doc, text)


def unglued(nb) -> list[str]:
    """Glue keys the text quotes that no output of ``nb`` glued (myst-nb missing, or cells that never ran)."""
    glued = {out.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.cells if c.cell_type == "code"
             for out in c.get("outputs", [])}
    quoted = [k.split(":")[0] for c in nb.cells if c.cell_type == "markdown" for k in GLUE_ROLE.findall(c.source)]
    return sorted({k for k in quoted if "::" not in k and k not in glued})


def status(nb) -> dict:
    """What the executed notebook itself says about its run: cells run, the first error."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    ran = sum(c.get("execution_count") is not None for c in code)
    for i, c in enumerate(code, 1):
        for out in c.get("outputs", []):
            if out.output_type == "error":
                return {"code_cells": len(code), "ran": ran, "error": f"code cell {i}: {out.ename}: {out.evalue}"[:300]}
    if ran < len(code):
        return {"code_cells": len(code), "ran": ran, "error": f"stopped before code cell {ran + 1} (time limit)"}
    return {"code_cells": len(code), "ran": ran, "error": None}


# --- writing a recording ---------------------------------------------------------------------

def record(executed: Path, chapter: Path, provenance: dict, book: Path) -> Path:
    """Write book/recorded/<chapter>.ipynb from an executed copy of ``chapter``."""
    nb = nbformat.read(executed, as_version=4)
    source = nbformat.read(chapter, as_version=4)
    meta = {key: provenance.get(key) for key in ("device", "commit", "date", "profile", "command", "note")}
    meta.update(chapter=chapter_doc(chapter, book), title=title_of(nb), code_hash=code_hash(nb),
                chapter_code_hash=code_hash(source), package_hash=provenance.get("package_hash"),
                wall_s=provenance.get("wall_s"), **status(nb))
    for image_bytes in (IMAGE_BYTES, IMAGE_BYTES // 2, IMAGE_BYTES // 4, IMAGE_BYTES // 8):
        work = copy.deepcopy(nb)
        meta["trimmed"] = shrink(work, image_bytes)
        if len(nbformat.writes(work)) <= NOTEBOOK_BYTES:
            break
    else:
        raise SystemExit(f"{executed}: {len(nbformat.writes(work)) / 2**20:.1f} MiB after trimming, over the "
                         f"{NOTEBOOK_BYTES / 2**20:.0f} MiB a recording may take")
    nb = work
    relabel(nb, chapter.parent.relative_to(book).as_posix())
    meta["title_targets"] = []
    for cell in nb.cells:  # the title (and targets just above it) moves into the first cell
        if cell.cell_type == "markdown" and (m := TITLED.search(cell.source)):
            meta["title_targets"] = TARGET.findall(m.group(1))
            cell.source = (cell.source[:m.start()] + cell.source[m.end():]).strip("\n")
            break
    for cell in nb.cells:
        if cell.cell_type == "markdown" and MARKER in cell.source:
            cell.source = re.sub(re.escape(MARKER) + r".*", f"{MARKER} This page is that recording; the chapter "
                                 f"executed when the book is built is {{doc}}`../{meta['chapter']}`.", cell.source)
    meta["missing_figures"] = drawless = [  # a figure cell that drew nothing (a headless backend, a cut run)
        c.metadata.mystnb.figure.name for c in nb.cells if c.cell_type == "code"
        and c.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
        and not any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {}))]
    if drawless:  # a reference to a figure that is not there fails the build: say so in the text
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = re.sub(r"\{numref\}`(?:[^`<]*<)?([^`>]+)>?`", lambda m: "**[no figure: this run did not "
                                     "draw it]**" if m.group(1).strip() in drawless else m.group(0), cell.source)
    missing = unglued(nb)
    meta["unglued"] = missing
    if missing:  # an unresolved glue key fails the build: say in the text that the run gave no number
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = GLUE_ROLE.sub(lambda m: "**[no number: this run did not compute it]**"
                                            if m.group(1).split(":")[0] in missing else m.group(0), cell.source)
    nb.metadata.pop("jupytext", None)  # no MyST twin: a recording is not paired
    nb.metadata[META] = meta
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(first_cell(meta, book, book.parent), id="recorded-provenance"))
    out = book / FOLDER / f"{chapter.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


# --- what sync writes ------------------------------------------------------------------------

def _fresh(meta: dict, book: Path) -> tuple[bool, str | None]:
    """(whether the chapter's code cells still hash as recorded, their hash now or None if gone)."""
    chapter = book / f"{meta['chapter']}.ipynb"
    if not chapter.exists():
        return False, None
    now = code_hash(nbformat.read(chapter, as_version=4))
    return now == meta["code_hash"], now


def _result(meta: dict) -> str:
    wall = f" in {meta['wall_s'] / 60:.1f} minutes" if meta.get("wall_s") else ""
    if meta["error"]:
        return f"did not finish: {meta['code_cells']} code cells, {meta['ran']} ran; {meta['error']}"
    return f"all {meta['code_cells']} code cells ran{wall}"


def first_cell(meta: dict, book: Path, root: Path) -> str:
    fresh, now = _fresh(meta, book)
    package_now = package_hash(root) if (root / "bbt_mini").exists() else None
    kind = "note" if fresh and not (meta["error"] or meta["unglued"] or meta.get("missing_figures")) else "warning"
    lines = [*(f"({t})=" for t in meta.get("title_targets", [])), f"# {meta['title']} (recorded run)", "",
             f":::{{admonition}} Recorded on {meta['device']}, {meta['profile']} profile: not executed by this build",
             f":class: {kind}",
             f"This page is {{doc}}`../{meta['chapter']}` executed on **{meta['device']}** in the "
             f"**{meta['profile']}** profile and kept with its outputs; the book build shows it as it was "
             "recorded and does not run it again. Every glued number and verdict below came from that run, "
             "by the same code and rule as the chapter's.", ""]
    if meta["code_hash"] != meta["chapter_code_hash"]:
        lines += ["**Not the chapter's code of its commit:** the executed notebook's code cells hash to "
                  f"`{meta['code_hash']}`, the chapter's at recording time to `{meta['chapter_code_hash']}`.", ""]
    if not fresh:
        lines += [f"**Stale:** the chapter's code cells have changed since this recording (hash "
                  f"`{meta['code_hash']}` then, `{now or 'chapter removed'}` now): the outputs below show the "
                  "older code. Record the chapter again on a GPU (README, *GPU measurements*).", ""]
    else:
        lines += [f"The chapter's code cells are unchanged since this recording (hash `{meta['code_hash']}`).", ""]
    if meta.get("missing_figures"):
        names = ", ".join(f"`{k}`" for k in meta["missing_figures"])
        lines += [f"**Figures missing:** this run drew no image for {names}; the text says *no figure* where it "
                  "refers to them.", ""]
    if meta["unglued"]:
        lines += [f"**Numbers missing:** this run glued no value for {', '.join(f'`{k}`' for k in meta['unglued'])}; "
                  "the text shows *no number* where it quotes them.", ""]
    package = meta.get("package_hash")
    package_line = (f"`{package}`" + ("" if package_now in (None, package) else f" (the package now: `{package_now}`)")
                    if package else "not recorded")
    rows = [("device", meta["device"]), ("commit", f"`{meta['commit']}`"), ("date", meta["date"]),
            ("profile", f"`{meta['profile']}`"), ("command", f"`{meta['command']}`"),
            ("chapter's code cells", f"hash `{meta['code_hash']}`"), ("package code", package_line),
            ("result", _result(meta)), ("trimmed", "; ".join(meta["trimmed"]) or "nothing")]
    if meta.get("note"):
        rows.append(("note", meta["note"]))
    lines += ["| | |", "|---|---|", *[f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows], ":::"]
    return "\n".join(lines)


def recordings(book: Path) -> dict[str, dict]:
    """stem -> provenance of every notebook in book/recorded/."""
    found = {}
    for path in sorted((book / FOLDER).glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata.get(META)
        if meta is None:
            raise SystemExit(f"{path} has no {META} metadata: only tools/record.py add writes that folder")
        found[path.stem] = meta
    return found


def chapter_line(chapter: Path, book: Path, found: dict) -> str:
    meta = found.get(chapter.stem)
    if meta is None:
        return (f"{MARKER} Not recorded yet; this page is executed when the book is built. {{doc}}`The recorded "
                f"runs <../{FOLDER}/index>` list the chapters executed on a GPU in the colab profile and kept with "
                "their outputs.")
    fresh, _ = _fresh(meta, book)
    how = "ran in full" if not meta["error"] else "stopped early"
    return (f"{MARKER} {{doc}}`This chapter as it ran on {meta['device']} in the {meta['profile']} profile "
            f"<../{FOLDER}/{chapter.stem}>` ({meta['date'][:10]}, commit {str(meta['commit'])[:10]}; {how}) is kept "
            "with its outputs; this page is executed when the book is built."
            + ("" if fresh else " The chapter's code has changed since that recording."))


def index_page(book: Path, found: dict) -> str:
    rows = []
    for chapter in chapters(book):
        doc = chapter_doc(chapter, book)
        meta = found.get(chapter.stem)
        if meta is None:
            rows.append(f"| {{doc}}`../{doc}` | not recorded yet | | | |")
            continue
        fresh, _ = _fresh(meta, book)
        rows.append(f"| {{doc}}`../{doc}` | {{doc}}`recorded run <{chapter.stem}>` | {meta['device']}, "
                    f"{meta['profile']} | {meta['date'][:10]}, `{str(meta['commit'])[:10]}` | "
                    f"{'ran in full' if not meta['error'] else 'stopped early'}; "
                    f"{'code unchanged since' if fresh else '**stale**: code changed since'} |")
    for stem in sorted(set(found) - {c.stem for c in chapters(book)}):
        rows.append(f"| {stem} (no such chapter now) | {{doc}}`recorded run <{stem}>` | "
                    f"{found[stem]['device']} | {found[stem]['date'][:10]} | **stale**: chapter removed |")
    return "\n".join([
        "# The recorded runs", "",
        "% Written by tools/record.py sync; edit that tool, not this page.", "",
        "The chapters of this book are executed when the book is built, on the machine that builds "
        "it, in the profile it chooses (the first lines of each chapter print which). The pages of "
        "this part are the same chapters executed on a GPU in the `colab` profile (the papers' L, d, "
        "population and shots, 2,000 calls) and kept with their outputs: the build shows them as "
        "recorded and does not execute them again. Each page's first box states the device, commit, "
        "date, profile and command of its run, and whether the chapter's code has changed since.", "",
        "| chapter | recording | device, profile | date, commit | state |", "|---|---|---|---|---|", *rows, "",
        "To record them: `tools/gpu_check.sh lease` on a GPU machine (README, *GPU measurements*), then "
        "`python tools/record.py unpack` with what it returned.", ""])


def toc_text(toc: str, found: dict, book: Path) -> str:
    """_toc.yml with its last part, the recorded runs, written from what is in book/recorded/."""
    head = toc.split(f"  - caption: {PART}\n")[0].rstrip("\n") + "\n"
    order = [c.stem for c in chapters(book)]
    stems = sorted(found, key=lambda s: (order.index(s) if s in order else len(order), s))
    lines = [f"  - caption: {PART}", "    chapters:", f"      - file: {FOLDER}/index"]
    lines += [f"      - file: {FOLDER}/{s}" for s in stems]
    return head + "\n".join(lines) + "\n"


def _set_line(text: str, line: str) -> str | None:
    """``text`` with its MARKER line replaced by ``line``; None if it has no such line."""
    if not re.search("^" + re.escape(MARKER), text, re.M):
        return None
    return re.sub("^" + re.escape(MARKER) + ".*$", lambda _: line, text, count=1, flags=re.M)


def sync(root: Path = ROOT, check: bool = False) -> list[str]:
    """Bring the first cells, the index, the toc and the chapters' lines in line; returns what differed."""
    book, changed = root / "book", []
    found = recordings(book)

    def put(path: Path, text: str):
        if not path.exists() or path.read_text() != text:
            changed.append(str(path.relative_to(root)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    for stem, meta in found.items():
        path = book / FOLDER / f"{stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].source = first_cell(meta, book, root)
        put(path, nbformat.writes(nb).rstrip("\n") + "\n")
    put(book / FOLDER / "index.md", index_page(book, found))
    put(root / "_toc.yml", toc_text((root / "_toc.yml").read_text(), found, book))
    for chapter in chapters(book):
        md = chapter.with_suffix(".md")
        text = _set_line(md.read_text(), chapter_line(chapter, book, found))
        if text is None:
            raise SystemExit(f"{md.relative_to(root)} has no line starting with {MARKER}: add one after its "
                             "'Running this chapter' paragraph")
        if text != md.read_text():
            put(md, text)
            if not check:  # its notebook from its source, as make sync does
                subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--update", "--to", "ipynb", str(md)],
                               check=True)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("add", help="write book/recorded/<chapter>.ipynb from an executed notebook, then sync")
    a.add_argument("executed", type=Path)
    a.add_argument("--chapter", type=Path, required=True, help="the chapter's notebook it was executed from")
    for name in ("device", "commit", "date", "profile", "command"):
        a.add_argument(f"--{name}", required=True)
    a.add_argument("--wall-s", type=float)
    a.add_argument("--package-hash", help="tools/record.py's package hash where it ran (default: here)")
    a.add_argument("--note", help="one more line for the first cell (e.g. why a run stopped)")
    a.add_argument("--no-sync", action="store_true", help="only write the notebook (on the GPU machine)")
    s = sub.add_parser("sync", help="first cells, index, toc and chapter lines from book/recorded/")
    s.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything would change")
    u = sub.add_parser("unpack", help="recordings returned by tools/gpu_check.py (folders or .tar.gz), then sync")
    u.add_argument("sources", nargs="+", type=Path)
    for q in (a, s, u):
        q.add_argument("--root", type=Path, default=ROOT, help="the repository (a copy, in tests)")
    args = p.parse_args(argv)
    root = args.root.resolve()
    if args.step == "add":
        chapter = args.chapter.resolve()
        provenance = {k: getattr(args, k) for k in ("device", "commit", "date", "profile", "command", "note", "wall_s")}
        provenance["package_hash"] = args.package_hash or package_hash(root)
        out = record(args.executed, chapter, provenance, root / "book")
        print(f"wrote {out}")
        if args.no_sync:
            return 0
    if args.step == "unpack":
        import tarfile

        for src in args.sources:
            names = []
            if src.is_dir():
                for path in sorted(src.rglob("*.ipynb")):
                    (root / "book" / FOLDER / path.name).write_bytes(path.read_bytes())
                    names.append(path.name)
            else:
                with tarfile.open(src) as tar:
                    for member in tar.getmembers():
                        name = os.path.basename(member.name)
                        if member.isfile() and name.endswith(".ipynb"):
                            (root / "book" / FOLDER / name).write_bytes(tar.extractfile(member).read())
                            names.append(name)
            print(f"{src}: {', '.join(names) or 'no recordings'}")
    changed = sync(root, check=args.step == "sync" and args.check)
    for path in changed:
        print(("out of date: " if args.step == "sync" and args.check else "wrote ") + path)
    return 1 if args.step == "sync" and args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
