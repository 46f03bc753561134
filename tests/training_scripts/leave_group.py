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

    First what a normal exit does while the interpreter is whole: every non-daemon thread waited
    for (a background checkpoint write finishes) and the streams flushed. Then ``os._exit``.

    Why: a gloo rank can abort in the teardown after every line of a good run was printed (exit
    -6, "terminate called without an active exception"; seen in CI with ddp_stop.py, and in
    dcp_layouts.py before). A core dump shows the race: a gloo worker thread destroys a finished
    collective's work a moment after the main thread saw it done; the work holds Python objects
    (its tensors, the autograd context of a collective started in ``backward()``), so the
    thread takes the GIL, and once the interpreter is finalising Python ends such a thread with
    ``pthread_exit``, whose unwinding through the C++ destructor aborts. A plain DDP script on
    gloo (the model in ``main()``, ``destroy_process_group()``, return) did so 9 times in 40
    under load. That is torch's, not what these tests test; a group the library kept alive
    made it frequent (7 runs in 40), and :func:`leave_group` reports that on every run.

    No ``gc.collect()`` here: freeing a DDP model whose reducer holds the last reference to its
    group destroys the group with the GIL held, and that joins the very worker thread waiting for
    the GIL (a hang, seen once in 10 runs with the group freed that way).
    """
    # The interpreter's own first step of an exit, private but there since 3.4: it stops idle
    # concurrent.futures pools (torch's DCP async executor keeps one) and then joins every
    # non-daemon thread. A plain join of each would wait for ever on an idle pool worker.
    threading._shutdown()  # type: ignore[attr-defined]
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
