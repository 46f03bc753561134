"""The package's shape, held: the README's module table names every module, no module imports
one that imports it back, and the training library imports from the supervisor side only the
shared core (pure standard library)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "runai_entry"
README = (REPO / "README.md").read_text()

#: What both sides import: the names the job sees, signal names, the errors both raise, and
#: checkpoint discovery (the library resumes without runai-entry too), with the bounded call
#: discovery runs in. Standard library only, so importing the training library stays cheap.
SHARED_CORE = {"runai_entry.core.envvars", "runai_entry.core.signals", "runai_entry.core.errors",
               "runai_entry.core.timeout", "runai_entry.checkpoints"}


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = module_names()


def imported(name: str) -> set[str]:
    """Our modules that ``name`` imports, at its top or inside functions (not for typing)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in MODULES and m != name}


def owner(module: str) -> str:
    """The shared-core entry a module belongs to (a package's modules belong to the package)."""
    return next((core for core in SHARED_CORE if module == core or
                 module.startswith(core + ".")), module)


def test_readme_module_table_names_every_module_and_no_other() -> None:
    section = README[README.index("## Development"):]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    named = set(re.findall(r"`(\w+\.py|\w+/)`", "\n".join(table)))
    top = {p.name for p in PACKAGE.iterdir()
           if (p.suffix == ".py" and p.name not in {"__init__.py", "__main__.py"})
           or (p.is_dir() and (p / "__init__.py").exists())}
    shown = {n.rstrip("/") for n in named}
    for name in top:
        assert name in shown, f"README.md's module table lacks {name}"
    for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        for module in package.glob("*.py"):
            if module.name != "__init__.py":
                assert module.name in shown, f"README.md's module table lacks {package.name}/" \
                                             f"{module.name}"
    everything = top | {m.name for m in PACKAGE.rglob("*.py")}
    assert shown <= everything, f"README.md names modules that do not exist: {shown - everything}"


def test_no_import_circle() -> None:
    graph = {name: imported(name) for name in MODULES}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        return False

    # A package's __init__ re-exports its modules; it is not a circle for them to import a
    # sibling by its full name, so only edges between different top-level concerns count.
    circles = sorted((a, b) for a in graph for b in graph[a]
                     if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a))
    assert circles == [], f"modules that import each other (directly or not): {circles}"


def test_training_library_imports_only_the_shared_core() -> None:
    for name in MODULES:
        if not name.startswith("runai_entry.training"):
            continue
        outside = {m for m in imported(name) if not m.startswith("runai_entry.training")
                   and m != "runai_entry" and owner(m) not in SHARED_CORE}
        assert outside == set(), f"{name} imports supervisor modules {outside}"


def test_shared_core_is_standard_library_only() -> None:
    stdlib = sys.stdlib_module_names
    for name in MODULES:
        if owner(name) not in SHARED_CORE:
            continue
        ours = {m for m in imported(name) if m != "runai_entry" and owner(m) not in SHARED_CORE}
        assert ours == set(), f"{name} (shared core) imports {ours}"
        tree = ast.parse(MODULES[name].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= stdlib | {"runai_entry", "__future__"}, f"{name} imports {roots}"
