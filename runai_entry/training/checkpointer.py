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
ranks per ``agree_every`` steps (the stop, the time-based schedule, a failed background write);
numbered names that discovery orders (``step-00000500.safetensors``); atomic publishing and
retention that never removes the newest complete checkpoint; every rank's RNG states and the
sampler's position (a multi-rank resume is bit-exact); the exit code (1 after a stop).

Saves go through :mod:`.tensorfile` (raw tensor bytes in large writes). With ``async_save=True``
the training thread only copies the state to host memory; a background thread writes, fsyncs and
publishes it. At most one write is in flight: a save that falls due while the previous one is
still writing *waits* for it (and says how long), rather than being skipped, so the newest
checkpoint is never older than the schedule promises and every rank takes the same decision
without another collective. A failed background write raises on every rank at the next
agreement (the next ``step()`` with ``agree_every=1``).

``backend="dcp"`` saves the model and optimizer with torch.distributed.checkpoint (FSDP, tensor
parallel: each rank writes its shards) and everything else, per rank, beside them in the same
atomically published directory; the API and what is saved are the same. Async saves are for the
file backend only.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from runai_entry.errors import ConfigError
from runai_entry.training import tensorfile
from runai_entry.training.atomic import atomic_write, check_writable, clean_stale_temps, prune
from runai_entry.training.budget import SaveBudget
from runai_entry.training.errors import CheckpointWriteFailed
from runai_entry.training.heartbeat import heartbeat, saving
from runai_entry.training.resume import checkpoint_dir, resume_path
from runai_entry.training.schedule import Periodic
from runai_entry.training.stop import StopFlag, preemption
from runai_entry.training.torch import (
    CheckpointSaveFailed,
    _collective_device,
    _distributed,
    all_agree,
    load_training_state,
    rank,
    rng_state,
    set_rng_state,
    unwrap,
)
from runai_entry.training.writer import BackgroundWriter

#: What a stopped job exits with: Run:ai and runai-entry requeue on 1.
EXIT_REQUEUE = 1
SUFFIX = ".safetensors"
_OBJECTS = ("optimizer", "scheduler", "scaler")


class Checkpointer:
    """Restore, periodic and stop-time saves, retention and the exit code of a training loop.

    ``directory``: where checkpoints go; ``RUNAI_ENTRY_CHECKPOINT_DIR`` wins when runai-entry set
    it (it is the directory runai-entry discovers in). ``keep``: complete checkpoints kept.
    ``every_steps`` / ``every_seconds``: the periodic schedule (either, both, or neither: then only
    stop-time and last saves). ``agree_every``: steps between two agreements of the ranks (one
    all_reduce of three ints); a stop or a time-based save is noticed at the next agreement.
    ``flag``: a :class:`StopFlag` installed earlier (before slow imports); by default one is
    installed here. ``pinned_limit``: bytes of pinned host memory the CUDA staging buffer may
    take; a larger state is staged in pageable memory, with a warning. ``verbose``: rank 0
    prints ``saving step N`` when a save starts and ``saved step N in S s`` when it returns.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        keep: int = 3,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        async_save: bool = False,
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
        if async_save and backend == "dcp":
            raise ConfigError("async_save=True is for backend='file'; DCP saves are blocking")
        if not prefix or "/" in prefix or prefix.startswith("."):
            raise ConfigError(f"prefix {prefix!r} must be a plain, non-hidden file-name start")
        self.directory = chosen
        check_writable(chosen)
        self.keep, self.async_save, self.agree_every = keep, async_save, agree_every
        self.backend, self.prefix, self.verbose = backend, prefix, verbose
        self.flag = flag if flag is not None else preemption()
        self.budget = SaveBudget(self.flag.timeout)
        self._every = (every_steps, every_seconds)
        self.periodic: Periodic | None = None
        if every_steps is not None or every_seconds is not None:
            self.periodic = Periodic(every_steps, every_seconds)
        #: User values saved with every checkpoint and restored by :meth:`restore`.
        self.extra: dict[str, Any] = {}
        self.resumed_from: str | None = None
        #: The newest step saved (for an async save: copied, and being written).
        self.last_saved: int | None = None
        #: The newest step this process saw published complete under its final name.
        self.published: int | None = None
        #: Seconds the last save held the training thread (the copy, for an async save).
        self.last_stall: float = 0.0
        self._objects: dict[str, Any] = {}
        self._calls = 0
        self._stopping = False
        self.done = False
        self._staging = tensorfile.Staging(pinned_limit)
        self._staging_warned = False
        self._writer = BackgroundWriter()
        self._pending: tuple[int, int, float] | None = None  # in flight: step, bytes, stall

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
    ) -> int:
        """Register what is saved, load the newest complete checkpoint into it; the step to go on
        from (0 on a first run). Call on every rank.

        ``path`` overrides discovery (``--resume-from``); otherwise ``RUNAI_ENTRY_RESUME_FROM``,
        then the newest complete checkpoint in the directory. Files written by 0.1.0's
        ``save_training_state`` load too. ``sampler`` is anything with ``state_dict`` and
        ``load_state_dict`` (:class:`~runai_entry.training.torch.ResumableSampler`,
        ``StatefulDataLoader``).
        """
        self._objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                         "scaler": scaler, "sampler": sampler}
        if rank() == 0:
            clean_stale_temps(self.directory)  # what writers killed long ago left
        found = resume_path(path, directory=self.directory)
        step = 0 if found is None else self._load(found)
        if self.async_save and rank() == 0:
            # The host copy every async save needs, allocated and touched now, at start-up,
            # rather than inside the first save's stall.
            p = tensorfile.plan(self._state(step, [self._mine()]))
            self._staging.reserve(p.total_bytes, pinned=p.on_cuda)
        self.resumed_from = found
        self.last_saved = step if found is not None else None
        if self.periodic is not None:
            self.periodic = Periodic(*self._every, start_step=step)
        return step

    def _load(self, path: str) -> int:
        if os.path.isdir(path):
            return self._load_dcp(path)
        if not tensorfile.is_tensorfile(path):  # 0.1.0's torch.save format
            objects = {k: self._objects[k] for k in _OBJECTS}
            return load_training_state(path, model=self._objects["model"], **objects).step
        model = unwrap(self._objects["model"])  # read into its tensors: no copy in load_state_dict
        live = {k: self._objects[k].state_dict() for k in _OBJECTS if self._objects[k]}
        state = tensorfile.load(path, into={"model": model.state_dict(), **live},
                                exact=("model",), replicated=True)  # rank 0 reads, broadcasts
        model.load_state_dict(state["model"])
        self._apply(state, path, state["ranks"])
        return int(state["step"])

    def _apply(self, state: dict[str, Any], path: str, ranks: list[dict[str, Any]],
               names: tuple[str, ...] = _OBJECTS) -> None:
        for name in names:
            target = self._objects[name]
            if target is None:
                continue
            if name not in state:
                raise ConfigError(f"{path!r} holds no {name} state to restore")
            target.load_state_dict(state[name])
        # A different world size: each rank takes the state of the rank with its number if the
        # old run had one, else rank 0's; exactness is then not to be expected anyway.
        mine = ranks[rank()] if rank() < len(ranks) else ranks[0]
        set_rng_state(mine["rng"])
        sampler = self._objects["sampler"]
        if sampler is not None and "sampler" in mine:
            sampler.load_state_dict(mine["sampler"])
        self.extra = dict(state.get("extra", {}))

    # -- the loop ---------------------------------------------------------------------------

    def step(self, step: int, *, last: bool = False) -> bool:
        """Call once per training step, on every rank, after the step. True: leave the loop.

        Saves when the schedule says so, at the stop signal (then returns True, and
        :attr:`exit_code` is 1), and at ``last=True`` (the final step: waits for every write).
        Raises :class:`CheckpointWriteFailed` on every rank once a background write failed.
        """
        if self.done:
            return True
        if not self._objects:  # now, not at the first save an hour in
            raise ConfigError("call Checkpointer.restore(model=...) before the loop's step()")
        self._calls += 1
        heartbeat(step)  # for runai-entry's hang watchdog: this loop is alive, at this step
        self._collect_write()
        stop, time_due, failed = (
            self.flag.should_stop(),
            self.periodic is not None and self.periodic.due_by_time(),
            self._writer.error is not None,
        )
        if _distributed():
            if last or self._calls % self.agree_every == 0:
                stop, time_due, failed = self._agree(stop, time_due, failed)
            else:  # between agreements no rank acts on what only it knows
                stop = time_due = failed = False
        if failed:
            self._raise_write_error()
        if stop or last:
            self._stopping = stop
            self._final_save(step)
            return True
        if self.periodic is not None and (self.periodic.due_by_steps(step) or time_due):
            self._save(step, blocking=not self.async_save)
        return False

    @property
    def exit_code(self) -> int:
        """1 after a stop (the platform requeues the job), else 0."""
        return EXIT_REQUEUE if self._stopping else 0

    def close(self) -> None:
        """Wait for the background write in flight; raise if it failed (as ``step(last=True)``)."""
        self._writer.wait()
        self._collect_write()
        if self._writer.error is not None:
            self._raise_write_error()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:  # a write in flight finishes first
        self._writer.wait()

    # -- saving -----------------------------------------------------------------------------

    def _agree(self, *values: bool) -> tuple[bool, ...]:
        t = torch.tensor([int(v) for v in values], dtype=torch.int32, device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def _final_save(self, step: int) -> None:
        """Finish the write in flight, then save ``step`` unless it was just written."""
        with saving():  # the hang watchdog allows --save-timeout for this, not a step's time
            self._writer.wait()
            self._collect_write()
            if not all_agree(self._writer.error is None, any_rank=False):
                self._raise_write_error()
            if step != self.last_saved:
                self._save(step, blocking=True)
        self.done = True

    def _save(self, step: int, *, blocking: bool) -> None:
        if self.verbose and rank() == 0:
            print(f"saving step {step}\n", end="", flush=True)  # one write: ranks share a pipe
        with saving():
            if self.backend == "dcp":
                self._save_dcp(step)
            else:
                self._save_file_everywhere(step, blocking=blocking)
        if self.verbose and rank() == 0:
            print(f"saved step {step} in {self.last_stall:.3f} s\n", end="", flush=True)

    def _save_file_everywhere(self, step: int, *, blocking: bool) -> None:
        ranks = self._gather_ranks()
        path = os.path.join(self.directory, f"{self.prefix}{step:08d}{SUFFIX}")
        ok, error = True, None
        if rank() == 0:
            try:
                self._save_file(path, step, ranks, blocking=blocking)
            except Exception as exc:  # every rank must hear of it: see all_agree below
                ok, error = False, exc
        if not all_agree(ok, any_rank=False):
            if error is not None:
                raise error
            raise CheckpointWriteFailed(f"rank 0 failed to save {path!r}")
        self.last_saved = step
        if self.periodic is not None:
            self.periodic.mark(step)

    def _save_file(self, path: str, step: int, ranks: list[Any], *, blocking: bool) -> None:
        busy = self._writer.busy
        waited = self._writer.wait()  # at most one write in flight
        self._collect_write()
        if self._writer.error is not None:
            raise self._writer.error
        if busy and not self._stopping:
            self._say(f"the save of step {step} waited {waited:.2f} s for the previous write "
                      "(a save falls due before the last one is written: save less often)")
        started = time.perf_counter()
        p = tensorfile.plan(self._state(step, ranks))
        if self._stopping:
            line = self.budget.stop_line(p.total_bytes, self.flag.time_left())
            if line:
                self._say(line)
        staging = self._staging
        # Async: the copy is the snapshot, done before step() returns (on CUDA: launched, and
        # ordered before the next step's kernels on the same stream). Blocking on CPU: copied
        # in a helper thread while this one writes what is already copied.
        staging.fill(p, background=blocking and not p.on_cuda)
        if staging.warning and not self._staging_warned:
            self._staging_warned = True
            self._say(staging.warning)
        if blocking:
            self._publish(path, p, staging)
            self.last_stall = time.perf_counter() - started
            self.published = step
            self._record(p.total_bytes, self.last_stall)
            return
        self.last_stall = time.perf_counter() - started
        self._pending = (step, p.total_bytes, self.last_stall)
        self._writer.start(lambda: self._publish(path, p, staging))

    def _publish(self, path: str, p: tensorfile.Plan, staging: tensorfile.Staging) -> None:
        atomic_write(path, lambda tmp: tensorfile.write(tmp, p, staging))
        prune(self.directory, keep=self.keep, pattern=f"{self.prefix}*")

    def _collect_write(self) -> None:
        """Account a finished background write in the budget (on the training thread)."""
        pending = self._pending
        if pending is None or self._writer.busy or self._writer.seconds is None:
            return
        self._pending = None
        step, nbytes, stall = pending
        self.published = step
        self._record(nbytes, stall + self._writer.seconds)

    def _record(self, nbytes: int, seconds: float) -> None:
        first = not self.budget.warned
        self.budget.record(nbytes, seconds)
        if warning := self.budget.first_warning():
            self._say(warning)
        if first and rank() == 0:
            self.budget.publish(self.directory)

    def _raise_write_error(self) -> None:
        error = self._writer.error
        if error is not None:
            raise CheckpointWriteFailed(f"a background checkpoint write failed: {error}") from error
        raise CheckpointWriteFailed("rank 0's checkpoint write failed")

    def _say(self, line: str) -> None:
        if rank() == 0:
            print(f"runai-entry checkpointer: {line}", file=sys.stderr, flush=True)

    def _mine(self) -> dict[str, Any]:
        mine: dict[str, Any] = {"rng": rng_state()}
        sampler = self._objects.get("sampler")
        if sampler is not None:
            mine["sampler"] = sampler.state_dict()
        return mine

    def _gather_ranks(self) -> list[Any]:
        """Every rank's RNG states and data position, to rank 0 (one small collective)."""
        mine = self._mine()
        if not _distributed():
            return [mine]
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        return everyone

    def _state(self, step: int, ranks: list[Any], names: tuple[str, ...] | None = None,
               ) -> dict[str, Any]:
        """What a checkpoint holds; ``names`` given: only those objects, and no model."""
        if not self._objects:
            raise ConfigError("call Checkpointer.restore(model=...) before the loop")
        state: dict[str, Any] = {"step": int(step), "ranks": ranks, "extra": dict(self.extra)}
        if names is None:
            state["model"] = unwrap(self._objects["model"]).state_dict()
        for name in _OBJECTS if names is None else names:
            if self._objects[name] is not None:
                state[name] = self._objects[name].state_dict()
        return state

    # -- DCP backend ------------------------------------------------------------------------

    def _save_dcp(self, step: int) -> None:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        from runai_entry.training.dcp import prune_sharded, save_sharded

        model, optimizer = self._objects["model"], self._objects["optimizer"]
        model_state, optim_state = get_state_dict(model, optimizer or [])
        started = time.perf_counter()
        # Everything but the shards is small and per rank: each rank writes its own file into
        # the temporary directory, published with the shards or not at all.
        p = tensorfile.plan(self._state(step, [self._mine()], names=("scheduler", "scaler")))
        name = f"rank-{rank():05d}{SUFFIX}"
        path = os.path.join(self.directory, f"{self.prefix}{step:08d}")
        save_sharded(path, {"model": model_state, "optimizer": optim_state},
                     before_publish=lambda tmp: atomic_write(
                         os.path.join(tmp, name), lambda t: tensorfile.write(t, p)))
        if rank() == 0:
            prune_sharded(self.directory, keep=self.keep, pattern=f"{self.prefix}*")
        self.published = step
        self.last_stall = time.perf_counter() - started
        self.last_saved = step
        if self.periodic is not None:
            self.periodic.mark(step)

    def _load_dcp(self, path: str) -> int:
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from runai_entry.training.dcp import load_sharded

        model, optimizer = self._objects["model"], self._objects["optimizer"]
        model_state, optim_state = get_state_dict(model, optimizer or [])
        load_sharded(path, {"model": model_state, "optimizer": optim_state})
        set_state_dict(model, optimizer or [], model_state_dict=model_state,
                       optim_state_dict=optim_state)
        own = os.path.join(path, f"rank-{rank():05d}{SUFFIX}")
        if not os.path.exists(own):  # fewer ranks wrote it: see _apply
            own = os.path.join(path, f"rank-{0:05d}{SUFFIX}")
        state = tensorfile.load(own)
        self._apply(state, path, state["ranks"], names=("scheduler", "scaler"))
        return int(state["step"])


__all__ = ["EXIT_REQUEUE", "CheckpointWriteFailed", "Checkpointer"]
