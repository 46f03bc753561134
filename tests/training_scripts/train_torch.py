"""A small but complete PyTorch run for the resume-exactness test.

MLP with dropout, Adam, StepLR, a shuffled DataLoader (ResumableSampler), and Python/NumPy
randomness in the loss, so every RNG the library restores matters. Prints ``step N`` per step,
saves every 7 steps and on the stop signal (then exits 1), writes the final weights to --out.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import torch

from runai_entry.training import Periodic, preemption, prune, resume_path
from runai_entry.training.torch import ResumableSampler, load_training_state, save_training_state

BATCH = 8


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--resume-from")
    args = parser.parse_args()

    flag = preemption()
    os.makedirs(args.ckpt_dir, exist_ok=True)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    data_gen = torch.Generator().manual_seed(42)  # the data itself never depends on the RNGs
    x = torch.randn(100, 16, generator=data_gen)
    y = torch.randn(100, 1, generator=data_gen)
    dataset = torch.utils.data.TensorDataset(x, y)
    sampler = ResumableSampler(len(dataset), seed=1234)
    # The loader's own generator: iterators created on resume must not draw from the global RNG.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, sampler=sampler, drop_last=True, generator=torch.Generator()
    )
    steps_per_epoch = len(dataset) // BATCH
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)

    step = 0
    path = resume_path(args.resume_from, directory=args.ckpt_dir)
    if path is not None:
        state = load_training_state(path, model=model, optimizer=optimizer, scheduler=scheduler)
        step = state.step
        print(f"resumed from {os.path.basename(path)} at step {step}", flush=True)
    periodic = Periodic(every_steps=7, start_step=step)

    while step < args.steps:
        epoch, done = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, done * BATCH)
        for xb, yb in loader:
            noise = 1e-3 * (random.random() + float(np.random.rand()))
            loss = torch.nn.functional.mse_loss(model(xb), yb) + noise
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            step += 1
            print(f"step {step}", flush=True)
            if flag.should_stop() or periodic.due(step):
                save_training_state(
                    os.path.join(args.ckpt_dir, f"ckpt-{step:06d}.pt"),
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    step=step,
                    epoch=epoch,
                )
                prune(args.ckpt_dir, keep=2)
                periodic.mark(step)
                if flag.should_stop():
                    print(f"stopped at step {step}", flush=True)
                    return 1  # a plain scheduler requeues on failure; runai-entry does anyway
            if step >= args.steps:
                break
            time.sleep(args.step_delay)
    torch.save(model.state_dict(), args.out)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
