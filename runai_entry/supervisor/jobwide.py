"""Job-wide preemption as the supervisor sees it: watch for a peer's, announce ours, settle.

The protocol itself (the marker file, who wrote it, what "changed" means) is
:mod:`.jobwide_markers`, and runs in helper processes, since the checkpoint directory may be a
mount that stopped answering. This is the supervisor's side of it: three moments, each one call
from the loop.

- :meth:`JobWide.start`: a helper starts watching the marker when the job starts.
- :meth:`JobWide.watch_ended`: the watching helper exited; a peer's announcement, if any, for
  the loop to stop the job on. :meth:`JobWide.announce`: our own preemption, told at once, since
  the peers' jobs must save while ours does.
- :meth:`JobWide.settle`: after the job, whether a peer's preemption is why it ended, and the
  announcement delivered before runai-entry exits (its exit would kill the helper).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from runai_entry.supervisor import storage_io
from runai_entry.supervisor.jobwide_markers import Membership, announce, peer_preemption, watch

if TYPE_CHECKING:
    from runai_entry.supervisor.logs import Logger

#: After the job, how long the checkpoint directory may take to say whether a peer preempted.
PEER_CHECK_TIMEOUT = 5.0


class JobWide:
    """One member's part in job-wide preemption during one attempt."""

    def __init__(self, membership: Membership, storage_timeout: float, log: Logger,
                 signals: Collection[int]) -> None:
        self.membership = membership
        self.storage_timeout = storage_timeout
        self.log = log
        self.signals = signals  # what to keep answering while a helper is awaited
        self.watcher: storage_io.Helper[dict[str, Any]] | None = None
        self.announcer: storage_io.Helper[None] | None = None
        #: The peer's announcement this member followed, once it did.
        self.followed: dict[str, Any] | None = None

    def peer(self) -> dict[str, Any] | None:
        """Who this member followed, as a person needs it: member, attempt, host, cause, when."""
        return None if self.followed is None else who(self.followed)

    def start(self) -> None:
        membership = self.membership
        self.watcher = storage_io.start(lambda stage: watch(membership, stage), "peer watch")

    def watch_ended(self, pid: int) -> dict[str, Any] | None:
        """``pid``, a helper, exited: if it was the watch, the peer's announcement it found."""
        if self.watcher is None or pid != self.watcher.pid:
            return None
        try:
            return self.watcher.result()
        except Exception as exc:  # the watch itself failed; the job must go on regardless
            self.log.warning("peer_watch_failed", problem=str(exc))
            return None

    def announce(self, cause: str) -> None:
        """Tell the peers of our preemption, unless we are following theirs."""
        if self.followed is None:
            membership = self.membership
            self.announcer = storage_io.start(lambda stage: announce(membership, cause),
                                              "preemption announcement")

    def settle(self, preempted_at: float | None, stop_timeout: float,
               returncode: int | None) -> None:
        """After the job: did a peer's preemption end it, and have the peers heard of ours?"""
        if self.watcher is not None:
            self.watcher.kill()
            self.watcher.close()
        if preempted_at is None:
            # The command ended by itself. A peer's preemption may be why: its ranks agreed to
            # stop (exit 0) or vanished from a collective (a crash) before our watch saw it.
            self._check_peers(returncode)
        elif self.announcer is not None:
            # It may take what is left of the grace window: all the platform gives us anyway.
            deadline = min(preempted_at + stop_timeout, time.monotonic() + self.storage_timeout)
            self._deliver(self.announcer, deadline)

    def _check_peers(self, returncode: int | None) -> None:
        membership = self.membership
        try:
            self.followed = storage_io.call(
                lambda stage: peer_preemption(membership), "peer check",
                min(PEER_CHECK_TIMEOUT, self.storage_timeout), self.signals)
        except (storage_io.HelperTimeout, OSError) as exc:
            self.log.warning("peers_not_checked", problem=str(exc),
                             consequence="the command's own exit code stands")
        if self.followed is not None:
            self.log.info("followed_peer", peer=self.peer(), returncode=returncode)

    def _deliver(self, announcer: storage_io.Helper[None], deadline: float) -> None:
        try:
            storage_io.await_result(announcer, deadline, self.signals)
        except (storage_io.HelperTimeout, OSError) as exc:
            self.log.warning("preemption_not_announced", problem=str(exc),
                             consequence="the job's other members do not stop")
        finally:
            announcer.kill()
            announcer.close()


def who(announced: dict[str, Any]) -> dict[str, Any]:
    """The fields of a peer's announcement a person needs: which member, which attempt, where."""
    return {key: announced.get(key) for key in ("member", "attempt", "host", "cause", "at")}
