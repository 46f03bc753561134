"""The small PyTorch run that train_torch.py and train_ckpt.py both train, each through a
different API: a dataset that never depends on the RNGs, a loader on a ResumableSampler, an MLP
with dropout, Adam with StepLR, and a loss with Python and NumPy randomness in it, so that every
RNG a resume restores matters."""

from __future__ import annotations

import random

import numpy as np
import torch

from runai_entry.training.continuity import ResumableSampler

BATCH = 8


def data(samples: int, *, world: int = 1, rank: int = 0) -> tuple[
        torch.utils.data.TensorDataset, ResumableSampler, torch.utils.data.DataLoader[
            tuple[torch.Tensor, ...]]]:
    generator = torch.Generator().manual_seed(42)  # the data itself never depends on the RNGs
    x = torch.randn(samples, 16, generator=generator)
    y = torch.randn(samples, 1, generator=generator)
    dataset = torch.utils.data.TensorDataset(x, y)
    sampler = ResumableSampler(len(dataset), seed=1234, num_replicas=world, rank=rank)
    # The loader's own generator: iterators created on resume must not draw from the global RNG.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, sampler=sampler, drop_last=True, generator=torch.Generator()
    )
    return dataset, sampler, loader


def mlp(width: int = 32) -> torch.nn.Module:
    """Initialised from the global torch RNG: seed it first."""
    return torch.nn.Sequential(
        torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Dropout(0.3),
        torch.nn.Linear(width, 1),
    )


def optimizer_for(model: torch.nn.Module) -> tuple[torch.optim.Optimizer,
                                                   torch.optim.lr_scheduler.StepLR]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.StepLR, xb: torch.Tensor,
               yb: torch.Tensor) -> None:
    noise = 1e-3 * (random.random() + float(np.random.rand()))
    loss = torch.nn.functional.mse_loss(model(xb), yb) + noise
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    scheduler.step()
