"""Who gets the stop signal: the job processes that handle it, not what they started for themselves.

The stop signal asks a trainer to save. Sent to every process of the job, it also reaches what the
trainer started for its own use, and that is what breaks real jobs: PyTorch's DataLoader workers
die of SIGTERM (a C handler re-raises it) and the trainer then raises ``DataLoader worker (pid N)
is killed by signal: Terminated`` in its main thread instead of saving; a multiprocessing pool or
a logging service that the trainer must still talk to while it saves dies under it. Python alone
as PID 1 gets this right, because the kubelet signals only it.

So the stop is delivered down the tree from runai-entry's children, decided once per stop from
/proc (the ``SigCgt`` and ``SigBlk`` masks of ``/proc/PID/status``: which signals a process has a
handler for, or waits for with ``sigwait``):

- a process that handles the stop signal gets it, and owns the stop of everything it started:
  the walk does not go below it (data workers, pools, services are its to stop);
- a process that would die of it, or ignores it (a shell without a trap, a thin wrapper), gets it
  too, and the walk goes on to its children: python behind ``sh -c`` still gets it;
- a process that handles it and started torch elastic workers is a launcher (torchrun,
  ``accelerate launch``): its agent answers SIGTERM by ``killpg`` of each worker's session, which
  holds the worker's data workers, so its workers get the stop signal and the launcher waits
  (:attr:`Delivery.waiting`) until nothing but the workers themselves is left in those sessions
  (a worker alone gets the launcher's SIGTERM as a repeat, which a handler takes in its stride;
  a multi-node agent stopped with its workers, as torchrun alone is, shuts down cleanly), or
  once half the stop's budget has passed (``release``): a rank stuck in a collective with a peer
  that already left (ranks that did not agree on the step to stop at) would otherwise hold the
  launcher, whose own teardown is what ends such a rank, until the deadline's SIGKILL.
  Workers are told by what the agent gives each one and nothing else does: their own session,
  and ``TORCHELASTIC_RUN_ID`` in their environment. A child in a session of its own is not
  enough: W&B's service is started so too, and its trainer must still talk to it while it saves.

What is left behind when its owner exits is re-parented to runai-entry, and the next delivery
(after each exit during the stop) reaches it. Everything still gets SIGKILL at the deadline.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from runai_entry.supervisor import storage_io
from runai_entry.supervisor.processes import Stat, children_by_parent, read_stat, scan

#: How soon a stop looks again for processes that need the signal: a held-back launcher whose
#: workers are gone (not our children: their exits wake the launcher, not us), the leftovers of
#: an owner that exited. At most this often, so that a thousand processes exiting one by one
#: cost twenty /proc scans a second, not a thousand.
RECHECK = 0.05


#: What torch elastic puts in each worker's environment (torch/distributed/elastic/agent).
ELASTIC_WORKER = b"TORCHELASTIC_RUN_ID="


class Delivery(NamedTuple):
    """One stop signal's addressees, from one /proc scan."""

    targets: list[int]  # who gets the signal now, parents before children
    waiting: list[int]  # launchers that get it once the workers below them are gone


class Delivered:
    """One stop's delivery so far: its signal, who has had it, and the launchers held back
    (with their workers' sessions, see :func:`plan`'s ``held``)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.pids: set[int] = set()
        self.held: dict[int, set[int]] = {}

    def send(self, command: int, *, again: bool = False, release: bool = False,
             ) -> tuple[list[int], list[int]]:
        """The signal to those that need it and have not had it (``again``: to all of them,
        a repeated SIGTERM), the command first (:func:`direct`). Returns who got it and who is
        held back. Raises OSError when /proc cannot be read (no descriptor left)."""
        sent = []
        if (again or command not in self.pids) and direct(command, self.signum):
            sent = self._signal([command])
        found = plan(self.signum, self.held, release=release)
        sent += self._signal([pid for pid in found.targets
                              if pid not in sent and (again or pid not in self.pids)])
        return sent, found.waiting

    def _signal(self, pids: list[int]) -> list[int]:
        sent = []
        for pid in pids:
            try:
                os.kill(pid, self.signum)
            except ProcessLookupError:  # exited since the scan: nothing left to tell it
                continue
            sent.append(pid)
        self.pids.update(sent)
        return sent


def handles(pid: int, signum: int) -> bool | None:
    """Whether ``pid`` takes ``signum`` itself (None: it is gone): a handler is installed
    (``SigCgt``), or its main thread blocks the signal to ``sigwait`` for it (``SigBlk``: a
    supervisor such as runai-entry, tini or dumb-init one level down)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:  # exited since the scan
        return None
    bit = 1 << (signum - 1)
    return any(_mask(status, field) & bit for field in (b"SigCgt", b"SigBlk"))


def _mask(status: bytes, field: bytes) -> int:
    start = status.find(b"\n" + field + b":")
    if start < 0:  # a zombie past its exit: no handlers to speak of
        return 0
    start += len(field) + 2
    return int(status[start:status.find(b"\n", start)], 16)


def direct(pid: int, signum: int) -> bool:
    """Whether ``pid`` (the command) gets ``signum`` now, before the scan of /proc that
    :func:`plan` makes: the scan reads every process on the machine (a millisecond warm, several
    cold, with a few hundred), and the command is the process that saves in most jobs. Yes unless
    it is a launcher, told from its main thread's children (where torch elastic forks them)."""
    handler = handles(pid, signum)
    if not handler:
        return handler is not None
    mine = read_stat(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            children = [int(child) for child in f.read().split()]
    except OSError:  # gone, or a kernel without the lists: the scan decides
        return False
    for child in children:
        theirs = read_stat(child)
        if mine and theirs and theirs[0].session != mine[0].session \
                and _is_elastic_worker(child):
            return False
    return mine is not None


def _is_elastic_worker(pid: int) -> bool:
    """Whether torch elastic started ``pid`` as a worker: its environment at exec holds the
    run id the agent gives each worker (read only for a handler's children in other sessions)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to read
        return False
    return environ.startswith(ELASTIC_WORKER) or b"\0" + ELASTIC_WORKER in environ


def plan(signum: int, held: dict[int, set[int]] | None = None, *,
         release: bool = False) -> Delivery:
    """Who gets ``signum`` now, and who waits: see the module's docstring.

    ``held``: launcher pid → the sessions of the workers it started, kept by the caller from
    one delivery to the next. A rank's shell that died of the signal leaves its python, still
    saving in the same session, re-parented to us: the launcher would still ``killpg`` it.
    ``release``: launchers are held back no longer.
    """
    held = {} if held is None else held
    stats = scan()
    children = children_by_parent(stats)
    ours = storage_io.running()
    targets: list[int] = []
    waiting: list[int] = []

    def visit(pid: int, stat: Stat) -> None:
        if stat.state == "Z":  # exited already: nothing to tell it, and its children are gone
            return
        below = [(child, stats[child]) for child in children.get(pid, ()) if child in stats]
        handler = handles(pid, signum)
        if handler is None:
            return
        if handler:
            launched = [(child, s) for child, s in below
                        if s.session != stat.session and _is_elastic_worker(child)]
            for child, child_stat in launched:
                visit(child, child_stat)
            sessions = held.setdefault(pid, set())
            sessions.update(s.session for _, s in launched)
            # A worker leads its session: only what else is in it (its data workers, the python
            # behind a rank's shell) is what the launcher's killpg would take from a save.
            busy = any(s.session in sessions and s.state != "Z" and other != s.session
                       for other, s in stats.items())
            (waiting if busy and not release else targets).append(pid)
            return
        targets.append(pid)
        for child, child_stat in below:
            visit(child, child_stat)

    for child in children.get(os.getpid(), ()):
        if child not in ours and child in stats:
            visit(child, stats[child])
    return Delivery(targets, waiting)

