"""The redesign's three figures: import cycles inside icetools (imports inside functions count),
modules over 600 lines and functions over 100 lines. ``python -m bench layout`` prints them.

It reads the source with ``ast`` and runs none of it, so it is quick and safe on a broken tree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "icetools"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, current: str, known: set[str]) -> set[str]:
    """The icetools modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, current, path.name == "__init__.py")
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            # "from icetools.models import unet" imports the module icetools.models.unet
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("icetools") and name != current:
                found.add(name)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    modules = package_modules(root)
    known = set(modules)
    graph = {name: imported_modules(path, name, known) for name, path in modules.items()}
    # Importing a submodule runs its package's __init__ first: that is a dependency too, except
    # for the package's own members (which the __init__ may re-export).
    for name in graph:
        parent = name.rpartition(".")[0]
        while parent:
            for other in list(graph[name]):
                if other == parent and name.startswith(parent + "."):
                    graph[name].discard(other)
            parent = parent.rpartition(".")[0]
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def long_modules(root: Path = PACKAGE_ROOT, limit: int = MAX_MODULE_LINES) -> list[tuple[str, int]]:
    counts = ((name, len(path.read_text(encoding="utf-8").splitlines())) for name, path in package_modules(root).items())
    return sorted(((n, c) for n, c in counts if c > limit), key=lambda item: -item[1])


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_functions(root: Path = PACKAGE_ROOT, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    found = []
    for name, path in package_modules(root).items():
        for func in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            length = (func.end_lineno or func.lineno) - func.lineno + 1
            if length > limit:
                found.append((f"{name}.{func.name}", length))
    return sorted(found, key=lambda item: -item[1])


def run() -> Iterator[tuple[str, str]]:
    cycles = import_cycles(import_graph())
    modules = long_modules()
    functions = long_functions()
    yield "import cycles inside icetools", str(len(cycles)) + ("" if not cycles else ": " + "; ".join(" <-> ".join(c) for c in cycles))
    yield f"modules over {MAX_MODULE_LINES} lines", str(len(modules)) + "".join(f"; {n} {c}" for n, c in modules)
    yield f"functions over {MAX_FUNCTION_LINES} lines", str(len(functions)) + "".join(f"; {n} {c}" for n, c in functions)


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
