"""Work that may hang in the kernel, run with a time limit, inside a training process.

A call into a dead NFS server blocks in uninterruptible sleep: no signal or timeout reaches it.
The library (``resume_path``'s discovery) bounds it by running it in a daemon thread and no
longer waiting. A thread, not a helper process: forking a trainer that holds CUDA and NCCL
threads is not safe. The supervisor, which must also be able to exit, uses helper processes
instead (:mod:`runai_entry.supervisor.storage_io`): a thread stuck in the kernel keeps its process
from exiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_timeout(work: Callable[[], T], timeout: float, name: str = "runai-entry-io") -> T:
    """Return ``work()``, re-raise what it raised, or raise TimeoutError after ``timeout`` s."""
    import threading

    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            failure.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if failure:
        raise failure[0]
    return outcome[0]
