"""Recorded runs: a chapter executed on a GPU (in the colab profile), kept with its outputs as
``book/recorded/<chapter>.ipynb`` and shown by the book in the chapter's own page.

A recording is the chapter's notebook with the outputs of a complete run (every code cell ran,
none failed); its install cell's output states the device, profile, commit, date and command.
``cache`` puts every fresh recording into the book's execution cache (jupyter-cache, keyed on the
code cells), so jupyter-book shows its outputs instead of executing the chapter. A recording is
stale, and left out, when the chapter's code cells or the package's code have changed since: the
build then executes the chapter as usual.

    python tools/record.py unpack recorded-1.tar.gz ...   # what tools/gpu/check.py lease returned
    python tools/record.py status                         # each recording: fresh, or stale and why
    python tools/record.py cache                          # into _build/.jupyter_cache (make book)
"""
from __future__ import annotations

import argparse
import copy
import sys
import tarfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bbt_mini.core.source import hash_code  # noqa: E402

FOLDER = "recorded"  # book/recorded/
META = "bbt_recorded"  # the notebook metadata key holding the provenance
NOTEBOOK_BYTES = 15 * 2**20  # a GPU machine returns files of at most 16 MiB


def chapters(book: Path) -> dict[str, Path]:
    """stem -> the chapter's notebook (those with a MyST twin)."""
    return {p.stem: p.with_suffix(".ipynb") for d in ("chapters", "appendix") for p in sorted((book / d).glob("*.md"))}


def _code(nb) -> list:
    """What jupyter-cache keys a notebook on: its code cells' sources and metadata."""
    return [(c.source, c.metadata) for c in nb.cells if c.cell_type == "code"]


def _redraws_collapsed(text: str) -> str:
    """What a terminal shows of a progress bar: each line's text after its last carriage return."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def failure(nb) -> str | None:
    """Why an executed notebook is no complete run (a cell failed or never ran), or None."""
    for i, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), 1):
        if cell.execution_count is None:
            return f"code cell {i} did not run"
        if errors := [o for o in cell.outputs if o.output_type == "error"]:
            return f"code cell {i}: {errors[0].ename}: {errors[0].evalue}"[:300]
    return None


def recording(executed, chapter, provenance: dict, root: Path = ROOT):
    """``chapter`` with the outputs of ``executed`` (a complete run of the same code cells), the
    provenance in its metadata and as its install cell's output."""
    if [s for s, _ in _code(executed)] != [s for s, _ in _code(chapter)]:  # the run may add cell metadata
        raise ValueError("the executed notebook's code cells are not the chapter's")
    if why := failure(executed):
        raise ValueError(f"not a complete run: {why}")
    nb = copy.deepcopy(chapter)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    for count, (cell, run) in enumerate(zip((c for c in nb.cells if c.cell_type == "code"), ran), 1):
        cell.execution_count, cell.outputs = count, run.outputs
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = _redraws_collapsed(out.text)
    meta = {**provenance, "package_hash": hash_code(root / "bbt_mini")}
    minutes = f", {meta['wall_s'] / 60:.1f} minutes" if meta.get("wall_s") else ""
    said = (f"**Recorded on {meta['device']}** ({meta['profile']} profile, commit `{meta['commit']}`, "
            f"{meta['date']}{minutes}): the outputs on this page come from that run of its code, shown "
            f"as recorded; this build did not execute it. Command: `{meta['command']}`.")
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.outputs.insert(0, nbformat.v4.new_output("display_data", data={"text/markdown": said, "text/plain": said}))
    nb.metadata[META] = meta
    if len(nbformat.writes(nb)) > NOTEBOOK_BYTES:
        raise ValueError(f"{len(nbformat.writes(nb)) / 2**20:.1f} MiB, over the {NOTEBOOK_BYTES / 2**20:.0f} "
                         "MiB that comes back from a GPU machine")
    return nb


def stale(rec, chapter, root: Path = ROOT) -> str | None:
    """Why ``rec`` no longer shows what ``chapter`` computes, or None while it does."""
    if _code(rec) != _code(chapter):
        return "the chapter's code cells have changed since"
    if (now := hash_code(root / "bbt_mini")) != rec.metadata[META]["package_hash"]:
        return f"the package's code has changed since (hash {rec.metadata[META]['package_hash']} then, {now} now)"
    return None


def status(root: Path = ROOT) -> dict[str, str | None]:
    """Each recording in book/recorded/: None if fresh, else why it is stale."""
    found = chapters(root / "book")
    out = {}
    for path in sorted((root / "book" / FOLDER).glob("*.ipynb")):
        rec = nbformat.read(path, as_version=4)
        chapter = found.get(path.stem)
        out[path.stem] = "no such chapter now" if chapter is None else stale(
            rec, nbformat.read(chapter, as_version=4), root)
    return out


def cache(root: Path = ROOT, folder: Path | None = None) -> list[str]:
    """Put every fresh recording into jupyter-book's execution cache; returns their chapters."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    store = get_cache(folder or root / "_build" / ".jupyter_cache")
    found, done = chapters(root / "book"), []
    for stem, why in status(root).items():
        if why is None:
            rec = nbformat.read(root / "book" / FOLDER / f"{stem}.ipynb", as_version=4)
            store.cache_notebook_bundle(CacheBundleIn(rec, str(found[stem])), overwrite=True)
            done.append(stem)
        print(f"{stem}: " + ("shown as recorded" if why is None else f"stale, executed by the build: {why}"))
    return done


def unpack(sources: list[Path], root: Path = ROOT) -> list[str]:
    """The recordings in folders or .tar.gz bundles (from a lease) into book/recorded/."""
    (root / "book" / FOLDER).mkdir(parents=True, exist_ok=True)
    names = []
    for src in sources:
        files = ([(p.name, p.read_bytes()) for p in sorted(src.rglob("*.ipynb"))] if src.is_dir() else
                 [(Path(m.name).name, tar.extractfile(m).read()) for tar in [tarfile.open(src)]
                  for m in tar.getmembers() if m.isfile() and m.name.endswith(".ipynb")])
        for name, data in files:
            (root / "book" / FOLDER / name).write_bytes(data)
            names.append(name)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("unpack", "status", "cache"))
    p.add_argument("sources", nargs="*", type=Path, help="unpack: folders or .tar.gz files")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (a copy, in tests)")
    p.add_argument("--cache", type=Path, help="cache: the jupyter-cache folder (default _build/.jupyter_cache)")
    a = p.parse_args(argv)
    if a.step == "unpack":
        print("unpacked:", ", ".join(unpack(a.sources, a.root)) or "nothing")
    if a.step == "cache":
        cache(a.root, a.cache)
    else:
        for stem, why in status(a.root).items():
            print(f"{stem}: {why or 'fresh'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
