"""As PID 1 of a PID namespace (``unshare --fork --pid --mount-proc``): reap every orphan.

The preemption, forwarding and cleanup tests also run as PID 1 (their ``pid1`` parameter).
"""

from __future__ import annotations

import sys

# The job makes 200 orphans that exit at once (their parent is gone before they are), then
# counts the zombies left in the namespace. Only PID 1 can reap them.
ORPHANS = """
import os, time
for _ in range(200):
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.05)
            os._exit(0)
        os._exit(0)
    os.wait()
time.sleep(1.0)
zombies = 0
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        state = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]
    except OSError:
        continue
    zombies += state == 'Z'
print('pid', os.getpid(), 'ppid', os.getppid(), 'zombies', zombies, flush=True)
"""


class TestReaping:
    def test_orphaned_zombies_are_reaped_as_pid1(self, entry) -> None:
        """Orphans re-parented to PID 1 are all reaped; none is left a zombie."""
        e = entry([sys.executable, "-c", ORPHANS], pid1=True)
        m = e.expect(r"pid (\d+) ppid (\d+) zombies (\d+)")
        assert m.group(2) == "1"  # the job's parent really is runai-entry as PID 1
        assert m.group(3) == "0"
        assert e.wait() == 0
        assert e.event("started")["pid1"] is True

    def test_exit_code_passes_through_pid1(self, entry) -> None:
        """The command's exit code comes out of the namespace unchanged."""
        e = entry(["sh", "-c", "exit 42"], pid1=True)
        assert e.wait() == 42
