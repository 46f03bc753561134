"""resume_path and attempt: runai-entry's environment, the user's flag, discovery."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from runai_entry.core import envvars
from runai_entry.core.errors import ConfigError
from runai_entry.training.resume import attempt, checkpoint_dir, resume_path

# A .pt that verification accepts (a complete pickle stream).
PICKLE = pickle.dumps("weights")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (envvars.RESUME_FROM, envvars.CHECKPOINT_DIR, envvars.ATTEMPT):
        monkeypatch.delenv(name, raising=False)


class TestResumePath:
    def test_nothing_known_means_start_fresh(self, tmp_path: Path) -> None:
        assert resume_path() is None
        assert resume_path(directory=tmp_path / "absent") is None
        assert resume_path(directory=tmp_path) is None

    def test_explicit_beats_env_beats_discovery(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "ckpt-7.pt").write_bytes(PICKLE)
        (tmp_path / "ckpt-3.pt").write_bytes(PICKLE)
        assert resume_path(directory=tmp_path) == str(tmp_path / "ckpt-7.pt")
        monkeypatch.setenv(envvars.CHECKPOINT_DIR, str(tmp_path))
        assert resume_path() == str(tmp_path / "ckpt-7.pt")
        monkeypatch.setenv(envvars.RESUME_FROM, "/from/env.pt")
        assert resume_path(directory=tmp_path) == "/from/env.pt"
        assert resume_path("/from/flag.pt", directory=tmp_path) == "/from/flag.pt"
        assert resume_path("", directory=tmp_path) == "/from/env.pt"

    def test_pattern_is_passed_to_discovery(self, tmp_path: Path) -> None:
        (tmp_path / "ckpt-7.pt").write_bytes(PICKLE)
        (tmp_path / "epoch-00002.pt").write_bytes(PICKLE)
        found = resume_path(directory=tmp_path, pattern="epoch-*.pt")
        assert found == str(tmp_path / "epoch-00002.pt")

    def test_checkpoint_dir(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert checkpoint_dir() is None and checkpoint_dir("/d") == "/d"
        monkeypatch.setenv(envvars.CHECKPOINT_DIR, "/env")
        assert checkpoint_dir("/d") == "/env"


class TestAttempt:
    def test_unknown_without_runai_entry(self) -> None:
        assert attempt() is None

    def test_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(envvars.ATTEMPT, "3")
        assert attempt() == 3

    @pytest.mark.parametrize("value", ["zero", "0", "-1", "1.5"])
    def test_bad_values_are_config_errors(
        self, value: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(envvars.ATTEMPT, value)
        with pytest.raises(ConfigError):
            attempt()


def test_resume_path_passes_over_a_torn_file_as_runai_entry_does(tmp_path: Path) -> None:
    """One meaning of "the newest checkpoint": the library verifies, as runai-entry does."""
    (tmp_path / "step-1.pt").write_bytes(PICKLE)
    (tmp_path / "step-2.pt").write_bytes(b"x" * 100)  # cut by a kill
    assert resume_path(directory=tmp_path) == str(tmp_path / "step-1.pt")
