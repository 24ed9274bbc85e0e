"""A hash of the package's code: what the run cache and the book's execution cache are keyed on.

The hash reads each module's syntax tree, not its text: comments, blank lines, formatting and
docstrings do not change it, so an edit to the prose around the code keeps every cached run,
while a change to what the code does (a statement, a name, a number) gives a new hash.
``python -m bbt_mini.core.source`` prints it (the Makefile's key for the book's cache).
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of the module and of every class and function removed."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code(source: str) -> str:
    """The code of a module's ``source`` as Python reads it: no comments, docstrings or layout."""
    return ast.unparse(_without_docstrings(ast.parse(source)))


def hash_code(package: Path) -> str:
    """A hash of every module under ``package`` (every layer's folder), by path and :func:`code`."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(code(path.read_text()).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """:func:`hash_code` of this installed package (computed once a process)."""
    return hash_code(PACKAGE)


if __name__ == "__main__":
    print(code_hash())
