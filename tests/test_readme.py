"""The README stays a front door: short, its commands and links real, its measurements indexed in results/."""
import re
import shlex
from pathlib import Path

import pytest

from bbt_mini.__main__ import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "results"
MAX_LINES = 250


def code_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, a backslash-continued command joined into one line."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def relative_links(path: Path) -> list[Path]:
    """The files a markdown file links to by a relative path (web addresses and anchors left out)."""
    targets = re.findall(r"\]\(([^)#\s]+)\)", path.read_text())
    return [path.parent / t for t in targets if "://" not in t]


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; measurements go to results/"


def test_readme_links_resolve():
    missing = [str(p.relative_to(ROOT)) for p in relative_links(README) if not p.exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_commands_parse():
    """Every ``python -m bbt_mini ...`` line in the README's code blocks is accepted by the command line's parser."""
    commands = [line for line in code_lines(README.read_text()) if line.startswith("python -m bbt_mini ")]
    assert len(commands) >= 5
    parser = build_parser()
    for line in commands:
        argv = shlex.split(line, comments=True)[3:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the README's command does not parse: {line}")


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    text = README.read_text()
    named = set(re.findall(r"`make (\w+)", text)) | {line.split()[1] for line in code_lines(text)
                                                      if line.startswith("make ")}
    assert named and named <= targets, f"README names make targets the Makefile lacks: {named - targets}"


def test_results_index_lists_every_file_and_only_files_that_exist():
    index = RESULTS / "README.md"
    linked = {p.resolve() for p in relative_links(index)}
    present = {p.resolve() for p in RESULTS.rglob("*") if p.is_file() and p != index}
    assert not linked - present, f"results/README.md names missing files: {sorted(map(str, linked - present))}"
    assert not present - linked, f"files in results/ not in its index: {sorted(map(str, present - linked))}"


def test_each_measurement_says_when_where_and_how():
    """A measurement file (results/YYYY-MM-DD-*.md) states its date, its machine and the command it ran."""
    files = sorted(RESULTS.glob("2*-*.md"))
    assert files
    for path in files:
        text = path.read_text()
        for field in ("- Date:", "- Machine:", "- Command"):
            assert field in text, f"{path.name} lacks {field!r}"
        assert path.name[:10] in text.split("- Date:")[1].splitlines()[0], f"{path.name}: its date line differs"


def test_readme_baseline_settings_are_the_codes():
    """Each gradient baseline's row in the README's table states the learning rate and steps it runs with."""
    import inspect

    from bbt_mini.methods import baselines, finetune
    from bbt_mini.methods.registry import METHODS

    rows = {m.strip("` "): cells for line in README.read_text().splitlines() if line.startswith("| `")
            for *names, cells in [line.split("|")[1:-1]] for m in names[0].split("/")}
    gradient = [m for m, row in METHODS.items() if row.steps or m.startswith("feature_")]
    assert set(gradient) <= set(rows), f"methods missing from the README's table: {set(gradient) - set(rows)}"
    for m in gradient:
        own = finetune.SETTINGS.get(m) or {k: p.default for k, p in
                                           inspect.signature(getattr(baselines, m)).parameters.items()}
        assert f"{own['lr']:g}" in rows[m], (m, rows[m])
        assert f"{own['steps']} steps" in rows[m], (m, rows[m])
