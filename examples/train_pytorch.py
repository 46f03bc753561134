"""Train a small CNN on scikit-learn's handwritten digits, and survive preemption exactly.

    runai-entry --checkpoint-dir ./checkpoints --simulate-preempt 8s --simulate-requeue 2 \
        -- python examples/train_pytorch.py

What makes it preemptible (everything else is an ordinary PyTorch loop) is one object,
``Checkpointer``:

* ``restore`` loads the newest complete checkpoint (runai-entry's ``--resume-from``, else discovery
  in the directory): model, optimizer, scheduler, every RNG and the sampler's position, so the
  epoch continues at the very batch where the previous attempt stopped.
* ``step(step)`` after each step saves every ``--save-every`` steps or ``--save-seconds``
  (``--async-save``: in the background), and at once on the stop signal, atomically (temporary
  file, fsync, rename): a SIGKILL mid-save leaves the previous checkpoint intact. It keeps the
  newest ``--keep``.
* ``exit_code`` is 1 after a stop, which tells Run:ai to requeue the job.

``--workers N`` loads the batches in N worker processes, as real jobs do. The stop signal reaches
this process, not its workers (runai-entry leaves them to it), and the data position is then the
loader's own (torchdata's ``StatefulDataLoader``): workers fetch ahead of the loop, so only the
loader knows which batches the loop has consumed.

A run preempted any number of times ends with weights bit-identical to an uninterrupted one (on
the same machine and thread count): compare the ``weights sha256`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from runai_entry.training import preemption

# Before the slow imports (torch and scikit-learn take seconds): a stop signal that arrives
# during start-up is recorded instead of killing the process with status 143, which Run:ai
# would not count as a preemption. The library itself imports nothing heavy.
FLAG = preemption()

import digits  # noqa: E402
import torch  # noqa: E402

from runai_entry.training import Checkpointer  # noqa: E402
from runai_entry.training.continuity import ResumableSampler  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint-dir",
                   default=os.environ.get("RUNAI_ENTRY_CHECKPOINT_DIR") or "./checkpoints",
                   help="where checkpoints go [$RUNAI_ENTRY_CHECKPOINT_DIR, else ./checkpoints]")
    p.add_argument("--resume-from", help="checkpoint to resume from (runai-entry passes it)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=64, help="channels of the first conv layer")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--save-seconds", type=float, default=60.0, help="... or every T seconds")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--async-save", action="store_true", help="write checkpoints in the background")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--verbose", action="store_true", help="a line per step and per save")
    return p.parse_args(argv)


def data_loader(train: torch.utils.data.Dataset, args: argparse.Namespace) -> tuple[
        torch.utils.data.DataLoader, object]:
    """The loader, and what knows its position (saved and restored by the Checkpointer)."""
    if args.workers:
        from torchdata.stateful_dataloader import StatefulDataLoader

        loader = StatefulDataLoader(train, batch_size=args.batch_size, shuffle=True,
                                    drop_last=True, num_workers=args.workers,
                                    persistent_workers=True,
                                    generator=torch.Generator().manual_seed(args.seed))
        return loader, loader
    sampler = ResumableSampler(len(train), seed=args.seed)  # moves to the next epoch by itself
    # The loader's own generator: a loader created mid-run must not draw from the global RNG.
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler,
                                         drop_last=True, generator=torch.Generator())
    return loader, sampler


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # initial weights and dropout masks
    train, test = digits.load()
    net = digits.model(args.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps_per_epoch = len(train) // args.batch_size
    total = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    loader, position = data_loader(train, args)

    ckpt = Checkpointer(args.checkpoint_dir, keep=args.keep, every_steps=args.save_every,
                        every_seconds=args.save_seconds, async_save=args.async_save, flag=FLAG,
                        verbose=args.verbose)
    step = ckpt.restore(model=net, optimizer=optimizer, scheduler=scheduler, sampler=position,
                        path=args.resume_from)
    if ckpt.resumed_from:
        print(f"resumed from {os.path.basename(ckpt.resumed_from)} at step {step}", flush=True)
    print(f"training: {len(train)} digits, {steps_per_epoch} steps per epoch, "
          f"{args.epochs} epochs, step {step} of {total}", flush=True)

    log_every = max(1, args.epochs // 10)  # about ten progress lines, whatever --epochs
    started, first_step = time.monotonic(), step
    while step < total and not ckpt.done:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if args.verbose:
                print(f"step {step} loss {loss.item():.4f}", flush=True)
            if ckpt.step(step, last=step == total):  # saves when due; True: stop here
                break
            if step % (steps_per_epoch * log_every) == 0:
                rate = (step - first_step) / max(time.monotonic() - started, 1e-9)
                print(f"epoch {step // steps_per_epoch:3d}/{args.epochs}  step {step:5d}  "
                      f"loss {loss.item():.4f}  test accuracy {digits.accuracy(net, test):.1%}  "
                      f"({rate:.0f} steps/s)", flush=True)

    if ckpt.exit_code:
        sig = FLAG.signal.name if FLAG.signal else "stop request"
        print(f"stop signal ({sig}): saved step {ckpt.last_saved} in {ckpt.last_stall:.2f} s; "
              "exiting 1 to be requeued", flush=True)
    else:
        print(f"finished: step {total}, test accuracy {digits.accuracy(net, test):.1%}, "
              f"weights sha256 {digits.weights_sha256(net)}", flush=True)
    return ckpt.exit_code


if __name__ == "__main__":
    sys.exit(main())
