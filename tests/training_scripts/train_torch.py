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

from runai_entry.training import preemption, resume_path
from runai_entry.training.atomic import prune
from runai_entry.training.legacy import load_training_state, save_training_state
from runai_entry.training.schedule import Periodic
from tests.training_scripts.tiny_run import BATCH, data, mlp, optimizer_for, train_step


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
    dataset, sampler, loader = data(100)
    steps_per_epoch = len(dataset) // BATCH
    model = mlp()
    optimizer, scheduler = optimizer_for(model)

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
            train_step(model, optimizer, scheduler, xb, yb)
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
