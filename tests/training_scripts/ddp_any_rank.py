"""torchrun worker: each rank's own answer, then what ``any_rank`` made of it, one line each."""

from __future__ import annotations

import os

import torch.distributed as dist

from runai_entry.training.legacy import any_rank
from tests.training_scripts.leave_group import exit_now, leave_group

dist.init_process_group("gloo")
rank = dist.get_rank()
for mine in ([True, False], [False, False], [False, True]):
    agreed = any_rank(mine[rank])
    # One write per line: both ranks share the pipe, and print() may split a line in two.
    os.write(1, f"rank {rank} mine={mine[rank]} agreed={agreed}\n".encode())
os.write(1, f"rank {rank} groups_alive {leave_group()}\n".encode())
exit_now(0)
