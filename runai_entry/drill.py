"""The preemption drill: rehearse locally what the platform will do to the job.

``--simulate-preempt T --simulate-requeue N``: run the command, preempt it T after its start,
start it again the way the platform requeues it (fresh discovery, next attempt, the resume
flag), N times, then let the last attempt run to completion; print a table a person reads at a
glance, and a verdict naming the real problems.
"""

from __future__ import annotations

import os
import sys

from runai_entry.config import Config
from runai_entry.history import member_of
from runai_entry.progress import guard_status
from runai_entry.report import render_table, verdict
from runai_entry.run import Attempt, run_attempt


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
    records = [a.record for a in attempts if a.record]
    problems = verdict(records)
    _print_summary(records, problems, attempts, config)
    return attempts[-1].exit_code


def _requeued(attempt: Attempt) -> bool:
    """Whether the platform would start this attempt's command again: a simulated preemption."""
    return attempt.result is not None and attempt.result.simulated


def _print_summary(records: list[dict[str, object]], problems: list[str],
                   attempts: list[Attempt], config: Config) -> None:
    last = attempts[-1]
    lines = ["", "runai-entry preemption drill", render_table(records),
             guard_status(records, member_of(os.environ), config.max_attempts_without_progress),
             ""]
    if last.result is not None and last.result.grace_used is not None and not last.result.simulated:
        lines.append("stopped: a real SIGTERM arrived during the drill")
    elif len(attempts) <= config.simulate_requeue and last.result is not None \
            and last.result.outcome.value == "completed":
        lines.append(f"the job completed in attempt {len(attempts)}, before every simulated "
                     "preemption was used")
    if problems:
        lines.append(f"verdict: {len(problems)} problem{'s' if len(problems) > 1 else ''}")
        lines.extend(f"  - {p}" for p in problems)
    elif last.exit_code == 0:
        lines.append("verdict: OK — every preemption saved a new checkpoint within its budget, "
                     "and every attempt resumed from the newest one")
    else:
        lines.append(f"verdict: the last attempt exited {last.exit_code}")
    print("\n".join(lines), file=sys.stderr, flush=True)
