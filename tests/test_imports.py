"""The library's shape: its import graph has no cycle and no upward import between layers, and no
module is longer than MAX_LINES lines. The graph is read from the source with `ast`: every
`import robustedit...` and `from . / .. / robustedit... import` statement, at module level or inside a
function, counts; importing `a.b.c` also imports the packages `a.b` (their __init__ runs first)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "workflow" / "robustedit"
ROOT = "robustedit"

# Lowest first. A module may import from its own subpackage, from the top-level modules
# (robustedit/*.py: errors, tokens, hooks, batching, edits, readout, ...), which import only each other,
# and from subpackages of lower layers.
LAYERS = ("models", "rome", "memit", "rep", "evaluate", "eren", "sequential", "analysis", "data", "pipeline")

MAX_LINES = 300
LONG_MODULES = {  # module: why it may be longer (delete the entry once it is split)
}


def _name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(LIB.rglob("*.py"))}
PACKAGES = {_name(p) for p in MODULES.values() if p.name == "__init__.py"}


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _targets(module: str, node: ast.AST) -> set[str]:
    """Library modules named by one import statement of `module`."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name == ROOT or a.name.startswith(ROOT + ".")}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        pkg = (module if module in PACKAGES else module.rpartition(".")[0]).split(".")
        base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not (base == ROOT or base.startswith(ROOT + ".")):
        return set()
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}


def direct_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = set().union(*(_targets(module, node) for node in ast.walk(tree)))
    unknown = found - set(MODULES)
    assert not unknown, f"{module} imports {sorted(unknown)}, which are not library modules"
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules importing it runs (parent packages of each target included)."""
    graph = {}
    for module in MODULES:
        own = _ancestors(module) | {module}
        graph[module] = set()
        for target in direct_imports(module):
            graph[module] |= ({target} | _ancestors(target)) - own - {ROOT}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> tuple[int, str]:
    """(layer index, subpackage) of a module; the top-level modules are layer 0."""
    parts = module.split(".")
    if len(parts) == 1 or f"{ROOT}.{parts[1]}" not in PACKAGES:
        return 0, ""
    assert parts[1] in LAYERS, f"subpackage {parts[1]!r} has no place in LAYERS"
    return 1 + LAYERS.index(parts[1]), parts[1]


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "robustedit.readout" in graph["robustedit.rome.prompts"]  # from ..readout import
    assert "robustedit.rome.v_batch" in graph["robustedit.rome.compute_v"]  # from .v_batch import
    assert "robustedit.rome" in graph["robustedit.rep.keys"]  # the parent package of rome.templates
    assert "robustedit.models.load" in graph["robustedit.eren.encoder"]  # an import inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_import():
    upward = []
    for module in MODULES:
        (lo, pkg) = layer(module)
        for target in direct_imports(module):
            (lt, tpkg) = layer(target)
            if tpkg != pkg and lt >= lo:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a sibling at the same or a higher layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_length(module):
    n = len(MODULES[module].read_text().splitlines())
    if module in LONG_MODULES:
        return
    assert n <= MAX_LINES, f"{module} has {n} lines (> {MAX_LINES}): split it, or list it in LONG_MODULES with a reason"


def test_long_module_exceptions_name_existing_modules():
    assert set(LONG_MODULES) <= set(MODULES), sorted(set(LONG_MODULES) - set(MODULES))


REPO = LIB.parents[1]
SCRIPTS = REPO / "scripts"


def test_scripts_import_the_library_not_each_other():
    """Stage scripts share code through robustedit (its pipeline glue), never by importing a sibling script."""
    siblings = {p.stem for p in SCRIPTS.glob("*.py")}
    found = []
    for path in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in siblings]
    assert not found, "\n".join(found)


def test_no_import_path_edits():
    """The library is installed (`pip install -e .`); no code prepends folders to the import path (benchmarks/reference
    wraps third-party code and is left as it is)."""
    files = [*SCRIPTS.glob("*.py"), *(REPO / "rules").glob("*.smk"), REPO / "Snakefile", *LIB.rglob("*.py"),
             *(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    needles = ("sys." + "path", "syspath" + "_prepend")  # split, so this file does not name them
    found = [str(p.relative_to(REPO)) for p in files if any(n in p.read_text() for n in needles)]
    assert not found, found
