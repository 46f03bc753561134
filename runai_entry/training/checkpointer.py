"""One object for a preemptible PyTorch loop: restore, save on schedule and at the stop, exit.

    ckpt = Checkpointer("./checkpoints", keep=3, every_steps=500, every_seconds=900)
    step = ckpt.restore(model=model, optimizer=opt, scheduler=sched, sampler=sampler)
    while step < total:
        for x, y in loader:
            train_one_step(x, y); step += 1
            if ckpt.step(step, last=step == total):
                break
        if ckpt.done:
            break
    sys.exit(ckpt.exit_code)

It owns what a loop otherwise wires by hand: the stop flag (:mod:`.stop`), one agreement across
ranks per ``agree_every`` steps on a CPU group (the stop, the time-based schedule, a failed
background write: :mod:`.dist`); numbered names that discovery orders; atomic publishing and
retention; every rank's RNG states and data position (:mod:`.continuity`); the exit code.

Saves go through ``_io.tensorfile`` (raw tensor bytes in large writes). With ``async_save=True``
the training thread only copies the state to host memory and a background thread writes it. At
most one write is in flight: a save that falls due meanwhile *waits* for it rather than being
skipped, so the newest checkpoint is never older than the schedule promises; a failed write
raises :class:`CheckpointWriteFailed` on every rank at the next agreement or save.
``backend="dcp"`` saves the model and optimizer with torch.distributed.checkpoint, each rank
its shards; the API and semantics are the same (``_io.backends`` holds what differs).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from runai_entry.core import envvars
from runai_entry.core.errors import ConfigError
from runai_entry.training._io import messages, tensorfile
from runai_entry.training._io.backends import (
    Backend,
    DcpBackend,
    FileBackend,
    Parts,
    Snapshot,
    is_sharded,
)
from runai_entry.training._io.budget import SaveBudget
from runai_entry.training._io.fence import Fence, Torn
from runai_entry.training._io.oldfile import read_training_state
from runai_entry.training._io.writer import BackgroundWriter
from runai_entry.training.atomic import check_writable
from runai_entry.training.dist import agree, is_distributed, outcome, rank
from runai_entry.training.errors import CheckpointError, CheckpointWriteFailed
from runai_entry.training.heartbeat import heartbeat, saving
from runai_entry.training.resume import checkpoint_dir
from runai_entry.training.schedule import AUTO_BOUNDS, AutoInterval, Periodic
from runai_entry.training.stop import StopFlag, preemption

#: What a stopped job exits with: Run:ai and runai-entry requeue on 1.
EXIT_REQUEUE = 1


class Checkpointer:
    """Restore, periodic and stop-time saves, retention and the exit code of a training loop.

    ``directory``: where checkpoints go. ``RUNAI_ENTRY_CHECKPOINT_DIR``, when runai-entry set it,
    wins over the argument (it is the directory runai-entry discovers in, resumes from and
    counts progress in); when both are given and differ, rank 0 says so once. ``keep``: complete
    checkpoints kept. ``every_steps`` / ``every_seconds``: the periodic schedule (either, both,
    or neither: then only stop-time, last and :meth:`save` saves); ``every_seconds="auto"``:
    the Young/Daly interval for the preemptions in runai-entry's history and the measured save
    cost, within ``auto_bounds`` seconds (:class:`.schedule.AutoInterval`). ``async_save``:
    write in the background. ``background_copy`` (with ``async_save``, file backend): copy the
    parameters and optimizer states behind the training thread; every optimizer's next
    ``step()`` waits for the copy, and a change elsewhere discards that checkpoint, said
    (``_io.fence``). ``agree_every``: steps between two agreements of the ranks. ``backend``:
    ``"file"`` or ``"dcp"`` (sharded models). ``prefix``: the start of the Checkpointer's names;
    discovery, retention and :meth:`latest_step` consider only its own names. ``flag``: a
    :class:`StopFlag` installed earlier (before slow imports); by default one is installed here.
    ``pinned_limit``: bytes of pinned host memory the CUDA staging buffer may take; a larger state
    is staged in pageable memory, with a warning. ``verbose``: rank 0 logs ``saving step N`` and
    ``saved step N in S s``. Rank 0 speaks through the ``runai_entry.training`` logger (on stderr
    while the application configures no logging), one-time advice through :mod:`warnings`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        keep: int = 3,
        every_steps: int | None = None,
        every_seconds: float | str | None = None,
        auto_bounds: tuple[float, float] = AUTO_BOUNDS,
        async_save: bool = False,
        background_copy: bool = False,
        agree_every: int = 1,
        backend: str = "file",
        prefix: str = "step-",
        flag: StopFlag | None = None,
        pinned_limit: int | None = None,
        verbose: bool = False,
    ) -> None:
        chosen = checkpoint_dir(directory)
        if chosen is None:
            raise ConfigError("Checkpointer needs a directory (or runai-entry --checkpoint-dir)")
        if keep < 1:
            raise ConfigError(f"keep must be >= 1 (the newest checkpoint is kept), not {keep}")
        if agree_every < 1:
            raise ConfigError(f"agree_every must be >= 1, not {agree_every}")
        if backend not in ("file", "dcp"):
            raise ConfigError(f"backend must be 'file' or 'dcp', not {backend!r}")
        if background_copy and (not async_save or backend != "file"):
            raise ConfigError("background_copy=True needs async_save=True and the file backend "
                              "(a DCP save's copy already stalls little: docs/benchmarks.md)")
        if not prefix or "/" in prefix or prefix.startswith(".") or any(c in prefix for c in "*?["):
            raise ConfigError(f"prefix {prefix!r} must be a plain, non-hidden file-name start")
        self.directory = chosen
        self.verbose = verbose
        if directory is not None and os.path.abspath(directory) != os.path.abspath(chosen):
            self._say(f"{envvars.CHECKPOINT_DIR}={chosen!r} (set by runai-entry --checkpoint-dir) "
                      f"wins over the directory argument {os.fspath(directory)!r}")
        check_writable(chosen)
        self.keep, self.async_save, self.agree_every = keep, async_save, agree_every
        self.backend, self.prefix = backend, prefix
        self.background_copy = background_copy
        # restore() hooks it to every optimizer it is given.
        self._fence: Fence | None = Fence() if background_copy else None
        self._backend: Backend = (DcpBackend(chosen, prefix, keep) if backend == "dcp"
                                  else FileBackend(chosen, prefix, keep, pinned_limit, self._fence))
        self.flag = flag if flag is not None else preemption()
        self.budget = SaveBudget(self.flag.timeout)
        self.auto, seconds = AutoInterval.of(every_seconds, chosen, auto_bounds)
        self._every = (every_steps, seconds)
        self.periodic: Periodic | None = None
        if every_steps is not None or seconds is not None:
            self.periodic = Periodic(every_steps, seconds)
        #: User values saved with every checkpoint and restored by :meth:`restore`.
        self.extra: dict[str, Any] = {}
        self.resumed_from: str | None = None
        #: The newest step saved (for an async save: copied, and being written).
        self.last_saved: int | None = None
        #: The newest step this process saw published complete under its final name.
        self.published: int | None = None
        #: Seconds the last save held the training thread (the copy, for an async save).
        self.last_stall: float = 0.0
        #: Bytes this rank wrote, or is writing, for the last save.
        self.last_bytes: int = 0
        self._parts: Parts | None = None
        self._calls = 0
        self._stopping = False
        self.done = False
        self._staging_warned = False
        self._writer = BackgroundWriter()
        self._pending: tuple[int, int, float] | None = None  # in flight: step, bytes, stall

    # -- queries ----------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint of this Checkpointer's own names in its
        directory (what :meth:`restore` would load without ``path``); None when there is none."""
        newest = self._newest()
        return None if newest is None else newest.step

    def _newest(self) -> Any:
        # Imported here: discovery is only needed when runai-entry did not already choose.
        from runai_entry.checkpoints import discover

        # Verified, as runai-entry's own discovery is: "the newest checkpoint" has one meaning.
        # resume_point(): a search that gave up refuses to start fresh over what it left.
        return discover(self.directory, pattern=self._backend.pattern(), verify=True,
                        max_candidates=1).resume_point()

    # -- resume -----------------------------------------------------------------------------

    def restore(
        self,
        *,
        model: torch.nn.Module,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        sampler: Any = None,
        path: str | os.PathLike[str] | None = None,
        **objects: Any,
    ) -> int:
        """Register what is saved, load the newest complete checkpoint into it; the step to go on
        from (0 on a first run). Call on every rank.

        ``objects``: any number of other named objects with ``state_dict`` and
        ``load_state_dict`` (an EMA model, a second optimizer or scheduler), saved and restored
        as ``optimizer`` is: once, from rank 0 (``backend="dcp"``: each rank's own, beside the
        shards). ``background_copy`` fences every ``torch.optim`` optimizer among them.
        ``sampler`` is the one object saved per rank, the data position: anything with
        ``state_dict`` and ``load_state_dict``
        (:class:`~runai_entry.training.continuity.ResumableSampler`, ``StatefulDataLoader``);
        a loader or sampler given by another name is refused, since its position would be
        rank 0's on every rank.

        ``path`` overrides discovery (``--resume-from``); otherwise ``RUNAI_ENTRY_RESUME_FROM``
        when it names one of this Checkpointer's checkpoints, then the newest complete one of its
        own names in the directory. Files written by 0.1.0's ``save_training_state`` load too.
        """
        if self.backend == "file" and is_sharded(model):
            raise ConfigError("the model is sharded (FSDP or DTensor): one rank's state_dict() "
                              "does not hold it; use Checkpointer(..., backend=\"dcp\")")
        self._parts = Parts({"model": model, "optimizer": optimizer, "scheduler": scheduler,
                             "scaler": scaler, "sampler": sampler}, named=objects)
        if self._fence is not None:
            optimizers = self._parts.optimizers()
            if not optimizers:
                raise ConfigError("background_copy=True needs the torch.optim optimizer in "
                                  "restore(): its step() is what waits for the copy")
            self._fence.watch(optimizers)  # a second restore(): only the ones given now
        if rank() == 0:
            self._backend.clean()
        found = self._resume_path(path)
        step = 0 if found is None else self._load(found)
        if self.async_save:
            self._backend.reserve(self._parts, self.extra)
        self.resumed_from = self._backend.resumed_from = found
        self.last_saved = step if found is not None else None
        if self.periodic is not None:
            self.periodic = Periodic(*self._every, start_step=step)
        return step

    def _resume_path(self, explicit: str | os.PathLike[str] | None) -> str | None:
        import fnmatch

        if explicit is not None and os.fspath(explicit):
            return os.fspath(explicit)
        # runai-entry's choice, unless it is not one of ours (a stray file beside them).
        chosen = os.environ.get(envvars.RESUME_FROM, "")
        if chosen and fnmatch.fnmatchcase(os.path.basename(chosen.rstrip("/")),
                                          self._backend.pattern()):
            return chosen
        newest = self._newest()
        return None if newest is None else str(newest.path)

    def _load(self, path: str) -> int:
        parts = self._parts
        assert parts is not None
        if os.path.isdir(path):
            step, self.extra = DcpBackend(self.directory, self.prefix, self.keep).load(path, parts)
        elif tensorfile.is_tensorfile(path):
            step, self.extra = FileBackend(self.directory, self.prefix, self.keep).load(path, parts)
        else:  # 0.1.0's torch.save format
            step = read_training_state(path, model=parts.objects["model"],
                                       **parts.fixed(path)).step
        return step

    # -- the loop ---------------------------------------------------------------------------

    def step(self, step: int, *, last: bool = False) -> bool:
        """Call once per training step, on every rank, after the step. True: leave the loop.

        Saves when the schedule says so, at the stop signal (then returns True, and
        :attr:`exit_code` is 1), and at ``last=True`` (the final step: waits for every write).
        Raises :class:`CheckpointWriteFailed` on every rank once a background write failed.
        """
        if self.done:
            return True
        self._registered()
        self._calls += 1
        heartbeat(step)  # for runai-entry's hang watchdog: this loop is alive, at this step
        self._judge_copy()
        self._collect_write()
        stop, time_due, failed = (
            self.flag.should_stop(),
            self.periodic is not None and self.periodic.due_by_time(),
            self._writer.error is not None,
        )
        if is_distributed():
            if last or self._calls % self.agree_every == 0:
                stop, time_due, failed = agree(stop, time_due, failed)
            else:  # between agreements no rank acts on what only it knows
                stop = time_due = failed = False
        if failed:
            self._finish_write()
        if stop or last:
            self._stopping = stop
            with saving():  # the hang watchdog allows --save-timeout for this, not a step's time
                self._finish_write()
                if step != self.last_saved:
                    self._save(step, async_write=False)
            self.done = True
            return True
        if self.periodic is not None and (self.periodic.due_by_steps(step) or time_due):
            self._save(step, async_write=self.async_save)
        return False

    def save(self, step: int) -> None:
        """Save ``step`` now (an epoch's end, say), as a scheduled save would: on every rank at
        the same point, in the background with ``async_save=True``; a no-op when ``step`` was
        just saved. Raises :class:`CheckpointWriteFailed` on every rank when the write before
        it failed."""
        self._registered()
        if step != self.last_saved:
            self._save(step, async_write=self.async_save)

    @property
    def writing(self) -> bool:
        """True while a background write is in flight."""
        return self._writer.busy

    @property
    def fence_waited(self) -> float:
        """Seconds the last ``optimizer.step()`` that met a copy behind the training thread
        waited for it (``background_copy``); 0.0 without."""
        return self._fence.waited if self._fence is not None else 0.0

    @property
    def exit_code(self) -> int:
        """1 after a stop (the platform requeues the job), else 0."""
        return EXIT_REQUEUE if self._stopping else 0

    def close(self) -> None:
        """Wait for the background write in flight; raise :class:`CheckpointWriteFailed` on
        every rank if it failed on any. Collective: call it on every rank."""
        self._finish_write()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()  # a failed background write is an error of the block
        else:  # the block's own exception is the one to see; the write still finishes
            self._judge_copy()
            self._writer.wait()

    # -- saving -----------------------------------------------------------------------------

    def _registered(self) -> Parts:
        if self._parts is None:  # now, not at the first save an hour in
            raise ConfigError("call Checkpointer.restore(model=...) before the loop's step()")
        return self._parts

    def _judge_copy(self) -> None:
        """On the training thread: a copy behind it is over, and whole or not (``_io.fence``);
        the writer publishes only after this. Normally the next optimizer.step() did it."""
        if self._fence is not None:
            self._fence.check()

    def _finish_write(self) -> None:
        """Wait for the write in flight; raise on every rank if it failed on any."""
        self._judge_copy()
        self._writer.wait()
        self._collect_write()
        outcome(self._writer.error, "a background checkpoint write", kind=CheckpointWriteFailed)

    def _save(self, step: int, *, async_write: bool) -> None:
        parts = self._registered()
        if self.verbose:
            self._say(f"saving step {step}", logging.INFO)
        with saving():
            busy = self._writer.busy
            started = time.perf_counter()
            self._finish_write()  # at most one write in flight
            if busy and not self._stopping:
                self._say(f"the save of step {step} waited {time.perf_counter() - started:.2f} s "
                          "for the previous write (a save falls due before the last one is "
                          "written: save less often)")
            started = time.perf_counter()
            snap = self._backend.snapshot(parts, step, self.extra, async_write=async_write)
            self.last_bytes = snap.nbytes
            if snap.warning and not self._staging_warned:
                self._staging_warned = True
                self._advise(snap.warning)
            if self._stopping and (line := self.budget.stop_line(snap.nbytes,
                                                                 self.flag.time_left())):
                self._say(line)
            if async_write:
                self.last_stall = time.perf_counter() - started
                if snap.write is not None:  # else this rank has nothing to write
                    self._pending = (step, snap.nbytes, self.last_stall)
                    self._writer.start(snap.write)
            else:
                self._write_now(snap, step)
                self.last_stall = time.perf_counter() - started
                self.published = step
                self._record(snap.nbytes, self.last_stall, self.last_stall)
        self.last_saved = step
        if self.periodic is not None:
            self.periodic.mark(step)
        if self.verbose:
            self._say(f"saved step {step} in {self.last_stall:.3f} s", logging.INFO)

    def _write_now(self, snap: Snapshot, step: int) -> None:
        error: Exception | None = None
        try:
            if snap.write is not None:
                snap.write()
        except CheckpointError:
            raise  # a collective write (DCP) raises alike on every rank already
        except Exception as exc:  # every rank must hear of it: see outcome
            error = exc
        outcome(error, f"saving step {step}", kind=CheckpointWriteFailed)

    def _collect_write(self) -> None:
        """Account a finished background write in the budget (on the training thread)."""
        pending = self._pending
        if pending is None or self._writer.busy:
            return
        torn = self._writer.error
        if isinstance(torn, Torn):  # not a failure: a checkpoint fewer, and said
            self._writer.error, self._pending = None, None
            assert self._fence is not None
            self._fence.close()
            self.last_saved = self.published  # a stop at this very step saves it again
            self._say(f"the checkpoint of step {pending[0]} was discarded, not published: "
                      f"{torn}; later copies are taken on the training thread")
            return
        if self._writer.seconds is None:
            return
        self._pending = None
        step, nbytes, stall = pending
        self.published = step
        self._record(nbytes, stall + self._writer.seconds, stall)

    def _record(self, nbytes: int, seconds: float, stall: float) -> None:
        if remark := self._backend.remark:  # what retention left: said once
            self._backend.remark = ""  # not None: retain() sets it no more
            self._say(remark)
        if self.auto is not None and self.periodic is not None:  # every rank: the same stall
            if line := self.auto.measured(stall):
                self._say(line, logging.INFO)  # chosen again with this save's cost; said once
            self._every = (self._every[0], self.auto.seconds)
            self.periodic.every_seconds = self.auto.seconds
        if not nbytes:  # this rank wrote nothing (the file backend's ranks but 0)
            return
        first = not self.budget.warned
        self.budget.record(nbytes, seconds, stall)
        if warning := self.budget.first_warning():
            self._advise(warning)
        if first and rank() == 0:
            self.budget.publish(self.directory)

    def _say(self, line: str, level: int = logging.WARNING) -> None:
        if rank() == 0:  # every rank would say the same
            messages.say(line, level)

    def _advise(self, line: str) -> None:
        if rank() == 0:
            messages.advise(line)


__all__ = ["EXIT_REQUEUE", "CheckpointError", "CheckpointWriteFailed", "Checkpointer"]
