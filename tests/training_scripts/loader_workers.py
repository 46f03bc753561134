"""A Checkpointer loop fed by a DataLoader with worker processes, as real jobs are written.

PyTorch's workers die of SIGTERM (a C handler re-raises it) and the trainer then raises
``DataLoader worker (pid N) is killed by signal`` in its main thread: a supervisor that signals
them instead of the trainer turns every preemption into a crash. Prints ``step N`` per step (rank
0), ``stopped at step N`` after the stop-time save (exit 1), ``resumed from NAME at step N``,
``worker pids A,B`` once the workers run, and at the end ``weights <sha256>``. Any exception is
printed as ``rank R raised <error>`` (exit 3).

``--start-method``: the workers' multiprocessing context. ``--stateful``: torchdata's
``StatefulDataLoader`` as the Checkpointer's data position (exact resume with workers); otherwise a
plain DataLoader on a ResumableSampler. ``--service``: a helper process the trainer must still
talk to while it saves (as a logging service is): the save asks it for an answer, and the
trainer prints ``service answered`` or raises.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from runai_entry.training import Checkpointer, preemption
from tests.training_scripts.leave_group import exit_now
from tests.training_scripts.tiny_run import BATCH, mlp, optimizer_for, train_step


def serve(conn: Any) -> None:
    """The service: answers every request until its trainer hangs up. A forked child inherits
    the trainer's Python handler, which only records the stop: a real service has its own."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        conn.send(f"ack {request}")


def dataset(samples: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(42)
    x = torch.randn(samples, 16, generator=generator)
    return torch.utils.data.TensorDataset(x, torch.randn(samples, 1, generator=generator))


def loader_for(args: argparse.Namespace, rank: int, world: int) -> tuple[Any, Any]:
    """(the loader, what the Checkpointer saves as the data position)."""
    data = dataset(96)
    workers = {"num_workers": args.workers, "multiprocessing_context": args.start_method,
               "persistent_workers": True} if args.workers else {}
    if args.stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader

        shard = torch.utils.data.Subset(data, range(rank, len(data), world))
        loader = StatefulDataLoader(shard, batch_size=BATCH, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(1234 + rank),
                                    **workers)
        return loader, loader
    from runai_entry.training.continuity import ResumableSampler

    sampler = ResumableSampler(len(data), seed=1234, num_replicas=world, rank=rank)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, sampler=sampler, drop_last=True,
                                         generator=torch.Generator(), **workers)
    return loader, sampler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--start-method", default="fork", choices=("fork", "spawn", "forkserver"))
    parser.add_argument("--stateful", action="store_true")
    parser.add_argument("--service", action="store_true")
    parser.add_argument("--resume-from")  # runai-entry's flag: the Checkpointer reads its variable
    args = parser.parse_args()

    flag = preemption()
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    def say(text: str) -> None:
        if rank == 0:
            os.write(1, f"{text}\n".encode())  # one write: ranks share the pipe

    service = None
    if args.service:
        ours, theirs = multiprocessing.get_context(args.start_method).Pipe()
        service = multiprocessing.get_context(args.start_method).Process(
            target=serve, args=(theirs,), daemon=True)
        service.start()

    torch.manual_seed(0)
    loader, position = loader_for(args, rank, world)
    model = mlp(16)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer, scheduler = optimizer_for(model)
    torch.manual_seed(100 + rank)
    ckpt = Checkpointer(args.ckpt_dir, keep=2, every_steps=args.every, flag=flag)
    step = ckpt.restore(model=model, optimizer=optimizer, scheduler=scheduler, sampler=position)
    if ckpt.resumed_from:
        say(f"resumed from {os.path.basename(ckpt.resumed_from)} at step {step}")
    announced = False
    try:
        while step < args.steps and not ckpt.done:
            for xb, yb in loader:
                if not announced:  # the workers run once the first batch is in
                    kids = [p.pid for p in multiprocessing.active_children()]
                    say(f"worker pids {','.join(map(str, kids))}")
                    announced = True
                train_step(model, optimizer, scheduler, xb, yb)
                step += 1
                say(f"step {step}")
                if flag.should_stop() and service is not None:
                    ours.send(step)  # the save needs its service, as a logger's flush does
                    say(f"service answered {ours.recv()}")
                if ckpt.step(step, last=step == args.steps):
                    break
                time.sleep(args.step_delay)
    except Exception as exc:  # the failure under test: say it, in one line
        os.write(1, f"rank {rank} raised {type(exc).__name__}: {exc}\n".encode())
        return 3
    if ckpt.exit_code:
        say(f"stopped at step {step}")
    else:
        weights = b"".join(v.numpy().tobytes() for v in model.state_dict().values())
        say(f"weights {hashlib.sha256(weights).hexdigest()}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return ckpt.exit_code


if __name__ == "__main__":
    code = main()
    if "RANK" in os.environ:  # a gloo worker: see exit_now
        exit_now(code)
    sys.exit(code)
