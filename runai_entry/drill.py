"""The preemption drill: rehearse locally what the platform will do to the job.

``--simulate-preempt T --simulate-requeue N``: run the command, preempt it T after its start,
start it again the way the platform requeues it (fresh discovery, next attempt, the resume
flag), N times, then let the last attempt run to completion; print a table a person reads at a
glance with what each attempt cost, the goodput line, and a verdict naming the real problems;
with ``--timeline``, draw the attempts too.
"""

from __future__ import annotations

import os
import sys

from runai_entry.config.loading import Config
from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.core.outcome import Outcome
from runai_entry.core.printable import printable
from runai_entry.history.crashloop import guard_status
from runai_entry.history.report import goodput_lines, incidents, render_table, verdict
from runai_entry.history.store import member_of
from runai_entry.supervisor.attempt import Attempt, run_attempt


def drill(config: Config) -> int:
    """Run the drill; exit with the last attempt's code."""
    attempts: list[Attempt] = []
    for i in range(config.simulate_requeue + 1):
        last = i == config.simulate_requeue
        attempt = run_attempt(config._replace(simulate_preempt=None) if last else config,
                              check_storage=i == 0)
        attempts.append(attempt)
        if not _requeued(attempt):
            break  # finished early, failed, or a real preemption: the platform's turn now
    records = [a.record for a in attempts if a.record is not None]
    problems = verdict(records)
    _print_summary(records, problems, attempts, config)
    if config.timeline is not None:
        _write_timeline(config.timeline, records, config)
    if config.termination_log is not None:  # the last attempt's, as the platform would see it
        from runai_entry.supervisor.termination import leave

        leave(config, attempts[-1])
    return attempts[-1].exit_code


def _write_timeline(path: str, records: list[AttemptRecord], config: Config) -> None:
    """The drill's picture; a failure to write it is said, and changes no exit code."""
    from runai_entry.core.errors import ConfigError
    from runai_entry.history.timeline import write_timeline

    try:
        write_timeline(path, records, title=f"runai-entry preemption drill: "
                       f"{config.checkpoint_dir}")
    except ConfigError as exc:
        print(f"runai-entry: {exc}", file=sys.stderr, flush=True)
    else:
        print(f"timeline: {os.path.abspath(path)}", file=sys.stderr, flush=True)


def _requeued(attempt: Attempt) -> bool:
    """Whether the platform would start this attempt's command again: a simulated preemption."""
    return attempt.result is not None and attempt.result.simulated


def _print_summary(records: list[AttemptRecord], problems: list[str],
                   attempts: list[Attempt], config: Config) -> None:
    last = attempts[-1]
    lines = ["", "runai-entry preemption drill", *render_table(records).split("\n")]
    if records:
        lines += goodput_lines(records)
    lines += [f"  {line}" for line in incidents(records)]
    lines += [guard_status(records, member_of(os.environ), config.max_attempts_without_progress),
              ""]
    if last.result is not None and last.result.grace_used is not None and not last.result.simulated:
        lines.append("stopped: a real SIGTERM arrived during the drill")
    elif len(attempts) <= config.simulate_requeue and last.result is not None \
            and last.result.outcome == Outcome.COMPLETED:
        lines.append(f"the job completed in attempt {len(attempts)}, before every simulated "
                     "preemption was used")
    if problems:
        lines.append(f"verdict: {len(problems)} problem{'s' if len(problems) > 1 else ''}")
        lines.extend(f"  - {p}" for p in problems)
    elif last.exit_code == 0:
        lines.append("verdict: OK — every preemption saved a new checkpoint after its stop "
                     "signal, within its budget, and every attempt resumed from the newest one")
    else:
        lines.append(f"verdict: the last attempt exited {last.exit_code}")
    print("\n".join(map(printable, lines)), file=sys.stderr, flush=True)
