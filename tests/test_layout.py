"""The package's shape, held by folder: each folder imports only the folders before it in a run,
`core/` and `checkpoints/` only the standard library, the supervisor never the training library,
no module imports one that imports it back, and README.md's table is the folders' own."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "runai_entry"

#: Where each part of the package may reach: a run goes config → supervisor → history, the
#: modes beside cli.py drive all of it, and the training library, which runs inside the job,
#: shares only the standard-library core and checkpoint discovery (it resumes without
#: runai-entry too). "top" is cli.py, drill.py, inspection.py and the package's own files.
ALLOWED = {
    "core": set(),
    "checkpoints": {"core"},
    "config": {"core"},
    "history": {"core", "checkpoints", "config"},
    "supervisor": {"core", "checkpoints", "config", "history"},
    "top": {"core", "checkpoints", "config", "history", "supervisor"},
    "training": {"core", "checkpoints"},
}
#: Folders that may import nothing outside the standard library, not even lazily: importing the
#: training library must stay cheap, and the supervisor's core must not drag in a framework.
STDLIB_ONLY = {"core", "checkpoints"}


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = module_names()


def folder(name: str) -> str:
    """The folder a module lives in ("top" for the modes beside cli.py); training's private
    subpackage belongs to training."""
    parts = name.split(".")
    is_package = MODULES[name].name == "__init__.py"
    if len(parts) == 1 or (len(parts) == 2 and not is_package):
        return "top"
    return parts[1]


def _typing_only(tree: ast.AST) -> set[int]:
    return {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
            and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}


def imported(name: str) -> set[str]:
    """Our modules that ``name`` imports, at its top or inside functions (not for typing)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    typing_only = _typing_only(tree)
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


def third_party(name: str) -> set[str]:
    """Top-level packages outside the standard library and ours that ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text())
    typing_only = _typing_only(tree)
    roots: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            roots.add((node.module or "").split(".")[0])
    return roots - set(sys.stdlib_module_names) - {"runai_entry", "__future__"}


def test_every_module_belongs_to_a_known_folder() -> None:
    unknown = {name: folder(name) for name in MODULES if folder(name) not in ALLOWED}
    assert unknown == {}, f"modules in folders tests/test_layout.py does not place: {unknown}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_folder_imports_only_the_folders_before_it(name: str) -> None:
    here = folder(name)
    outside = {m for m in imported(name) if m != "runai_entry" and folder(m) != here
               and folder(m) not in ALLOWED[here]}
    assert outside == set(), f"{name} ({here}/) imports {sorted(outside)}"


def test_the_supervisor_never_imports_the_training_library() -> None:
    # Held by ALLOWED too; said on its own because it is the rule a change most often breaks.
    offenders = {name: sorted(m for m in imported(name) if folder(m) == "training")
                 for name in MODULES if folder(name) != "training"}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if folder(n) in STDLIB_ONLY))
def test_core_and_checkpoints_import_only_the_standard_library(name: str) -> None:
    assert third_party(name) == set(), f"{name} imports {third_party(name)}"


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

    # A package's __init__ may re-export its own modules; only edges between a module and
    # something outside its package count as a circle.
    circles = sorted((a, b) for a in graph for b in graph[a]
                     if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a))
    assert circles == [], f"modules that import each other (directly or not): {circles}"


def _module_table() -> Any:
    spec = importlib.util.spec_from_file_location("module_table", REPO / "scripts" /
                                                  "module_table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


def test_readme_module_table_is_the_folders_own() -> None:
    table = _module_table()
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(table.BEGIN), readme.index(table.END) + len(table.END)
    assert readme[start:end] == table.table(), (
        "README.md's module table differs from the folders: run python scripts/module_table.py "
        "--write")


def test_module_table_rows_cover_every_folder_and_mode() -> None:
    assert _module_table().unlisted() == []


def test_every_folder_says_what_it_holds() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(REPO)} has no docstring: the README's table reads it"


def test_the_path_to_the_start_loads_no_report() -> None:
    """What runs before the job starts (the directory's checks, the crash-loop guard) loads none
    of the history's readers: goodput and the report are drawn after the job, or by --inspect.
    Checked in a fresh interpreter, where the imports really happen."""
    readers = ("runai_entry.history.goodput", "runai_entry.history.report",
               "runai_entry.history.timeline", "statistics")
    code = ("import sys, runai_entry.supervisor.before_and_after\n"
            f"print(sorted(m for m in {readers!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True).stdout.strip()
    assert loaded == "[]", f"before_and_after loads {loaded}"
