"""The package map of the README, checked against the imports the code really makes.

Every ``metasr.*`` import in every module (module level and inside functions) is read with
``ast``; the graph of packages must match ``ALLOWED`` (which is the README's map), have no cycle,
never reach into another package's ``_private`` module, and keep the torch-free packages free
of torch.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> the metasr packages it may import (the README's "Package map").
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "models": {"core"},
    "scanners": {"core"},
    "runtime": {"core", "models", "scanners"},
    "video": {"core", "models", "runtime"},
    "training": {"core", "scanners", "runtime"},
    "export": {"core", "training", "runtime", "serve"},
    "serve": {"core", "models", "runtime"},
}
#: Packages a plain ``pip install metasr`` must run without PyTorch.
TORCH_FREE = {"core", "models", "scanners", "runtime", "video", "serve"}
HEAVY = {"torch", "torchvision", "tensorboard"}


def _packages() -> dict[str, Path]:
    return {name: ROOT / name for name in ALLOWED if (ROOT / name / "__init__.py").is_file()}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: metasr.<pkg>.<...>
                pkg = path.parent.name
                found.append((node.lineno, f"metasr.{pkg}.{node.module or ''}".rstrip(".")))
            elif node.module:
                found.append((node.lineno, node.module))
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _edges() -> list[tuple[str, str, str, str]]:
    """(from package, to package, imported module, where) for every cross-package import."""
    edges = []
    for name, folder in _packages().items():
        for path in sorted(folder.rglob("*.py")):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "metasr" or len(parts) < 2 or parts[1] == name or parts[1] == "__version__":
                    continue
                edges.append((name, parts[1], module, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_package_is_in_the_map():
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"root", "tests", "bench"}
    assert top <= set(ALLOWED), f"packages missing from the map: {sorted(top - set(ALLOWED))}"


def test_imports_follow_the_map():
    bad = [f"{where}: {src} imports {module}" for src, dst, module, where in _edges() if dst not in ALLOWED[src]]
    assert not bad, "imports against the package map:\n" + "\n".join(bad)


def test_no_package_imports_another_packages_private_module():
    bad = [
        f"{where}: {module}"
        for _src, _dst, module, where in _edges()
        if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[2:3])
    ]
    assert not bad, "private modules imported across packages:\n" + "\n".join(bad)


def test_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {name: set() for name in _packages()}
    for src, dst, _module, _where in _edges():
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("package cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("package", sorted(TORCH_FREE))
def test_torch_free_packages_never_import_torch(package):
    folder = ROOT / package
    if not folder.is_dir():
        pytest.skip(f"{package}/ does not exist")
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(folder.rglob("*.py"))
        for line, module in _imports(path)
        if module.split(".")[0] in HEAVY
    ]
    assert not bad, f"{package} must run without PyTorch:\n" + "\n".join(bad)


def test_the_checker_can_fail(tmp_path, monkeypatch):
    # a scanners module importing the runtime and torch must be caught
    fake = tmp_path / "scanners"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "x.py").write_text("from metasr.runtime.upscaler import Upscaler\nimport torch\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges = {(src, dst, module) for src, dst, module, _where in _edges()}
    assert ("scanners", "runtime", "metasr.runtime.upscaler") in edges
    assert "runtime" not in ALLOWED["scanners"]
    assert ("torch" in {m for _line, m in _imports(fake / "x.py")}) and "scanners" in TORCH_FREE
