"""Importing the training library costs nothing: no framework, no CLI dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.training_scripts.procs import REPO, child_env

HEAVY = ("torch", "numpy", "keras", "click", "psutil", "structlog", "yaml", "threading",
         "transformers", "lightning", "pytorch_lightning")

PROBE = """
import json, sys
import runai_entry.training as training
from runai_entry.training import (StopFlag, preemption, atomic_write, resume_path, attempt,
                                  checkpoint_dir, heartbeat, saving, CheckpointError)
flag = StopFlag()
print(json.dumps({"loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def test_import_loads_no_heavy_module() -> None:
    """Checked in a fresh interpreter: pytest itself has already imported most of these."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(REPO),
        timeout=60,
        check=True,
    ).stdout
    report = json.loads(out)
    assert report["loaded"] == []  # how long it takes is a benchmark's question, not a test's


def test_heartbeat_is_the_function_whatever_was_imported_first() -> None:
    """The submodule ``heartbeat`` shares the function's name; once the stop flag imported it,
    ``from runai_entry.training import heartbeat`` must still give the function, not the module
    (0.2 gave the module, and ``heartbeat(step)`` raised TypeError)."""
    code = ("import sys\nfrom runai_entry.training import StopFlag\n"
            "from runai_entry.training import heartbeat, saving\n"
            "module = sys.modules['runai_entry.training.heartbeat']\n"
            "assert heartbeat is module.heartbeat and saving is module.saving, heartbeat\n")
    subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=str(REPO), timeout=60,
                   check=True)
