"""Lightning's heartbeat: one callback, so runai-entry measures start-up.

``Trainer(..., callbacks=[Heartbeat()])``. Each training batch beats with the trainer's global
step: the history then holds when the first step ended (start-up: data, model set-up, the
sanity check) and the last step reached, and the drill's goodput is a measure, not a bound. It
also feeds ``--hang-timeout``. A beat makes no system call after the first.

Importing this module imports ``lightning`` (or, without it, ``pytorch_lightning``) for the
callback's base class; importing :mod:`runai_entry.training` does not import this module.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name, still the one many images ship
    # The same code under its older package name: mypy sees two classes where there is one.
    from pytorch_lightning.callbacks import (  # type: ignore[assignment,unused-ignore]
        Callback,
    )

from runai_entry.training.heartbeat import heartbeat


class Heartbeat(Callback):  # type: ignore[misc,unused-ignore]
    """Beats at the end of every training batch, with ``trainer.global_step``."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        heartbeat(trainer.global_step)
