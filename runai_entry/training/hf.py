"""The Hugging Face Trainer's heartbeat: one callback, so runai-entry measures start-up.

``Trainer(..., callbacks=[HeartbeatCallback()])``. Each optimizer step beats with the Trainer's
global step: the history then holds when the first step ended (start-up: loading, tokenizing,
compiling) and the last step reached, and the drill's goodput is a measure, not a bound. It
also feeds ``--hang-timeout``. A beat makes no system call after the first.

Importing this module imports ``transformers`` (the callback's base class); importing
:mod:`runai_entry.training` does not import this module.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback  # type: ignore[import-untyped,unused-ignore]

from runai_entry.training.heartbeat import heartbeat


class HeartbeatCallback(TrainerCallback):  # type: ignore[misc,unused-ignore]
    """Beats at the end of every optimizer step, with ``state.global_step``."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        heartbeat(state.global_step)
