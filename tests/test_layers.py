"""Import layering: no import cycles between sonofm modules, and every import inside a function says why.

Python tolerates a cycle when one side imports inside a function, but a reader does not: neither
module can be understood, tested or moved without the other. So the graph here is built from the
AST and sees every `import` statement wherever it is written (module level and inside functions),
plus `importlib.import_module("sonofm....")` with a literal name. Imports under
`if TYPE_CHECKING:` never run and are left out. Registry strings ("module:function" loaders,
lazy `__getattr__` export tables) are plugin points, not imports, and are left out too.

The layer contracts between packages (taxonomy, reports and sim import no torch and no job;
nothing imports the CLI) are import-linter contracts in `.importlinter`, run by `make test`.
See docs/design.md ("Layers").
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "sonofm"

# Cycles that exist today in files other work is changing; each names the issue that removes it.
# An entry may only shrink: a cycle that is gone (or smaller) must be removed from here.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    out: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """All nodes, skipping the bodies of `if TYPE_CHECKING:` blocks (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _import_module_literal(node: ast.AST) -> str | None:
    """The module name of `importlib.import_module("literal")` / `import_module("literal")`."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return str(node.args[0].value) if name == "import_module" else None


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its file)."""
    files = module_files(package_dir)
    root = package_dir.name

    def nearest(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(nearest(a.name) for a in node.names if a.name.split(".")[0] == root)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != root:
                    continue
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in files else nearest(source))
            elif (name := _import_module_literal(node)) and name.split(".")[0] == root:
                targets.add(nearest(name))
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _path(graph: dict[str, set[str]], component: frozenset[str]) -> str:
    """One concrete loop inside a component, for the failure message ("a -> b -> a")."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        following = sorted(graph[path[-1]] & component)
        back = start if start in following else None
        if back or not following:
            return " -> ".join([*path, start])
        step = next((m for m in following if m not in seen), following[0])
        if step in seen:
            return " -> ".join([*path[path.index(step) :], step])
        path.append(step)
        seen.add(step)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "sonofm"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from sonofm.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import importlib\nimportlib.import_module('sonofm.c')\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sonofm import a\n"  # never runs: no edge
        "from sonofm.a import f\n"
    )
    g = import_graph(pkg)
    assert g["sonofm.a"] == {"sonofm.sub.b"}
    assert g["sonofm.sub"] == {"sonofm.sub.b"}
    assert g["sonofm.sub.b"] == {"sonofm.c"}
    assert g["sonofm.c"] == {"sonofm.a"}
    assert cycles(g) == [frozenset({"sonofm.a", "sonofm.sub.b", "sonofm.c"})]
    assert _path(g, cycles(g)[0]) == "sonofm.a -> sonofm.sub.b -> sonofm.c -> sonofm.a"


def test_no_import_cycles_between_modules(graph: dict[str, set[str]]) -> None:
    new = [c for c in cycles(graph) if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, (
        "import cycles (move the shared piece down, or the function next to its model):\n"
        + "\n".join(_path(graph, c) for c in new)
    )


def test_known_cycles_are_still_cycles(graph: dict[str, set[str]]) -> None:
    """A cycle that was fixed must leave KNOWN_CYCLES, so it cannot come back unnoticed."""
    current = cycles(graph)
    stale = [sorted(known) for known in KNOWN_CYCLES if known not in current]
    assert not stale, f"no longer (exactly) a cycle; remove or shrink it in KNOWN_CYCLES: {stale}"


def test_models_io_is_below_the_models_it_loads(graph: dict[str, set[str]]) -> None:
    """models/io.py saves and loads model directories; the models import it, never the reverse (#19).

    Below it sits only models/model_dir.py, the owner of the directory's file names (no torch).
    """
    below = {"sonofm.models.model_dir"}
    assert not {m for m in graph["sonofm.models.io"] if m.startswith("sonofm.models.")} - below
    assert not {m for m in graph["sonofm.models.model_dir"] if m.startswith("sonofm.models.")}


def function_level_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, source) of every import written inside a function of ``path``, without a ``# lazy:`` reason."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    seen: set[int] = set()
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in seen:
                seen.add(node.lineno)
                text = lines[node.lineno - 1 : node.end_lineno]
                if not any("# lazy:" in line for line in text):
                    yield node.lineno, text[0].strip()


def test_function_level_import_check_sees_nested_functions_and_multiline_reasons(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import os\n"
        "def f():\n"
        "    import json  # lazy: reason\n"
        "    def g():\n"
        "        import csv\n"
        "    from pathlib import (\n"
        "        Path,  # lazy: reason on a continuation line\n"
        "    )\n"
        "class C:\n"
        "    def m(self):\n"
        "        import re\n"
    )
    assert list(function_level_imports(src)) == [(5, "import csv"), (11, "import re")]


def test_function_level_imports_say_why() -> None:
    """An import inside a function hides a dependency (and once hid a cycle): it is allowed only
    where it keeps torch out of a torch-free module or defers a heavy or optional dependency, and
    then says so on its line (``# lazy: <reason>``), so the next reader can tell it is deliberate (#19)."""
    missing = [
        f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {text}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for line, text in function_level_imports(path)
    ]
    assert not missing, (
        f"{len(missing)} imports inside functions give no reason; move them to the top of the module "
        "or add `# lazy: <why>`:\n" + "\n".join(missing[:50])
    )
