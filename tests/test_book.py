"""The book's sources: every chapter's .md and .ipynb say the same, and no outputs are committed."""
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import yaml

from bbt_mini.notebook import plain

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "book").glob("*/[0-9a-z]*.md"))


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
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
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

    from bbt_mini.notebook import glue

    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=False: calls.append((name, value, display)) or "shown"
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue("x", np.float64(0.5)) is None
    assert calls == [("x", 0.5, False)] and type(calls[0][1]) is float


def test_glue_outside_a_book_build_does_nothing(monkeypatch):
    import sys

    from bbt_mini.notebook import glue

    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb raises ImportError
    assert glue("x", 1.0) is None


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_each_chapter_prints_its_expected_time_and_sizes_by_pick(md):
    code = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
    top = code[1]  # the cell after the install cell: imports, profile, plan
    assert f'Plan(profile, chapter="{md.stem}")' in top and "print(plan.report())" in top, \
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
def test_chapters_carry_no_hand_written_verdict_that_issue_11_removed(md):
    text = md.read_text().lower()
    found = [v for v in HAND_WRITTEN_VERDICTS if v.lower() in text]
    assert not found, f"{md.name}: hand-written verdicts (compute them with bbt_mini.notebook.compare): {found}"
