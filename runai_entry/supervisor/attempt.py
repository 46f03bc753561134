"""One attempt of the command, in the order things happen: prepare, start, supervise, record.

Start-up is on the job's critical path, so nothing heavy is imported before the command has
been exec'd: structlog loads (for the console form) while the job is already starting, and
events found before the start (the checkpoint chosen, a storage warning) are logged right
after it. The JSON logger is imported before: a job that exits at once waits for nothing but
our exit, and its log lines.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from runai_entry.config.durations import format_seconds
from runai_entry.config.loading import Config
from runai_entry.core import envvars
from runai_entry.core.errors import SpawnError, StoppedBeforeStart, describe_bug
from runai_entry.core.outcome import Outcome
from runai_entry.core.signals import block_handled_signals, signal_name
from runai_entry.supervisor.logs import configure as configure_logs  # before the start: see above
from runai_entry.supervisor.loop import HANDLED_SIGNALS, Result, Supervisor
from runai_entry.supervisor.processes import descendants, is_pid1
from runai_entry.supervisor.spawn import spawn

if TYPE_CHECKING:
    from runai_entry.core.attempt_record import AttemptRecord
    from runai_entry.supervisor.before_and_after import Prepared
    from runai_entry.supervisor.guardian import Guardian
    from runai_entry.supervisor.logs import Logger
    from runai_entry.supervisor.metrics import Metrics


class Attempt(NamedTuple):
    """One run of the command, as the drill and the history see it."""

    exit_code: int
    result: Result | None  # None when the command was not started
    #: The attempt as the history records it; None without a checkpoint directory.
    record: AttemptRecord | None


def job_environment(config: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment: ours, plus the budget it has to save in."""
    env = dict(os.environ if base is None else base)
    env[envvars.GRACE_PERIOD] = format_seconds(config.grace_period)
    env[envvars.STOP_TIMEOUT] = format_seconds(config.stop_timeout)
    env[envvars.STOP_SIGNAL] = signal_name(config.stop_signal)
    env.pop(envvars.HEARTBEAT_DIR, None)  # only ours, and only while something reads it
    return env


def prepare_process() -> tuple[bool, str | None]:
    """Become the job's reaper and take over its signals.

    Returns whether we are PID 1, and why we could not become a subreaper, if we could not
    (a sandboxed kernel may refuse it: the job still runs, but escaped daemons go to init).
    """
    block_handled_signals()  # already done by cli.main; again here for callers that start here
    if is_pid1():
        return True, None
    from runai_entry.supervisor.prctl import set_child_subreaper

    try:
        set_child_subreaper()
    except OSError as exc:  # EINVAL: a kernel (or sandbox) without PR_SET_CHILD_SUBREAPER
        return False, exc.strerror
    return False, None


def run_attempt(config: Config, *, check_storage: bool = True) -> Attempt:
    """Run the command once under supervision. ``check_storage``: check the checkpoint
    directory's filesystem too (once per run: the drill's attempts share it)."""
    pid1, no_subreaper = prepare_process()
    argv, env = list(config.command), job_environment(config)
    prepared: Prepared | None = None
    try:
        if config.checkpoint_dir is not None:
            from runai_entry.supervisor.before_and_after import prepare

            prepared = prepare(config.checkpoint_dir, config, argv, env,
                               check_storage=check_storage)
            argv, env = prepared.argv, prepared.env
        _take_queued_sigterm()
    except StoppedBeforeStart as exc:
        return _stopped_before_start(config, str(exc))
    if not pid1:  # as PID 1 the kernel kills the namespace with us: no guardian needed
        # os.urandom, not the secrets module: that imports hashlib, hmac and random, during a
        # start-up the job waits for (what it cost: docs/benchmarks.md, bench/startup.py).
        env[envvars.JOB_TOKEN] = os.urandom(8).hex()
    heartbeats = None
    if config.hang_timeout is not None or prepared is not None:
        # Imported here: `runai-entry -- cmd` needs none of it, nor the start-up time of its
        # imports (mmap, struct).
        from runai_entry.supervisor.heartbeat_dir import create_directory, remove_directory

        # Read by the watchdog, and at the end for the history's start-up and lost work.
        heartbeats = env[envvars.HEARTBEAT_DIR] = create_directory()
    try:
        return _run_started(config, argv, env, prepared, heartbeats, pid1, no_subreaper)
    finally:
        if heartbeats is not None:
            remove_directory(heartbeats)


def _run_started(config: Config, argv: list[str], env: dict[str, str],
                 prepared: Prepared | None, heartbeats: str | None, pid1: bool,
                 no_subreaper: str | None) -> Attempt:
    """Start the prepared command, supervise it, and record how it ended."""
    started, started_at = time.monotonic(), time.time()
    try:
        pid = spawn(argv, env, parent_death_signal=not pid1)
    except SpawnError as exc:
        log = _logger(config)
        log.error("spawn_failed", command=argv, error=str(exc), exit_code=exc.exit_code)
        from runai_entry.core.attempt_record import AttemptRecord  # only when it failed

        return Attempt(exc.exit_code, None, AttemptRecord.partial(
            exit_code=exc.exit_code, outcome=Outcome(exc.outcome)))
    log = _logger(config)
    if no_subreaper:
        log.warning("subreaper_unavailable", problem=no_subreaper,
                    consequence="processes that leave the job's tree are not waited for")
    for note in prepared.notes if prepared else ():
        getattr(log, note.level)(note.event, **note.fields)
    log.info(
        "started",
        pid=pid,
        command=argv,
        pid1=pid1,
        **({"attempt": prepared.attempt} if prepared else {}),
        grace_period=config.grace_period,
        stop_timeout=config.stop_timeout,
        stop_signal=signal_name(config.stop_signal),
    )
    metrics = _metrics(config, prepared, heartbeats, log)
    guard = None
    if envvars.JOB_TOKEN in env:
        from runai_entry.supervisor.guardian import Guardian

        guard = Guardian(env[envvars.JOB_TOKEN])
    result = _supervise(config, pid, started, log, prepared, heartbeats, guard)
    if guard is not None:
        guard.dismiss()  # the job is gone: nothing left for the guardian to do
    record: AttemptRecord | None = None
    deadline = None  # of what is left of the grace period, monotonic
    if prepared is not None and config.checkpoint_dir is not None:
        from runai_entry.history.store import Clock
        from runai_entry.supervisor.before_and_after import finish
        from runai_entry.supervisor.heartbeat_dir import progress

        # During a preemption the platform's SIGKILL comes at grace period after its SIGTERM.
        # The history may use what is left of it but half the kill margin: the other half is
        # for runai-entry's own exit, so the platform reads our exit code, not its SIGKILL's.
        left = None
        if result.grace_used is not None:
            left = config.grace_period - result.grace_used - config.kill_margin / 2
            deadline = time.monotonic() + left
        try:
            beats = progress(heartbeats) if heartbeats is not None else None
            record, after = finish(config.checkpoint_dir, config, prepared, result,
                                   Clock(started, started_at), beats, left)
        except Exception as exc:  # a bug in the bookkeeping: the job's own code still stands
            # The job has run and its exit code is decided: a preempted job must still exit
            # with the requeue code, whatever went wrong in writing its history line.
            record, after = None, []
            log.error("attempt_not_recorded", problem=f"a bug in runai-entry: "
                      f"{describe_bug(exc)}", exit_code=result.exit_code)
        for note in after:
            getattr(log, note.level)(note.event, **note.fields)
    if metrics is not None:
        metrics.attempt_ended(record, deadline, log)
    _log_exit(log, result)
    return Attempt(result.exit_code, result, record)


def _metrics(config: Config, prepared: Prepared | None, heartbeats: str | None,
             log: Logger) -> Metrics | None:
    """The Prometheus exporters, when asked for: prometheus_client is imported only then, and
    only once the job has started."""
    if prepared is None or (config.metrics_port is None and config.metrics_file is None
                            and config.metrics_push is None):
        return None
    from runai_entry.supervisor.metrics import metrics_for

    metrics = metrics_for(config, prepared.env)
    metrics.attempt_started(prepared, heartbeats)
    metrics.serve(log)
    return metrics


def _take_queued_sigterm() -> None:
    """A SIGTERM queued before the start is a preemption: act on it now, never drop it.

    Left queued, it would meet a job that may already have exited (``-- true``), and the
    loop, which reaps before it reads signals, would report "completed".
    """
    if signal.SIGTERM in signal.sigpending():
        signal.sigtimedwait({signal.SIGTERM}, 0)  # consume it: it is dealt with here
        raise StoppedBeforeStart("SIGTERM before the job started")


def _stopped_before_start(config: Config, why: str) -> Attempt:
    code = config.preempt_exit_code
    log = _logger(config)
    log.warning("preempted_before_start", reason=why, started=False,
                consequence="the job was not started; the platform requeues it")
    log.warning("exit", code=code, reason=Outcome.PREEMPTED.value, returncode=None,
                simulated=False, ran_for=0.0, grace_used=None)
    from runai_entry.core.attempt_record import AttemptRecord  # only when it stopped

    return Attempt(code, None, AttemptRecord.partial(
        exit_code=code, outcome=Outcome.PREEMPTED))


def _supervise(config: Config, pid: int, started: float, log: Logger,
               prepared: Prepared | None, heartbeats: str | None,
               guard: Guardian | None) -> Result:
    """The loop, with the collaborators its options ask for (imported only then: each costs
    milliseconds that a job which exits at once would wait for)."""
    jobwide = hangs = None
    if prepared is not None and prepared.membership is not None:
        from runai_entry.supervisor.jobwide import JobWide

        jobwide = JobWide(prepared.membership, config.storage_timeout, log, HANDLED_SIGNALS)
    if config.hang_timeout is not None and heartbeats is not None:
        from runai_entry.supervisor.watchdog import HangWatch, Watchdog

        watchdog = Watchdog(heartbeats, config.hang_timeout, config.save_timeout, started,
                            lambda pid: pid in descendants())
        hangs = HangWatch(watchdog, config.hang_code, log, HANDLED_SIGNALS)
    observer = None
    if prepared is not None:  # the history shows the first failure
        from runai_entry.supervisor.failures import Observer

        observer = Observer(started)
    return Supervisor(config, pid, started, log, jobwide, hangs, observer, guard).run()


def _log_exit(log: Logger, result: Result) -> None:
    getattr(log, "warning" if result.exit_code else "info")(
        "exit",
        code=result.exit_code,
        reason=result.outcome.value,
        returncode=result.returncode,
        simulated=result.simulated,
        ran_for=round(result.ran_for, 3),
        grace_used=None if result.grace_used is None else round(result.grace_used, 3),
    )


def _logger(config: Config) -> Logger:
    log = configure_logs(config.log_format, config.log_level)
    import gc

    # Everything imported so far lives as long as the process. Left in the collected
    # generations, it made each full collection walk every module's objects, a pause that fell,
    # now and then, between a signal's arrival and its forwarding (how long:
    # docs/benchmarks.md, bench/signal_latency.py).
    gc.freeze()
    return log
