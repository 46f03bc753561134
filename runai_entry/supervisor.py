"""The supervisor loop: from a started job to runai-entry's exit code.

It sleeps in the kernel (``sigtimedwait``) until a signal arrives — SIGCHLD included, which is
how it learns of exits — or the next timer falls due, so an idle job costs it no CPU. Signals
are blocked, never handled asynchronously: each one is dealt with here, in normal flow, where
waiting and signalling are safe (dumb-init's design).
"""

from __future__ import annotations

import enum
import signal
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from runai_entry import helpers, processes
from runai_entry.config import Config
from runai_entry.exitcodes import Outcome, decide
from runai_entry.signals import handled_signals, signal_name

if TYPE_CHECKING:
    from runai_entry import peers
    from runai_entry import watchdog as hangs
    from runai_entry.logs import Logger

#: What the loop waits for; ``cli.main`` blocked exactly these before anything else.
HANDLED_SIGNALS = handled_signals()

#: After SIGKILL, how long to wait for the kernel to finish the victims before exiting anyway.
#: A process in uninterruptible sleep (a hung NFS write) can outlive SIGKILL; waiting for it
#: would let the platform's own SIGKILL overtake us and lose the exit code.
KILL_REAP_WINDOW = 0.5
#: After the job, how long the checkpoint directory may take to say whether a peer preempted.
PEER_CHECK_TIMEOUT = 5.0


class State(enum.Enum):
    """Where the supervisor is. The allowed transitions, and what causes them:

    RUNNING  → STOPPING  SIGTERM, --simulate-preempt, or a peer's announced preemption: the
                         stop signal goes to every job process and the one deadline is set to
                         now + grace − margin.
    RUNNING  → CLEANING  the command exited with job processes left: they get SIGTERM and the
                         deadline is set to now + cleanup timeout.
    RUNNING  → DUMPING   a job process missed its heartbeat allowance (the hang watchdog): its
                         stacks are requested; the deadline is set to now + the dump window.
    DUMPING  → STOPPING  the dump window passed: the stop signal, and the deadline is set to
                         now + the shorter of grace − margin and the hang grace.
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


class Supervisor:
    """Watches one started command until every process of the job is gone."""

    def __init__(self, config: Config, pid: int, started: float, log: Logger,
                 membership: peers.Membership | None = None,
                 heartbeats: str | None = None) -> None:
        self.config = config
        self.pid = pid
        self.pgid = pid  # spawn() made the command the leader of a new process group
        self.started = started
        self.log = log
        self.state = State.RUNNING
        self.deadline: float | None = None  # the one monotonic deadline of the current state
        self.simulate_at = (
            None if config.simulate_preempt is None else started + config.simulate_preempt
        )
        self.returncode: int | None = None
        self.preempted_at: float | None = None
        self.simulated = False
        # SIGKILL ended a stop (a preemption's or a hang's): the grace window was spent. The
        # cleanup path's SIGKILL does not count: there the command's own exit code stands.
        self.killed_in_stop = False
        self.ended = started
        self.membership = membership  # None: job-wide preemption is off
        self.watcher: helpers.Helper[dict[str, Any]] | None = None
        self.announcer: helpers.Helper[None] | None = None
        self.followed: dict[str, Any] | None = None
        self.stopped_at: float | None = None  # when the stop signal went out, for any reason
        self.group_stopped = False  # the preemption's stop signal already reached the group
        self.watchdog: hangs.Watchdog | None = None
        if heartbeats is not None:  # imported only when on: start-up pays for what it uses
            from runai_entry.watchdog import Watchdog

            self.watchdog = Watchdog(heartbeats, config.hang_timeout, config.save_timeout,
                                     started, lambda pid: pid in processes.descendants())
        self.hang: hangs.Hang | None = None
        self.told_unwatched = False
        self.stack_dumper: helpers.Helper[dict[int, str]] | None = None

    def run(self) -> Result:
        """The loop: reap, then sleep until the next signal or timer, then act on it."""
        if self.membership is not None:
            from runai_entry.peers import watch  # and, with it, what a preemption will need

            membership = self.membership
            self.watcher = helpers.start(lambda stage: watch(membership, stage), "peer watch")
        while True:
            self._reap()
            if self.state is State.EXITED:
                self._settle_peers()
                self._settle_stack_dumps()
                return self._result()
            signum = self._wait()
            if signum is None:
                self._on_timer()
            elif signum != signal.SIGCHLD:  # exits are collected by _reap at the loop's top
                self._on_signal(signum)

    def _wait(self) -> int | None:
        """Sleep in the kernel until a handled signal arrives (its number) or the timer (None).

        A SIGTERM while running is the preemption: its stop signal is sent from here.
        """
        wake_at = self.deadline
        if self.state is State.RUNNING:
            timers = [self.simulate_at, self.watchdog.next_wake() if self.watchdog else None]
            wake_at = min((t for t in timers if t is not None), default=None)
        if wake_at is None:
            signum = signal.sigwait(HANDLED_SIGNALS)
        else:
            info = signal.sigtimedwait(HANDLED_SIGNALS, max(0.0, wake_at - time.monotonic()))
            if info is None:
                return None
            signum = info.si_signo
        if signum == signal.SIGTERM and self.state is State.RUNNING:
            # The preemption itself goes to the job's group here, before anything else: woken
            # after a long sleep, each Python call on the way to _begin_stop costs ~10 µs of
            # cold caches (bench/signal_latency.py, first SIGTERM). _begin_stop does the rest.
            processes.signal_group(self.pgid, self.config.stop_signal)
            self.group_stopped = True
        return signum

    def _reap(self) -> None:
        try:
            for exited in processes.reap():
                if helpers.claim(exited.pid, exited.returncode):
                    self._on_helper_exit(exited.pid)
                else:
                    self._on_exit(exited)
        except ChildProcessError:  # ECHILD: no job process is left anywhere
            self._exited()
            return
        if self.returncode is not None and helpers.running() and not processes.job_children():
            # Our children are only helpers: a peer watch, or one stuck on a hung mount.
            self._exited()
            return
        if self.state is State.RUNNING and self.returncode is not None:
            self._begin_cleanup()
        elif self.state is State.KILLING:
            # A process that forked between the scan and its SIGKILL left an orphan behind.
            processes.signal_job(self.pgid, signal.SIGKILL)

    def _exited(self) -> None:
        self.state = State.EXITED
        self.ended = time.monotonic()

    def _on_exit(self, exited: processes.Exited) -> None:
        is_command = exited.pid == self.pid
        if is_command:
            self.returncode = exited.returncode
        # During a normal run, reaped orphans (data-loader workers, shell helpers) are noise;
        # during a stop, each exit is the news the user is waiting for.
        quiet = self.state is State.RUNNING and not is_command
        (self.log.debug if quiet else self.log.info)(
            "process_exited",
            pid=exited.pid,
            command=is_command,
            status=_describe(exited.returncode),
            returncode=exited.returncode,
            state=self.state.value,
        )

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self.state is State.RUNNING:
            if self.simulate_at is not None and now >= self.simulate_at:
                self._begin_preemption("--simulate-preempt")
            elif self.watchdog is not None and now >= self.watchdog.next_wake():
                self._watch(now)
        elif self.deadline is not None and now >= self.deadline:
            if self.state is State.DUMPING:
                from runai_entry.watchdog import HANG_GRACE

                found = self._begin_stop(min(self.config.stop_timeout, HANG_GRACE))
                self.log.warning("hang_stop", stop_signal=signal_name(self.config.stop_signal),
                                 processes=found, sigkill_in=self._seconds_left())
            elif self.state is State.KILLING:
                self.log.error(
                    "processes_survived_sigkill",
                    pids=processes.descendants(),
                    waited=KILL_REAP_WINDOW,
                    hint="stuck in the kernel (uninterruptible sleep, e.g. a hung NFS write)",
                )
                self._exited()
            else:
                self._escalate()

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
            found = processes.signal_job(self.pgid, self.config.stop_signal)
            self.log.info(
                "repeated_sigterm",
                forwarded=signal_name(self.config.stop_signal),
                processes=found,
                seconds_left=self._seconds_left(),
                note="the deadline does not move",
            )
        elif self.state is State.CLEANING:
            # The command already exited, so its exit code stands; only the leftovers must now
            # be gone before the platform's SIGKILL.
            found = processes.signal_job(self.pgid, signal.SIGTERM)
            assert self.deadline is not None
            self.deadline = min(self.deadline, time.monotonic() + self.config.stop_timeout)
            self.log.info(
                "signal_forwarded", signal="SIGTERM", processes=found,
                seconds_left=self._seconds_left(),
            )
        # KILLING: everything left has been sent SIGKILL; there is nothing more to say to it.

    def _begin_stop(self, budget: float) -> list[int]:
        """The stop signal to every job process, and SIGKILL ``budget`` seconds from now."""
        self.state = State.STOPPING
        self.stopped_at = time.monotonic()
        self.deadline = self.stopped_at + budget
        return processes.signal_job(self.pgid, self.config.stop_signal,
                                    group=not self.group_stopped)

    def _begin_preemption(self, cause: str) -> None:
        """``cause``: SIGTERM, --simulate-preempt, or peer (then ``self.followed`` says who)."""
        found = self._begin_stop(self.config.stop_timeout)
        self.preempted_at = self.stopped_at
        self.simulated = cause == "--simulate-preempt"
        if self.membership is not None and self.followed is None:
            # Tell the peers at once, not at the end: their jobs must save while ours does.
            membership = self.membership
            from runai_entry.peers import announce  # imported with the watch, at the start

            self.announcer = helpers.start(lambda stage: announce(membership, cause),
                                           "preemption announcement")
        self.log.info(
            "preemption_started",
            cause=cause,
            simulated=self.simulated,
            **({"peer": _who(self.followed)} if self.followed else {}),
            stop_signal=signal_name(self.config.stop_signal),
            processes=found,
            grace_period=self.config.grace_period,
            kill_margin=self.config.kill_margin,
            sigkill_in=self.config.stop_timeout,
        )

    def _watch(self, now: float) -> None:
        assert self.watchdog is not None
        hang = self.watchdog.check(now)
        if hang is not None:
            self._on_hang(hang)
        elif not self.told_unwatched and self.watchdog.never_beat_after(now):
            self.told_unwatched = True
            self.log.warning("watchdog_not_watching", reason="no job process has called "
                             "runai_entry.training.heartbeat()", directory=self.watchdog.directory)

    def _on_hang(self, hang: hangs.Hang) -> None:
        """Log the hang, ask every beating process for its stacks, and stop the job soon after."""
        from runai_entry import watchdog as hangs

        assert self.watchdog is not None
        self.hang = hang
        self.state = State.DUMPING
        self.deadline = time.monotonic() + hangs.DUMP_WINDOW
        # Logged before the stacks are asked for: the dumps go to the same stream, a fragment
        # at a time, and would cut a line of ours written meanwhile in two.
        py_spy = hangs.py_spy() is not None
        self.log.error("hang_detected", pid=hang.pid, step=hang.step, last_beat_age=round(
            hang.age, 3), allowance=hang.allowance, saving=hang.saving,
            stacks_from=sorted(self.watchdog.beats), py_spy=py_spy,
            then=f"stop signal in {hangs.DUMP_WINDOW:g}s; exit {self.config.hang_code}")
        hangs.request_stacks(self.watchdog.beats)
        if py_spy:
            pids = processes.descendants()
            self.stack_dumper = helpers.start(lambda stage: hangs.py_spy_dumps(pids), "py-spy")

    def _settle_stack_dumps(self) -> None:
        if self.stack_dumper is not None:
            from runai_entry.watchdog import log_py_spy_dumps

            log_py_spy_dumps(self.stack_dumper, self.log, HANDLED_SIGNALS)

    def _on_helper_exit(self, pid: int) -> None:
        if self.watcher is not None and pid == self.watcher.pid:
            try:
                announced = self.watcher.result()
            except Exception as exc:  # the watch itself failed; the job must go on regardless
                self.log.warning("peer_watch_failed", problem=str(exc))
                return
            if self.state is State.RUNNING:
                self.followed = announced
                self._begin_preemption("peer")

    def _settle_peers(self) -> None:
        """After the job: did a peer's preemption end it, and have the peers heard of ours?"""
        if self.membership is None:
            return
        assert self.watcher is not None
        self.watcher.kill()
        self.watcher.close()
        membership = self.membership
        from runai_entry.peers import peer_preemption

        if self.preempted_at is None:
            # The command ended by itself. A peer's preemption may be why: its ranks agreed to
            # stop (exit 0) or vanished from a collective (a crash) before our watch saw it.
            try:
                self.followed = helpers.call(
                    lambda stage: peer_preemption(membership), "peer check",
                    min(PEER_CHECK_TIMEOUT, self.config.storage_timeout), HANDLED_SIGNALS)
            except (helpers.HelperTimeout, OSError) as exc:
                self.log.warning("peers_not_checked", problem=str(exc),
                                 consequence="the command's own exit code stands")
            if self.followed is not None:
                self.log.info("followed_peer", peer=_who(self.followed),
                              returncode=self.returncode)
        if self.announcer is not None:
            self._await_announcement(self.announcer)

    def _await_announcement(self, announcer: helpers.Helper[None]) -> None:
        # Our exit would kill the helper before the peers hear of the preemption; it may take
        # what is left of the grace window, which is all the platform gives us anyway.
        assert self.preempted_at is not None
        deadline = min(self.preempted_at + self.config.stop_timeout,
                       time.monotonic() + self.config.storage_timeout)
        try:
            helpers.await_result(announcer, deadline, HANDLED_SIGNALS)
        except (helpers.HelperTimeout, OSError) as exc:
            self.log.warning("preemption_not_announced", problem=str(exc),
                             consequence="the job's other members do not stop")
        finally:
            announcer.kill()
            announcer.close()

    def _begin_cleanup(self) -> None:
        self.state = State.CLEANING
        self.deadline = time.monotonic() + self.config.cleanup_timeout
        found = processes.signal_job(self.pgid, signal.SIGTERM)
        self.log.info(
            "cleanup_started",
            leftovers=found,
            signal="SIGTERM",
            sigkill_in=self.config.cleanup_timeout,
        )

    def _escalate(self) -> None:
        self.killed_in_stop = self.state is State.STOPPING
        found = processes.signal_job(self.pgid, signal.SIGKILL)
        budget = self.config.cleanup_timeout
        if self.killed_in_stop and self.deadline is not None and self.stopped_at is not None:
            budget = round(self.deadline - self.stopped_at, 3)  # a hang's stop is shorter
        self.log.warning(
            "escalated",
            signal="SIGKILL",
            killed=found,
            after=budget,
            reason="grace window spent" if self.killed_in_stop else "leftovers outlived cleanup",
        )
        self.state = State.KILLING
        self.deadline = time.monotonic() + KILL_REAP_WINDOW

    def _seconds_left(self) -> float | None:
        if self.deadline is None:
            return None
        return round(self.deadline - time.monotonic(), 3)

    def _result(self) -> Result:
        code, outcome = decide(
            self.returncode,
            preempted=self.preempted_at is not None,
            escalated=self.killed_in_stop,
            preempt_exit_code=self.config.preempt_exit_code,
            followed_peer=self.followed is not None,
            hung=self.hang is not None,
            hang_exit_code=self.config.hang_code,
        )
        grace_used = None if self.stopped_at is None else self.ended - self.stopped_at
        return Result(
            exit_code=code,
            outcome=outcome,
            returncode=self.returncode,
            simulated=self.simulated,
            ran_for=self.ended - self.started,
            grace_used=grace_used,
            followed=None if self.followed is None else _who(self.followed),
            hang=None if self.hang is None else self.hang._asdict(),
        )


def _who(announced: dict[str, Any]) -> dict[str, Any]:
    """The fields of a peer's announcement a person needs: which member, which attempt, where."""
    return {key: announced.get(key) for key in ("member", "attempt", "host", "cause", "at")}


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exited {returncode}"

