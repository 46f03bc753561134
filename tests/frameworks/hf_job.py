"""A tiny Hugging Face Trainer job: a GPT2Config model built locally (nothing downloaded),
enable_jit_checkpoint=True, resume_from_checkpoint from RUNAI_ENTRY_RESUME_FROM. Prints
``start <checkpoint name or fresh> <global step>`` and ``finished <global step>``.

    python hf_job.py STEPS [DATA_WORKERS]
"""

from __future__ import annotations

import os
import sys
import time

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from runai_entry.training.hf import HeartbeatCallback

directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
resume = os.environ.get("RUNAI_ENTRY_RESUME_FROM")
steps = int(sys.argv[1])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0  # dataloader_num_workers


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.arange(16) % 64
        return {"input_ids": ids, "labels": ids}


class Pace(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        name = os.path.basename(resume) if resume else "fresh"
        print(f"start {name} {state.global_step}", flush=True)

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.05)  # a step long enough that the preemption lands mid-training


torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=64,
                                   n_positions=16))
arguments = TrainingArguments(
    output_dir=directory, max_steps=steps, per_device_train_batch_size=4, save_strategy="steps",
    save_steps=100, report_to=[], logging_strategy="no", disable_tqdm=True, use_cpu=True,
    enable_jit_checkpoint=True, dataloader_num_workers=workers,
)
trainer = Trainer(model=model, args=arguments, train_dataset=Tokens(),
                  callbacks=[Pace(), HeartbeatCallback()])  # start-up and last step measured
trainer.train(resume_from_checkpoint=resume)
print(f"finished {trainer.state.global_step}", flush=True)
