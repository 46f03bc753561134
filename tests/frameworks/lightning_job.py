"""A tiny Lightning job: ModelCheckpoint(save_last=...), OnExceptionCheckpoint, fit(ckpt_path=)
from runai-entry's --resume-from. Prints ``start <checkpoint name or fresh> <global step>`` and
``finished <global step>``."""

from __future__ import annotations

import argparse
import os
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint

from runai_entry.training.lightning import Heartbeat

parser = argparse.ArgumentParser()
parser.add_argument("--resume-from")
parser.add_argument("--save-last", choices=["true", "link"], default="true")
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--workers", type=int, default=0)  # the DataLoader's worker processes
args = parser.parse_args()
directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        time.sleep(0.05)  # a step long enough that the preemption lands mid-training
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Announce(Callback):
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        name = os.path.basename(args.resume_from) if args.resume_from else "fresh"
        print(f"start {name} {trainer.global_step}", flush=True)


torch.manual_seed(0)
data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
trainer = L.Trainer(
    max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
    enable_progress_bar=False, enable_model_summary=False, default_root_dir=directory,
    callbacks=[
        ModelCheckpoint(dirpath=directory, every_n_train_steps=20, save_top_k=-1,
                        save_last="link" if args.save_last == "link" else True),
        OnExceptionCheckpoint(dirpath=directory),
        Announce(),
        Heartbeat(),  # start-up and the last step measured
    ],
)
loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=args.workers,
                                     persistent_workers=args.workers > 0)
trainer.fit(Tiny(), loader, ckpt_path=args.resume_from)
print(f"finished {trainer.global_step}", flush=True)
