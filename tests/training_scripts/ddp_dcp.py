"""torchrun worker: train a DDP model a few steps, save it with DCP twice under one name, load it
into a fresh model, and print what the test checks."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from runai_entry.training.dcp import load_sharded_training_state, save_sharded_training_state
from tests.training_scripts.leave_group import exit_now, leave_group


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def say(text: str) -> None:
    os.write(1, f"rank {dist.get_rank()} {text}\n".encode())  # one write: ranks share the pipe


def main() -> None:
    """In a function: at module level, its DDP models lived until the interpreter shut down,
    and 3 runs in 25 (under load) ended in gloo's abort, exit -6, after a good run; 0 in 25
    this way."""
    dist.init_process_group("gloo")
    target = os.path.join(sys.argv[1], "step-00000006")
    model, opt = build()
    torch.manual_seed(1 + dist.get_rank())
    for step in range(1, 7):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (3, 6):  # the second save replaces a complete checkpoint of the same name
            save_sharded_training_state(target, model=model, optimizer=opt, step=step)
    fresh, fresh_opt = build()
    step, epoch = load_sharded_training_state(target, model=fresh, optimizer=fresh_opt)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                       fresh.state_dict().values(), strict=True))
    moment = fresh_opt.state_dict()["state"][0]["exp_avg"]
    same_opt = torch.equal(moment, opt.state_dict()["state"][0]["exp_avg"])
    say(f"loaded step={step} epoch={epoch} weights_equal={same} optimizer_equal={same_opt}")
    os.write(1, f"rank {dist.get_rank()} groups_alive {leave_group()}\n".encode())


if __name__ == "__main__":
    main()
    exit_now(0)
