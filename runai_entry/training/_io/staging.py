"""The host copy of a checkpoint: one aligned buffer, filled on the training thread or behind it.

A save is a snapshot: the bytes must be those of one step. The copy into host memory is that
snapshot, and its cost is what an async save costs the training loop. On CPU it is a ``memcpy``
of the whole state, on CUDA a device→host copy over the bus (figures: docs/benchmarks.md). Two
ways to take it:

* **here**, on the training thread (the default): done when ``step()`` returns, whatever the loop
  does next;
* **behind** the training thread, for what only ``optimizer.step()`` changes (the parameters and
  the optimizer's state): a helper thread on CPU, a side stream on CUDA, while the next forward and
  backward pass run; the next ``optimizer.step()`` waits for it (:mod:`.fence`). What a forward
  pass may change (buffers: BatchNorm's statistics, DDP's buffer broadcast) is always copied here.

A blocking save on CPU copies everything behind, in a helper thread, while the writer writes what
is already copied: the two overlap, and the training thread waits for the write anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import torch

from runai_entry.training._io import diskio
from runai_entry.training._io.tensorfile import Plan


class Staging:
    """One host buffer holding the whole file (header, then data), reused from save to save.

    On CUDA it is pinned, so the copies run at the bus's speed and asynchronously; each copy
    records an event, and the writer waits for a tensor's event only when it reaches that
    tensor's bytes, so copying and writing overlap. The buffer starts at a 4096-byte boundary, so
    the writer can bypass the page cache (``O_DIRECT``), which reaches the disk's speed where
    buffered writes plus fsync do not (bench/checkpointer_save.py). It satisfies
    :class:`.tensorfile.Staged`.

    When pinned memory cannot be had (the state is larger than ``pinned_limit`` or the
    allocation fails) it falls back to pageable memory, and :attr:`warning` says so once.
    """

    def __init__(self, pinned_limit: int | None = None) -> None:
        self.pinned_limit = pinned_limit
        self.buffer: torch.Tensor | None = None
        self.pinned = False
        self.warning: str | None = None
        self._storage: torch.Tensor | None = None
        self._events: list[tuple[int, Any]] = []  # (start offset, cuda event), ascending
        self._copied = 0  # bytes at the start of the buffer that hold the plan's content
        self._error: BaseException | None = None
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._side: Any = None  # the CUDA stream of copies taken behind the training thread
        self._side_used = False

    def reserve(self, nbytes: int, *, pinned: bool) -> None:
        """Have a buffer of at least ``nbytes``; a new one is touched page by page now, so that
        the page faults are paid here (start-up) rather than in the first save's stall."""
        if self.buffer is not None and self.buffer.numel() >= nbytes:
            return
        self.buffer = self._storage = None  # free the old one first: two at once may not fit
        size = nbytes + diskio.ALIGN
        if pinned and (self.pinned_limit is None or nbytes <= self.pinned_limit):
            try:
                self._storage = torch.empty(size, dtype=torch.uint8, pin_memory=True)
                self.pinned = True
            except RuntimeError as exc:
                reason = f"pinning {nbytes / 1e9:.2f} GB failed ({str(exc).splitlines()[0]})"
        else:
            reason = f"the state ({nbytes / 1e9:.2f} GB) exceeds pinned_limit"
        if self._storage is None:
            if pinned and self.warning is None:
                self.warning = (f"checkpoint staging falls back to pageable host memory: "
                                f"{reason}; device-to-host copies will be slower and synchronous")
            # Huge pages: an O_DIRECT write pins every page it writes from, and 512 times fewer
            # pages cost the writer a third of the CPU (bench/checkpointer_save.py). Filled with
            # zeros to fault them in now.
            self._storage = diskio.huge_page_empty(size).fill_(0)
            self.pinned = False
        start = -self._storage.data_ptr() % diskio.ALIGN
        self.buffer = self._storage[start:start + nbytes]

    def fill(self, p: Plan, *, behind: bool | Collection[int] = False) -> None:
        """Copy ``p``'s header and tensors into the buffer. ``behind``: the entries (indices into
        ``p.entries``; True: all) copied behind the training thread, after every other one was
        copied here. :meth:`wait` tells the writer when bytes are there; :meth:`settle` makes
        the training thread wait for the copies behind it."""
        self.join()
        self.reserve(p.total_bytes, pinned=p.on_cuda)
        assert self.buffer is not None
        diskio.memory(self.buffer, 0, len(p.header))[:] = p.header
        self._copied, self._error, self._events = len(p.header), None, []
        later = set(range(len(p.entries))) if behind is True else set(behind or ())
        self._side_used = False
        if p.on_cuda:
            # Launches only: no thread needed. Copies behind go on a side stream, ordered after
            # the work queued so far and overlapping the next step's kernels until settle().
            self._copy(p, skip=later)
            if later:
                self._side_used = True
                side = self._side_stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._copy(p, skip=set(range(len(p.entries))) - later)
            self._events.sort(key=lambda item: item[0])
            self._raise()
            return
        if later:
            self._copy(p, skip=later, progress=False)  # here, before step() returns
            self._raise()
            self._thread = threading.Thread(
                target=self._copy, args=(p, set(range(len(p.entries))) - later),
                name="runai-entry-checkpoint-copy")
            self._thread.start()
        else:
            self._copy(p, skip=set())
            self._raise()

    def _copy(self, p: Plan, skip: set[int], progress: bool = True) -> None:
        assert self.buffer is not None
        base = len(p.header)
        try:
            for i, e in enumerate(p.entries):
                start = base + e.offset
                if e.nbytes and i not in skip:
                    target = self.buffer[start:start + e.nbytes].view(e.tensor.dtype)
                    target = target.view(e.tensor.shape)
                    if e.tensor.is_cuda:
                        target.copy_(e.tensor, non_blocking=self.pinned)
                        # The memory is the live state's: it must outlive a copy on a side stream.
                        e.tensor.record_stream(torch.cuda.current_stream())
                        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                        event.record()
                        self._events.append((start, event))
                    else:
                        target.copy_(e.tensor)
                if progress:
                    with self._progress:
                        self._copied = start + e.nbytes
                        self._progress.notify_all()
            if progress:
                with self._progress:
                    self._copied = p.total_bytes
                    self._progress.notify_all()
        except BaseException as exc:  # raised to the writer by wait(), or by fill() at once
            with self._progress:
                self._error = exc
                self._progress.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _side_stream(self) -> Any:
        if self._side is None:
            self._side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        return self._side

    def wait(self, upto: int) -> None:
        """Block until the buffer's first ``upto`` bytes hold the plan's content."""
        with self._progress:
            self._progress.wait_for(lambda: self._copied >= upto or self._error is not None)
            self._raise()
        while self._events and self._events[0][0] < upto:
            self._events.pop(0)[1].synchronize()

    def settle(self) -> None:
        """Order what runs next on the training thread after the copies behind it: on CPU,
        wait for the helper thread; on CUDA, make the current stream wait for the side stream
        (the host does not wait)."""
        self.join()
        if self._side_used:
            torch.cuda.current_stream().wait_stream(self._side)
            self._side_used = False

    def join(self) -> None:
        """Wait for a helper thread's copy to end (a write that failed may have left one)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
