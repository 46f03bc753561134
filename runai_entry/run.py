"""One run of the command, in the order things happen: prepare, start, supervise, report.

Start-up is on the job's critical path, so nothing heavy is imported before the command has
been exec'd: structlog and psutil load while the job is already starting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from runai_entry import envvars
from runai_entry.config import Config
from runai_entry.durations import format_seconds
from runai_entry.errors import SpawnError
from runai_entry.signals import signal_name
from runai_entry.spawn import spawn
from runai_entry.supervisor import Result, block_handled_signals, is_pid1


def job_environment(config: Config, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment: ours, plus the budget it has to save in."""
    env = dict(os.environ if base is None else base)
    env[envvars.GRACE_PERIOD] = format_seconds(config.grace_period)
    env[envvars.STOP_TIMEOUT] = format_seconds(config.stop_timeout)
    env[envvars.STOP_SIGNAL] = signal_name(config.stop_signal)
    return env


def prepare_process() -> bool:
    """Become the job's reaper and take over its signals. Returns whether we are PID 1."""
    block_handled_signals()
    pid1 = is_pid1()
    if not pid1:
        from runai_entry.prctl import set_child_subreaper

        set_child_subreaper()
    return pid1


def run(config: Config) -> int:
    """Run the command once under supervision and return runai-entry's exit code."""
    pid1 = prepare_process()
    started = time.monotonic()
    try:
        pid = spawn(config.command, job_environment(config), parent_death_signal=not pid1)
    except SpawnError as exc:
        log = _logger(config)
        log.error("spawn_failed", command=list(config.command), error=str(exc),
                  exit_code=exc.exit_code)
        return exc.exit_code
    log = _logger(config)
    log.info(
        "started",
        pid=pid,
        command=list(config.command),
        pid1=pid1,
        grace_period=config.grace_period,
        stop_timeout=config.stop_timeout,
        stop_signal=signal_name(config.stop_signal),
    )
    result = supervise(config, pid, started, log)
    return result.exit_code


def supervise(config: Config, pid: int, started: float, log: object) -> Result:
    from runai_entry.supervisor import Supervisor

    result = Supervisor(config, pid, started, log).run()
    getattr(log, "warning" if result.exit_code else "info")(
        "exit",
        code=result.exit_code,
        reason=result.outcome.value,
        returncode=result.returncode,
        simulated=result.simulated,
        ran_for=round(result.ran_for, 3),
        grace_used=None if result.grace_used is None else round(result.grace_used, 3),
    )
    return result


def _logger(config: Config) -> object:
    from runai_entry.logs import configure

    log = configure(config.log_format, config.log_level)
    import psutil  # noqa: F401  — warm the import now, not when the stop signal must go out

    return log
