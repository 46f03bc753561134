"""What keeps a snapshot copied behind the training thread whole: ``optimizer.step()`` waits.

With ``Checkpointer(async_save=True, background_copy=True)`` the parameters and the optimizer's
state are copied to host memory while the next forward and backward pass run
(:mod:`.staging`). That is sound as long as nothing changes them before the copy is done, and in
a ``torch.optim`` loop only the optimizers' ``step()`` does: a step pre-hook on every optimizer
given to ``restore()`` (its ``optimizer`` and any named one) waits for the copy there.

A loop that changes them elsewhere (weight clipping, an EMA written into the weights, an
optimizer the Checkpointer was not given) would tear the snapshot. The fence sees it: every
tensor's version counter (bumped by each in-place change) is compared when the copy is over, on
the training thread; a changed one *discards* that checkpoint before it is published, and later
snapshots are copied on the training thread. The writer publishes only after that comparison.
One change stays invisible: a write through ``param.data``, whose version counter is its own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

#: How often the writer, waiting for the training thread's verdict, looks whether the main
#: thread is gone (then nobody will give one, and it judges by itself).
_POLL = 0.1


class Torn(Exception):
    """The snapshot changed while it was copied; the checkpoint is discarded, not published."""


class Fence:
    """The step pre-hook of the optimizer, and the verdict on the snapshot in flight."""

    def __init__(self) -> None:
        self._hooks: list[Any] = []
        self._tensors: list[torch.Tensor] = []
        self._names: list[str] = []
        self._versions: list[int] = []
        self._settle: Any = None
        self._armed = False
        self._verdict: str | None = None
        self._judged = threading.Event()
        self._judged.set()  # nothing in flight
        self._lock = threading.Lock()  # the training thread and, once it is gone, the writer
        #: False once a torn snapshot was seen, or the Checkpointer closed: copies are then
        #: taken on the training thread again.
        self.enabled = True
        #: Seconds the last check waited for the copy (what the loop lost to it, on CPU).
        self.waited = 0.0

    def watch(self, optimizers: list[Any]) -> None:
        """Hold every one of ``optimizers``' ``step()`` until the copy in flight is done (torch's
        step pre-hook); instead of those an earlier call watched (a second ``restore()``)."""
        self.close()
        self.enabled = True
        self._hooks = [optimizer.register_step_pre_hook(lambda *_: self.check())
                       for optimizer in optimizers]

    def arm(self, tensors: list[torch.Tensor], names: list[str], settle: Any) -> None:
        """A copy of ``tensors`` (called ``names`` in the checkpoint) has started behind the
        training thread; ``settle()`` waits for it (on the training thread). Call on the
        training thread, before anything changes them."""
        self._tensors, self._names = tensors, names
        self._versions = [t._version for t in tensors]
        self._settle, self._verdict, self._armed = settle, None, True
        self._judged.clear()

    def check(self) -> None:
        """On the training thread: wait for the copy, then judge it (a no-op when none is in
        flight). Everything this thread changed before is visible now."""
        if not self._armed:
            return
        started = time.perf_counter()
        self._settle()
        self.waited = time.perf_counter() - started
        self._judge()

    def _judge(self) -> None:
        with self._lock:
            if self._armed:
                self._compare()

    def _compare(self) -> None:
        self._armed = False
        changed = [i for i, t in enumerate(self._tensors) if t._version != self._versions[i]]
        if changed:
            self._verdict = (f"{self._names[changed[0]]!r} (and {len(changed) - 1} more of the "
                             f"{len(self._tensors)} tensors copied behind the training thread) "
                             "changed in place before optimizer.step(), which background_copy="
                             "True needs to be their only change")
        self._tensors, self._names, self._versions, self._settle = [], [], [], None
        self._judged.set()

    def verdict(self) -> str | None:
        """In the writer, before it publishes: wait until the training thread judged the copy;
        the reason it is torn, or None. If the main thread has ended, nothing can change the
        tensors any more, and the writer judges by itself."""
        while not self._judged.wait(_POLL):
            if not threading.main_thread().is_alive():
                # The copy is over (the writer waited for every byte of it).
                self._judge()
        return self._verdict

    def close(self) -> None:
        """Stop holding ``optimizer.step()``; later snapshots are copied on the training thread."""
        self.enabled = False
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
