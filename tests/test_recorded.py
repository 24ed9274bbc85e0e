"""Recorded runs (tools/record.py): a chapter executed on a GPU, kept with its outputs and shown
in the chapter's own page through the book's execution cache; stale, and executed by the build
instead, when the chapter's code cells or the package's code have changed since.

The chapters here are small real ones, executed by a real kernel (nbclient), in a temporary
book; one test builds that book with jupyter-book (-W)."""
import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name, path):
    sys.path.insert(0, str(ROOT / "tools"))  # tools/gpu/check.py imports tools/record.py
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load("record", ROOT / "tools" / "record.py")
gpu_check = _load("gpu_check", ROOT / "tools" / "gpu" / "check.py")

HEADER = """---
jupytext:
  formats: ipynb,md:myst
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""
INSTALL = "```{code-cell} ipython3\n---\ntags: [hide-input]\n---\n# stands for the install cell\n```\n"
ALPHA = HEADER + """
# Alpha

""" + INSTALL + """
```{code-cell} ipython3
import sys
from bbt_mini.book.notebook import glue
ANSWER = 0.25
glue("alpha_answer", ANSWER)
for i in range(200):
    print(f"\\rprogress {i:3d}/200", end="", file=sys.stderr)
```

The answer is {glue:text}`alpha_answer:.2f`.

```{code-cell} ipython3
---
mystnb:
  figure:
    name: fig-alpha-plot
    caption: A line.
---
import matplotlib.pyplot as plt
plt.plot([0, 1], [0, 2])
plt.show()
```
"""
BETA = HEADER + "\n# Beta\n\n" + INSTALL + "\n```{code-cell} ipython3\nprint('beta')\n```\n"
PROVENANCE = {"device": "Test Device 9000", "commit": "0123456789ab", "date": "2026-12-02 01:00 UTC",
              "profile": "ci", "command": "pytest --nbmake --overwrite book/chapters/01_alpha.ipynb", "wall_s": 90.0}


def _write_chapter(root: Path, name: str, text: str) -> Path:
    md = root / "book" / "chapters" / f"{name}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    nbformat.write(jupytext.read(md), md.with_suffix(".ipynb"))
    return md.with_suffix(".ipynb")


def _execute(chapter: Path):
    from nbclient import NotebookClient

    nb = nbformat.read(chapter, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(chapter.parent)}}
                   ).execute()
    return nb


@pytest.fixture()
def book(tmp_path):
    """A two-chapter book (the repository's _config.yml) and a stand-in package for the code hash."""
    for name, text in (("01_alpha", ALPHA), ("02_beta", BETA)):
        _write_chapter(tmp_path, name, text)
    (tmp_path / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: The papers\n"
                                       "    numbered: true\n    chapters:\n      - file: chapters/01_alpha\n"
                                       "      - file: chapters/02_beta\n")
    (tmp_path / "book" / "_toc.yml").symlink_to("../_toc.yml")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\nTwo chapters.\n")
    (tmp_path / "book" / "references.bib").write_text((ROOT / "book" / "references.bib").read_text())
    (tmp_path / "bbt_mini").mkdir()
    (tmp_path / "bbt_mini" / "rule.py").write_text('"""A rule."""\nLIMIT = 1\n')
    return tmp_path


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Both chapters executed by a kernel, as nbmake --overwrite leaves them."""
    root = tmp_path_factory.mktemp("source")
    return {name: _execute(_write_chapter(root, name, text)) for name, text in (("01_alpha", ALPHA),
                                                                                   ("02_beta", BETA))}


def _record(book: Path, executed, name="01_alpha") -> Path:
    chapter = nbformat.read(book / "book" / "chapters" / f"{name}.ipynb", as_version=4)
    path = book / "book" / "recorded" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(record.recording(executed[name], chapter, PROVENANCE, book), path)
    return path


def test_a_recording_is_the_chapter_with_the_runs_outputs_and_says_where_it_ran(book, executed):
    rec = nbformat.read(_record(book, executed), as_version=4)
    chapter = nbformat.read(book / "book" / "chapters" / "01_alpha.ipynb", as_version=4)
    code = [c for c in rec.cells if c.cell_type == "code"]
    assert [(c.source, c.metadata) for c in code] == [(c.source, c.metadata) for c in chapter.cells
                                                     if c.cell_type == "code"]  # what jupyter-cache keys on
    assert [c.execution_count for c in code] == [1, 2, 3]
    said = code[0].outputs[0].data["text/markdown"]
    for value in (*list(PROVENANCE.values())[:-1], "1.5 minutes"):
        assert value in said, value
    outputs = [o for c in code for o in c.outputs]
    assert any(o.get("metadata", {}).get("scrapbook", {}).get("name") == "alpha_answer" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert next(o.text for o in outputs if o.output_type == "stream").strip() == "progress 199/200"
    assert rec.metadata["bbt_recorded"]["package_hash"] == record.hash_code(book / "bbt_mini")
    assert record.status(book) == {"01_alpha": None}


def test_only_a_complete_run_of_the_chapters_code_is_recorded(book, executed):
    chapter = nbformat.read(book / "book" / "chapters" / "01_alpha.ipynb", as_version=4)
    cut = nbformat.from_dict(json.loads(json.dumps(executed["01_alpha"])))
    cut.cells[-1].execution_count, cut.cells[-1].outputs = None, []
    with pytest.raises(ValueError, match="code cell 3 did not run"):
        record.recording(cut, chapter, PROVENANCE, book)
    failed = nbformat.from_dict(json.loads(json.dumps(executed["01_alpha"])))
    failed.cells[-1].outputs = [nbformat.v4.new_output("error", ename="OSError", evalue="no GPU", traceback=[])]
    with pytest.raises(ValueError, match="code cell 3: OSError: no GPU"):
        record.recording(failed, chapter, PROVENANCE, book)
    with pytest.raises(ValueError, match="not the chapter's"):
        record.recording(executed["02_beta"], chapter, PROVENANCE, book)


def test_a_recording_goes_stale_when_the_chapters_code_or_the_packages_code_changes(book, executed):
    _record(book, executed)
    rule = book / "bbt_mini" / "rule.py"
    rule.write_text('"""A rule, said otherwise."""\nLIMIT = 1  # a comment\n')
    assert record.status(book) == {"01_alpha": None}, "docstrings and comments are not the code"
    rule.write_text('"""A rule."""\nLIMIT = 2\n')
    assert "the package's code has changed since" in record.status(book)["01_alpha"]
    rule.write_text('"""A rule."""\nLIMIT = 1\n')
    md = book / "book" / "chapters" / "01_alpha.md"
    _write_chapter(book, "01_alpha", md.read_text().replace("ANSWER = 0.25", "ANSWER = 0.5"))
    assert record.status(book) == {"01_alpha": "the chapter's code cells have changed since"}


def test_the_book_shows_a_fresh_recording_in_its_chapter_and_executes_a_stale_one(book, executed):
    _record(book, executed, "01_alpha")
    _record(book, executed, "02_beta")
    _write_chapter(book, "02_beta", BETA.replace("print('beta')", "print('beta, changed')"))
    out = book / "out"
    assert record.cache(book, out / "_build" / ".jupyter_cache") == ["01_alpha"]
    done = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", "-W",
                           "--keep-going", "--config", str(book / "_config.yml"), "--path-output", str(out),
                           str(book / "book")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    alpha = (out / "_build" / "html" / "chapters" / "01_alpha.html").read_text()
    beta = (out / "_build" / "html" / "chapters" / "02_beta.html").read_text()
    assert "Recorded on Test Device 9000" in alpha and 'The answer is <span class="pasted-text">0.25</span>' in alpha
    assert 'id="fig-alpha-plot"' in alpha and "_images/" in alpha
    assert "Recorded on" not in beta and "beta, changed" in beta


def test_bundles_stay_within_the_transfer_limit_and_unpack_into_the_book(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "rec").mkdir()
    for i in range(3):  # incompressible: each about 0.5 MB gzipped
        (tmp_path / "rec" / f"0{i}_x.ipynb").write_text(base64.b64encode(rng.bytes(380_000)).decode())
    written = gpu_check.bundle(tmp_path / "rec", tmp_path, limit=1_100_000)
    assert [p.name for p in written] == ["recorded-1.tar.gz", "recorded-2.tar.gz"]
    assert all(p.stat().st_size <= 1_100_000 for p in written)
    assert sorted(record.unpack(written, tmp_path)) == [f"0{i}_x.ipynb" for i in range(3)]
    assert (tmp_path / "book" / "recorded" / "01_x.ipynb").read_text() == (tmp_path / "rec" / "01_x.ipynb").read_text()
    (tmp_path / "rec" / "02_x.ipynb").unlink()
    assert [p.name for p in gpu_check.bundle(tmp_path / "rec", tmp_path, limit=1_100_000)] == ["recorded-1.tar.gz"]
    assert not (tmp_path / "recorded-2.tar.gz").exists()


def test_the_repositorys_recordings_belong_to_chapters_and_nbmake_skips_them():
    for stem, why in record.status(ROOT).items():
        assert why != "no such chapter now", f"book/recorded/{stem}.ipynb has no chapter"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"recorded"]' in pyproject.split("norecursedirs")[1].split("\n")[0]  # nbmake does not rerun them


def test_lease_records_each_chapter_keeps_it_output_free_and_resumes(book, tmp_path, monkeypatch):
    """tools/gpu/check.py lease on two small chapters (CPU, real nbmake): each run becomes a
    recording with its figure, the chapters stay output-free, a shared run cache is left alone,
    what came back fits the transfer, and a second call does only what is left."""
    monkeypatch.setattr(gpu_check, "ROOT", book)
    monkeypatch.setattr(gpu_check, "MIN_BENCH_S", 10**6)  # no benchmark here: it is the GPU's
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as tools/gpu/check.sh sets it: the kernel must still draw
    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BBT_LEASE_START", raising=False)
    (tmp_path / "cache" / "runs").mkdir(parents=True)
    (tmp_path / "cache" / "runs" / "someone_elses.json").write_text("{}")
    chapters = {n: (book / "book" / "chapters" / f"{n}.ipynb").read_bytes() for n in ("01_alpha", "02_beta")}
    state, out = tmp_path / "state", tmp_path / "out"
    gpu_check.step_lease(out, state, ["01_alpha", "02_beta"], seconds=600, timeout=120, again=False)
    assert all((book / "book" / "chapters" / f"{n}.ipynb").read_bytes() == b for n, b in chapters.items())
    assert (tmp_path / "cache" / "runs" / "someone_elses.json").exists()
    done = json.loads((state / "chapters.json").read_text())["chapters"]
    assert done["01_alpha"]["passed"] and done["02_beta"]["passed"] and not done["01_alpha"]["killed"]
    assert sorted(p.name for p in out.iterdir()) == ["chapters.json", "lease.json", "recorded-1.tar.gz"]
    assert sorted(record.unpack([out / "recorded-1.tar.gz"], book)) == ["01_alpha.ipynb", "02_beta.ipynb"]
    assert record.status(book) == {"01_alpha": None, "02_beta": None}
    alpha = nbformat.read(book / "book" / "recorded" / "01_alpha.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in alpha.cells if c.cell_type == "code" for o in c.outputs)
    assert "--overwrite" in alpha.metadata["bbt_recorded"]["command"]
    # the second call on the same machine: nothing left to record; with no time left, nothing starts
    gpu_check.step_lease(out, state, ["01_alpha", "02_beta"], seconds=600, timeout=120, again=False)
    assert json.loads((out / "lease.json").read_text())["order"] == []
    gpu_check.step_lease(out, state, ["01_alpha"], seconds=30, timeout=120, again=True)
    assert json.loads((out / "lease.json").read_text())["finished"] == []
