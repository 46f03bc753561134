"""Keras 3: a checkpoint callback that writes atomically and stops ``fit`` on preemption.

It does what ``ModelCheckpoint`` + ``BackupAndRestore`` do, minus their failure modes here:
files are written under a temporary name and renamed (a SIGKILL mid-save cannot leave a torn
``.weights.h5``), the last ``keep`` checkpoints are kept, and the stop signal ends ``fit`` at the
next batch with a checkpoint saved.

Checkpoints are ``epoch-00003.weights.h5`` (weights and optimizer variables, loaded into the
model you build and compile; no custom-object registry needed), or ``epoch-00003.keras`` with
``full_model=True``. The number is the count of *completed* epochs, which is the
``initial_epoch`` of the next ``fit``. A stop in the middle of an epoch saves the weights reached
so far under the number of epochs completed before it: the resumed run repeats that epoch from
those weights (no progress is lost, at most one epoch's data is seen twice).

For a script that keeps its own ``ModelCheckpoint``, :class:`Heartbeat` alone lets runai-entry
measure start-up and the last step (``callbacks=[Heartbeat(), ...]``).

Usage::

    ckpt = PreemptionCheckpoint("/ckpt")
    model = build_and_compile()
    initial_epoch = ckpt.restore(model)          # 0 when there is nothing to resume
    model.fit(x, y, epochs=20, initial_epoch=initial_epoch, callbacks=[ckpt])
    if ckpt.stopped:
        sys.exit(1)                              # be requeued; runai-entry does this for you
"""

from __future__ import annotations

import os
from typing import Any

import keras  # type: ignore[import-untyped]  # Keras 3 ships no type information

from runai_entry.checkpoints import parse_step
from runai_entry.training.atomic import atomic_write, clean_stale_temps, prune
from runai_entry.training.heartbeat import heartbeat
from runai_entry.training.resume import resume_path
from runai_entry.training.schedule import Periodic
from runai_entry.training.stop import StopFlag, preemption


class PreemptionCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]
    """Atomic, preemption-aware periodic checkpoints for ``model.fit``.

    ``every_epochs`` / ``every_seconds``: periodic saves at epoch ends (whichever comes first).
    ``flag``: the :class:`StopFlag` to watch; by default one is created and installed for the
    runai-entry stop signal when training begins and uninstalled when it ends.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 2,
        every_epochs: int | None = 1,
        every_seconds: float | None = None,
        full_model: bool = False,
        flag: StopFlag | None = None,
    ) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        self.keep = keep
        self.suffix = ".keras" if full_model else ".weights.h5"
        self.pattern = "epoch-*" + self.suffix
        self._periodic_args = (every_epochs, every_seconds)
        self._periodic: Periodic | None = None
        self.flag = flag
        self._own_flag = flag is None
        #: True once fit was stopped by the stop signal.
        self.stopped = False
        #: Path of the last checkpoint written, if any.
        self.last_saved: str | None = None
        self._stopped_in_epoch = False

    # -- resume ---------------------------------------------------------------------------------

    def path_for(self, completed_epochs: int) -> str:
        return os.path.join(self.directory, f"epoch-{completed_epochs:05d}{self.suffix}")

    def resume_from(self, explicit: str | os.PathLike[str] | None = None) -> str | None:
        """The checkpoint to resume from: ``explicit``, runai-entry's choice, else discovery."""
        path = resume_path(explicit, directory=self.directory, pattern=self.pattern)
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"resume checkpoint {path!r} does not exist")
        return path

    def restore(self, model: Any, path: str | os.PathLike[str] | None = None) -> int:
        """Load the checkpoint to resume from into ``model`` (built and compiled); returns
        ``initial_epoch`` for ``fit``, 0 when there is nothing to resume.

        ``path`` is the ``--resume-from`` your script parsed; without it, runai-entry's choice
        (``RUNAI_ENTRY_RESUME_FROM``) or discovery in the directory.
        """
        path = self.resume_from(path)
        if path is None:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            # Optimizer variables are created lazily; they must exist to receive saved values.
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        epoch, _ = parse_step(os.path.basename(path).removesuffix(self.suffix))
        if epoch is None:
            raise ValueError(f"cannot tell the epoch of {path!r}: expected epoch-NNNNN in the name")
        return epoch

    # -- saving ---------------------------------------------------------------------------------

    def save(self, completed_epochs: int) -> str:
        """Save now, atomically, then apply retention; returns the path written."""
        os.makedirs(self.directory, exist_ok=True)
        model = self.model
        if self.suffix == ".keras":
            written = atomic_write(self.path_for(completed_epochs), model.save)
        else:
            written = atomic_write(self.path_for(completed_epochs), model.save_weights)
        prune(self.directory, keep=self.keep, pattern=self.pattern)
        self.last_saved = written
        return written

    # -- callback hooks -------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.flag is None:
            self.flag = preemption()
        every_epochs, every_seconds = self._periodic_args
        if every_epochs is not None or every_seconds is not None:
            self._periodic = Periodic(every_steps=every_epochs, every_seconds=every_seconds)
        if os.path.isdir(self.directory):
            clean_stale_temps(self.directory)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._periodic is not None and epoch > self._periodic.last_step:
            self._periodic.last_step = epoch  # resumed: count epochs from initial_epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.flag is not None and self.flag.should_stop() and not self.stopped:
            self.stopped = True
            self._stopped_in_epoch = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras calls on_epoch_end after a break out of the batch loop too.
        completed = epoch if self._stopped_in_epoch else epoch + 1
        if self.flag is not None and self.flag.should_stop():
            self.stopped = True
            self.model.stop_training = True
            self.save(completed)
        elif self._periodic is not None and self._periodic.due(completed):
            self.save(completed)
            self._periodic.mark(completed)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._own_flag and self.flag is not None:
            self.flag.uninstall()


class Heartbeat(keras.callbacks.Callback):  # type: ignore[misc]
    """Beats at the end of every training batch, so runai-entry measures start-up (the first
    beat) and the last step reached; it also feeds ``--hang-timeout``.

    The step is the optimizer's iteration count, which a restored optimizer carries on from:
    the history's steps then match across attempts. Reading it copies one integer from the
    device, once per batch.
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            heartbeat()
        else:
            heartbeat(int(keras.ops.convert_to_numpy(optimizer.iterations)))
