"""torchrun worker (gloo, CPU) written without runai-entry's library, as many user scripts are.

Each step's batch depends only on (step, rank), so a run resumed from a checkpoint ends with
the same weights as an uninterrupted one. On SIGTERM:

- ``--agree``: the ranks all-reduce their stop flags every step, so they all stop at the same
  step; rank 0 saves; every rank exits 0 ("stopped cleanly");
- without it, each rank acts alone: rank 0 saves and exits 0, any other rank exits 0 at once;
  a rank still training then fails in its next collective, its peer gone.

Prints ``rank R step S``, ``rank R resumed at S``, ``rank R stopped at S`` and, at the end,
``rank R finished: step S weights sha256 H``; one write per line (the ranks share a pipe).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import time

import torch
import torch.distributed as dist

from tests.training_scripts.leave_group import exit_now

stop_requested = False


def on_stop(signum: int, frame: object) -> None:
    global stop_requested
    stop_requested = True


def say(text: str) -> None:
    os.write(1, f"{text}\n".encode())


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save(directory: str, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    final = os.path.join(directory, f"step-{step:06d}.pt")
    temp = os.path.join(directory, f".step-{step:06d}.pt.tmp")
    os.makedirs(directory, exist_ok=True)
    torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()}, temp)
    os.replace(temp, final)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--agree", action="store_true")
    parser.add_argument("--resume-from")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_stop)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = 0
    if args.resume_from:
        state = torch.load(args.resume_from)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        say(f"rank {rank} resumed at {step}")
    while step < args.steps:
        gen = torch.Generator().manual_seed(step * 1000 + rank)
        x = torch.randn(16, 32, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        ((model(x) - y) ** 2).mean().backward()  # gradients all-reduced across the ranks
        opt.step()
        opt.zero_grad()
        step += 1
        say(f"rank {rank} step {step}")
        time.sleep(0.05)
        stop = stop_requested
        if args.agree:
            flag = torch.tensor([1 if stop else 0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            if rank == 0:
                save(args.ckpt_dir, step, net, opt)
            say(f"rank {rank} stopped at {step}")
            return 0
    say(f"rank {rank} finished: step {step} weights sha256 {weights_sha256(net)}")
    # Every rank out of its last collective before any tears gloo down: a rank destroying its
    # group while the other still uses it aborts ("terminate called without an active
    # exception").
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    exit_now(main())
