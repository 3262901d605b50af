"""Structure facts of pai: import cycles, imports against the layers, long functions, big modules.

    python benchmarks/structure_facts.py [--markdown] [--check] [--root DIR]

Every import of every module under `pai/` and `scorers/` is collected from its syntax tree
(standard library `ast` only, nothing is imported): module-level imports, imports inside
functions and under `if TYPE_CHECKING:` (a dependency is a dependency, whenever it is loaded),
relative imports resolved against their package, and `importlib.import_module("literal")`.
`from X import name` points at the module `X.name` when that is a module, else at `X`.

The layer of a module is the first component of its name under `pai.`, ranked in `LAYERS`.
A module may import its own component or a lower rank, never a higher one, and never another
component of the same rank (unless `SAME_RANK_ALLOWED` says so). `pai/__init__.py` and
`pai/__main__.py` are the top: they may import anything, so importing them from a layer points
upward (the top package re-exports every layer). The plugins in `scorers/` may import any pai
module except `PLUGINS_MAY_NOT_IMPORT`; nothing in `pai/` imports a plugin (plugins are found
through entry points), and `TESTS_ONLY` components are imported by tests only.

Cycles are the elementary cycles of the module import graph (self-imports ignored), each
listed once, from its smallest module. A function's length is `end_lineno - lineno + 1`: from
its `def` line (decorators excluded) to its last line, nested functions counted in their parent
too. `--check` exits 1 when there is a cycle or a wrong-way import.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

# Rank of each component of `pai.<component>`: imports point to the same component or down.
LAYERS: dict[str, int] = {
    "core": 0,  # vocabulary: errors, steps, devices, atomic writes, the run store
    "data": 1,  # datasets
    "report": 1,  # schema, tables, plots, provenance
    "models": 2,  # pai/models.py
    "pruning": 3,  # masks, scorer protocol and registry, prune driver
    "training": 4,  # the training loop
    "testing": 4,  # helpers for tests (see TESTS_ONLY)
    "search": 5,  # TicketSearch: prune-at-init adapter, IMP
    "experiments": 6,  # compare, collapse, stability, transfer
    "cli": 7,  # thin adapters
}
TOP: frozenset[str] = frozenset({"pai", "pai.__main__"})  # may import anything
SAME_RANK_ALLOWED: frozenset[tuple[str, str]] = frozenset({("testing", "training")})
TESTS_ONLY: frozenset[str] = frozenset({"testing"})  # nothing scanned here may import these
PLUGINS = "scorers"  # the built-in plugins, a top-level package beside pai
PLUGINS_MAY_NOT_IMPORT: frozenset[str] = frozenset({"cli", "experiments"})
PACKAGES: tuple[str, ...] = ("pai", PLUGINS)
LONG_FUNCTION = 80  # lines


class Import(NamedTuple):
    """One imported module: where the import is written and what it resolves to."""

    source: str  # importing module, e.g. pai.report.plots
    path: str  # its file, relative to the root
    line: int
    target: str  # imported module, e.g. pai.experiments.compare


class Violation(NamedTuple):
    """An import that points the wrong way, and the rule it breaks."""

    edge: Import
    rule: str


class Function(NamedTuple):
    """A function or method and its length in lines."""

    qualname: str  # Class.method, outer.inner
    path: str
    line: int
    length: int


class Facts(NamedTuple):
    """Everything the report prints."""

    modules: dict[str, tuple[str, int]]  # module -> (path, line count)
    imports: list[Import]
    cycles: list[list[str]]  # each [a, b, ..., a]
    violations: list[Violation]
    functions: list[Function]  # longest first


# --- reading modules --------------------------------------------------------------------------


def discover_modules(root: Path, packages: Sequence[str] = PACKAGES) -> dict[str, Path]:
    """Every module of `packages` under `root`, by dotted name (a package by its `__init__`)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(part.startswith(".") or part == "__pycache__" for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in `module` starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str:
    package = _package_of(module, path).split(".")
    if level - 1 > len(package) - 1:
        raise ValueError(f"{path}: relative import beyond the top package")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name)
    return isinstance(func, ast.Name) and func.id == "import_module"


def module_imports(
    module: str, path: Path, tree: ast.AST, known: Iterable[str], root: Path
) -> list[Import]:
    """Every import in `tree` (at any depth) of a module in `PACKAGES`, resolved."""
    known = set(known)
    rel = path.relative_to(root).as_posix()
    found = []

    def add(node: ast.AST, target: str) -> None:
        if target.split(".")[0] in PACKAGES:
            found.append(Import(module, rel, node.lineno, target))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, path, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                add(node, candidate if candidate in known else base)
        elif (
            isinstance(node, ast.Call)
            and _is_import_module(node)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node, node.args[0].value)
    return sorted(set(found), key=lambda i: (i.path, i.line, i.target))


def _functions(tree: ast.AST, rel: str) -> list[Function]:
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                length = child.end_lineno - child.lineno + 1
                found.append(Function(name, rel, child.lineno, length))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


# --- the rules --------------------------------------------------------------------------------


def component(module: str) -> str:
    """`pai.report.plots` -> `report`; the top modules and the plugins name themselves."""
    if module in TOP:
        return "top"
    parts = module.split(".")
    if parts[0] == PLUGINS:
        return PLUGINS
    return parts[1]


def wrong_way(source: str, target: str) -> str | None:
    """Why the import `source -> target` breaks the layering, or None when it is allowed."""
    s, t = component(source), component(target)
    if s == t:
        return None
    if t in TESTS_ONLY:
        return f"pai.{t} is for tests only"
    if t == PLUGINS:
        return "pai never imports a plugin; plugins are found through entry points"
    if s == "top":
        return None
    if t not in LAYERS and t != "top":
        return f"{target} is in no layer of LAYERS"
    if s == PLUGINS:
        return f"plugins may not import pai.{t}" if t in PLUGINS_MAY_NOT_IMPORT else None
    if s not in LAYERS:
        return f"{source} is in no layer of LAYERS"
    if t == "top":
        return f"upward: {s} ({LAYERS[s]}) -> the top package (it re-exports every layer)"
    if LAYERS[t] > LAYERS[s]:
        return f"upward: {s} ({LAYERS[s]}) -> {t} ({LAYERS[t]})"
    if LAYERS[t] == LAYERS[s] and (s, t) not in SAME_RANK_ALLOWED:
        return f"across: {s} and {t} share rank {LAYERS[s]}"
    return None


def violations(imports: Iterable[Import]) -> list[Violation]:
    """The imports that point the wrong way, in file order."""
    found = []
    for edge in imports:
        rule = wrong_way(edge.source, edge.target)
        if rule is not None:
            found.append(Violation(edge, rule))
    return found


def import_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Module -> the modules it imports (self-imports left out)."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        if edge.source != edge.target:
            graph.setdefault(edge.source, set()).add(edge.target)
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components of `graph` (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            nxt = next(targets, None)
            if nxt is None:
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
                    components.append(component)
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph.get(nxt, ())))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return components


def _cycles_through(
    start: str, graph: Mapping[str, Iterable[str]], members: set[str], limit: int
) -> list[list[str]]:
    """The elementary cycles whose smallest module is `start`, within one component."""

    def after(node: str) -> Iterator[str]:
        return iter(sorted(t for t in graph.get(node, ()) if t in members and t >= start))

    cycles: list[list[str]] = []
    path, todo = [start], [after(start)]
    while todo and len(cycles) < limit:
        nxt = next(todo[-1], None)
        if nxt is None:
            todo.pop()
            path.pop()
        elif nxt == start:
            cycles.append([*path, start])
        elif nxt not in path:
            path.append(nxt)
            todo.append(after(nxt))
    return cycles


def import_cycles(graph: Mapping[str, Iterable[str]], limit: int = 1000) -> list[list[str]]:
    """The elementary cycles of `graph`, each once as [start, ..., start] from its smallest
    module, sorted; at most about `limit`. Only a strongly connected component holds one."""
    cycles: list[list[str]] = []
    for members in strongly_connected(graph):
        if len(members) > 1:
            for start in sorted(members):
                cycles += _cycles_through(start, graph, members, limit - len(cycles))
    return sorted(cycles)


# --- the report -------------------------------------------------------------------------------


def analyze(root: str | Path, packages: Sequence[str] = PACKAGES) -> Facts:
    """Read every module of `packages` under `root` and collect the facts."""
    root = Path(root)
    paths = discover_modules(root, packages)
    modules, imports, functions = {}, [], []
    for module, path in paths.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(root).as_posix()
        modules[module] = (rel, len(text.splitlines()))
        imports += module_imports(module, path, tree, paths, root)
        functions += _functions(tree, rel)
    functions.sort(key=lambda f: (-f.length, f.path, f.line))
    return Facts(
        modules, imports, import_cycles(import_graph(imports)), violations(imports), functions
    )


def _largest(facts: Facts, count: int = 5) -> list[tuple[str, int]]:
    sizes = sorted(facts.modules.values(), key=lambda m: (-m[1], m[0]))
    return sizes[:count]


def _long(facts: Facts) -> int:
    return sum(f.length > LONG_FUNCTION for f in facts.functions)


def render_text(facts: Facts) -> str:
    lines = [
        f"{len(facts.modules)} modules, {sum(n for _, n in facts.modules.values())} lines, "
        f"{len(facts.imports)} imports between them",
        f"import cycles: {len(facts.cycles)}",
        *(f"  {' -> '.join(cycle)}" for cycle in facts.cycles),
        f"wrong-way imports: {len(facts.violations)}",
        *(
            f"  {v.edge.path}:{v.edge.line} -> {v.edge.target}  [{v.rule}]"
            for v in facts.violations
        ),
        "longest functions (end_lineno - lineno + 1, decorators excluded):",
        *(f"  {f.length:5d}  {f.path}:{f.line} {f.qualname}" for f in facts.functions[:10]),
        f"functions over {LONG_FUNCTION} lines: {_long(facts)}",
        "largest modules (lines):",
        *(f"  {n:5d}  {path}" for path, n in _largest(facts)),
    ]
    return "\n".join(lines) + "\n"


def render_markdown(facts: Facts) -> str:
    total = sum(n for _, n in facts.modules.values())
    lines = [
        "## Structure of `pai/` and `scorers/`",
        "",
        "Measured by `python benchmarks/structure_facts.py --markdown` (imports read from the "
        "syntax tree, function-level imports included; layers as in `LAYERS` there).",
        "",
        f"- {len(facts.modules)} modules, {total} lines, {len(facts.imports)} imports between them",
        f"- import cycles: **{len(facts.cycles)}**",
        *(f"  - `{' -> '.join(cycle)}`" for cycle in facts.cycles),
        f"- wrong-way imports (upward or across a rank): **{len(facts.violations)}**",
        f"- functions over {LONG_FUNCTION} lines: **{_long(facts)}**",
        "",
    ]
    if facts.violations:
        lines += ["| where | imports | rule |", "|---|---|---|"]
        lines += [
            f"| `{v.edge.path}:{v.edge.line}` | `{v.edge.target}` | {v.rule} |"
            for v in facts.violations
        ]
        lines.append("")
    lines += [
        "### Ten longest functions",
        "",
        "Length = `end_lineno - lineno + 1`, decorators excluded.",
        "",
        "| lines | function | where |",
        "|---:|---|---|",
        *(f"| {f.length} | `{f.qualname}` | `{f.path}:{f.line}` |" for f in facts.functions[:10]),
        "",
        "### Five largest modules",
        "",
        "| lines | module |",
        "|---:|---|",
        *(f"| {n} | `{path}` |" for path, n in _largest(facts)),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown section")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 on an import cycle or a wrong-way import"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the folder holding pai/ and scorers/ (default: this checkout)",
    )
    args = parser.parse_args(argv)
    facts = analyze(args.root)
    print(render_markdown(facts) if args.markdown else render_text(facts), end="")
    if args.check and (facts.cycles or facts.violations):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
