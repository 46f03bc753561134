"""The image for real: docker/Dockerfile.gpu built with podman on a Debian 12 root filesystem and
run under runc, runai-entry as the exec-form ENTRYPOINT (PID 1), ``sh -c "python3 train.py"``
as the command, ``runc kill TERM`` as the preemption: python saves and the container exits 1.

The work is scripts/container-check.sh, which a person can run by hand too; it exits 77 with the
reason where it cannot run (not root, podman/runc/debootstrap missing, no Debian mirror), and
this test skips with that reason. CI installs the tools (.ci/run), so it runs there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "container-check.sh"


@pytest.mark.slow
def test_preempted_container_saves_and_exits_1() -> None:
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ), stdin=subprocess.DEVNULL)
    if r.returncode == 77:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "python saved step-" in r.stdout and "the container exited 1" in r.stdout
    assert '"event": "preemption_started"' in r.stdout  # runai-entry's own log, as PID 1
    assert '"pid1": true' in r.stdout
