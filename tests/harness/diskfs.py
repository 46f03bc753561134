"""The storage conditions the checkpoint tests (and bench/) set up: a file's pages dropped from
the page cache, and a filesystem that refuses O_DIRECT (ramfs, in a child's own mount namespace).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = str(Path(__file__).parents[2])


def drop_cache(path: str) -> None:
    """Drop ``path``'s pages from the page cache (after an fsync, so none is dirty), leaving other
    files' cached: the next read comes from the disk, as a requeued job's on a fresh node."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_on_ramfs(tmp_path: Path, body: str) -> None:
    """Run ``body`` (Python; ``ramfs`` names the mounted directory, the repository is importable)
    in a child with ramfs mounted in a private mount namespace, which the child's exit takes
    away; it must print ``loaded`` last. Skips where ramfs cannot be mounted."""
    import pytest  # here: bench/ imports drop_cache on machines without the test extra

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("mounting ramfs needs root and unshare")
    mountpoint = tmp_path / "ramfs"
    mountpoint.mkdir()
    code = (f"import sys\nsys.path.insert(0, {REPO!r})\nfrom pathlib import Path\n"
            f"ramfs = Path({str(mountpoint)!r})\n" + textwrap.dedent(body))
    command = f"mount -t ramfs ramfs {mountpoint} && exec {sys.executable} -c \"$0\""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           command, code], capture_output=True, text=True, timeout=120)
    refused = "permission denied" in done.stderr.lower() or "not permitted" in done.stderr
    if done.returncode and "mount" in done.stderr and refused:
        pytest.skip(f"cannot mount ramfs here: {done.stderr.strip()}")
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr
