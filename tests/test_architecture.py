"""The rules of docs/ARCHITECTURE.md, checked on the source: no import circles (function-level and TYPE_CHECKING
imports count), private modules and names stay inside their package, few modules at the root, no public function
outside ``cli/`` with more than ten parameters."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_PARAMETERS = 10
ROOT_MODULES = {"__init__.py", "__main__.py", "errors.py", "display.py"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or module.name) imported
    names: tuple[str, ...]  # names imported from target (``from target import a, b``); () for ``import target``
    line: int


def modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Import(name, target, tuple(a.name for a in node.names), node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno)


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module → modules it imports, with the packages above each imported module (importing ``a.b.c`` runs
    ``a/__init__`` and ``a/b/__init__``), except the importer's own enclosing packages (already running)."""
    graph: dict[str, set[str]] = {m: set() for m in found}
    for name, path in found.items():
        for imp in imports_of(name, path):
            for target in (imp.target, *(f"{imp.target}.{n}" for n in imp.names)):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    up = ".".join(parts[:i])
                    if up in found and up != name and not name.startswith(up + "."):
                        graph[name].add(up)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import c\n")
    (pkg / "c.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from pkg.a import x\n")
    (pkg / "d.py").write_text("from pkg.a import g\n")
    assert cycles(import_graph(modules(tmp_path))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_circles() -> None:
    assert cycles(import_graph(modules())) == []


def test_private_modules_and_names_stay_in_their_package() -> None:
    found = modules()
    leaks = []
    for name, path in found.items():
        for imp in imports_of(name, path):
            if not imp.target.startswith("flipscope"):
                continue
            parts = imp.target.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])
                if part.startswith("_") and not part.startswith("__") and not name.startswith(owner + "."):
                    leaks.append(f"{name}:{imp.line} imports private module {imp.target}")
            private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
            own_package = imp.target == (name if found[name].name == "__init__.py" else name.rpartition(".")[0])
            if private and not own_package:  # ``from flipscope.models import _hf_decode`` inside models/ is fine
                leaks.append(f"{name}:{imp.line} imports private {', '.join(private)} from {imp.target}")
    assert leaks == []


def test_few_modules_at_the_root() -> None:
    assert {p.name for p in (SRC / "flipscope").glob("*.py")} <= ROOT_MODULES


@pytest.mark.parametrize("path", sorted(p for p in (SRC / "flipscope").rglob("*.py") if "cli" not in p.parts))
def test_public_functions_take_at_most_ten_parameters(path: Path) -> None:
    too_many = []

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                if owner and params and params[0].arg in ("self", "cls"):
                    params = params[1:]
                public = not child.name.startswith("_") and not owner.startswith("_")
                if public and len(params) > MAX_PARAMETERS:
                    too_many.append(f"{owner + '.' if owner else ''}{child.name}: {len(params)}")

    visit(ast.parse(path.read_text()), "")
    assert too_many == []


#: The packages from the bottom up (root modules by name, ``__init__`` for ``flipscope/__init__.py``): a package
#: imports only packages on lower lines, none on its own line or above.
LAYERS: list[set[str]] = [
    {"errors"},  # the one exception type, with its fix
    {"display", "plumbing"},  # progress output; files, cache, hub, wheels, version
    {"metrics"},  # pure functions over per-item records
    {"tasks"},  # items, corpora, prompts
    {"compress"},  # one typed config per compression method
    {"models"},  # backends
    {"judge"},  # judge prompts, verdicts and their summaries
    {"store"},  # persistence: cached passes, run directories, summaries recomputed from their files
    {"passes"},  # running a model over requests and storing the results
    {"attribution"},  # units of a model, ablations, the knapsack over bit widths
    {"importers"},  # other tools' logs (lm-eval) read as records
    {"report"},  # stored runs re-rendered: tables, plots, HTML
    {"runs"},  # one module per command
    {"cli", "__init__"},  # the command line; the lazy top-level API
    {"__main__"},  # ``python -m flipscope``: the command line
]
#: Packages on lower lines that a package still must not import.
NOT_EVEN_BELOW: dict[str, set[str]] = {
    "report": {"passes"},  # a report re-renders stored files: it runs nothing
    "importers": {"compress", "models", "judge", "store", "passes", "attribution"},  # logs → records, nothing run
}


def package_of(module: str) -> str:
    """``flipscope.X.…`` → X; a root module by its name; the root package itself → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_packages_import_only_lower_layers() -> None:
    line = {package: i for i, packages in enumerate(LAYERS) for package in packages}
    graph = import_graph(modules())
    unplaced = sorted({package_of(m) for m in graph} - set(line))
    assert unplaced == [], "give each package a line in LAYERS"
    upward = []
    for importer, targets in sorted(graph.items()):
        mine = package_of(importer)
        for target in sorted(targets):
            theirs = package_of(target)
            if theirs == mine:
                continue
            if line[theirs] >= line[mine] or theirs in NOT_EVEN_BELOW.get(mine, set()):
                upward.append(f"{importer} ({mine}) imports {target} ({theirs})")
    assert upward == []


def test_import_flipscope_tasks_loads_neither_numpy_nor_pydantic() -> None:
    """tasks/gsm8k.py writes out ``metrics.records.NO_ANSWER`` rather than import it: the metrics load numpy and
    pydantic."""
    import subprocess
    import sys

    from flipscope.metrics.records import NO_ANSWER
    from flipscope.tasks.gsm8k import INVALID

    assert INVALID == NO_ANSWER
    loaded = "import sys, flipscope.tasks; print(sorted({'numpy', 'pydantic', 'flipscope.metrics'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
