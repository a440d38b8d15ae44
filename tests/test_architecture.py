"""The layering of docs/architecture.md, enforced: imports only point down, and there are no circles.

Every ``import`` in dermbench is read from the source (module level and inside functions alike, since a
lazy import is still a dependency), resolved to the package it names, and checked against the layer
table below. A package may import itself, the foundation modules and any package of a lower layer;
never a package of its own layer or above. Inside each package the module graph must be acyclic.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "dermbench"

# package -> layer (docs/architecture.md). Foundation modules (io, config, claims, progress, the package root) are layer 0.
LAYERS = {
    "": 0, "io": 0, "config": 0, "claims": 0, "progress": 0, "names": 0,
    "models": 1, "data": 1,
    "features": 2, "stats": 2,
    "federated": 3,
    "protocols": 4,
    "run": 5,
    "report": 6,
    "cli": 7,
}
# Deprecated aliases of the old flat layout (re-export their new module for one release).
COMPAT = {"registry", "backbone", "weights", "random_vit"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every dermbench import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dermbench"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "dermbench":
                continue
            # `from dermbench.x import y` may import the submodule y
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                found.append((node.lineno, candidate if _exists(candidate) else name))
    return found


def _exists(module: str) -> bool:
    parts = module.split(".")[1:]
    base = ROOT.joinpath(*parts) if parts else ROOT
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_layer():
    packages = {_package_of(_module_name(p)) for p in _sources()}
    unknown = packages - set(LAYERS) - COMPAT
    assert not unknown, f"packages without a layer in tests/test_architecture.py and docs/architecture.md: {unknown}"


def test_imports_point_down():
    violations = []
    for path in _sources():
        src_pkg = _package_of(_module_name(path))
        if src_pkg in COMPAT:
            continue
        for line, target in _imports(path):
            dst_pkg = _package_of(target)
            if dst_pkg == src_pkg:
                continue
            if dst_pkg in COMPAT:
                violations.append(f"{path.relative_to(ROOT.parent)}:{line} imports the deprecated alias {target}")
            elif LAYERS[dst_pkg] >= LAYERS[src_pkg] and LAYERS[dst_pkg] != 0:
                violations.append(f"{path.relative_to(ROOT.parent)}:{line}: {src_pkg or 'dermbench'} (layer "
                                  f"{LAYERS[src_pkg]}) imports {target} (layer {LAYERS[dst_pkg]})")
    assert not violations, "imports that point up or sideways:\n" + "\n".join(violations)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources():
        module = _module_name(path)
        if _package_of(module) in COMPAT:
            continue
        graph[module] = {t for _, t in _imports(path) if t != module and _exists(t)}
    return graph


def test_no_import_cycles():
    graph = _graph()
    # A module importing its own package root (a registry decorator defined there, say) is not followed:
    # Python has already begun importing the root by then. Every other edge counts.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodule
            if node.startswith(nxt + ".") and nxt in graph:
                continue  # a module importing its package root: the root is already being imported
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("old", sorted(COMPAT))
def test_old_plugin_imports_still_work(old):
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import sys

        sys.modules.pop(f"dermbench.{old}", None)
        module = importlib.import_module(f"dermbench.{old}")
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    new = importlib.import_module(f"dermbench.models.{old}")
    public = [k for k in vars(new) if not k.startswith("_")]
    assert public and all(getattr(module, k) is getattr(new, k) for k in public)


def test_every_package_says_what_it_owns_and_may_import():
    for init in sorted(ROOT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc or "may import" in doc, f"{init}: the docstring must say which packages it may import"
