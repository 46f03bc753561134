"""DDP restore with a replicated state: one read per rank, or rank 0 reads and broadcasts.

Two ranks (``--ranks``) on this machine (CPU, gloo over loopback), each with its own copy of
issue 18's state (8 x 4096² Linear + Adam, 1.61 GB), restore the same checkpoint, page cache
dropped before each try, in a fresh random order each round:

* ``every rank reads``: each rank calls ``tensorfile.load(path, into=its live state)``, as the
  Checkpointer's restore does today (O_DIRECT: the two reads share the disk);
* ``rank 0 reads + broadcast``: rank 0 loads, then every tensor goes to the others
  with ``dist.broadcast`` straight into the other ranks' live tensors.

The time of a try is the slowest rank's, from a barrier before to a barrier after.

    .venv/bin/python bench/restore_ddp.py              # 4 rounds, about 2 minutes
    .venv/bin/python bench/restore_ddp.py --ranks 4    # 6.4 GB of host memory
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from typing import Any

import common

GB = 1e9
LABELS = ("every rank reads", "rank 0 reads + broadcast")


def _rank(rank: int, world: int, port: int, path: str, rounds: int, seed: int,
          out: Any) -> None:
    import torch
    import torch.distributed as dist

    from runai_entry.training._io import tensorfile

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    model = torch.nn.Sequential(*(torch.nn.Linear(4096, 4096, bias=False) for _ in range(8)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    live = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    tensors = list(live["model"].values()) + [
        t for s in optimizer.state.values() for t in s.values() if t.numel() > 1]
    order = random.Random(seed)
    times: dict[str, list[float]] = {label: [] for label in LABELS}
    for _ in range(rounds):
        labels = list(LABELS)
        order.shuffle(labels)  # the same order on both ranks: the same seed
        for label in labels:
            if rank == 0:
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            dist.barrier()
            started = time.perf_counter()
            if label == "every rank reads":
                tensorfile.load(path, into=live)
            else:
                if rank == 0:
                    tensorfile.load(path, into=live)
                for t in tensors:
                    dist.broadcast(t, src=0)
            dist.barrier()
            times[label].append(time.perf_counter() - started)
    if rank == 0:
        out.put(times)
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args()
    report = common.Report(f"DDP restore, {args.ranks} ranks (CPU, gloo)", args)
    import torch
    import torch.multiprocessing as mp

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    rounds = 2 if args.quick else 4
    directory = common.temp_dir("restore-ddp", args.dir)
    print(common.machine_load(), flush=True)
    model = torch.nn.Sequential(*(torch.nn.Linear(4096, 4096, bias=False) for _ in range(8)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    saver = Checkpointer(directory, keep=1, every_steps=1, flag=StopFlag(signals=[]))
    saver.restore(model=model, optimizer=optimizer)
    saver.step(1)
    del model, optimizer, saver
    path = os.path.join(directory, os.listdir(directory)[0])
    nbytes = os.path.getsize(path)
    print(f"checkpoint: {nbytes / GB:.2f} GB", flush=True)
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_rank, args=(r, args.ranks, port, path, rounds, 18, out))
             for r in range(args.ranks)]
    for proc in procs:
        proc.start()
    times = out.get()
    for proc in procs:
        proc.join()
    stats = common.print_stats(f"DDP restore, {args.ranks} ranks", "s", times,
                               baseline=LABELS[0])
    each, bcast = (statistics.median(times[label]) for label in LABELS)
    faster = LABELS[0] if each <= bcast else LABELS[1]
    report.row(f"DDP, {args.ranks} ranks, 1.6 GB: one read per rank vs rank 0 reads + broadcast",
               {"runai-entry": f"every rank reads {each:.2f} s "
                               f"({args.ranks * nbytes / GB / each:.2f} GB/s read in all)",
                "reference": f"rank 0 reads + broadcast {bcast:.2f} s",
                "ratio": f"{bcast / each:.2f}x"},
               "choose (the Checkpointer broadcasts: storage is read once per job)",
               f"faster here: {faster}")
    report.note(common.machine_load())
    del stats
    report.print_markdown()
    report.write()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
