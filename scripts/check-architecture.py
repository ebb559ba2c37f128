#!/usr/bin/env python3
"""Architecture rules of src/nixherd, checked in CI.

1. No import circle between modules, counting every import: at module level, inside functions,
   and under `if TYPE_CHECKING:` (a circle hidden in a function is still a circle a reader must
   untangle). `from package import name` counts as an import of `package.name` when that is a
   module, else of `package` (its `__init__`).
2. No Python module over MAX_LINES lines.

Exit 0 when both hold; else 1, listing each circle (as a chain of modules) and each long module.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 500
PACKAGE = "nixherd"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_from(current: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module a `from ...module import x` names, seen from module `current`."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    current = module_name(root, path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve_from(current, is_package, node.level, node.module)
            names = []
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                names.append(submodule if submodule in modules else target)
        else:
            continue
        for name in names:
            # `import a.b.c` imports a, a.b and a.b.c; the deepest project module is the edge.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != current:
                found.add(name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        # Iterative, so a deep import chain cannot exhaust Python's recursion limit.
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def chain(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """One concrete cycle through the component's first member, for the message."""
    inside = set(members)
    start = members[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & inside):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return members


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src"
    files = sorted((src / PACKAGE).rglob("*.py"))
    modules = {module_name(src, path) for path in files}
    graph = {module_name(src, path): imports_of(src, path, modules) for path in files}
    problems = 0
    for component in circles(graph):
        problems += 1
        print("import circle: " + " -> ".join(chain(graph, component)))
    for path in files:
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems += 1
            print(f"too long: {path.relative_to(src)} has {lines} lines (at most {MAX_LINES})")
    if problems:
        print(f"check-architecture: {problems} problems")
        return 1
    summary = f"{len(files)} modules, no import circle, none over {MAX_LINES} lines"
    print(f"check-architecture: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
