"""The import graph: every `import` of every module of the project, those inside functions too, read from the
source (nothing is imported). Layers import downward only and no modules import each other, directly or round
a longer loop.

    core        omnigen/ outside training/ and mini/ (and outside the command line, which is an entry point)
    training    omnigen/training/
    top         omnigen/mini/, the studio (app/, app.py) and the command line (omnigen/cli.py,
                omnigen/__main__.py); the studio and the command line never import omnigen.mini
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("omnigen.cli", "omnigen.__main__")
# Each layer and the layers it must not import.
FORBIDDEN = {"core": ("training", "mini", "studio", "entry"), "training": ("mini", "studio", "entry"),
             "mini": ("studio", "entry"), "studio": ("mini",), "entry": ("mini", "studio")}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for the library, the studio and app.py."""
    files = {"app_main": ROOT / "app.py"}
    for package in ("omnigen", "app"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def layer_of(module: str) -> str:
    if module.startswith(ENTRY_POINTS):
        return "entry"
    if module == "app_main" or module == "app" or module.startswith("app."):
        return "studio"
    if module.startswith("omnigen.training"):
        return "training"
    if module.startswith("omnigen.mini"):
        return "mini"
    return "core"


def imported_names(module: str, path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """Every module an import statement of the file may name (absolute), with its line and, for `from X import
    a, b`, the names X.a, X.b: `from .x import y` gives `pkg.x` and `pkg.x.y` (kept where it is a module);
    X itself counts unless every name imported from it is a submodule (`from . import vae`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = tuple(f"{base}.{alias.name}" for alias in node.names)
            names.append((base, node.lineno, submodules))
            names += [(name, node.lineno, ()) for name in submodules]
    return names


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line of the first such import}."""
    files = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        for name, line, submodules in imported_names(module, path):
            if name in files and name != module and not (submodules and all(s in files for s in submodules)):
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_walk_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "omnigen.pipeline" in graph["omnigen"]  # inside __getattr__
    assert "omnigen.vae" in graph["omnigen.pipeline"]  # from . import vae as vae_io
    assert "omnigen.lora" in graph["omnigen.pipeline"]  # inside a method
    assert layer_of("omnigen.training.cli") == "training" and layer_of("app.ui") == "studio"
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_layer_imports_a_layer_above_it_or_beside_it():
    upward = []
    for module, edges in import_graph().items():
        for target, line in edges.items():
            if layer_of(target) in FORBIDDEN[layer_of(module)]:
                upward.append(f"{module} (line {line}) imports {target}: {layer_of(module)} may not import "
                              f"{layer_of(target)}")
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other():
    graph = import_graph()
    loops = []
    for component in cycles(graph):
        edges = [f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph[a] if b in component]
        loops.append("; ".join(edges))
    assert not loops, "import cycles:\n" + "\n".join(loops)


def test_the_miniature_world_names_the_extra_it_needs_where_opencv_is_missing():
    code = ("import sys; sys.modules['cv2'] = None\n"  # as on an install of the library alone
            "try:\n    import omnigen.mini.world\nexcept ImportError as error:\n    print(error)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert 'pip install -e ".[train]"' in done.stdout, done.stdout + done.stderr
