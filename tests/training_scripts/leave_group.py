"""How the torchrun test workers leave their process group, and what that proves.

``dist.destroy_process_group()`` must free every group torch made: one that something else still
holds is freed only while the interpreter shuts down, and gloo's threads then abort the worker
("terminate called without an active exception", exit -6) after a run that went well. The
library's own gloo groups (the agreements', the background writer's) must not be that something.
"""

from __future__ import annotations

import gc
import weakref

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
