"""The package's layers, read from its own imports (no module is imported to check it).

Ground up: ``core < data < lm < service < methods < run < book < __main__`` (the README's
package table), and on top ``minimal`` (BBT and BBTv2 on one screen), which may import from
every layer and which no module imports. A module may import from its own layer or below,
never from above; no two modules import each other in a circle, within a layer either; an
import inside a function is only for an optional third-party package (one a reader may not
have installed), never to hide an import that runs back up.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bbt_mini"
LAYERS = ("core", "data", "lm", "service", "methods", "run", "book", "__main__", "minimal")
# Imported inside functions on purpose: not every install has them (the hub extra, the
# server's own environment, the book's builder, notebooks, the baselines extra: peft, which
# also takes seconds to import and only LoRA and P-Tuning v2 need).
OPTIONAL = {"datasets", "vllm", "matplotlib", "myst_nb", "ray", "IPython", "peft"}
# An upward import the lead removes at merge: core/cost.py's gain_from uses the book's
# compare() until its statistics move to core/stats.py (the `verdict` helper's branch).
ALLOWED_UPWARD: set[tuple[str, str]] = set()  # none: core.cost reads its statistics from core.stats


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer's rank; the package root (its ``__version__``) is below everything."""
    parts = module.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def _inside_function(tree: ast.AST) -> set[int]:
    lazy = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lazy


def resolve(here: list[str], node: ast.ImportFrom) -> str:
    """The absolute name of the module ``node`` imports from; ``here``: the importing module's package."""
    if not node.level:
        return node.module
    return ".".join(here[:len(here) - node.level + 1] + (node.module.split(".") if node.module else []))


def imports(module: str, source: str, is_package: bool, modules: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import in ``source``.

    Relative imports are resolved against ``module``; ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module of the package.
    """
    tree = ast.parse(source)
    lazy = _inside_function(tree)
    here = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(here, node)
            if target == "__future__":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            out += [(t, node.lineno, id(node) in lazy) for t in (subs or [target])]
    return out


def check(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every breach of the rules in ``{module: (source, is_package)}``, one line each."""
    modules = set(sources)
    problems, edges = [], {m: set() for m in modules}
    for module, (source, is_package) in sorted(sources.items()):
        for target, line, lazy in imports(module, source, is_package, modules):
            top = target.split(".")[0]
            where = f"{module}:{line} imports {target}"
            if top != "bbt_mini":
                if lazy and top not in OPTIONAL and top not in sys.stdlib_module_names:
                    problems.append(f"{where} inside a function: only optional packages {sorted(OPTIONAL)} may be")
                elif lazy and top in sys.stdlib_module_names:
                    problems.append(f"{where} inside a function: import the standard library at the top")
                continue
            owner = target if target in modules else target.rsplit(".", 1)[0]
            if owner not in modules:
                problems.append(f"{where}: no such module")
                continue
            if owner == module:
                continue
            edges[module].add(owner)
            if (module, owner) in ALLOWED_UPWARD:
                continue
            if lazy:
                problems.append(f"{where} inside a function: import the package's own modules at the top")
            if layer(owner) > layer(module):
                problems.append(f"{where}: {LAYERS[layer(owner)]} is above {LAYERS[layer(module)]}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def owned_names(source: str) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments), not those it imports."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.col_offset == 0:
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.col_offset == 0:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def reexports(user: str, source: str, sources: dict[str, tuple[str, bool]], is_package: bool = False) -> list[str]:
    """``from bbt_mini.x import name`` where ``x`` only imports ``name`` from its owner: import from the owner."""
    modules, owned, out = set(sources), {}, []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        target = resolve(user.split(".") if is_package else user.split(".")[:-1], node)
        if target not in modules or any(f"{target}.{a.name}" in modules for a in node.names):
            continue
        names = owned.setdefault(target, owned_names(sources[target][0]))
        out += [f"{user}:{node.lineno} imports {a.name} from {target}, which does not define it"
                for a in node.names if a.name not in names and a.name != "*"]
    return out


def package_sources(root: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    return {module_name(p, root): (p.read_text(), p.name == "__init__.py") for p in sorted(root.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    for module in package_sources():
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, f"{module} is in no layer of {LAYERS}"


def test_no_import_runs_up_the_layers_or_in_a_circle():
    problems = check(package_sources())
    assert not problems, "\n".join(problems)


def code_sources() -> dict[str, str]:
    """The tests, the tools and every chapter's code cells (MyST ``{code-cell}`` blocks)."""
    repo = PACKAGE.parent
    out = {str(p.relative_to(repo)): p.read_text() for d in ("tests", "tools") for p in sorted((repo / d).glob("*.py"))}
    for md in sorted((repo / "book").rglob("*.md")):
        if "_build" in md.parts:
            continue
        cells = re.findall(r"^```\{code-cell\}[^\n]*\n(?:---\n.*?^---\n)?(.*?)^```", md.read_text(), re.S | re.M)
        code = "\n".join("\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!", ":")))
                         for cell in cells)
        out[str(md.relative_to(repo))] = code
    return out


def test_everything_imports_a_name_from_the_module_that_defines_it():
    sources = package_sources()
    problems = [p for module, (source, is_package) in sources.items()
                for p in reexports(module, source, sources, is_package)]
    problems += [p.replace("bbt_mini.x:", name + ":", 1) for name, source in code_sources().items()
                 for p in reexports("bbt_mini.x", source, sources)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_an_import_through_a_re_exporting_module():
    sources = _synthetic(**{"core.a": "def f():\n    pass\n", "methods.m": "from ..core.a import f\n"})
    assert reexports("bbt_mini.x", "from bbt_mini.methods.m import f\n", sources) == [
        "bbt_mini.x:1 imports f from bbt_mini.methods.m, which does not define it"]
    assert reexports("bbt_mini.x", "from bbt_mini.core.a import f\n", sources) == []


def _synthetic(**modules: str) -> dict[str, tuple[str, bool]]:
    sources = {"bbt_mini": ("", True)}
    for name, source in modules.items():
        parts = name.split(".")
        for i in range(1, len(parts)):
            sources.setdefault(".".join(["bbt_mini", *parts[:i]]), ("", True))
        sources["bbt_mini." + name] = (source, False)
    return sources


def test_the_checker_catches_a_planted_upward_import():
    """A core module that imports a method (at the top, or hidden in a function) is caught."""
    clean = _synthetic(**{"core.a": "import numpy as np\n", "methods.m": "from ..core.a import np\n"})
    assert check(clean) == []
    planted = _synthetic(**{"core.a": "from ..methods.m import f\n", "methods.m": "def f():\n    pass\n"})
    assert check(planted) == ["bbt_mini.core.a:1 imports bbt_mini.methods.m: methods is above core"]
    hidden = _synthetic(**{"core.a": "def g():\n    from bbt_mini.methods import m\n", "methods.m": ""})
    problems = check(hidden)
    assert any("inside a function" in p for p in problems) and any("above core" in p for p in problems)


def test_minimal_may_import_any_layer_and_no_module_may_import_it():
    top = _synthetic(**{"core.a": "x = 1\n", "methods.m": "y = 2\n",
                        "minimal": "from bbt_mini.core.a import x\nfrom .methods.m import y\n"})
    assert check(top) == []
    for user in ("__main__", "run.r", "core.b"):
        planted = _synthetic(**{"minimal": "x = 1\n", user: "from bbt_mini.minimal import x\n"})
        assert check(planted) == [f"bbt_mini.{user}:1 imports bbt_mini.minimal: minimal is above {user.split('.')[0]}"]


def test_the_checker_catches_a_cycle_and_a_lazy_required_package():
    loop = _synthetic(**{"core.a": "from .b import x\n", "core.b": "from . import a\nx = 1\n"})
    assert check(loop) == ["import cycle: bbt_mini.core.a -> bbt_mini.core.b"]
    lazy = _synthetic(**{"lm.m": "def load():\n    import torch\n    import datasets\n"})
    assert check(lazy) == [f"bbt_mini.lm.m:2 imports torch inside a function: only optional packages "
                           f"{sorted(OPTIONAL)} may be"]


@pytest.mark.parametrize("module", ["bbt_mini.core.x", "bbt_mini.run.x"])
def test_relative_imports_resolve_against_the_module(module):
    modules = {"bbt_mini", "bbt_mini.core", "bbt_mini.core.cmaes", module}
    got = imports(module, "from ..core import cmaes\nfrom .y import z\n", False, modules)
    assert got == [("bbt_mini.core.cmaes", 1, False), (module.rsplit(".", 1)[0] + ".y", 2, False)]
