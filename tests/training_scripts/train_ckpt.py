"""A small PyTorch run on the Checkpointer, alone or under torchrun (gloo), for the tests.

MLP with dropout, Adam, StepLR, a ResumableSampler, Python and NumPy randomness in the loss. Under
torchrun every rank seeds its RNGs differently after building the model, so the dropout masks
differ by rank and only a resume that restores *each* rank's RNG ends bit-identical. Prints
``step N`` per step (rank 0), ``stopped at N`` on the stop signal (exit 1), the final weights to
--out. ``--fail-after N``: once step N is saved, rank 0 may write no file larger than 64 KiB
(RLIMIT_FSIZE, a real write error mid-file, like a full disk); the script then prints
``rank R raised <error>`` and exits 3.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from runai_entry.training import Checkpointer, preemption
from tests.training_scripts.leave_group import exit_now
from tests.training_scripts.tiny_run import data, mlp, optimizer_for, train_step


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--async-save", action="store_true")
    parser.add_argument("--background-copy", action="store_true")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--fail-after", type=int)
    parser.add_argument("--backend", default="file")
    parser.add_argument("--every-seconds", type=float)
    parser.add_argument("--agree-every", type=int, default=1)
    args = parser.parse_args()

    flag = preemption()
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    os.write(1, f"rank {rank} pid {os.getpid()}\n".encode())

    def say(text: str) -> None:
        if rank == 0:
            os.write(1, f"{text}\n".encode())  # one write: ranks share the pipe

    torch.manual_seed(0)
    _, sampler, loader = data(96, world=world, rank=rank)
    model = mlp(args.width)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer, scheduler = optimizer_for(model)
    torch.manual_seed(100 + rank)  # every rank its own dropout masks: see the docstring
    random.seed(rank)
    np.random.seed(rank)

    ckpt = Checkpointer(args.ckpt_dir, keep=2, every_steps=args.every,
                        every_seconds=args.every_seconds, agree_every=args.agree_every,
                        async_save=args.async_save, background_copy=args.background_copy,
                        backend=args.backend, flag=flag)
    step = ckpt.restore(model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler)
    if ckpt.resumed_from:
        say(f"resumed from {os.path.basename(ckpt.resumed_from)} at step {step}")
    try:
        while step < args.steps and not ckpt.done:
            for xb, yb in loader:
                train_step(model, optimizer, scheduler, xb, yb)
                step += 1
                say(f"step {step}")
                if ckpt.step(step, last=step == args.steps):
                    break
                if args.fail_after is not None and ckpt.last_saved == args.fail_after:
                    ckpt.close()  # the write of that step is done: now the "disk" fills up
                    if rank == 0:
                        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
                    args.fail_after = None
                time.sleep(args.step_delay)
    except RuntimeError as exc:
        os.write(1, f"rank {rank} raised {type(exc).__name__}: {exc}\n".encode())
        return 3
    if ckpt.exit_code:
        say(f"stopped at step {step}")
    elif rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, args.out)
        say("finished")
    if distributed:
        # As in ddp_steps.py: every rank out of the group's last work before any tears gloo
        # down, or one may abort in the teardown ("terminate called without an active
        # exception", seen once in CI with the DCP backend).
        dist.barrier()
        dist.destroy_process_group()
    return ckpt.exit_code


if __name__ == "__main__":
    code = main()
    if "RANK" in os.environ:  # a gloo worker: see exit_now
        exit_now(code)
    sys.exit(code)
