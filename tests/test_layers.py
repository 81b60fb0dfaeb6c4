"""Data flows one way: no import cycles among dlstudy's modules, and no layer imports a higher one (read with ast,
lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer and the layers below; docs/ARCHITECTURE.md draws the same order.
LAYERS = [
    ["dlstudy.errors", "dlstudy.io", "dlstudy.progress"],
    ["dlstudy.config"],
    ["dlstudy.runs", "dlstudy.metrics"],
    ["dlstudy.data", "dlstudy.models", "dlstudy.predictions", "dlstudy.optim", "dlstudy.stats", "dlstudy.figures"],
    ["dlstudy.losses", "dlstudy.svm", "dlstudy.report", "dlstudy.tracking"],
    ["dlstudy.engine"],
    ["dlstudy.jobs", "dlstudy.inference", "dlstudy.studies", "dlstudy.export"],
    ["dlstudy.commands", "dlstudy.cli", "dlstudy.__main__", "dlstudy.api", "dlstudy"],
]


def module_names() -> dict[str, Path]:
    out = {}
    for path in (SRC / "dlstudy").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the dlstudy modules it imports. `from pkg import sub` where `sub` is a module is an edge to
    pkg.sub only (the package's __init__ runs first either way, as for any submodule)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dlstudy":
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                deps.update(subs)
                if len(subs) < len(node.names):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "dlstudy")
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> ... -> a, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def layer_of(module: str) -> int:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[0]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_layer_imports_a_higher_one():
    upward = sorted(f"{a} -> {b}" for a, deps in import_graph().items() for b in deps
                    if layer_of(b) > layer_of(a))
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_io_has_no_project_imports_but_errors():
    assert import_graph()["dlstudy.io"] <= {"dlstudy.errors"}


# The algorithm packages compute and return; only jobs write run folders (and reports).
ALGORITHM_PACKAGES = ("dlstudy.engine", "dlstudy.svm", "dlstudy.metrics", "dlstudy.losses", "dlstudy.models",
                      "dlstudy.data")
RUN_FOLDER_MODULES = ("dlstudy.report", "dlstudy.runs", "dlstudy.jobs")


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_algorithm_packages_never_touch_run_folders():
    offending = sorted(f"{a} -> {b}" for a, deps in import_graph().items() if _within(a, ALGORITHM_PACKAGES)
                       for b in deps if _within(b, RUN_FOLDER_MODULES))
    assert not offending, "algorithm packages importing the run-folder layer:\n" + "\n".join(offending)


def matplotlib_importers() -> set[str]:
    out = set()
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "matplotlib" or n.startswith("matplotlib.") for n in names):
                out.add(name)
    return out


def test_matplotlib_is_imported_in_the_figures_package_only():
    importers = matplotlib_importers()
    assert importers, "the figures package draws with matplotlib: the scan found no importer at all"
    outside = sorted(m for m in importers if not _within(m, ("dlstudy.figures",)))
    assert not outside, "matplotlib imported outside dlstudy.figures: " + ", ".join(outside)
