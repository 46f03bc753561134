"""What gets published: one version, a license, metadata that pins no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import runai_entry
from tests.harness.spawning import ENTRY

ROOT = Path(__file__).parent.parent
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")


class TestVersion:
    def test_version_prints_the_one_written_in_the_package(self) -> None:
        """--version prints runai_entry.__version__, which pyproject reads (dynamic)."""
        r = subprocess.run([*ENTRY, "--version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"runai-entry, version {runai_entry.__version__}"
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert "version" not in project and "version" in project["dynamic"]

    def test_changelog_names_the_version(self) -> None:
        assert f"## [{runai_entry.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


class TestMetadata:
    def test_license_file_is_the_declared_license(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert project["license"] == "Apache-2.0"
        assert "Apache License\n" in (ROOT / "LICENSE").read_text()[:200]

    def test_no_extra_pins_torch_and_constraints_hold_the_local_build(self) -> None:
        """A user's CUDA torch must never be replaced by `pip install runai-entry[demo]`;
        every torch requirement must still accept the local 2.13.0 these machines carry."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        torch = [r for extra in project["optional-dependencies"].values() for r in extra
                 if re.match(r"torch\b", r)]
        assert torch and all("==" not in r for r in torch)
        assert all(r in ("torch", "torch>=2.1") for r in torch)
        assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()

    def test_readme_commands_use_the_constraints(self) -> None:
        text = (ROOT / "README.md").read_text()
        block = text.split("```sh\n", 1)[1].split("```", 1)[0]
        commands = [line for line in block.splitlines() if line.strip()]
        assert len(commands) == 2
        assert all("pip install -c constraints.txt" in c for c in commands)


def test_the_installed_distribution_matches() -> None:
    """The installed metadata (editable or not) carries the same version."""
    from importlib.metadata import version

    assert version("runai-entry") == runai_entry.__version__
    assert sys.version_info >= (3, 10)
