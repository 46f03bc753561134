"""The supervisor loop: from a started job to runai-entry's exit code.

It sleeps in the kernel (``sigtimedwait``) until a signal arrives — SIGCHLD included, which is
how it learns of exits — or the next timer falls due, so an idle job costs it no CPU. Signals
are blocked, never handled asynchronously: each one is dealt with here, in normal flow, where
waiting and signalling are safe (dumb-init's design).

The class is the state machine only. Job-wide preemption
(:class:`~runai_entry.supervisor.jobwide.JobWide`) and the hang watchdog
(:class:`~runai_entry.supervisor.watchdog.HangWatch`) are collaborators the loop calls at fixed
moments; each is None when its option is off. So is the guardian
(:class:`~runai_entry.supervisor.guardian.Guardian`), started before the first sleep.
"""

from __future__ import annotations

import enum
import signal
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from runai_entry.config.loading import Config
from runai_entry.core.signals import handled_signals, signal_name
from runai_entry.supervisor import delivery, processes, storage_io
from runai_entry.supervisor.exitcodes import Outcome, decide

if TYPE_CHECKING:  # built by attempt.py only when their option is on: start-up pays for use
    from runai_entry.supervisor.failures import Observer
    from runai_entry.supervisor.guardian import Guardian
    from runai_entry.supervisor.jobwide import JobWide
    from runai_entry.supervisor.logs import Logger
    from runai_entry.supervisor.watchdog import HangWatch

#: What the loop waits for; ``cli.main`` blocked exactly these before anything else.
HANDLED_SIGNALS = handled_signals()

#: After SIGKILL, how long to wait for the kernel to finish the victims before exiting anyway.
#: A process in uninterruptible sleep (a hung NFS write) can outlive SIGKILL; waiting for it
#: would let the platform's own SIGKILL overtake us and lose the exit code.
KILL_REAP_WINDOW = 0.5


class State(enum.Enum):
    """Where the supervisor is. The allowed transitions (:data:`TRANSITIONS`), and their causes:

    RUNNING  → STOPPING  SIGTERM, --simulate-preempt, or a peer's announced preemption: the
                         stop signal goes to the job processes that handle it
                         (:mod:`~runai_entry.supervisor.delivery`) and the one deadline is set to
                         now + grace − margin.
    RUNNING  → CLEANING  the command exited with job processes left: they get SIGTERM (the
                         same delivery) and the deadline is set to now + cleanup timeout.
    RUNNING  → DUMPING   a job process missed its heartbeat allowance (the hang watchdog): its
                         stacks are requested; the deadline is set to now + the dump window.
    DUMPING  → STOPPING  the dump window passed: the stop signal, and the deadline is set to
                         now + the shorter of grace − margin and the hang grace. (A SIGTERM
                         meanwhile is a preemption, with the preemption's deadline.)
    STOPPING → KILLING   the deadline passed with job processes left: SIGKILL to all of them.
    CLEANING → KILLING   the cleanup deadline passed.
    any      → EXITED    the last job process is gone (waitpid says ECHILD, or only our storage
                         helpers are left), or KILLING's reap window ran out.
    """

    RUNNING = "running"
    DUMPING = "dumping"
    STOPPING = "stopping"
    CLEANING = "cleaning"
    KILLING = "killing"
    EXITED = "exited"


#: The docstring's table as the loop enforces it (tests/supervisor/test_loop.py holds the two
#: together): each state, and the states it may enter.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.RUNNING: frozenset({State.STOPPING, State.CLEANING, State.DUMPING, State.EXITED}),
    State.DUMPING: frozenset({State.STOPPING, State.EXITED}),
    State.STOPPING: frozenset({State.KILLING, State.EXITED}),
    State.CLEANING: frozenset({State.KILLING, State.EXITED}),
    State.KILLING: frozenset({State.EXITED}),
    State.EXITED: frozenset(),
}

def transition(old: State, new: State) -> State:
    """``new``, when the State table allows ``old`` → ``new``; a bug in the loop otherwise."""
    if new not in TRANSITIONS[old]:
        raise RuntimeError(f"supervisor: {old.value} → {new.value} is not a transition of the "
                           "State table")
    return new


#: What can start a stop that is a preemption (the other stop's cause is "hang"). Causes, not
#: outcomes: the outcomes of a preemption are :data:`runai_entry.core.outcome.PREEMPTED`.
PREEMPTION_CAUSES = ("SIGTERM", "--simulate-preempt", "peer")


class Stop(NamedTuple):
    """Why, and when (monotonic), the stop signal went out."""

    cause: str  # one of PREEMPTION_CAUSES, or "hang"
    at: float


class Failure(NamedTuple):
    """The first job process that ended abnormally before runai-entry stopped the job: what
    torch elastic calls the root cause; whatever ended after it is a consequence."""

    pid: int
    returncode: int  # -N: killed by signal N
    after: float  # seconds since the start
    command: bool  # the command itself, rather than a process below it


class Result(NamedTuple):
    """How one run of the command ended."""

    exit_code: int
    outcome: Outcome
    returncode: int | None  # the command's own status, -N for signal N; None if never reaped
    simulated: bool  # the preemption, if any, came from --simulate-preempt
    ran_for: float  # seconds from start to the last job process gone
    grace_used: float | None  # seconds from the stop signal to the last job process gone
    followed: dict[str, Any] | None = None  # the peer's announcement this member followed
    hang: dict[str, Any] | None = None  # what the watchdog found, when it stopped the job
    stopped_after: float | None = None  # seconds from the start to the stop signal
    first_failure: Failure | None = None
    #: The first abnormal end after the stop signal of a process that was not simply ended by
    #: it (a trainer's data worker killed under it, a crash): why a stop saved nothing.
    stop_failure: Failure | None = None


class Supervisor:
    """Watches one started command until every process of the job is gone."""

    def __init__(self, config: Config, pid: int, started: float, log: Logger,
                 jobwide: JobWide | None = None, hangs: HangWatch | None = None,
                 observer: Observer | None = None, guardian: Guardian | None = None) -> None:
        self.config = config
        self.pid = pid
        self.pgid = pid  # spawn() made the command the leader of a new process group
        self.started = started
        self.log = log
        self.jobwide = jobwide
        self.hangs = hangs
        self.observer = observer  # the first failure below our children
        self.guardian = guardian  # started before the first sleep: see guardian.Guardian
        self.state = State.RUNNING
        self.path = [(State.RUNNING, started)]  # every state entered, and when
        self.deadline: float | None = None  # the one monotonic deadline of the current state
        self.simulate_at = (
            None if config.simulate_preempt is None else started + config.simulate_preempt
        )
        self.returncode: int | None = None
        self.stop: Stop | None = None
        self.first_failure: Failure | None = None  # among the processes the loop reaped
        self.stop_failure: Failure | None = None  # likewise, after the stop signal
        # The stop's delivery (who has had its signal), and when to look again for those that
        # still need it: a launcher held back, an exited owner's leftovers.
        self.delivery = delivery.Delivered(config.stop_signal)
        self.recheck_at: float | None = None
        self.stop_began: float | None = None  # when the current stop's signal first went out

    @property
    def preempted(self) -> bool:
        return self.stop is not None and self.stop.cause in PREEMPTION_CAUSES

    def run(self) -> Result:
        """The loop: reap, then sleep until the next signal or timer, then act on it."""
        if self.jobwide is not None:
            self.jobwide.start()
        if self.observer is not None:
            self.observer.start()
        while True:
            self._reap()
            if self.state is State.EXITED:
                return self._settle()
            if self.guardian is not None:
                self.guardian.start()
                self.guardian = None
            signum = self._wait()
            # The clock first, whatever woke us: real-time signals queue rather than coalesce,
            # and a flood of them must not keep the deadline waiting for a quiet moment.
            self._on_time(time.monotonic())
            if signum is not None and signum != signal.SIGCHLD:  # exits: _reap, at the top
                self._on_signal(signum)

    def _enter(self, state: State, deadline: float | None = None) -> None:
        """The one place the state changes, and the one place it is checked."""
        self.state, self.deadline = transition(self.state, state), deadline
        self.path.append((state, time.monotonic()))

    def _wait(self) -> int | None:
        """Sleep in the kernel until a handled signal arrives (its number) or the timer (None).

        A SIGTERM while running is the preemption: its stop signal is sent from here.
        """
        timers = [self.deadline, self.recheck_at]
        if self.state is State.RUNNING:
            timers = [self.simulate_at, self.hangs.next_wake() if self.hangs else None]
        wake_at = min((t for t in timers if t is not None), default=None)
        if wake_at is None:
            return signal.sigwait(HANDLED_SIGNALS)
        info = signal.sigtimedwait(HANDLED_SIGNALS, max(0.0, wake_at - time.monotonic()))
        return None if info is None else info.si_signo

    def _reap(self) -> None:
        reaped = False
        try:
            for exited in processes.reap():
                if not storage_io.claim(exited.pid, exited.returncode):
                    reaped = True
                    self._on_exit(exited)
                elif self.jobwide is not None:
                    announced = self.jobwide.watch_ended(exited.pid)
                    if announced is not None and self.state is State.RUNNING:
                        self.jobwide.followed = announced
                        self._begin_preemption("peer")
        except ChildProcessError:  # ECHILD: no job process is left anywhere
            self._gone()
            return
        if self.returncode is not None and storage_io.running() and not processes.job_children():
            # Our children are only helpers: a peer watch, or one stuck on a hung mount.
            self._gone()
        elif self.state is State.RUNNING and self.returncode is not None:
            self._begin_cleanup()
        elif self.state in (State.STOPPING, State.CLEANING) and reaped:
            # An exit during a stop may have left the processes it owned to us: they get the
            # stop signal at the next look, now that no one else will stop them.
            soon = time.monotonic() + delivery.RECHECK
            self.recheck_at = soon if self.recheck_at is None else min(self.recheck_at, soon)
        elif self.state is State.KILLING:
            # A process that forked between the scan and its SIGKILL left an orphan behind.
            processes.signal_job(self.pgid, signal.SIGKILL)

    def _gone(self) -> None:
        """The last job process is gone (KILLING's reap window may have said so first)."""
        if self.state is not State.EXITED:
            self._enter(State.EXITED)

    def _on_exit(self, exited: processes.Exited) -> None:
        is_command = exited.pid == self.pid
        if is_command:
            self.returncode = exited.returncode
        # Before a stop, an abnormal end is the job's own; after it, a consequence of ours,
        # unless it is more than our signal ending the process it was sent to.
        running = self.state in (State.RUNNING, State.DUMPING)
        failure = Failure(exited.pid, exited.returncode, time.monotonic() - self.started,
                          is_command)
        if running and exited.returncode != 0 and self.first_failure is None:
            self.first_failure = failure
        elif (self.state is State.STOPPING and self.stop_failure is None
              and self._failed_in_stop(exited.pid, exited.returncode)):
            self.stop_failure = failure
        # During a normal run, reaped orphans (data-loader workers, shell helpers) are noise;
        # during a stop, each exit is the news the user is waiting for.
        (self.log.info if is_command or not running else self.log.debug)(
            "process_exited", pid=exited.pid, command=is_command,
            status=describe(exited.returncode), returncode=exited.returncode,
            state=self.state.value)

    def _on_time(self, now: float) -> None:
        """Whatever fell due by ``now``: a timer of the running job, or the state's deadline."""
        if self.state is State.RUNNING:
            if self.simulate_at is not None and now >= self.simulate_at:
                self._begin_preemption("--simulate-preempt")
            elif self.hangs is not None and now >= self.hangs.next_wake():
                hang = self.hangs.check(now)
                if hang is not None:
                    window = self.hangs.dump(hang, processes.descendants())
                    self._enter(State.DUMPING, now + window)
        elif self.deadline is not None and now >= self.deadline:
            if self.state is State.DUMPING:
                assert self.hangs is not None
                found = self._begin_stop("hang", min(self.config.stop_timeout, self.hangs.grace))
                self.log.warning("hang_stop", stop_signal=signal_name(self.config.stop_signal),
                                 processes=found, sigkill_in=self._seconds_left())
            elif self.state is State.KILLING:
                self.log.error(
                    "processes_survived_sigkill", pids=processes.descendants(),
                    waited=KILL_REAP_WINDOW,
                    hint="stuck in the kernel (uninterruptible sleep, e.g. a hung NFS write)")
                self._enter(State.EXITED)
            else:
                self._escalate()
        elif self.recheck_at is not None and now >= self.recheck_at:
            self._deliver()  # a launcher whose workers are gone, an exited owner's leftovers

    def _deliver(self, *, again: bool = False) -> list[int]:
        """The current stop's signal to the processes that must have it (:mod:`delivery`):
        those that have not had it yet, or, ``again`` (a repeated SIGTERM), all of them."""
        release = self.deadline is not None and self.stop_began is not None and (
            time.monotonic() >= (self.stop_began + self.deadline) / 2)
        try:
            sent, waiting = self.delivery.send(self.pid, again=again, release=release)
        except OSError as exc:  # no descriptor for /proc (EMFILE): the group still gets it
            processes.signal_group(self.pgid, self.delivery.signum)
            self.log.error("stop_delivery_degraded", error=str(exc), signalled_group=self.pgid)
            return [self.pgid]
        self.recheck_at = time.monotonic() + delivery.RECHECK if waiting else None
        return sent

    def _failed_in_stop(self, pid: int, returncode: int) -> bool:
        """Whether an end during the stop is a failure rather than what the stop asked for: a
        process ended by a signal it was not sent (a data worker killed under its trainer, a
        crash), or one we never signalled that exited with an error. SIGKILL at the deadline,
        and the exit code of a process we signalled (1 after a save, or after a traceback:
        alike), are not."""
        if returncode == 0:
            return False
        if pid in self.delivery.pids:
            return returncode < 0 and returncode != -self.delivery.signum
        return pid != self.pid

    def _on_signal(self, signum: int) -> None:
        # Each branch acts first and logs after: rendering an event costs more than the
        # forwarding itself, and the job is waiting for the signal, not for our log.
        if signum != signal.SIGTERM:
            processes.signal_group(self.pgid, signum)
            self.log.info("signal_forwarded", signal=signal_name(signum), pgid=self.pgid,
                          state=self.state.value)
        elif self.state in (State.RUNNING, State.DUMPING):
            self._begin_preemption("SIGTERM")
        elif self.state is State.STOPPING:
            found = self._deliver(again=True)
            self.log.info("repeated_sigterm", forwarded=signal_name(self.config.stop_signal),
                          processes=found, seconds_left=self._seconds_left(),
                          note="the deadline does not move")
        elif self.state is State.CLEANING:
            # The command already exited, so its exit code stands; only the leftovers must now
            # be gone before the platform's SIGKILL.
            found = self._deliver(again=True)
            assert self.deadline is not None
            self.deadline = min(self.deadline, time.monotonic() + self.config.stop_timeout)
            self.log.info("signal_forwarded", signal="SIGTERM", processes=found,
                          seconds_left=self._seconds_left())
        # KILLING: everything left has been sent SIGKILL; there is nothing more to say to it.

    def _begin_stop(self, cause: str, budget: float) -> list[int]:
        """The stop signal to the job processes that handle it, SIGKILL ``budget`` s from now."""
        self.stop = Stop(cause, time.monotonic())
        self.stop_began = self.stop.at
        self._enter(State.STOPPING, self.stop.at + budget)
        return self._deliver()

    def _begin_preemption(self, cause: str) -> None:
        """``cause``: one of :data:`PREEMPTION_CAUSES` (for a peer, ``jobwide.followed`` says
        who)."""
        found = self._begin_stop(cause, self.config.stop_timeout)
        peer = self.jobwide.peer() if self.jobwide else None
        if self.jobwide is not None:
            self.jobwide.announce(cause)
        self.log.info(
            "preemption_started", cause=cause, simulated=cause == "--simulate-preempt",
            **({"peer": peer} if peer else {}), stop_signal=signal_name(self.config.stop_signal),
            processes=found, grace_period=self.config.grace_period,
            kill_margin=self.config.kill_margin, sigkill_in=self.config.stop_timeout)

    def _begin_cleanup(self) -> None:
        self.stop_began = time.monotonic()
        self._enter(State.CLEANING, self.stop_began + self.config.cleanup_timeout)
        self.delivery = delivery.Delivered(signal.SIGTERM)
        found = self._deliver()
        self.log.info("cleanup_started", leftovers=found, signal="SIGTERM",
                      sigkill_in=self.config.cleanup_timeout)

    def _escalate(self) -> None:
        in_stop = self.state is State.STOPPING
        self.recheck_at = None
        found = processes.signal_job(self.pgid, signal.SIGKILL)
        budget = self.config.cleanup_timeout
        if in_stop and self.deadline is not None and self.stop is not None:
            budget = round(self.deadline - self.stop.at, 3)  # a hang's stop is shorter
        self.log.warning("escalated", signal="SIGKILL", killed=found, after=budget,
                         reason="grace window spent" if in_stop else "leftovers outlived cleanup")
        self._enter(State.KILLING, time.monotonic() + KILL_REAP_WINDOW)

    def _seconds_left(self) -> float | None:
        if self.deadline is None:
            return None
        return round(self.deadline - time.monotonic(), 3)

    def _settle(self) -> Result:
        """After the last job process: the collaborators' last words, then the result."""
        if self.jobwide is not None:
            preempted_at = self.stop.at if self.stop and self.preempted else None
            self.jobwide.settle(preempted_at, self.config.stop_timeout, self.returncode)
        if self.hangs is not None:
            self.hangs.settle()
        peer = self.jobwide.peer() if self.jobwide else None
        hang = self.hangs.hang if self.hangs else None
        # SIGKILL ended a stop (a preemption's or a hang's): the grace window was spent. The
        # cleanup path's SIGKILL does not count: there the command's own exit code stands.
        states = [state for state, _ in self.path]
        killed_in_stop = State.STOPPING in states and State.KILLING in states
        code, outcome = decide(
            self.returncode, preempted=self.preempted, escalated=killed_in_stop,
            preempt_exit_code=self.config.preempt_exit_code, followed_peer=peer is not None,
            hung=hang is not None, hang_exit_code=self.config.hang_code)
        stopped_after = None if self.stop is None else self.stop.at - self.started
        # What the observer saw end below our children: (pid, returncode, seconds in).
        ended = [] if self.observer is None else self.observer.stop()
        return Result(
            code, outcome, self.returncode,
            simulated=self.stop is not None and self.stop.cause == "--simulate-preempt",
            ran_for=self.path[-1][1] - self.started,
            grace_used=None if self.stop is None else self.path[-1][1] - self.stop.at,
            followed=peer, hang=None if hang is None else hang._asdict(),
            stopped_after=stopped_after, first_failure=self._first_failure(ended),
            stop_failure=self._stop_failure(ended))

    def _first_failure(self, ended: list[tuple[int, int, float]]) -> Failure | None:
        """The earliest abnormal end before runai-entry signalled the job: among the processes
        the loop reaped, and those the observer saw end below them (a launcher's workers)."""
        found = [] if self.first_failure is None else [self.first_failure]
        if ended:
            # After the stop or the cleanup began, an end is a consequence of our signal.
            signalled = next(at for state, at in self.path
                             if state not in (State.RUNNING, State.DUMPING)) - self.started
            found += [Failure(pid, code, after, False)
                      for pid, code, after in ended if after < signalled]
        return min(found, key=lambda failure: failure.after, default=None)


    def _stop_failure(self, ended: list[tuple[int, int, float]]) -> Failure | None:
        """The earliest failure during the stop (:meth:`_failed_in_stop`), among the processes
        the loop reaped and those the observer saw end below them, until SIGKILL went out."""
        found = [] if self.stop_failure is None else [self.stop_failure]
        if self.stop is not None:
            began = self.stop.at - self.started
            killed = next((at for state, at in self.path if state is State.KILLING), None)
            until = float("inf") if killed is None else killed - self.started
            found += [Failure(pid, code, after, False) for pid, code, after in ended
                      if began <= after < until and self._failed_in_stop(pid, code)]
        return min(found, key=lambda failure: failure.after, default=None)


def describe(returncode: int) -> str:
    """``exited 3`` or ``killed by SIGKILL``: a process's end, in words."""
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exited {returncode}"
