"""Importing the training library costs nothing: no framework, no CLI dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.training_scripts.procs import REPO, child_env

HEAVY = ("torch", "numpy", "keras", "click", "psutil", "structlog", "yaml", "threading",
         "transformers", "lightning", "pytorch_lightning")

PROBE = """
import json, sys, time
t = time.perf_counter()
import runai_entry.training as training
from runai_entry.training import (StopFlag, preemption, atomic_write, prune, Periodic,
                                  resume_path, attempt, clean_stale_temps)
flag = StopFlag()
elapsed = time.perf_counter() - t
print(json.dumps({"loaded": sorted(m for m in %r if m in sys.modules), "seconds": elapsed,
                  "all": training.__all__}))
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
    assert report["loaded"] == []
    assert report["seconds"] < 0.2
    # What a loop needs, no plumbing (0.1.0 exported 16 names; they still resolve).
    assert report["all"] == ["Checkpointer", "StopFlag", "atomic_write", "attempt",
                             "checkpoint_dir", "heartbeat", "preemption", "resume_path",
                             "saving"]


def test_every_exported_name_resolves() -> None:
    import runai_entry.training as training

    for name in training.__all__:
        assert getattr(training, name) is not None
    assert set(training.__all__) <= set(dir(training))
