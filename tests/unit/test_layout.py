"""The folder tree is the architecture: imports point one way, no cycles, no role-prefix families.

The import graph is read from the source (every import, including those under TYPE_CHECKING and
inside functions: a cycle hidden behind either is still a cycle in the design). The rules are the
README's "Layout" section and ../shared/design.md.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("p2pmarket", "dht", "node", "escrow", "tui")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = {n for n in imported_names(path) if n in mods and n != name}
        # `import a.b.c` runs a/__init__ and a/b/__init__ first
        for dep in list(deps):
            parts = dep.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in mods and parent != name and not name.startswith(parent + "."):
                    deps.add(parent)
        edges[name] = deps
    return edges


def test_no_import_cycle() -> None:
    try:
        order = list(TopologicalSorter(graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert len(order) == len(modules())


def test_imports_point_one_way() -> None:
    allowed = {
        "dht": {"dht", "p2pmarket"},
        "escrow": {"escrow", "p2pmarket"},
        "node": {"node", "dht", "escrow", "p2pmarket"},
        "tui": {"tui", "p2pmarket"},
        "p2pmarket": {"p2pmarket"},
    }
    wrong = []
    for name, deps in graph().items():
        top = name.split(".")[0]
        if name.startswith("p2pmarket.cli"):
            continue  # the CLI imports everything, lazily, inside the verb that needs it
        for dep in deps:
            if dep.split(".")[0] not in allowed[top]:
                wrong.append(f"{name} -> {dep}")
            if top == "tui" and dep.startswith("p2pmarket.") and not dep.startswith(
                    ("p2pmarket.client", "p2pmarket.api", "p2pmarket.wire", "p2pmarket.taxonomy",
                     "p2pmarket.geohash", "p2pmarket.datadir")):
                wrong.append(f"{name} -> {dep} (the TUI talks to the node through the client)")
    assert wrong == []


def test_trio_and_libp2p_only_in_the_libp2p_host() -> None:
    wrong = []
    for name, path in modules().items():
        libs = {n.split(".")[0] for n in imported_names(path)} & {"trio", "libp2p", "multiaddr"}
        if libs and not name.startswith("node.p2p.libp2p_host"):
            wrong.append(f"{name} imports {sorted(libs)}")
    assert wrong == []


def test_no_role_prefix_families() -> None:
    """Two modules of one folder named `<role>_<x>.py` are a folder waiting to happen."""
    families = []
    for package in PACKAGES:
        for folder in [ROOT / package, *[p for p in (ROOT / package).rglob("*") if p.is_dir()]]:
            stems = [p.stem for p in folder.glob("*.py") if "_" in p.stem.strip("_")]
            prefixes = Counter(stem.strip("_").split("_")[0] for stem in stems)
            families += [f"{folder.relative_to(ROOT)}/{prefix}_*" for prefix, n in prefixes.items()
                         if n > 1]
    assert families == []


def test_every_module_imports_alone_in_dependency_order() -> None:
    """A fresh interpreter imports every module, leaves first: each one must load with only what
    it imports itself (a hidden cycle or a missing import fails here, not in a user's hands)."""
    # `__main__` modules run the program when imported; they are covered by the CLI tests
    order = [m for m in TopologicalSorter(graph()).static_order()
             if m.split(".")[-1] != "__main__"]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
