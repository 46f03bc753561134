"""train_pytorch.py under DistributedDataParallel: every rank stops at the same step, rank 0 saves.

    runai-entry --checkpoint-dir ./checkpoints --simulate-preempt 12s --simulate-requeue 1 \
        -- torchrun --standalone --nproc-per-node 2 examples/train_ddp.py

torchrun starts each worker in a session of its own, so a signal to torchrun's process group
misses them; runai-entry signals every process below it, workers included, and waits for all of
them. What changes from the single-process example: nothing in the checkpointing code.
``Checkpointer`` sees the process group and

* agrees across ranks at every step (one all_reduce of three ints: stop, time-based save due,
  a background write failed), so every rank stops and saves at the same step; a rank that left
  alone would hang the others in the next gradient all_reduce until the NCCL/gloo timeout;
* gathers every rank's RNG states and sampler position, rank 0 writes, and no rank returns from a
  blocking save before the file is durable;
* ``ResumableSampler(num_replicas, rank)`` gives each rank its share of each epoch.

Each rank seeds its own dropout RNG differently here, as real jobs do; the resume is still
bit-exact on every rank because every rank's RNG is restored.

The same script runs on several nodes: start ``torchrun --nnodes N --node-rank I ...`` under
runai-entry on each, with one shared checkpoint directory (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from runai_entry.training import preemption

FLAG = preemption()  # before the slow imports: see train_pytorch.py

import digits  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from runai_entry.training import Checkpointer  # noqa: E402
from runai_entry.training.continuity import ResumableSampler  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint-dir",
                   default=os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR") or "./checkpoints",
                   help="shared by all nodes [$RUNAI_ENTRY_CHECKPOINT_DIR, else ./checkpoints]")
    p.add_argument("--resume-from", help="checkpoint to resume from (runai-entry passes it)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=64, help="channels of the first conv layer")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--save-seconds", type=float, default=60.0, help="... or every T seconds")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--async-save", action="store_true", help="write checkpoints in the background")
    p.add_argument("--verbose", action="store_true", help="a line per step and per save")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dist.init_process_group("gloo")  # "nccl" on GPUs
    rank, world = dist.get_rank(), dist.get_world_size()

    def say(text: str, **_: object) -> None:
        # Only rank 0 speaks, one write per line: the ranks share a pipe, and print() makes
        # two writes (text, then newline) that another rank's line can fall between.
        if rank == 0:
            print(text + "\n", end="", flush=True)

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    train, test = digits.load()
    net = digits.model(args.width)
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    sampler = ResumableSampler(len(train), seed=args.seed, num_replicas=world, rank=rank)
    steps_per_epoch = len(sampler) // args.batch_size
    total = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler,
                                         drop_last=True, generator=torch.Generator())
    torch.manual_seed(args.seed + 1 + rank)  # each rank its own dropout masks

    ckpt = Checkpointer(args.checkpoint_dir, keep=args.keep, every_steps=args.save_every,
                        every_seconds=args.save_seconds, async_save=args.async_save, flag=FLAG,
                        verbose=args.verbose)
    step = ckpt.restore(model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                        path=args.resume_from)
    if ckpt.resumed_from:
        say(f"resumed from {os.path.basename(ckpt.resumed_from)} at step {step}", flush=True)
    say(f"training: {len(train)} digits on {world} ranks, {steps_per_epoch} steps per epoch, "
        f"{args.epochs} epochs, step {step} of {total}", flush=True)

    started, first_step = time.monotonic(), step
    while step < total and not ckpt.done:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # gradients are averaged across ranks here
            optimizer.step()
            scheduler.step()
            step += 1
            if args.verbose:
                say(f"step {step} loss {loss.item():.4f}", flush=True)
            if ckpt.step(step, last=step == total):  # the same answer on every rank
                break
            if step % steps_per_epoch == 0:
                rate = (step - first_step) / max(time.monotonic() - started, 1e-9)
                say(f"epoch {step // steps_per_epoch:3d}/{args.epochs}  step {step:5d}  "
                    f"loss {loss.item():.4f}  test accuracy {digits.accuracy(net, test):.1%}  "
                    f"({rate:.0f} steps/s)", flush=True)

    if ckpt.exit_code:
        sig = FLAG.signal.name if FLAG.signal else "another rank's"
        say(f"stop signal ({sig}): saved step {ckpt.last_saved} in {ckpt.last_stall:.2f} s; "
            "exiting 1 to be requeued", flush=True)
        dist.destroy_process_group()
        return ckpt.exit_code
    # Every rank must hold the same weights; check it rather than assume it.
    mine = digits.weights_sha256(net)
    everyone: list[str | None] = [None] * world
    dist.all_gather_object(everyone, mine)
    dist.destroy_process_group()
    if len(set(everyone)) != 1:
        say(f"ranks disagree on the final weights: {everyone}", flush=True)
        return 3
    say(f"finished: step {total}, test accuracy {digits.accuracy(net, test):.1%}, "
        f"weights sha256 {mine} on all {world} ranks", flush=True)
    if rank != 0:
        # Every rank prints this: one write per line, or two ranks' lines can interleave.
        print(f"rank {rank} finished: weights sha256 {mine}\n", end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
