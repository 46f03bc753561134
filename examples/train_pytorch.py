"""Train a small CNN on scikit-learn's handwritten digits, and survive preemption exactly.

    runai-entry --checkpoint-dir ./checkpoints --simulate-preempt 8s --simulate-requeue 2 \
        -- python examples/train_pytorch.py

What makes it preemptible (everything else is an ordinary PyTorch loop):

* ``preemption()`` installs a handler that only records the stop signal; the loop looks at it
  between steps, so a step is never cut in half.
* ``save_training_state`` writes model, optimizer, scheduler, step and every RNG atomically
  (temporary file, fsync, rename): a SIGKILL mid-save leaves the previous checkpoint intact.
* Checkpoints are saved every ``--save-every`` steps or ``--save-seconds``, and at once on the
  stop signal; then the script exits 1, which tells Run:ai to requeue it.
* On the next start runai-entry passes ``--resume-from`` the newest complete checkpoint (run
  without runai-entry, the script finds it in ``--checkpoint-dir`` itself); the ResumableSampler
  continues the epoch at the very batch where the previous attempt stopped. A run preempted any
  number of times ends with weights bit-identical to an uninterrupted one (on the same machine
  and thread count): compare the ``weights sha256`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from runai_entry.training import Periodic, preemption, prune, resume_path

# Before the slow imports (torch and scikit-learn take seconds): a stop signal that arrives
# during start-up is recorded instead of killing the process with status 143, which Run:ai
# would not count as a preemption. The library itself imports nothing heavy.
FLAG = preemption()

import digits  # noqa: E402
import torch  # noqa: E402

from runai_entry.training.torch import (  # noqa: E402
    ResumableSampler,
    load_training_state,
    save_training_state,
)


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
    p.add_argument("--verbose", action="store_true", help="a line per step and per save")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flag = FLAG
    torch.manual_seed(args.seed)  # initial weights and dropout masks
    train, test = digits.load()
    net = digits.model(args.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps_per_epoch = len(train) // args.batch_size
    total = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    sampler = ResumableSampler(len(train), seed=args.seed)
    # The loader's own generator: a loader created mid-run must not draw from the global RNG.
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler,
                                         drop_last=True, generator=torch.Generator())
    os.makedirs(args.checkpoint_dir, exist_ok=True)

    def save(step: int, epoch: int) -> tuple[str, float]:
        started = time.perf_counter()
        path = os.path.join(args.checkpoint_dir, f"step-{step:08d}.pt")
        if args.verbose:
            print(f"saving step {step}", flush=True)
        save_training_state(path, model=net, optimizer=optimizer, scheduler=scheduler,
                            step=step, epoch=epoch)
        prune(args.checkpoint_dir, keep=args.keep)
        seconds = time.perf_counter() - started
        if args.verbose:
            print(f"saved step {step} in {seconds:.3f} s", flush=True)
        return os.path.basename(path), seconds

    step = 0
    path = resume_path(args.resume_from, directory=args.checkpoint_dir)
    if path is not None:
        step = load_training_state(path, model=net, optimizer=optimizer, scheduler=scheduler).step
        print(f"resumed from {os.path.basename(path)} at step {step}", flush=True)
    periodic = Periodic(every_steps=args.save_every, every_seconds=args.save_seconds,
                        start_step=step)
    print(f"training: {len(train)} digits, {steps_per_epoch} steps per epoch, "
          f"{args.epochs} epochs, step {step} of {total}", flush=True)

    if flag.should_stop():  # preempted while starting: nothing new to save
        print("stop signal during start-up: exiting 1 to be requeued", flush=True)
        return 1
    log_every = max(1, args.epochs // 10)  # about ten progress lines, whatever --epochs
    started, first_step = time.monotonic(), step
    while step < total:
        epoch, done = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, done * args.batch_size)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if args.verbose:
                print(f"step {step} loss {loss.item():.4f}", flush=True)

            stopping = flag.should_stop()
            if stopping or periodic.due(step):
                name, seconds = save(step, epoch)
                periodic.mark(step)
                if stopping:
                    sig = flag.signal.name if flag.signal else "stop request"
                    print(f"stop signal ({sig}): saved step {step} in {seconds:.2f} s "
                          f"as {name}; exiting 1 to be requeued", flush=True)
                    return 1
            if step % (steps_per_epoch * log_every) == 0:
                rate = (step - first_step) / max(time.monotonic() - started, 1e-9)
                print(f"epoch {step // steps_per_epoch:3d}/{args.epochs}  step {step:5d}  "
                      f"loss {loss.item():.4f}  test accuracy {digits.accuracy(net, test):.1%}  "
                      f"({rate:.0f} steps/s)", flush=True)

    if periodic.last_step != total:  # a requeue after the end then finishes at once
        save(total, args.epochs)
    print(f"finished: step {total}, test accuracy {digits.accuracy(net, test):.1%}, "
          f"weights sha256 {digits.weights_sha256(net)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
