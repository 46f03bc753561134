"""How the torchrun test workers leave their process group and end, and what that proves.

``dist.destroy_process_group()`` must free every group torch made: one that something else still
holds is freed only while the interpreter shuts down, and gloo's threads then abort the worker
("terminate called without an active exception", exit -6) after a run that went well. The
library's own gloo groups (the agreements', the background writer's) must not be that something:
:func:`leave_group` says which groups outlived the destroy, and the tests assert on it.

The interpreter's teardown itself is torch's, and not under test: :func:`exit_now` skips it.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from typing import NoReturn

import torch.distributed as dist
from torch.distributed import distributed_c10d


def leave_group() -> str:
    """Leave together, destroy every group, and say which groups are still alive:
    ``default=D others=N`` (0 and 0: none). A model the script still holds (DDP, FSDP's mesh)
    keeps the default group alive by itself; only ``others`` is then the library's to answer for.
    """
    # Every rank out of the group's last work before any tears gloo down: a rank destroying its
    # group while the other still uses it aborts too.
    dist.barrier()
    default = weakref.ref(distributed_c10d._get_default_group())
    others = [weakref.ref(g) for g in distributed_c10d._world.pg_map if g is not default()]
    dist.destroy_process_group()
    gc.collect()
    return f"default={int(default() is not None)} others={sum(r() is not None for r in others)}"


def exit_now(code: int) -> NoReturn:
    """End this worker with ``code`` as a normal exit would, but without the teardown.

    First what a normal exit does while the interpreter is whole: unreachable objects collected
    (a DataLoader's persistent workers are stopped by its iterator's finaliser), every
    non-daemon thread waited for (a background checkpoint write finishes), the streams flushed.
    Then ``os._exit``. The teardown is skipped because a gloo worker aborts in it now and then
    (exit -6, "terminate called without an active exception") after every line of a good run
    was printed: once in CI (ddp_stop.py, after its destroy_process_group(); 0 in 70 runs on a
    2-core machine, under load or pinned to one core), and in dcp_layouts.py before. What the
    teardown could say about the library, a group it keeps alive, :func:`leave_group` reports
    on every run instead.
    """
    gc.collect()
    # The interpreter's own first step of an exit, private but there since 3.4: it stops idle
    # concurrent.futures pools (torch's DCP async executor keeps one) and then joins every
    # non-daemon thread. A plain join of each would wait for ever on an idle pool worker.
    threading._shutdown()  # type: ignore[attr-defined]
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
