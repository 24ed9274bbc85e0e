"""The book's sources: every chapter's .md and .ipynb say the same, and no outputs are committed."""
from pathlib import Path

import jupytext
import nbformat
import numpy as np

import pytest
import yaml

from bbt_mini.book.notebook import plain

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "book").glob("*/[0-9a-z]*.md") if p.parent.name != "recorded")


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_notebook_pair_in_sync_and_without_outputs(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make sync`"
    text, stored = jupytext.read(md), nbformat.read(ipynb, as_version=4)
    assert _cells(text) == _cells(stored), f"{ipynb.name} differs from {md.name}: run `make sync`"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{ipynb.name} has committed outputs"


def test_toc_lists_existing_pages_and_book_toc_is_the_top_level_one():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert (ROOT / "book" / "_toc.yml").resolve() == (ROOT / "_toc.yml").resolve()
    files = [toc["root"]] + [page["file"] for part in toc["parts"] for ch in part["chapters"]
                             for page in [ch] + ch.get("sections", [])]
    for f in files:
        assert any((ROOT / "book" / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f
    chapters = {p.with_suffix("").relative_to(ROOT / "book").as_posix() for p in SOURCES}
    assert chapters <= set(files), f"chapters missing from the table of contents: {chapters - set(files)}"


@pytest.mark.parametrize("value", [np.float64(0.4562), np.float32(17.5), np.int64(8), np.array(0.25)])
def test_glued_numbers_are_plain_python_so_the_book_can_format_them(value):
    # myst-nb parses a glued number back from its repr; numpy 2 writes 'np.float64(0.4562)'
    out = plain(value)
    assert type(out) in (float, int)
    assert float(repr(out)) == pytest.approx(float(value))


def test_glue_leaves_other_values_alone():
    assert plain("rotten_tomatoes") == "rotten_tomatoes"
    assert plain([1, 2]) == [1, 2]


def test_glue_hands_myst_nb_a_plain_number_and_returns_nothing(monkeypatch):
    """In a book build glue passes the plain value on; it returns None so a cell shows no stray number."""
    import sys
    import types

    from bbt_mini.book.notebook import glue

    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=False: calls.append((name, value, display)) or "shown"
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue("x", np.float64(0.5)) is None
    assert calls == [("x", 0.5, False)] and type(calls[0][1]) is float


def test_glue_outside_a_book_build_does_nothing(monkeypatch):
    import sys

    from bbt_mini.book.notebook import glue

    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb raises ImportError
    assert glue("x", 1.0) is None


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_each_chapter_prints_its_expected_time_and_sizes_by_pick(md):
    code = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
    top = code[1]  # the cell after the install cell: imports, profile, plan
    plan = re.search(rf'Plan\(profile,( model=MODEL,)? chapter="{md.stem}"(, model=MODEL)?\)', top)
    assert plan and "print(plan.report())" in top, \
        f"{md.name}: the cell after the imports must price the chapter's runs for this device"
    body = "\n".join(code)
    assert 'profile.name ==' not in body, f"{md.name}: choose sizes with profile.pick(...), one value per profile"


def _code_strings(md):
    """String literals of a chapter's code cells, f-strings as patterns (their fields match anything)."""
    import re

    code = "\n".join(c.source for c in jupytext.read(md).cells if c.cell_type == "code")
    literals = re.findall(r"(f?)\"([^\"\n]*)\"", code)
    exact = {s for f, s in literals if not f}
    patterns = [re.compile("^" + re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(s)) + "$") for f, s in literals if f]
    suffixes = set(re.findall(r"\+\s*\"([^\"\n]*)\"\)", code))  # glue(key + "_test", ...)
    return exact, patterns, suffixes


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_every_glued_key_the_text_quotes_is_named_in_the_chapters_code(md):
    import re

    text = md.read_text()
    used = set(re.findall(r"\{glue:text\}`([^`:]+)", text))
    exact, patterns, suffixes = _code_strings(md)
    missing = [k for k in sorted(used) if k not in exact and not any(p.match(k) for p in patterns)
               and not any(k.endswith(s) and k[:-len(s)] in exact for s in suffixes if s)]
    assert not missing, f"{md.name} quotes glue keys its code never glues: {missing}"


HAND_WRITTEN_VERDICTS = ["several times the spread", "reproduced by 63", "where the adaptation pays",
                         "rise-then-fall shape in miniature", "this CPU has AVX512", "tuned prompts beat the manual",
                         "within the noise", "the gain is real", "gave clearly worse prompts",
                         "in our calibration runs"]


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_chapters_carry_no_hand_written_verdict(md):
    text = md.read_text().lower()
    found = [v for v in HAND_WRITTEN_VERDICTS if v.lower() in text]
    assert not found, f"{md.name}: hand-written verdicts (compute them with bbt_mini.book.notebook.compare): {found}"


# ---------------------------------------------------------------------------------------------
# The book's conventions: every
# chapter and the appendix, read from their .md sources. Each rule is a function that returns
# (file, line, message) problems; tests below run each on made-up snippets, both outcomes.
# ---------------------------------------------------------------------------------------------
import ast  # noqa: E402
import importlib.util  # noqa: E402
import re  # noqa: E402

BOOK = ROOT / "book"
PAGES = sorted(BOOK.glob("*.md"))  # intro, notation, bibliography: prose rules only
WIDTH = 88
HIDDEN = {"hide-input", "hide-cell", "remove-input", "remove-cell"}  # the reader sees no code
CHAPTER_WORDS = {"01_lmaas": "lmaas", "02_intrinsic_dimension": "intrinsic", "03_cmaes": "cmaes",
                 "03b_bbt_gain": "cmaes",  # chapter 3's second half: its figures are chapter 3's
                 "04_divide_and_conquer": "divide", "05_normal_sampler": "normal", "06_price": "price",
                 "07_more_data": "more",
                 "07b_baselines": "more",  # chapter 7's second half
                 "08_your_prompt": "yours",
                 "benchmark": "bench"}
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\{([\w:-]+)\})?\s*(.*)$")
DRAWS = re.compile(r"\bplt\.(show|subplots|figure|plot|imshow|scatter|hist|bar|errorbar)\(|"
                   r"\.subplots\(|\bsubplot_mosaic\(")


class Cell:
    """A code cell of a MyST notebook: where its body starts, its lines, tags and mystnb metadata."""

    def __init__(self, first_line, lines, options):
        self.first_line, self.lines, self.options = first_line, lines, options
        self.tags = set(options.get("tags") or [])
        self.figure = (options.get("mystnb") or {}).get("figure") or {}

    @property
    def shown(self):
        return not self.tags & HIDDEN


def parse_myst(text):
    """(code cells, other fenced blocks as (directive, first line, lines, options), prose lines)

    Prose: every line outside code cells and non-prose fences (plain code, math, literalinclude,
    ...) with MyST syntax that is not prose blanked: roles with their content ({doc}`...`,
    {glue:text}`...`), inline code, links' targets, headings, comments, cell markers, the
    notebook's front matter and directive options. Line numbers are 1-based.
    """
    lines = text.split("\n")
    cells, blocks, prose = [], [], [""] * len(lines)
    i = 0
    if lines and lines[0].strip() == "---":  # jupytext's front matter
        i = lines.index("---", 1) + 1 if "---" in lines[1:] else len(lines)
    while i < len(lines):
        line, m = lines[i], FENCE.match(lines[i].strip())
        if m and line.startswith(m[1][0]):
            fence, directive = m[1], m[3] or ""
            j, options = i + 1, {}
            if directive and j < len(lines) and lines[j].strip() == "---":  # YAML options block
                end = lines.index("---", j + 1)
                options = yaml.safe_load("\n".join(lines[j + 1:end])) or {}
                j = end + 1
            while directive and j < len(lines) and re.match(r"^:[\w-]+:", lines[j]):
                key, _, value = lines[j][1:].partition(":")
                options[key] = yaml.safe_load(value.strip()) if value.strip() else True
                j += 1
            body_start = j
            while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                          and lines[j].strip().strip(fence[0]) == ""):
                j += 1
            body = lines[body_start:j]
            if directive == "code-cell":
                cells.append(Cell(body_start + 1, body, options))
            elif directive and directive not in ("code-block", "code", "sourcecode", "math",
                                                 "literalinclude", "eval-rst", "raw", "mermaid"):
                for k in range(body_start, j):  # an admonition, figure, exercise: its text is prose
                    prose[k] = lines[k]
            blocks.append((directive, i + 1, body, options))
            i = j + 1
            continue
        if re.match(r"^\s*(#{1,6}\s|\+\+\+|<!--|\(.*\)=\s*$|:::)", line) or re.match(r"^:[\w-]+:", line):
            i += 1  # headings, cell markers, comments, labels, colon fences and their options
            continue
        prose[i] = line
        i += 1
    return cells, blocks, [_strip_markup(p) for p in prose]


def _strip_markup(line):
    line = re.sub(r"\{[\w:.+-]+\}`[^`]*`", " ", line)  # roles: {doc}`...`, {glue:text}`key`, ...
    line = re.sub(r"`[^`]*`", " ", line)  # inline code
    line = re.sub(r"\]\([^)]*\)", "]", line)  # a link's target
    return line


def _rel(path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _where(path, line):
    return f"{_rel(path)}:{line}"


def long_shown_code_lines(path, cells):
    """Lines longer than WIDTH in code cells the reader sees (not hide-input/hide-cell/remove-*)."""
    return [(_where(path, c.first_line + k), f"shown code line of {len(line)} characters (> {WIDTH}): "
             "wrap it, or tag the cell hide-input if it only plots, prints or glues")
            for c in cells if c.shown for k, line in enumerate(c.lines) if len(line) > WIDTH]


def figure_cell_problems(path, cells):
    """A cell that draws a figure: one plt.show(), mystnb figure name and caption, hide-input."""
    word = CHAPTER_WORDS.get(path.stem)
    problems = []
    for c in cells:
        body = "\n".join(c.lines)
        if not DRAWS.search(body) or "remove-cell" in c.tags:
            continue
        where = _where(path, c.first_line)
        name, caption = c.figure.get("name"), c.figure.get("caption")
        if not name or not caption:
            problems.append((where, "a cell that draws a figure needs mystnb figure metadata with a name "
                             f"and a caption (mystnb: figure: name: fig-{word or '<word>'}-<what>, caption: ...)"))
        elif word and not re.fullmatch(rf"fig-{word}-[a-z0-9]+(-[a-z0-9]+)*", name):
            problems.append((where, f"figure name {name!r} must read fig-{word}-<what> (lower case, hyphens)"))
        if "hide-input" not in c.tags:
            problems.append((where, "a cell that draws a figure must be tagged hide-input (tags: [hide-input])"))
        if body.count("plt.show()") > 1:
            problems.append((where, f"{body.count('plt.show()')} plt.show() calls: one figure per cell"))
    return problems


def figure_names(path, cells, blocks):
    """{name: line} of the figures a page defines: mystnb figure metadata and {figure} directives."""
    names = [(c.figure["name"], c.first_line) for c in cells if c.figure.get("name")]
    names += [(o["name"], line) for d, line, _, o in blocks if d in ("figure", "glue:figure") and o.get("name")]
    return names


NUMREF = re.compile(r"\{(?:numref|ref)\}`(?:[^`<]*<)?(fig-[^`>]+)>?`")
EQREF = re.compile(r"\{eq\}`(?:[^`<]*<)?([^`>]+)>?`")
EQLABEL = re.compile(r"\$\$[ \t]*\(([^)\s]+)\)[ \t]*$", re.M)


def equation_labels(text, blocks):
    labels = [(m[1], text.count("\n", 0, m.start()) + 1) for m in EQLABEL.finditer(text)]
    labels += [(o["label"], line) for d, line, _, o in blocks if d == "math" and o.get("label")]
    return labels


def _refs(pattern, text):
    return [(m[1].strip(), text.count("\n", 0, m.start()) + 1) for m in pattern.finditer(text)]


def reference_problems(pages):
    """Figure and equation names unique in the book; every {numref}/{ref} `fig-...` and {eq} exists.

    ``pages``: {path: text}."""
    figures, equations, problems = {}, {}, []
    parsed = {p: parse_myst(t) for p, t in pages.items()}
    for path, (cells, blocks, _) in parsed.items():
        for kind, found in (("figure", figure_names(path, cells, blocks)),
                            ("equation", equation_labels(pages[path], blocks))):
            seen = figures if kind == "figure" else equations
            for name, line in found:
                if name in seen:
                    problems.append((_where(path, line), f"{kind} name {name!r} is already used at {seen[name]}: "
                                     "names must be unique in the book"))
                seen.setdefault(name, _where(path, line))
    for path, text in pages.items():
        for name, line in _refs(NUMREF, text):
            if name not in figures:
                problems.append((_where(path, line), f"{{numref}}`{name}` names no figure of the book "
                                 "(give the figure's cell mystnb: figure: name: ...)"))
        for name, line in _refs(EQREF, text):
            if name not in equations:
                problems.append((_where(path, line), f"{{eq}}`{name}` names no labelled equation: "
                                 f"write the equation as $$ ... $$ ({name})"))
    return problems


PLAIN_CHAPTER = re.compile(r"\b[Cc]hapters?\s+\d+(\s*(,|and|or|to|-|–)\s*\d+)*")


def _chapter_link(path, number):
    """The {doc} role that links chapter ``number`` from the page at ``path``."""
    stems = sorted(p.stem for p in (BOOK / "chapters").glob("[0-9]*.md") if p.stem.startswith(f"{number:02d}_"))
    stem = stems[0] if stems else f"{number:02d}_..."
    up = {"appendix": "../chapters/", "chapters": ""}.get(path.parent.name, "chapters/")
    return f"{{doc}}`chapter {number} <{up}{stem}>`"


def plain_chapter_references(path, prose):
    """"chapter N" written as plain text in prose (code, roles, headings and titles excepted)."""
    text = "\n".join(prose)
    return [(_where(path, text.count("\n", 0, m.start()) + 1),
             f"plain {' '.join(m[0].split())!r}: make it a link, e.g. "
             f"{_chapter_link(path, int(re.search(r'[0-9]+', m[0])[0]))}")
            for m in PLAIN_CHAPTER.finditer(text)]


def _included_lines(md, options, arg):
    """The lines a {literalinclude} shows: the whole file, its :lines: or its :pyobject:."""
    source = (md.parent / arg).resolve()
    lines = source.read_text().split("\n")
    if options.get("pyobject"):
        tree, parts = ast.parse("\n".join(lines)), str(options["pyobject"]).split(".")
        node = tree
        for part in parts:
            node = next(n for n in ast.iter_child_nodes(node)
                        if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == part)
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        return source, list(range(start, node.end_lineno + 1)), lines
    if options.get("lines"):
        chosen = []
        for piece in str(options["lines"]).split(","):
            a, dash, b = piece.strip().partition("-")
            first, last = int(a or 1), int(b) if b else len(lines) if dash else int(a)
            chosen += range(first, last + 1)
        return source, chosen, lines
    return source, list(range(1, len(lines) + 1)), lines


def long_included_lines(path, text):
    """Lines longer than WIDTH that a {literalinclude} shows from the package's code."""
    problems = []
    for m in re.finditer(r"^```\{literalinclude\}\s*(\S+)\s*\n((?::[\w-]+:.*\n)*)", text, re.M):
        options = dict(re.findall(r"^:([\w-]+):\s*(.*)$", m[2], re.M))
        source, chosen, lines = _included_lines(path, options, m[1])
        long = [n for n in chosen if len(lines[n - 1]) > WIDTH]
        if long:
            what = options.get("pyobject") or options.get("lines") or "the whole file"
            problems.append((_where(path, text.count("\n", 0, m.start()) + 1),
                             f"shows {_rel(source)} ({what}) with {len(long)} lines over {WIDTH} "
                             f"characters (lines {long[:5]}...): wrap them there or show less"))
    return problems


def _report(problems):
    return "\n".join(f"{where}: {message}" for where, message in problems)


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_shown_code_lines_fit_the_page(md):
    cells, _, _ = parse_myst(md.read_text())
    problems = long_shown_code_lines(md, cells) + long_included_lines(md, md.read_text())
    assert not problems, "\n" + _report(problems)


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_every_figure_is_named_captioned_and_its_code_collapsed(md):
    cells, _, _ = parse_myst(md.read_text())
    problems = figure_cell_problems(md, cells)
    assert not problems, "\n" + _report(problems)


def test_figure_and_equation_names_are_unique_and_every_reference_exists():
    problems = reference_problems({p: p.read_text() for p in SOURCES + PAGES})
    assert not problems, "\n" + _report(problems)


@pytest.mark.parametrize("md", SOURCES + PAGES, ids=lambda p: p.stem)
def test_chapters_are_referred_to_by_links_not_plain_text(md):
    problems = plain_chapter_references(md, parse_myst(md.read_text())[2])
    assert not problems, "\n" + _report(problems)


def test_every_chapter_has_a_chapter_word_for_its_figure_names():
    assert {p.stem for p in SOURCES} <= set(CHAPTER_WORDS), "add the new chapter's word to CHAPTER_WORDS"


NUMBERED = [ch["file"] for part in yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
            if part.get("numbered") for ch in part["chapters"]]


@pytest.mark.parametrize("page", NUMBERED, ids=lambda f: f.split("/")[-1])
def test_numbered_chapters_titles_do_not_repeat_the_number_the_toc_gives(page):
    """_toc.yml numbers the chapters (figures read "Fig. 3.1"); a title "# 3. CMA-ES" would show "3. 3. CMA-ES"."""
    md = BOOK / f"{page}.md"
    title = next(line for line in md.read_text().split("\n") if line.startswith("# "))
    untitled = re.sub(r"^# [0-9]+\. ", "# ", title)
    assert title == untitled, f"{md.relative_to(ROOT)}: the table of contents numbers this chapter: write {untitled!r}"


# --- the rules' checkers on made-up snippets, both outcomes -------------------------------------
def _page(body):
    return f"---\njupytext:\n  formats: ipynb,md:myst\n---\n\n# Title with chapter 3\n\n{body}"


FAKE = BOOK / "chapters" / "03_cmaes.md"


def test_long_line_rule_flags_shown_cells_only():
    long = "x = " + "1 + " * 30 + "1"
    text = _page(f"```{{code-cell}} ipython3\nshort = 1\n{long}\n```\n\n"
                 f"```{{code-cell}} ipython3\n---\ntags: [hide-input]\n---\n{long}\n```\n\n"
                 f"```{{code-cell}} ipython3\n:tags: [remove-cell]\n{long}\n```\n")
    problems = long_shown_code_lines(FAKE, parse_myst(text)[0])
    assert [where for where, _ in problems] == ["book/chapters/03_cmaes.md:10"]
    assert f"{len(long)} characters" in problems[0][1]
    assert long_shown_code_lines(FAKE, parse_myst(_page("```{code-cell} ipython3\nx = 1\n```\n"))[0]) == []


def test_literalinclude_rule_measures_the_lines_it_shows(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("class A:\n    def f(self):\n        return 1\n\n\ndef g():\n    return '" + "y" * 90 + "'\n")
    md = tmp_path / "c.md"
    show = "```{{literalinclude}} m.py\n:{}: {}\n:language: python\n```\n"
    assert long_included_lines(md, show.format("pyobject", "A.f")) == []
    assert long_included_lines(md, show.format("lines", "1-3")) == []
    found = long_included_lines(md, show.format("pyobject", "g"))
    assert found == [(f"{md}:1", f"shows {source} (g) with 1 lines over 88 characters (lines [7]...): "
                      "wrap them there or show less")]
    assert len(long_included_lines(md, show.format("lines", "5-"))) == 1


def test_figure_rule_wants_name_caption_hide_input_and_one_show():
    good = ("```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    name: fig-cmaes-curves\n"
            "    caption: Loss against calls.\ntags: [hide-input]\n---\nfig, ax = plt.subplots()\nplt.show()\n```\n")
    assert figure_cell_problems(FAKE, parse_myst(_page(good))[0]) == []
    bare = "```{code-cell} ipython3\nfig, ax = plt.subplots()\nplt.show()\nplt.show()\n```\n"
    found = " | ".join(m for _, m in figure_cell_problems(FAKE, parse_myst(_page(bare))[0]))
    assert "name and a caption" in found and "hide-input" in found and "2 plt.show()" in found
    misnamed = good.replace("fig-cmaes-curves", "fig-curves")
    assert "must read fig-cmaes-<what>" in figure_cell_problems(FAKE, parse_myst(_page(misnamed))[0])[0][1]
    assert figure_cell_problems(FAKE, parse_myst(_page("```{code-cell} ipython3\nprint(1)\n```\n"))[0]) == []


def test_reference_rule_finds_missing_and_duplicate_names():
    fig = ("```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    name: fig-cmaes-a\n    caption: A.\n"
           "tags: [hide-input]\n---\nplt.show()\n```\n")
    a = _page(fig + "\n$$ x = 1 $$ (eq-cmaes-x)\n\nAs {numref}`fig-cmaes-a` and {eq}`eq-cmaes-x` show.\n")
    b = _page("See {numref}`Figure %s <fig-cmaes-a>`, {eq}`eq-cmaes-x`.\n\n```{math}\n:label: eq-cmaes-y\ny\n```\n")
    assert reference_problems({FAKE: a, BOOK / "chapters" / "05_normal_sampler.md": b}) == []
    broken = _page("See {numref}`fig-cmaes-b` and {eq}`eq-cmaes-z`.\n" + fig)
    found = reference_problems({FAKE: a, BOOK / "chapters" / "05_normal_sampler.md": broken})
    messages = " | ".join(m for _, m in found)
    assert "fig-cmaes-b` names no figure" in messages and "eq-cmaes-z` names no labelled equation" in messages
    assert "'fig-cmaes-a' is already used at book/chapters/03_cmaes.md:" in messages
    assert [w for w, m in found if "names no figure" in m] == ["book/chapters/05_normal_sampler.md:8"]


def test_plain_chapter_rule_spares_links_code_glue_keys_and_titles():
    fine = _page("As {doc}`chapter 2 <02_intrinsic_dimension>` shows, `chapter 3` in code, "
                 "{glue:text}`chapter 4_acc`.\n\n```{code-cell} ipython3\n# chapter 5\n```\n\n"
                 "```bash\necho chapter 6\n```\n\n(sec-cmaes-x)=\n## From chapter 7\n")
    assert plain_chapter_references(FAKE, parse_myst(fine)[2]) == []
    plain = _page("Text.\n\n:::{admonition} Goals\n:class: tip\nBuilds on chapter 1 and chapters 3\nand 4.\n:::\n")
    found = plain_chapter_references(FAKE, parse_myst(plain)[2])
    assert [w for w, _ in found] == ["book/chapters/03_cmaes.md:12", "book/chapters/03_cmaes.md:12"]
    assert "{doc}`chapter 1 <01_lmaas>`" in found[0][1] and "'chapters 3 and 4'" in found[1][1]
    appendix = plain_chapter_references(BOOK / "appendix" / "benchmark.md", parse_myst(_page("In chapter 3.\n"))[2])
    assert "<../chapters/03_cmaes>" in appendix[0][1]


# --- MathJax is served with the book ---------------------------------------------------------
_check_spec = importlib.util.spec_from_file_location("check_html", ROOT / "tools" / "check_html.py")
check_html = importlib.util.module_from_spec(_check_spec)
_check_spec.loader.exec_module(check_html)


def test_built_book_loads_mathjax_from_its_own_static_folder(tmp_path):
    """A one-page book built with the repository's _config.yml (-W: no warnings) loads MathJax
    from _static/mathjax, which holds it; no CDN (offline, formulas showed as raw LaTeX)."""
    import subprocess
    import sys

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["exclude_patterns"] = ["_build"]
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    book = tmp_path / "book"
    book.mkdir()
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (book / "references.bib").write_text((BOOK / "references.bib").read_text())
    (book / "intro.md").write_text("# Intro\n\nA formula, $0.04 \\pm 0.01$, and\n\n$$ p = A z + p_0 $$ (eq-x)\n")
    done = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", "-W",
                           "--config", str(tmp_path / "_config.yml"), "--path-output", str(tmp_path / "out"),
                           str(book)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = tmp_path / "out" / "_build" / "html" / "intro.html"
    html = page.read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, re.I)
    assert scripts and all(s.startswith("_static/mathjax/") for s in scripts), scripts
    assert "cdn.jsdelivr" not in html
    assert check_html.static_problems(html, page) == []


def test_html_checker_flags_a_cdn_mathjax_and_untypeset_formulas(tmp_path):
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    page = tmp_path / "p.html"
    local = '<script defer src="_static/mathjax/tex-chtml.js"></script><span class="math">\\(x\\)</span>'
    assert check_html.static_problems(local, page) == []
    cdn = local.replace("_static/mathjax/", "https://cdn.jsdelivr.net/npm/mathjax@3/es5/")
    url = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"
    assert check_html.static_problems(cdn, page) == [f"loads {url} from the network"]
    assert check_html.static_problems(local.replace("tex-chtml", "missing"), page)[0].endswith("does not exist")
    typeset = '<p>Loss <span class="math"><mjx-container class="MathJax">x</mjx-container></span> 0.1</p>'
    assert check_html.dom_problems(typeset)[0] == []
    raw = '<p>Loss <span class="math">\\(0.04 \\pm 0.01\\)</span><pre>\\(code\\)</pre></p>'
    problems, formulas, containers = check_html.dom_problems(raw)
    assert (formulas, containers) == (1, 0) and "1 of 1 formulas not typeset" in problems[0]
    assert "\\pm" in problems[1] and "code" not in problems[1]
    errors = typeset.replace(">x<", "><mjx-merror>bad</mjx-merror><")
    assert "TeX errors" in check_html.dom_problems(errors)[0][0]
