"""Helpers for the training-library tests: the scripts they run, and the shared spawning
helpers (tests/harness/spawning.py) they run them with."""

from __future__ import annotations

from pathlib import Path

from tests.harness.spawning import PYTHON, REPO, Child, child_env, free_port, spawn

__all__ = ["PYTHON", "REPO", "SCRIPTS", "Child", "child_env", "free_port", "script", "spawn"]

SCRIPTS = Path(__file__).resolve().parent


def script(name: str) -> str:
    return str(SCRIPTS / name)
