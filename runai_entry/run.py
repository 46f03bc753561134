"""One run of the command, in the order things happen: prepare, start, supervise, record.

Start-up is on the job's critical path, so nothing heavy is imported before the command has
been exec'd: structlog and psutil load while the job is already starting, and events found
before the start (the checkpoint chosen, a storage warning) are logged right after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from runai_entry import envvars
from runai_entry.config import Config
from runai_entry.durations import format_seconds
from runai_entry.errors import SpawnError
from runai_entry.signals import block_handled_signals, signal_name
from runai_entry.spawn import spawn
from runai_entry.supervisor import Result, is_pid1

if TYPE_CHECKING:
    from runai_entry.attempt import Note


class Attempt(NamedTuple):
    """One run of the command, as the drill and the history see it."""

    exit_code: int
    result: Result | None  # None when the command could not be started
    record: dict[str, Any]  # the attempt history's line


def run(config: Config) -> int:
    """Do what the configuration asks and return runai-entry's exit code."""
    if config.inspect:
        from runai_entry.inspection import inspect

        return inspect(config)
    notes = []
    if config.checkpoint_dir is not None:
        from runai_entry.attempt import check_storage

        notes = check_storage(config.checkpoint_dir, config.require_network_storage)
    if config.simulate_requeue:
        from runai_entry.drill import drill

        return drill(config, notes)
    return run_attempt(config, notes).exit_code


def job_environment(config: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment: ours, plus the budget it has to save in."""
    env = dict(os.environ if base is None else base)
    env[envvars.GRACE_PERIOD] = format_seconds(config.grace_period)
    env[envvars.STOP_TIMEOUT] = format_seconds(config.stop_timeout)
    env[envvars.STOP_SIGNAL] = signal_name(config.stop_signal)
    return env


def prepare_process() -> tuple[bool, str | None]:
    """Become the job's reaper and take over its signals.

    Returns whether we are PID 1, and why we could not become a subreaper, if we could not
    (a sandboxed kernel may refuse it: the job still runs, but escaped daemons go to init).
    """
    block_handled_signals()  # already done by cli.main; again here for callers that start here
    if is_pid1():
        return True, None
    from runai_entry.prctl import set_child_subreaper

    try:
        set_child_subreaper()
    except OSError as exc:  # EINVAL: a kernel (or sandbox) without PR_SET_CHILD_SUBREAPER
        return False, exc.strerror
    return False, None


def run_attempt(config: Config, notes: Sequence[Note] = ()) -> Attempt:
    """Run the command once under supervision; ``notes`` are logged once the logger exists."""
    pid1, no_subreaper = prepare_process()
    argv, env = list(config.command), job_environment(config)
    prepared = None
    if config.checkpoint_dir is not None:
        from runai_entry.attempt import prepare

        prepared = prepare(config.checkpoint_dir, config, argv, env)
        argv, env = prepared.argv, prepared.env
    started, started_at = time.monotonic(), time.time()
    try:
        pid = spawn(argv, env, parent_death_signal=not pid1)
    except SpawnError as exc:
        log = _logger(config)
        log.error("spawn_failed", command=argv, error=str(exc), exit_code=exc.exit_code)
        return Attempt(exc.exit_code, None, {"exit_code": exc.exit_code, "outcome": exc.outcome})
    log = _logger(config)
    if no_subreaper:
        log.warning("subreaper_unavailable", problem=no_subreaper,
                    consequence="processes that leave the job's tree are not waited for")
    for note in [*notes, *(prepared.notes if prepared else ())]:
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
    result = _supervise(config, pid, started, log)
    record: dict[str, Any] = {}
    if prepared is not None and config.checkpoint_dir is not None:
        from runai_entry.attempt import finish

        # During a preemption the platform's SIGKILL comes at grace period after its SIGTERM.
        left = None
        if result.grace_used is not None:
            left = config.grace_period - result.grace_used - config.kill_margin / 2
        record, after = finish(config.checkpoint_dir, config, prepared, result, started_at, left)
        for note in after:
            getattr(log, note.level)(note.event, **note.fields)
    _log_exit(log, result)
    return Attempt(result.exit_code, result, record)


def _supervise(config: Config, pid: int, started: float, log: Any) -> Result:
    from runai_entry.supervisor import Supervisor

    return Supervisor(config, pid, started, log).run()


def _log_exit(log: Any, result: Result) -> None:
    getattr(log, "warning" if result.exit_code else "info")(
        "exit",
        code=result.exit_code,
        reason=result.outcome.value,
        returncode=result.returncode,
        simulated=result.simulated,
        ran_for=round(result.ran_for, 3),
        grace_used=None if result.grace_used is None else round(result.grace_used, 3),
    )


def _logger(config: Config) -> Any:
    from runai_entry.logs import configure

    log = configure(config.log_format, config.log_level)
    import gc

    import psutil  # noqa: F401  — warm the import now, not when the stop signal must go out

    # Everything imported so far lives as long as the process. Left in the collected
    # generations, it made each full collection walk ~250 modules' objects: 4-5 ms that fell,
    # now and then, between a signal's arrival and its forwarding (bench/signal_latency.py).
    gc.freeze()
    return log
