"""Crash consistency of the Checkpointer's async saves: a fork server, and the kill loop that
tests/test_training_checkpointer.py (a few kills) and bench/crash_consistency.py (200) share.

Run as a script it is the fork server: torch is imported once, then each ``run <dir> <log>`` line
on stdin forks a writer that trains a fake model whose every value encodes the step, saves through
``Checkpointer(async_save=True, every_steps=2, keep=2)`` and appends ``published <step>`` to <log>
each time a background write was seen published; ``reap`` answers ``reaped <status>``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

FINAL = re.compile(r"^step-(\d{8})\.safetensors$")
WIDTH = 512  # 1 MiB of weights: writes long enough for kills to land in them


def writer(directory: str, log: str) -> None:
    import torch

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    model = torch.nn.Linear(WIDTH, WIDTH)
    # No signal handler: the test's SIGKILL is the only way out.
    ckpt = Checkpointer(directory, keep=2, every_steps=2, async_save=True,
                        flag=StopFlag(signals=[], timeout=None))
    step = ckpt.restore(model=model)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    seen = ckpt.published
    while True:
        step += 1
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.bias.fill_(float(-step))
        ckpt.step(step)
        if ckpt.published != seen:
            seen = ckpt.published
            os.write(log_fd, f"published {seen}\n".encode())


def serve() -> None:
    import torch  # noqa: F401  (once, before the forks)

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


def check_file(path: Path) -> int:
    """Load a published checkpoint; its content must be the step its name says."""
    import torch

    from runai_entry.training import tensorfile

    state = tensorfile.load(str(path))
    match = FINAL.match(path.name)
    assert match is not None, path
    step = int(match.group(1))
    assert state["step"] == step, (path, state["step"])
    assert torch.equal(state["model"]["weight"], torch.full((WIDTH, WIDTH), float(step))), path
    assert torch.equal(state["model"]["bias"], torch.full((WIDTH,), float(-step))), path
    return step


def kill_loop(tmp: Path, kills: int, rng: random.Random, spawn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """SIGKILL writers at random instants; after each kill every final name loads and holds its
    step, and discovery finds one at least as new as the newest the writer saw published."""
    from runai_entry.checkpoints import newest_checkpoint
    from runai_entry.training.atomic import is_temp_name

    ckpts, log = tmp / "ckpts", tmp / "published.log"
    ckpts.mkdir()
    stats = {"kills": 0, "temps_left": 0, "max_step": 0, "checked": 0}
    with spawn([sys.executable, __file__], stdin=subprocess.PIPE) as zygote:
        for kill in range(kills):
            zygote.proc.stdin.write(f"run {ckpts} {log}\n")
            zygote.proc.stdin.flush()
            pid = int(zygote.expect(r"^pid (\d+)").group(1))
            # Past the restore, into the saves; the first writer gets long enough to publish
            # something even on a loaded machine, or the loop would check nothing.
            time.sleep(2.0 if kill == 0 else rng.uniform(0.05, 0.6))
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
            assert all(FINAL.match(p.name) for p in finals), names
            for path in finals:
                check_file(path)  # a torn file fails to load or to match its name
                stats["checked"] += 1
            published = (
                [int(x) for x in re.findall(r"published (\d+)", log.read_text())]
                if log.exists() else []
            )
            newest = newest_checkpoint(ckpts, timeout=None)
            if published:
                assert newest is not None, f"kill {kill}: nothing to resume after {published[-1]}"
                assert check_file(Path(newest)) >= published[-1]
                stats["max_step"] = max(stats["max_step"], published[-1])
    return stats


if __name__ == "__main__":
    serve()
