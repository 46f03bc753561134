"""torchrun worker (gloo, CPU): DDP training until the ranks agree to stop; rank 0 saves.

Prints ``rank R pid P`` at start, ``rank R step S`` per step, ``rank R stopped at S`` at the end.
With ``--bench N`` it instead times N DistributedStop checks (every=1 and every=10) against one
DDP step and prints the figures from rank 0.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from runai_entry.training import preemption
from runai_entry.training.legacy import DistributedStop, save_training_state
from tests.training_scripts.leave_group import exit_now


def bench(n: int, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    flag = preemption()
    x = torch.randn(32, 256)
    for every in (1, 10):
        stop = DistributedStop(flag, every=every)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(n):
            stop.should_stop()
        per_call = (time.perf_counter() - t) / n
        if dist.get_rank() == 0:
            print(f"DistributedStop(every={every}): {per_call * 1e6:.1f} us per step", flush=True)
    dist.barrier()
    t = time.perf_counter()
    for _ in range(50):
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
    if dist.get_rank() == 0:
        per_step = (time.perf_counter() - t) / 50
        print(f"one DDP step of the 256x256 MLP: {per_step * 1e6:.1f} us", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--bench", type=int, default=0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Both ranks share the pipe: one write per line (with PYTHONUNBUFFERED, print() makes two).
    print(f"rank {rank} pid {os.getpid()}\n", end="", flush=True)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if args.bench:
        bench(args.bench, model, opt)
        dist.destroy_process_group()
        return
    stop = DistributedStop(preemption())
    step = 0
    while step < 5000:  # a bound, so a broken agreement fails the test instead of hanging it
        x = torch.randn(8, 256)
        model(x).sum().backward()  # gradients are all-reduced: a lone exit would hang the other
        opt.step()
        opt.zero_grad()
        step += 1
        print(f"rank {rank} step {step}\n", end="", flush=True)
        time.sleep(0.01)
        if stop.should_stop():
            break
    save_training_state(
        os.path.join(args.ckpt_dir, f"ckpt-{step:06d}.pt"), model=model, optimizer=opt, step=step
    )
    sig = stop.flag.signal
    print(f"rank {rank} stopped at {step} signal={sig.name if sig else None}\n", end="", flush=True)
    # Every rank out of the group's last work before any tears gloo down (as ddp_steps.py): a
    # rank destroying its group while the other still reads the save's outcome aborts it.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_now(0)
