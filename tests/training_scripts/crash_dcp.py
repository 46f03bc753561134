"""Crash consistency of async DCP saves, for tests/training/test_fsdp.py (a few kills) and
bench/crash_consistency.py --backend dcp (as many as time allows).

fsdp_steps.py (2 ranks, FSDP2, gloo) saves every step with ``backend="dcp", async_save=True``,
so a background write is nearly always in flight. After it has seen a write published, the whole
job (workers, then torchrun) is SIGKILLed at a random moment. Then: every entry under a final
name must be a complete DCP checkpoint, and the next start must restore, from a step at least as
new as the newest the killed run saw published. That next start is the next victim.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

from tests.e2e.jobs import TORCHRUN, job_env
from tests.training_scripts.procs import script

PUBLISHED = re.compile(r"^published (\d+)$")


def kill_loop(tmp: Path, kills: int, rng: random.Random, spawn: Any,
              width: int = 256) -> dict[str, int]:
    from runai_entry.checkpoints import discover

    ckpt = tmp / "ckpt"
    stats = {"kills": 0, "restored": 0, "max_step": 0, "checked": 0, "temps_left": 0}
    argv = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
            script("fsdp_steps.py"), "--ckpt-dir", str(ckpt), "--every", "1", "--width",
            str(width), "--forever"]
    newest = 0
    for kill in range(kills + 1):
        with spawn(argv, env=job_env()) as run:
            start = int(run.expect(r"^start (\d+)$", timeout=180).group(1))
            assert start >= newest, f"kill {kill}: resumed at {start}, {newest} was published"
            if kill:
                stats["restored"] += 1
            if kill == kills:
                break  # the last start only had to restore
            run.expect(PUBLISHED, timeout=180)
            time.sleep(rng.uniform(0.0, 1.5))
            seen = [int(m.group(1)) for m in map(PUBLISHED.match, list(run.lines)) if m]
            run.kill()  # SIGKILL: every worker, then torchrun
        newest = max(newest, *seen)
        stats["kills"] += 1
        stats["max_step"] = newest
        found = discover(ckpt, timeout=None, max_candidates=None)
        finals = sorted(p.name for p in ckpt.iterdir() if not p.name.startswith("."))
        complete = sorted(c.name for c in found.candidates)
        assert finals == complete, f"kill {kill}: torn under a final name: {finals} {complete}"
        stats["checked"] += len(finals)
        stats["temps_left"] += sum(p.name.startswith(".") for p in ckpt.iterdir())
    return stats
