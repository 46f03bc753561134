"""torchrun worker (2 ranks, gloo): runai_entry.training.dist's collectives, and the
Checkpointer's refusal of an FSDP model with the file backend. Prints one line per check,
``rank R <check> <result>``, for tests/training/test_distributed.py.

``--own-group``: behave as under an NCCL-only default group (one that cannot reduce CPU
tensors), so that the library's agreements run on a gloo group of their own.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.distributed as dist

from runai_entry.core.errors import ConfigError
from runai_entry.training import dist as rd
from runai_entry.training.errors import CheckpointSaveFailed, CheckpointWriteFailed
from tests.training_scripts.leave_group import exit_now, leave_group


def say(text: str) -> None:
    os.write(1, f"rank {dist.get_rank()} {text}\n".encode())  # one write: ranks share the pipe


def main() -> int:
    dist.init_process_group("gloo")
    me = dist.get_rank()
    if "--own-group" in sys.argv:
        rd.needs_own_cpu_group = lambda device_types: True  # as an NCCL-only group would answer
    say(f"agree {rd.agree(me == 1, False, True)}")
    say(f"own_group {rd.cpu_group() is not None}")
    say(f"world {rd.rank()}/{rd.world_size()}")

    try:  # rank 1 fails; both raise the same type with rank 1's message
        rd.outcome(OSError(28, "No space left on device") if me == 1 else None, "saving x",
                   kind=CheckpointWriteFailed)
    except CheckpointWriteFailed as exc:
        say(f"outcome {type(exc).__name__}: {exc}")
    rd.outcome(None, "nothing")  # all well: returns on every rank
    say("outcome_ok returned")

    def fail() -> int:
        raise ValueError("bad header")

    try:
        rd.on_rank0(fail, "writing y")
    except CheckpointSaveFailed as exc:
        say(f"on_rank0 {type(exc).__name__}: {exc}")
    say(f"on_rank0_value {rd.on_rank0(lambda: 42, 'answering')}")
    say(f"gathered {rd.gather_objects({'r': me})}")

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from runai_entry.training import Checkpointer
    from runai_entry.training.stop import StopFlag

    model = torch.nn.Linear(4, 4)
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    with tempfile.TemporaryDirectory() as directory:
        try:
            Checkpointer(directory, flag=StopFlag(signals=[])).restore(model=model)
        except ConfigError as exc:
            say(f"fsdp_file ConfigError: {exc}")
    me_now = dist.get_rank()  # the group is gone once left
    os.write(1, f"rank {me_now} groups_alive {leave_group()}\n".encode())
    return 0


if __name__ == "__main__":
    exit_now(main())
