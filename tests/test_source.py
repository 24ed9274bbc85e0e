"""The code hash the caches are keyed on: prose edits keep it, code edits change it."""
from __future__ import annotations

from bbt_mini.core.source import code, code_hash, hash_code

MODULE = '''"""A module."""
import math  # the circle


def area(r):
    """The area of a circle of radius r."""
    return math.pi * r ** 2
'''


def write(tmp_path, text: str):
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "m.py").write_text(text)
    return hash_code(pkg)


def test_prose_keeps_the_hash(tmp_path):
    before = write(tmp_path, MODULE)
    edited = MODULE.replace("The area of a circle", "Area of the disc").replace("# the circle", "# pi lives here")
    assert edited != MODULE
    assert write(tmp_path, edited + "\n\n# a trailing comment\n") == before
    assert write(tmp_path, MODULE.replace('    """The area of a circle of radius r."""\n', "")) == before


def test_code_changes_the_hash(tmp_path):
    before = write(tmp_path, MODULE)
    assert write(tmp_path, MODULE.replace("** 2", "** 3")) != before
    assert write(tmp_path, MODULE.replace("def area(r)", "def area(radius)").replace("* r", "* radius")) != before
    assert write(tmp_path, MODULE + "\nX = 'a string that is not a docstring'\n") != before


def test_a_lone_docstring_body_stays_valid():
    assert "pass" in code('def f():\n    """Only a docstring."""\n')


def test_the_package_hash_is_stable():
    assert code_hash() == code_hash() and len(code_hash()) == 16
