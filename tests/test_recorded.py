"""Recorded runs (tools/record.py): a chapter executed elsewhere, kept with its outputs and
shown by the book beside the chapter; stale when the chapter's code has changed since.

The chapter here is a small real one, executed by a real kernel (nbclient), in a temporary
book; two tests build that book with jupyter-book (-W), with and without a recording."""
import base64
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load("record")
gpu_check = _load("gpu_check")

HEADER = """---
jupytext:
  formats: ipynb,md:myst
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""
ALPHA = HEADER + """
(sec-alpha-top)=
# Alpha

Builds on {doc}`chapter 2 <02_beta>`; see {numref}`fig-alpha-plot`, {eq}`eq-alpha` and {ref}`sec-alpha-top`.

**Running this chapter.** Locally: `pytest --nbmake book/chapters/01_alpha.ipynb`.

**Recorded on a GPU.** to be written by tools/record.py sync

$$ y = 2 x $$ (eq-alpha)

```{code-cell} ipython3
import sys
from bbt_mini.book.notebook import glue
ANSWER = 0.25
glue("alpha_answer", ANSWER)
for i in range(200):
    print(f"\\rprogress {i:3d}/200", end="", file=sys.stderr)
print("x" * 100_000)
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
BETA = HEADER + """
# Beta

Back to {doc}`chapter 1 <01_alpha>`.

**Recorded on a GPU.** to be written by tools/record.py sync

```{code-cell} ipython3
print("beta")
```
"""
PROVENANCE = {"device": "Test Device 9000", "commit": "0123456789ab", "date": "2026-12-02 01:00 UTC",
              "profile": "ci", "command": "pytest --nbmake --overwrite book/chapters/01_alpha.ipynb",
              "wall_s": 3.0, "package_hash": "feedfacecafe", "note": None}


def _write_chapter(root: Path, name: str, text: str) -> Path:
    md = root / "book" / "chapters" / f"{name}.md"
    md.write_text(text)
    nbformat.write(jupytext.read(md), md.with_suffix(".ipynb"))
    return md.with_suffix(".ipynb")


def _execute(chapter: Path, to: Path) -> Path:
    from nbclient import NotebookClient

    nb = nbformat.read(chapter, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(chapter.parent)}}).execute()
    nbformat.write(nb, to)
    return to


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The alpha chapter executed by a kernel, as nbmake --overwrite leaves it."""
    root = tmp_path_factory.mktemp("source")
    (root / "book" / "chapters").mkdir(parents=True)
    chapter = _write_chapter(root, "01_alpha", ALPHA)
    return _execute(chapter, root / "01_alpha.executed.ipynb")


@pytest.fixture()
def book(tmp_path):
    """A two-chapter book: the repository's _config.yml, a toc, no recordings yet."""
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    _write_chapter(tmp_path, "01_alpha", ALPHA)
    _write_chapter(tmp_path, "02_beta", BETA)
    (tmp_path / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: The papers\n"
                                       "    numbered: true\n    chapters:\n      - file: chapters/01_alpha\n"
                                       "      - file: chapters/02_beta\n")
    (tmp_path / "book" / "_toc.yml").symlink_to("../_toc.yml")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\nTwo chapters.\n")
    (tmp_path / "book" / "references.bib").write_text((ROOT / "book" / "references.bib").read_text())
    record.sync(tmp_path)
    return tmp_path


def _add(book: Path, executed: Path, **changes) -> Path:
    args = {**PROVENANCE, **changes}
    argv = ["add", str(executed), "--chapter", str(book / "book" / "chapters" / "01_alpha.ipynb"),
            "--root", str(book), "--wall-s", str(args.pop("wall_s")), "--package-hash", args.pop("package_hash")]
    args.pop("note")
    for key, value in args.items():
        argv += [f"--{key}", value]
    assert record.main(argv) == 0
    return book / "book" / "recorded" / "01_alpha.ipynb"


def test_record_writes_provenance_code_hash_and_renames_what_the_chapter_defines(book, executed):
    path = _add(book, executed)
    nb = nbformat.read(path, as_version=4)
    first, meta = nb.cells[0], nb.metadata["bbt_recorded"]
    assert first.cell_type == "markdown" and first.source.startswith("(rec-sec-alpha-top)=\n# Alpha (recorded run)")
    for value in ("Test Device 9000", "0123456789ab", "2026-12-02 01:00 UTC", "`ci`",
                  "pytest --nbmake --overwrite book/chapters/01_alpha.ipynb", "feedfacecafe"):
        assert value in first.source, value
    chapter = nbformat.read(book / "book" / "chapters" / "01_alpha.ipynb", as_version=4)
    assert meta["code_hash"] == record.code_hash(chapter) == meta["chapter_code_hash"]
    assert f"hash `{meta['code_hash']}`" in first.source and "unchanged since" in first.source
    assert meta["error"] is None and meta["ran"] == meta["code_cells"] == 2 and meta["unglued"] == []
    # outputs kept: the glued value and the figure; the long line cut and the progress bar collapsed, both said
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("metadata", {}).get("scrapbook", {}).get("name") == "alpha_answer" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    stream = next(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert len(stream) < 45_000 and "cut 60,001 characters here" in stream
    assert any("cut from the middle" in t for t in meta["trimmed"]) and "redraws collapsed" in meta["trimmed"][0]
    bar = next(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert bar.strip() == "progress 199/200"
    # what the chapter defines is renamed in its copy; links to other chapters point at them
    text = "\n".join(c.source for c in nb.cells[1:] if c.cell_type == "markdown")
    assert "$$ (rec-eq-alpha)" in text and "sec-alpha-top)=" not in text  # the target went up with the title
    for ref in ("{numref}`rec-fig-alpha-plot`", "{eq}`rec-eq-alpha`", "{ref}`rec-sec-alpha-top`"):
        assert ref in text, ref
    assert "{doc}`chapter 2 <../chapters/02_beta>`" in text and "# Alpha" not in text
    figure = next(c for c in nb.cells if c.cell_type == "code" and "mystnb" in c.metadata)
    assert figure.metadata.mystnb.figure.name == "rec-fig-alpha-plot"
    assert "jupytext" not in nb.metadata
    # the chapter links to it, the index and the toc list it, and all agree with sync
    md = (book / "book" / "chapters" / "01_alpha.md").read_text()
    assert "{doc}`This chapter as it ran on Test Device 9000 in the ci profile <../recorded/01_alpha>`" in md
    assert "Not recorded yet" in (book / "book" / "chapters" / "02_beta.md").read_text()
    index = (book / "book" / "recorded" / "index.md").read_text()
    assert "{doc}`recorded run <01_alpha>`" in index and "| {doc}`../chapters/02_beta` | not recorded yet" in index
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    assert toc["parts"][-1] == {"caption": record.PART, "chapters": [{"file": "recorded/index"},
                                                                     {"file": "recorded/01_alpha"}]}
    assert record.sync(book, check=True) == []
    ipynb = nbformat.read(book / "book" / "chapters" / "01_alpha.ipynb", as_version=4)
    assert [c.source.strip() for c in ipynb.cells] == [c.source.strip() for c in jupytext.read(
        book / "book" / "chapters" / "01_alpha.md").cells]


def test_a_changed_code_cell_makes_the_recording_say_it_is_stale(book, executed):
    path = _add(book, executed)
    assert "Stale" not in nbformat.read(path, as_version=4).cells[0].source
    _write_chapter(book, "01_alpha", (book / "book" / "chapters" / "01_alpha.md").read_text().replace(
        "ANSWER = 0.25", "ANSWER = 0.5"))
    assert "book/recorded/01_alpha.ipynb" in record.sync(book, check=True)  # CI's check fails until synced
    record.sync(book)
    first = nbformat.read(path, as_version=4).cells[0]
    now = record.code_hash(nbformat.read(book / "book" / "chapters" / "01_alpha.ipynb", as_version=4))
    meta = nbformat.read(path, as_version=4).metadata["bbt_recorded"]
    assert now != meta["code_hash"]
    assert "**Stale:**" in first.source and f"`{now}` now" in first.source and ":class: warning" in first.source
    assert "**stale**" in (book / "book" / "recorded" / "index.md").read_text()
    assert "code has changed since that recording" in (book / "book" / "chapters" / "01_alpha.md").read_text()
    _write_chapter(book, "01_alpha", (book / "book" / "chapters" / "01_alpha.md").read_text().replace(
        "ANSWER = 0.5", "ANSWER = 0.25"))
    record.sync(book)
    assert "Stale" not in nbformat.read(path, as_version=4).cells[0].source


def test_a_run_that_stopped_says_so_and_its_missing_numbers_and_figures_are_marked(book, executed, tmp_path):
    nb = nbformat.read(executed, as_version=4)
    figure = [c for c in nb.cells if c.cell_type == "code"][-1]
    glued = [c for c in nb.cells if c.cell_type == "code"][0]
    figure.outputs, figure.execution_count = [], None  # as a run cut before its last cell leaves it
    glued.outputs = [o for o in glued.outputs if "scrapbook" not in o.get("metadata", {})]
    nbformat.write(nb, tmp_path / "cut.ipynb")
    path = _add(book, tmp_path / "cut.ipynb")
    out = nbformat.read(path, as_version=4)
    meta = out.metadata["bbt_recorded"]
    assert meta["ran"] == 1 and meta["error"] == "stopped before code cell 2 (time limit)"
    assert meta["unglued"] == ["alpha_answer"] and "{glue:text}`alpha_answer" not in "".join(
        c.source for c in out.cells if c.cell_type == "markdown")
    assert meta["missing_figures"] == ["rec-fig-alpha-plot"] and "{numref}`rec-fig-alpha-plot`" not in "".join(
        c.source for c in out.cells if c.cell_type == "markdown")
    for words in ("did not finish", "**Numbers missing:**", "**Figures missing:**", ":class: warning"):
        assert words in out.cells[0].source, words
    assert "stopped early" in (book / "book" / "chapters" / "01_alpha.md").read_text()
    done, html = _build(book)  # what the run did not make is said, not left for Sphinx to warn about
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (html / "recorded" / "01_alpha.html").read_text()
    assert "this run did not compute it" in page
    assert "_images/" not in page  # not executed at build time (execute: exclude_patterns), so still no figure


def test_a_large_figure_is_re_encoded_smaller_and_said_so():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)).save(buffer, "PNG")
    raw = buffer.getvalue()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(raw).decode(), "text/plain": "<Figure>"})])])
    notes = record.shrink(nb, image_bytes=300_000)
    assert len(base64.b64decode(nb.cells[0].outputs[0].data["image/png"])) <= 300_000 < len(raw)
    assert len(notes) == 1 and "re-encoded" in notes[0] and "700x700" in notes[0]


def test_bundles_stay_within_the_transfer_limit_and_hold_every_recording(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "rec").mkdir()
    for i in range(3):  # incompressible: each about 0.5 MB gzipped
        (tmp_path / "rec" / f"0{i}_x.ipynb").write_text(base64.b64encode(rng.bytes(380_000)).decode())
    written = gpu_check.bundle(tmp_path / "rec", tmp_path, limit=1_100_000)
    assert [p.name for p in written] == ["recorded-1.tar.gz", "recorded-2.tar.gz"]
    assert all(p.stat().st_size <= 1_100_000 for p in written)
    names = [m.name for p in written for m in tarfile.open(p).getmembers()]
    assert sorted(names) == [f"recorded/0{i}_x.ipynb" for i in range(3)]
    (tmp_path / "rec" / "02_x.ipynb").unlink()
    assert [p.name for p in gpu_check.bundle(tmp_path / "rec", tmp_path, limit=1_100_000)] == ["recorded-1.tar.gz"]
    assert not (tmp_path / "recorded-2.tar.gz").exists()


def test_repository_recorded_part_index_toc_and_chapter_lines_agree_with_the_tool():
    assert record.sync(ROOT, check=True) == [], "run: python tools/record.py sync"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "recorded/*" in config["execute"]["exclude_patterns"]  # shown as recorded, never executed again
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"recorded"]' in pyproject.split("norecursedirs")[1].split("\n")[0]  # nbmake does not rerun them
    for chapter in record.chapters(ROOT / "book"):
        assert chapter.with_suffix(".md").read_text().count(record.MARKER) == 1, chapter


def _build(book: Path) -> tuple[subprocess.CompletedProcess, Path]:
    out = book / "out"
    done = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", "-W",
                           "--keep-going", "--config", str(book / "_config.yml"), "--path-output", str(out),
                           str(book / "book")], capture_output=True, text=True, timeout=600)
    return done, out / "_build" / "html"


def test_the_book_builds_cleanly_with_the_recorded_part_and_no_recording(book):
    done, html = _build(book)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "not recorded yet" in (html / "recorded" / "index.html").read_text()
    assert "Not recorded yet" in (html / "chapters" / "01_alpha.html").read_text()


def test_the_book_builds_cleanly_with_a_recording_shown_beside_its_chapter(book, executed):
    _add(book, executed)
    done, html = _build(book)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (html / "recorded" / "01_alpha.html").read_text()
    assert "Test Device 9000" in page and 'id="rec-fig-alpha-plot"' in page
    assert 'The answer is <span class="pasted-text">0.25</span>' in page  # glued by the recorded run
    assert "progress 199/200" not in page  # stderr is not shown (stderr_output: remove), as in the chapters
    chapter = (html / "chapters" / "01_alpha.html").read_text()
    assert 'href="../recorded/01_alpha.html"' in chapter


def test_nbmake_does_not_collect_recorded_notebooks(book, executed):
    """make test runs `pytest --nbmake tests book`: a recording must not be executed again (and,
    with --overwrite as in .ci/run, have its GPU outputs replaced by a CPU run's)."""
    _add(book, executed)
    (book / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "book"], cwd=book, capture_output=True, text=True, timeout=120)
    assert "chapters/01_alpha.ipynb" in done.stdout and "recorded" not in done.stdout, done.stdout


def test_lease_records_each_chapter_keeps_it_output_free_and_resumes(book, tmp_path, monkeypatch):
    """tools/gpu_check.py lease on two small chapters (CPU, real nbmake): each executed notebook
    becomes a recording with its figure, the chapters stay output-free, a shared run cache is
    left alone, what came back fits the transfer, and a second call does only what is left."""
    monkeypatch.setattr(gpu_check, "ROOT", book)
    monkeypatch.setattr(gpu_check, "MIN_BENCH_S", 10**6)  # no benchmark here: it is the GPU's
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as tools/gpu_check.sh sets it: the kernel must still draw
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
    with tarfile.open(out / "recorded-1.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["recorded/01_alpha.ipynb", "recorded/02_beta.ipynb"]
        alpha = nbformat.reads(tar.extractfile("recorded/01_alpha.ipynb").read().decode(), as_version=4)
    assert alpha.metadata["bbt_recorded"]["missing_figures"] == [] and alpha.metadata["bbt_recorded"]["error"] is None
    assert "pytest" in alpha.metadata["bbt_recorded"]["command"] and "--overwrite" in alpha.cells[0].source
    # the second call on the same machine: nothing left to record; with no time left, nothing starts
    gpu_check.step_lease(out, state, ["01_alpha", "02_beta"], seconds=600, timeout=120, again=False)
    assert json.loads((out / "lease.json").read_text())["order"] == []
    gpu_check.step_lease(out, state, ["01_alpha"], seconds=30, timeout=120, again=True)
    assert json.loads((out / "lease.json").read_text())["finished"] == []
