"""Crash consistency, once: a fork server for checkpoint writers, and the loop that SIGKILLs them.

Two writers use it: crash_writer.py (save_training_state, and the in-place control) and
crash_async.py (the Checkpointer's async saves). The server imports torch once, then each
``run <dir> <log>`` line on stdin forks a writer (stdout ``pid <n>``) and ``reap`` answers
``reaped <status>``. The writer appends ``<word> <step>`` to <log> each time a save is done.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def serve(writer: Callable[[str, str], None]) -> None:
    """The fork server's loop on stdin; the caller has imported torch already."""
    child = 0
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            child = os.fork()
            if child == 0:
                try:
                    writer(command[1], command[2])
                finally:
                    os._exit(3)  # only reached on an error: the loop reads it as a failure
            print(f"pid {child}", flush=True)
        elif command[0] == "reap":
            _, status = os.waitpid(child, 0)
            print(f"reaped {status}", flush=True)


def kill_loop(argv: Sequence[str], tmp: Path, kills: int, pause: Callable[[int], float],
              final: re.Pattern[str], check_file: Callable[[Path], int], word: str,
              spawn: Any) -> dict[str, int]:
    """SIGKILL a writer ``pause(kill)`` seconds after each start; after each kill, every final
    name loads and holds its step (``check_file``), temporaries are only ours, and discovery
    finds a checkpoint at least as new as the newest the writer logged as done."""
    from runai_entry.checkpoints import newest_checkpoint
    from runai_entry.training.atomic import is_temp_name

    ckpts, log = tmp / "ckpts", tmp / "done.log"
    ckpts.mkdir()
    stats = {"kills": 0, "temps_left": 0, "max_step": 0, "checked": 0}
    with spawn(list(argv), stdin=subprocess.PIPE) as zygote:
        for kill in range(kills):
            zygote.proc.stdin.write(f"run {ckpts} {log}\n")
            zygote.proc.stdin.flush()
            pid = int(zygote.expect(r"^pid (\d+)").group(1))
            time.sleep(pause(kill))
            os.kill(pid, signal.SIGKILL)
            zygote.proc.stdin.write("reap\n")
            zygote.proc.stdin.flush()
            status = int(zygote.expect(r"^reaped (\d+)").group(1))
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"kill {kill}: the writer died by itself (status {status}):\n{zygote.output()}"
            )
            stats["kills"] += 1
            names = os.listdir(ckpts)
            temps = [n for n in names if n.startswith(".")]
            assert all(is_temp_name(n) for n in temps), temps
            stats["temps_left"] += len(temps)
            finals = [ckpts / n for n in names if not n.startswith(".")]
            assert all(final.match(p.name) for p in finals), names
            for path in finals:
                check_file(path)  # a torn file fails to load or to match its name
                stats["checked"] += 1
            done = ([int(x) for x in re.findall(rf"{word} (\d+)", log.read_text())]
                    if log.exists() else [])
            newest = newest_checkpoint(ckpts, timeout=None)
            if done:
                assert newest is not None, f"kill {kill}: nothing to resume after {done[-1]}"
                assert check_file(Path(newest)) >= done[-1]
                stats["max_step"] = max(stats["max_step"], done[-1])
    return stats


def uniform(rng: random.Random, low: float, high: float,
            first: float | None = None) -> Callable[[int], float]:
    """A pause drawn from [low, high]; ``first`` for the first kill, when given."""
    return lambda kill: first if first is not None and kill == 0 else rng.uniform(low, high)
